/*!
What `serve` reports at `/metrics` (Prometheus text format), on the configured address
(127.0.0.1:8080 by default: metrics are not for the internet). The HTTP server is
[`crate::web::server`], which also reads these numbers for the dashboard.
*/

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;

use crate::error::{Error, Result};

/// One source's numbers.
#[derive(Clone, Debug, Default)]
pub struct SourceMetrics {
    pub last_success: Option<Timestamp>,
    pub last_attempt: Option<Timestamp>,
    pub last_attempt_ok: Option<bool>,
    pub snapshots: u64,
    pub stored_bytes: u64,
    pub backup_seconds: Option<f64>,
    pub drill_seconds: Option<f64>,
    pub drill_ok: Option<bool>,
    pub tested_restore_seconds: Option<f64>,
    pub stale: bool,
    pub next_run: Option<Timestamp>,
    pub jobs_ok: u64,
    pub jobs_failed: u64,
    /// The last successful base backup (point-in-time recovery), when the source has them.
    pub base_last_success: Option<Timestamp>,
    pub base_next_run: Option<Timestamp>,
    /// The WAL archive: its newest WAL and how far the server is ahead of it.
    pub wal: WalMetrics,
}

/// The WAL archive of a source with `wal = "push"` or `"stream"`.
#[derive(Clone, Debug, Default)]
pub struct WalMetrics {
    /// When the newest archived WAL was uploaded.
    pub archived_at: Option<Timestamp>,
    pub lag_bytes: Option<u64>,
    pub lag_seconds: Option<f64>,
    /// `wal = "stream"`: 1 while streaming.
    pub streaming: Option<bool>,
    pub slot_retained_bytes: Option<u64>,
    /// The last point-in-time recovery drill: passed, and its tested restore time.
    pub pitr_drill_ok: Option<bool>,
    pub pitr_drill_seconds: Option<f64>,
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub sources: BTreeMap<String, SourceMetrics>,
}

pub type Shared = Arc<Mutex<Metrics>>;

