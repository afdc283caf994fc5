//! `offsitedb wal-stream [--source NAME]`: receives a source's WAL over a replication connection
//! (`pg_receivewal` and a replication slot) and archives it as it arrives, until Ctrl-C or
//! SIGTERM. `serve` does the same for every source with `wal = "stream"`.

use anyhow::Result;
use offsitedb::config::WalMode;
use offsitedb::lock::Wait;
use offsitedb::ops::wal_stream::{self, Event, Shared, StreamOptions};
use offsitedb::units;

use super::Global;
use crate::output;

/// Stream a source's WAL into the archive over a replication connection (for servers where
/// archive_command cannot run)
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The configured source (default: the one with wal = "stream", or the only one)
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
}

pub fn run(a: Args, g: &Global) -> Result<()> {
    let s = g.settings()?;
    let (name, _) = super::wal_push::wal_source(&s, a.source.as_deref(), "wal-stream")?;
    let spec = s.configured_source(&name, None)?;
    if spec.dir.is_some() {
        return Err(offsitedb::Error::config(format!(
            "source {name} is a folder: only PostgreSQL sources have WAL"
        ))
        .into());
    }
    if spec.policy.wal != WalMode::Stream {
        output::note(&format!(
            "source {name} does not say wal = \"stream\" in the configuration: serve will not stream it"
        ));
    }
    let store = s.open_store()?;
    let key = super::key(&s)?;
    let state_dir = s.state_dir()?;
    let _lock = offsitedb::lock::acquire(
        &s.lock_dir(&mut |w| output::warn(&w))?,
        &store.location(),
        &format!("{name}.wal-stream"),
        "wal-stream",
        Wait::No,
        &mut |n| output::note(&n),
    )?;
    let opts = StreamOptions {
        source: name.clone(),
        conninfo: spec.conninfo.clone(),
        policy: spec.policy.stream.clone(),
        spool: StreamOptions::spool_in(&state_dir, &name),
        pg_bin_dirs: s.pg_bin_dirs().to_vec(),
    };
    output::info(&format!(
        "streaming the WAL of {} into {} (slot {}, spool {}); Ctrl-C stops",
        spec.conninfo.redacted(),
        store.location(),
        opts.policy.slot,
        opts.spool.display()
    ));
    let status = Shared::default();
    let json = g.json;
    wal_stream::run(store, key, &opts, &status, &|| false, &mut |e| {
        if json {
            // One line per event (JSON Lines): the stream runs until stopped.
            let mut line = event_json(&e);
            line["at"] = serde_json::Value::String(jiff::Timestamp::now().to_string());
            output::stdout_line(format_args!("{line}"));
        } else {
            say(&e);
        }
    })?;
    output::info("stopped; what was received is archived");
    Ok(())
}

/// One line per event, for a person.
fn say(e: &Event) {
    match e {
        Event::SlotCreated(slot) => output::info(&format!(
            "created the replication slot {slot}: the server keeps its WAL until it is archived"
        )),
        Event::Started { program, server } => {
            output::info(&format!("receiving from {server} with {program}"))
        }
        Event::Stored(n) => output::info(&format!("archived {n}")),
        Event::Partial { name, archived } => {
            output::info(&format!("archived {name} (up to LSN {archived})"))
        }
        Event::Stopped {
            error,
            retry_in,
            failures,
        } => output::warn(&format!(
            "{}; trying again in {} ({failures} in a row)",
            error.message(),
            units::duration(*retry_in)
        )),
        Event::SlotRetention {
            retained,
            max,
            over,
        } => {
            if *over {
                output::warn(&format!(
                    "the replication slot holds back {} of WAL on the server, over wal_slot_max ({})",
                    units::bytes(*retained),
                    units::bytes(*max)
                ))
            } else {
                output::info(&format!(
                    "the replication slot holds back {} of WAL again, under wal_slot_max",
                    units::bytes(*retained)
                ))
            }
        }
        Event::SlotLost(slot) => output::warn(&format!(
            "the server removed WAL the replication slot {slot} needed: the archive has a gap; take a base backup (offsitedb backup-push) to restore from after it"
        )),
        Event::Note(n) => output::note(n),
    }
}

fn event_json(e: &Event) -> serde_json::Value {
    use serde_json::json;
    match e {
        Event::SlotCreated(slot) => json!({"event": "slot_created", "slot": slot}),
        Event::Started { program, server } => {
            json!({"event": "started", "program": program, "server": server})
        }
        Event::Stored(n) => json!({"event": "stored", "name": n.to_string()}),
        Event::Partial { name, archived } => {
            json!({"event": "partial", "name": name.to_string(), "archived_lsn": archived.to_string()})
        }
        Event::Stopped {
            error,
            retry_in,
            failures,
        } => {
            json!({"event": "stopped", "error": error.message(), "retry_in_seconds": retry_in.as_secs_f64(), "failures": failures})
        }
        Event::SlotRetention {
            retained,
            max,
            over,
        } => {
            json!({"event": "slot_retention", "retained_bytes": retained, "max_bytes": max, "over": over})
        }
        Event::SlotLost(slot) => json!({"event": "slot_lost", "slot": slot}),
        Event::Note(n) => json!({"event": "note", "text": n}),
    }
}
