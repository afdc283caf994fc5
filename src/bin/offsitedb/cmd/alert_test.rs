//! `offsitedb alert-test`: a test alert to every channel, a ping to every heartbeat URL.

use anyhow::Result;
use offsitedb::alerts::{self, Alert, Dispatcher, Event, Ping};
use offsitedb::config::Settings;
use offsitedb::{Error, ErrorKind};

use super::Global;
use crate::output::{outln, warn};

/// Send a test alert to every configured channel and ping every heartbeat URL
#[derive(clap::Args, Debug)]
pub struct Args {}

/// The alert dispatcher `run` uses: failed deliveries are warnings.
pub fn dispatcher(s: &Settings) -> Result<Dispatcher> {
    let channels = alerts::Channels::from_config(s.file.alerts.as_ref())?;
    Ok(Dispatcher::start(channels, |d| {
        warn(&format!(
            "alert delivery to {} failed ({} attempt{}): {}",
            d.channel,
            d.attempts,
            if d.attempts == 1 { "" } else { "s" },
            d.error.as_deref().unwrap_or("")
        ))
    }))
}

pub fn run(_a: Args, g: &Global) -> Result<()> {
    let s = g.settings()?;
    let channels = alerts::Channels::from_config(s.file.alerts.as_ref())?;
    if channels.is_empty() && s.file.sources.iter().all(|src| src.heartbeat.is_empty()) {
        return Err(Error::config("no alert channel is configured")
            .with_hint("add webhook, slack, email or heartbeat under [alerts] in offsitedb.toml")
            .into());
    }
    let a = Alert::new(
        Event::Test,
        true,
        "test",
        "a test alert from offsitedb alert-test: if you read this, alerts reach you".into(),
    );
    let mut results = alerts::deliver(&channels, &a);
    let own: Vec<_> = s
        .file
        .sources
        .iter()
        .flat_map(|src| src.heartbeat.iter().cloned())
        .collect();
    results.extend(alerts::ping(&channels, Ping::Success, &own));
    if g.json {
        super::print_json(&results)?;
    } else {
        for d in &results {
            if d.ok {
                outln!("ok      {}", d.channel);
            } else {
                outln!(
                    "FAILED  {}: {}",
                    d.channel,
                    d.error.as_deref().unwrap_or("")
                );
            }
        }
    }
    let failed = results.iter().filter(|d| !d.ok).count();
    if failed > 0 {
        return Err(Error::new(
            ErrorKind::Alert,
            format!("{failed} of {} alert channels failed", results.len()),
        )
        .into());
    }
    Ok(())
}