fn gauge(out: &mut String, name: &str, help: &str, values: &[(&str, Option<f64>)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (source, v) in values {
        if let Some(v) = v {
            let _ = writeln!(out, "{name}{{source=\"{}\"}} {v}", escape(source));
        }
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        type Pick = fn(&SourceMetrics) -> Option<f64>;
        let series: Vec<(&str, &str, Pick)> = vec![
            (
                "offsitedb_last_success_timestamp_seconds",
                "Time of the last successful backup.",
                |m| m.last_success.map(|t| t.as_millisecond() as f64 / 1000.0),
            ),
            (
                "offsitedb_last_attempt_timestamp_seconds",
                "Time of the last backup attempt.",
                |m| m.last_attempt.map(|t| t.as_millisecond() as f64 / 1000.0),
            ),
            (
                "offsitedb_last_attempt_success",
                "1 if the last backup attempt succeeded.",
                |m| m.last_attempt_ok.map(|b| b as u8 as f64),
            ),
            ("offsitedb_snapshots", "Snapshots in the repository.", |m| {
                Some(m.snapshots as f64)
            }),
            (
                "offsitedb_snapshot_bytes",
                "Stored bytes of all snapshots in the repository.",
                |m| Some(m.stored_bytes as f64),
            ),
            (
                "offsitedb_backup_duration_seconds",
                "Duration of the last backup.",
                |m| m.backup_seconds,
            ),
            (
                "offsitedb_drill_duration_seconds",
                "Duration of the last restore drill.",
                |m| m.drill_seconds,
            ),
            (
                "offsitedb_last_drill_success",
                "1 if the last restore drill passed.",
                |m| m.drill_ok.map(|b| b as u8 as f64),
            ),
            (
                "offsitedb_tested_restore_seconds",
                "Tested restore time of the last drill.",
                |m| m.tested_restore_seconds,
            ),
            (
                "offsitedb_stale",
                "1 while no backup succeeded for longer than stale_after.",
                |m| Some(m.stale as u8 as f64),
            ),
            (
                "offsitedb_next_run_timestamp_seconds",
                "When the next job is due.",
                |m| m.next_run.map(|t| t.as_millisecond() as f64 / 1000.0),
            ),
            (
                "offsitedb_base_backup_last_success_timestamp_seconds",
                "When the last base backup (point-in-time recovery) succeeded.",
                |m| {
                    m.base_last_success
                        .map(|t| t.as_millisecond() as f64 / 1000.0)
                },
            ),
            (
                "offsitedb_base_backup_next_run_timestamp_seconds",
                "When the next base backup is due.",
                |m| m.base_next_run.map(|t| t.as_millisecond() as f64 / 1000.0),
            ),
            (
                "offsitedb_base_backup_age_seconds",
                "Seconds since the last successful base backup.",
                |m| {
                    m.base_last_success
                        .map(|t| Timestamp::now().duration_since(t).as_secs_f64())
                },
            ),
            (
                "offsitedb_wal_archived_timestamp_seconds",
                "When the newest WAL in the archive was uploaded.",
                |m| {
                    m.wal
                        .archived_at
                        .map(|t| t.as_millisecond() as f64 / 1000.0)
                },
            ),
            (
                "offsitedb_wal_lag_bytes",
                "Bytes of WAL the server has that the archive lacks.",
                |m| m.wal.lag_bytes.map(|b| b as f64),
            ),
            (
                "offsitedb_wal_lag_seconds",
                "How long ago the server first had WAL that the archive still lacks.",
                |m| m.wal.lag_seconds,
            ),
            (
                "offsitedb_wal_streaming",
                "1 while wal = \"stream\" receives WAL.",
                |m| m.wal.streaming.map(|b| b as u8 as f64),
            ),
            (
                "offsitedb_replication_slot_retained_bytes",
                "WAL the stream's replication slot holds back on the server.",
                |m| m.wal.slot_retained_bytes.map(|b| b as f64),
            ),
            (
                "offsitedb_last_pitr_drill_success",
                "1 if the last point-in-time recovery drill passed.",
                |m| m.wal.pitr_drill_ok.map(|b| b as u8 as f64),
            ),
            (
                "offsitedb_pitr_tested_restore_seconds",
                "Tested restore time of the last point-in-time recovery drill.",
                |m| m.wal.pitr_drill_seconds,
            ),
        ];
        for (name, help, pick) in series {
            let values: Vec<(&str, Option<f64>)> = self
                .sources
                .iter()
                .map(|(s, m)| (s.as_str(), pick(m)))
                .collect();
            gauge(&mut out, name, help, &values);
        }
        // A counter, by result: Prometheus naming (`_total`), so `rate()` and alerts work.
        let _ = writeln!(
            out,
            "# HELP offsitedb_jobs_total Jobs run since the daemon started, by result.\n# TYPE offsitedb_jobs_total counter"
        );
        for (source, m) in &self.sources {
            for (result, n) in [("succeeded", m.jobs_ok), ("failed", m.jobs_failed)] {
                let _ = writeln!(
                    out,
                    "offsitedb_jobs_total{{source=\"{}\",result=\"{result}\"}} {n}",
                    escape(source)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP offsitedb_info Version of the running daemon.\n# TYPE offsitedb_info gauge\noffsitedb_info{{version=\"{}\"}} 1",
            crate::VERSION
        );
        out
    }
}

/// Binds `listen` (an address, for messages and the hint on failure).
pub fn bind(listen: &str) -> Result<TcpListener> {
    TcpListener::bind(listen).map_err(|e| {
        Error::config(format!(
            "cannot listen on {listen}: {}",
            crate::error::describe_io(&e)
        ))
        .with_hint(
            "set listen under [server] in offsitedb.toml to a free address, e.g. 127.0.0.1:9187",
        )
    })
}
