/*!
Alerts: what went wrong (or right again), sent to webhooks, Slack, email, and heartbeat URLs.

An alert is sent when a condition *changes*: a source's backups start failing, and again when they
recover; nothing in between, however many jobs fail (see [`transition`], which keeps the state in
the state file so a restart does not repeat an alert). Heartbeats are different: they are pinged on
every job (`/start`, the bare URL on success, `/fail`), healthchecks.io style, so that a service
outside this machine notices when OffsiteDB itself stops.

Delivery runs on its own thread ([`Dispatcher`]), retried with backoff unless the failure is one
that would only repeat ([`Failure`]); a channel that stays down is logged and never stops a
backup.
*/

pub mod smtp;

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde::Serialize;

use crate::config::{AlertsSection, Secret};
use crate::error::{Error, Result};
use crate::state::State;

/// Conditions that alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    BackupFailed,
    DrillFailed,
    /// No successful backup for longer than `stale_after`: the dead man's switch.
    NoRecentBackup,
    PruneFailed,
    /// A scheduled base backup (point-in-time recovery) failed.
    BaseBackupFailed,
    StorageUnreachable,
    /// A drill's tested restore time exceeded the source's `rto`.
    #[serde(rename = "rto_missed")]
    RestoreTimeObjectiveMissed,
    /// The time since the last good backup exceeded the source's `rpo`.
    #[serde(rename = "rpo_missed")]
    RecoveryPointObjectiveMissed,
    /// `wal = "stream"`: the WAL stream failed several times in a row (or cannot run).
    #[serde(rename = "wal_stream_failed")]
    WalStreamFailed,
    /// The WAL archive is further behind the server than `wal_lag_alert`.
    #[serde(rename = "wal_lagging")]
    WalLagging,
    /// The stream's replication slot holds back more WAL on the server than `wal_slot_max`.
    #[serde(rename = "slot_retention")]
    SlotRetention,
    /// A point-in-time recovery drill failed.
    #[serde(rename = "pitr_drill_failed")]
    PitrDrillFailed,
    /// `verify` found a snapshot, drill record or WAL deleted, something replaced, or the
    /// repository rolled back.
    #[serde(rename = "verify_failed")]
    VerifyFailed,
    /// `offsitedb alert-test`.
    Test,
}

impl Event {
    pub fn key(self) -> &'static str {
        match self {
            Event::BackupFailed => "backup_failed",
            Event::DrillFailed => "drill_failed",
            Event::NoRecentBackup => "no_recent_backup",
            Event::PruneFailed => "prune_failed",
            Event::BaseBackupFailed => "base_backup_failed",
            Event::StorageUnreachable => "storage_unreachable",
            Event::RestoreTimeObjectiveMissed => "rto_missed",
            Event::RecoveryPointObjectiveMissed => "rpo_missed",
            Event::WalStreamFailed => "wal_stream_failed",
            Event::WalLagging => "wal_lagging",
            Event::SlotRetention => "slot_retention",
            Event::PitrDrillFailed => "pitr_drill_failed",
            Event::VerifyFailed => "verify_failed",
            Event::Test => "test",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Event::BackupFailed => "backup failed",
            Event::DrillFailed => "restore drill failed",
            Event::NoRecentBackup => "no recent backup",
            Event::PruneFailed => "prune failed",
            Event::BaseBackupFailed => "base backup failed",
            Event::StorageUnreachable => "storage unreachable",
            Event::RestoreTimeObjectiveMissed => "tested restore time over its objective",
            Event::RecoveryPointObjectiveMissed => "recovery point over its objective",
            Event::WalStreamFailed => "WAL stream failing",
            Event::WalLagging => "WAL archive lagging",
            Event::SlotRetention => "replication slot holding back WAL",
            Event::PitrDrillFailed => "point-in-time recovery drill failed",
            Event::VerifyFailed => "repository verify found a problem",
            Event::Test => "test alert",
        }
    }
}

