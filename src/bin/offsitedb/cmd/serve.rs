//! `offsitedb serve`: the daemon.

use anyhow::Result;

use super::Global;

/// Run every scheduled source's job on its schedule, alert, write the monthly report, and serve
/// the dashboard, its API and /metrics
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address for the dashboard, /api/v1, /metrics and /healthz (default: [server] listen, else
    /// 127.0.0.1:8080)
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Log lines as human text or JSON objects
    #[arg(
        long,
        value_enum,
        env = "OFFSITEDB_LOG_FORMAT",
        default_value = "human"
    )]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

pub fn run(a: Args, g: &Global) -> Result<()> {
    // The daemon's warnings are log lines (JSON ones with --log-format json).
    let settings =
        offsitedb::config::Settings::load(g.overrides(), &mut |w| tracing::warn!("{w}"))?;
    Ok(offsitedb::daemon::serve(settings, a.listen)?)
}