/// One alert: the JSON body of a webhook (documented in README.md).
#[derive(Clone, Debug, Serialize)]
pub struct Alert {
    pub event: Event,
    /// "firing", or "resolved" when the condition ended.
    pub status: &'static str,
    pub source: String,
    pub message: String,
    pub time: Timestamp,
    /// The source's last successful backup, when known.
    pub last_success: Option<Timestamp>,
    pub host: String,
}

impl Alert {
    pub fn new(event: Event, firing: bool, source: &str, message: String) -> Alert {
        Alert {
            event,
            status: if firing { "firing" } else { "resolved" },
            source: source.to_string(),
            message,
            time: Timestamp::now(),
            last_success: None,
            host: crate::config::host_name(),
        }
    }

    /// One line for people: Slack text, email subject.
    pub fn headline(&self) -> String {
        if self.status == "resolved" {
            format!(
                "[OffsiteDB] resolved: {} for {}",
                self.event.title(),
                self.source
            )
        } else {
            format!("[OffsiteDB] {} for {}", self.event.title(), self.source)
        }
    }

    /// The whole message for people.
    pub fn body(&self) -> String {
        let mut s = format!("{}\n\n{}\n\n", self.headline(), self.message);
        s.push_str(&format!(
            "source: {}\nhost: {}\ntime: {}\n",
            self.source, self.host, self.time
        ));
        s.push_str(&format!(
            "last successful backup: {}\n",
            self.last_success
                .map_or("none recorded".to_string(), |t| t.to_string())
        ));
        s
    }
}

/// Records `firing` for (source, event) and returns the alert to send if that is a change:
/// the first failure fires, the first success after it resolves, anything else is quiet.
pub fn transition(
    state: &State,
    source: &str,
    event: Event,
    firing: bool,
    message: &str,
) -> Result<Option<Alert>> {
    // One atomic switch in the state: of several workers seeing the same change, one sends.
    let Some(was) = state.switch_alert(source, event.key(), firing, message, Timestamp::now())?
    else {
        return Ok(None);
    };
    let message = if firing {
        message.to_string()
    } else {
        let since = was.map(|a| a.since.to_string()).unwrap_or_default();
        format!("{message} (the problem began at {since})")
    };
    Ok(Some(Alert::new(event, firing, source, message)))
}

/// Heartbeat pings, healthchecks.io style.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ping {
    Start,
    Success,
    Fail,
}

/// Where alerts go, from `[alerts]`.
#[derive(Clone, Debug, Default)]
pub struct Channels {
    pub webhook: Vec<Secret>,
    pub slack: Vec<Secret>,
    pub email: Option<smtp::Mail>,
    pub heartbeat: Vec<Secret>,
}

impl Channels {
    pub fn from_config(section: Option<&AlertsSection>) -> Result<Channels> {
        let Some(a) = section else {
            return Ok(Channels::default());
        };
        for u in a.webhook.iter().chain(&a.slack).chain(&a.heartbeat) {
            let s = u.expose();
            if !(s.starts_with("https://") || s.starts_with("http://")) {
                return Err(Error::config(format!(
                    "alert URL {} is not an http(s) URL",
                    redact_url(s)
                )));
            }
        }
        Ok(Channels {
            webhook: a.webhook.clone(),
            slack: a.slack.clone(),
            email: a.email.as_ref().map(smtp::Mail::from_config).transpose()?,
            heartbeat: a.heartbeat.clone(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.webhook.is_empty()
            && self.slack.is_empty()
            && self.email.is_none()
            && self.heartbeat.is_empty()
    }
}

/// A URL for logs: scheme, host and path start only (tokens live in paths and queries).
pub fn redact_url(u: &str) -> String {
    let (scheme, rest) = u.split_once("://").unwrap_or(("", u));
    // User info ends at the last "@" (it may hold "/" unescaped); the host ends at the path.
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    format!("{scheme}://{host}/…")
}

/// How a delivery went, per channel.
#[derive(Clone, Debug, Serialize)]
pub struct Delivery {
    pub channel: String,
    pub ok: bool,
    pub error: Option<String>,
    pub attempts: u32,
}

enum Job {
    Alert(Alert),
    Ping(Ping, Vec<Secret>),
}

/// Delivers alerts and pings on a thread, in order, each retried with backoff.
pub struct Dispatcher {
    tx: Option<mpsc::Sender<Job>>,
    done: Option<JoinHandle<Vec<Delivery>>>,
}

/// Retries per channel and the first pause (doubled each time).
const ATTEMPTS: u32 = 4;
const FIRST_PAUSE: Duration = Duration::from_millis(500);

impl Dispatcher {
    /// Starts the delivery thread. `log` receives one line per failed delivery.
    pub fn start(channels: Channels, log: impl Fn(&Delivery) + Send + 'static) -> Dispatcher {
        let (tx, rx) = mpsc::channel::<Job>();
        let done = std::thread::Builder::new()
            .name("alerts".into())
            .spawn(move || {
                let mut all = Vec::new();
                for job in rx {
                    let results = match job {
                        Job::Alert(a) => deliver(&channels, &a),
                        Job::Ping(p, extra) => ping(&channels, p, &extra),
                    };
                    for d in results {
                        if !d.ok {
                            log(&d);
                        }
                        all.push(d);
                    }
                }
                all
            })
            .expect("spawn the alert thread");
        Dispatcher {
            tx: Some(tx),
            done: Some(done),
        }
    }

    pub fn send(&self, a: Alert) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Job::Alert(a));
        }
    }

    /// Pings the configured heartbeat URLs, and `extra` (a source's own).
    pub fn ping(&self, p: Ping, extra: &[Secret]) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Job::Ping(p, extra.to_vec()));
        }
    }

    /// Waits (up to `limit`) for everything queued to be delivered; returns every delivery.
    pub fn finish(mut self, limit: Duration) -> Vec<Delivery> {
        drop(self.tx.take());
        let Some(h) = self.done.take() else {
            return Vec::new();
        };
        let deadline = Instant::now() + limit;
        while !h.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if h.is_finished() {
            h.join().unwrap_or_default()
        } else {
            Vec::new()
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::config::Config::builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(15)))
        .user_agent(format!("offsitedb/{}", crate::VERSION))
        .build()
        .new_agent()
}

/// Sends `a` to every channel (no heartbeats: they follow jobs, not conditions).
pub fn deliver(c: &Channels, a: &Alert) -> Vec<Delivery> {
    let agent = agent();
    let mut out = Vec::new();
    let json = serde_json::to_string(a).expect("an alert serializes");
    for u in &c.webhook {
        out.push(retry(
            &format!("webhook {}", redact_url(u.expose())),
            || post(&agent, u.expose(), &json),
        ));
    }
    let slack =
        serde_json::json!({ "text": format!("{}\n{}", a.headline(), a.message) }).to_string();
    for u in &c.slack {
        out.push(retry(&format!("slack {}", redact_url(u.expose())), || {
            post(&agent, u.expose(), &slack)
        }));
    }
    if let Some(m) = &c.email {
        out.push(retry(&format!("email via {}", m.server()), || {
            m.send(&a.headline(), &a.body())
        }));
    }
    out
}

/// Pings every heartbeat URL (and `extra`): `/start`, the URL itself, or `/fail`.
pub fn ping(c: &Channels, p: Ping, extra: &[Secret]) -> Vec<Delivery> {
    let agent = agent();
    c.heartbeat
        .iter()
        .chain(extra)
        .map(|u| {
            let base = u.expose().trim_end_matches('/');
            let url = match p {
                Ping::Start => format!("{base}/start"),
                Ping::Success => base.to_string(),
                Ping::Fail => format!("{base}/fail"),
            };
            retry(&format!("heartbeat {}", redact_url(base)), || {
                post(&agent, &url, "")
            })
        })
        .collect()
}

fn post(agent: &ureq::Agent, url: &str, body: &str) -> std::result::Result<(), String> {
    match agent
        .post(url)
        .header("content-type", "application/json")
        .send(body)
    {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("answered HTTP {}", r.status().as_u16())),
        // ureq's messages can quote the URL, token and all: only the kind of failure is said.
        Err(ureq::Error::Io(e)) => Err(crate::error::describe_io(&e)),
        Err(ureq::Error::Timeout(_)) => Err("timed out".into()),
        Err(ureq::Error::HostNotFound) => Err("host not found".into()),
        Err(ureq::Error::ConnectionFailed) => Err("cannot connect".into()),
        Err(ureq::Error::Tls(_)) => Err("TLS handshake failed".into()),
        Err(_) => Err("the request failed".into()),
    }
}

/// A failed delivery attempt: what to log, and whether another attempt could help. A refused
/// password, a server without STARTTLS or an untrusted certificate fail the same way every time
/// (and repeated wrong passwords can lock an account), so they are not retried.
#[derive(Clone, Debug)]
pub struct Failure {
    pub message: String,
    pub retry: bool,
}

impl Failure {
    pub fn transient(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            retry: true,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            retry: false,
        }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::transient(message)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn retry<E: Into<Failure>>(
    channel: &str,
    mut f: impl FnMut() -> std::result::Result<(), E>,
) -> Delivery {
    let mut pause = FIRST_PAUSE;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let failure = match f() {
            Ok(()) => {
                return Delivery {
                    channel: channel.to_string(),
                    ok: true,
                    error: None,
                    attempts: attempt,
                };
            }
            Err(e) => e.into(),
        };
        if !failure.retry || attempt == ATTEMPTS {
            return Delivery {
                channel: channel.to_string(),
                ok: false,
                error: Some(failure.message),
                attempts: attempt,
            };
        }
        std::thread::sleep(pause);
        pause *= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_alert_per_change() {
        let dir = tempfile::tempdir().unwrap();
        let st = State::open(&dir.path().join("s.db")).unwrap();
        let t = |firing: bool| {
            transition(&st, "app", Event::DrillFailed, firing, "m")
                .unwrap()
                .map(|a| a.status)
        };
        assert_eq!(t(false), None, "nothing to recover from");
        assert_eq!(t(true), Some("firing"));
        assert_eq!(t(true), None);
        assert_eq!(t(true), None);
        assert_eq!(t(false), Some("resolved"));
        assert_eq!(t(false), None);
        assert_eq!(t(true), Some("firing"));
        // Conditions and sources are independent.
        assert!(
            transition(&st, "app", Event::PruneFailed, true, "m")
                .unwrap()
                .is_some()
        );
        assert!(
            transition(&st, "other", Event::DrillFailed, true, "m")
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn only_transient_failures_are_retried() {
        let mut calls = 0;
        let d = retry("t", || {
            calls += 1;
            Err(Failure::permanent("535 authentication failed"))
        });
        assert_eq!((d.ok, d.attempts, calls), (false, 1, 1));
        assert_eq!(d.error.as_deref(), Some("535 authentication failed"));
        let mut calls = 0;
        let d = retry("t", || {
            calls += 1;
            if calls == 1 {
                Err("connection refused".to_string())
            } else {
                Ok(())
            }
        });
        assert_eq!((d.ok, d.attempts), (true, 2));
    }

    #[test]
    fn urls_are_redacted_for_logs() {
        assert_eq!(
            redact_url("https://hooks.slack.com/services/T000/B000/XXXX"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            redact_url("https://u:p@hc-ping.com/uuid?x=1"),
            "https://hc-ping.com/…"
        );
    }
}
