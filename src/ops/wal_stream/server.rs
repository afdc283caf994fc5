/*!
What `wal-stream` asks the server over an ordinary connection: whether the role may stream, the
replication slot (created when missing, with its WAL reserved at once), and where the server's
WAL is now and how much of it the slot holds back.
*/

use crate::error::{Error, Result};
use crate::ops::backup::basebackup::{Replication, replication_fix};
use crate::postgres::{self, ConnInfo, client};
use crate::wal::name::Lsn;

/// The server, as the stream needs it.
#[derive(Clone, Debug)]
pub struct Server {
    pub major: u32,
    pub version: String,
    pub segment_size: u64,
    pub in_recovery: bool,
}

/// The server's position and the slot's, at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Positions {
    /// `pg_current_wal_lsn()` (on a standby, the last WAL received).
    pub current: Lsn,
    pub timeline: u32,
    /// The slot's `restart_lsn`: the oldest WAL it keeps on the server.
    pub restart: Option<Lsn>,
    /// `wal_status` (PostgreSQL 13+): reserved, extended, unreserved or lost.
    pub wal_status: Option<String>,
    /// Whether a connection streams from the slot now.
    pub active: bool,
}

impl Positions {
    /// WAL the slot holds back on the server's disk.
    pub fn retained(&self) -> Option<u64> {
        self.restart.map(|r| self.current.0.saturating_sub(r.0))
    }
}

/// Connects, and says why the role cannot stream when it cannot.
pub fn connect(ci: &ConnInfo) -> Result<(client::Client, Server)> {
    let mut c = postgres::connect(ci, "the source database")?;
    let info = postgres::server_info(&mut c)?;
    let repl = Replication::read(&mut c)?;
    if let Some(e) = repl
        .role_error()
        .or_else(|| repl.wal_level_error())
        .or_else(|| repl.senders_error())
    {
        return Err(e.context(format!("cannot stream the WAL of {}", ci.redacted())));
    }
    Ok((
        c,
        Server {
            major: info.major,
            version: info.version,
            segment_size: repl.segment_size,
            in_recovery: info.in_recovery,
        },
    ))
}

/// Creates the physical slot `slot` when it does not exist (reserving WAL from now on), and
/// refuses a logical slot of that name. `true` when it was created.
pub fn ensure_slot(c: &mut client::Client, slot: &str) -> Result<bool> {
    let row = c
        .query_opt(
            "SELECT slot_type::text FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .map_err(|e| client::query_error("cannot read the replication slots", &e))?;
    match row.map(|r| r.get::<_, String>(0)) {
        Some(t) if t == "physical" => return Ok(false),
        Some(t) => {
            return Err(Error::config(format!(
                "the replication slot {slot} is a {t} slot: wal-stream needs a physical one"
            ))
            .with_hint("name another slot with wal_slot = \"...\" in the source's section"));
        }
        None => {}
    }
    match c.query_one(
        "SELECT 1 FROM pg_catalog.pg_create_physical_replication_slot($1, true)",
        &[&slot],
    ) {
        Ok(_) => Ok(true),
        // Created by another process meanwhile.
        Err(e) if e.code() == Some(&::postgres::error::SqlState::DUPLICATE_OBJECT) => Ok(false),
        Err(e) => {
            let role = c
                .query_one("SELECT session_user::text", &[])
                .map(|r| r.get::<_, String>(0))
                .unwrap_or_else(|_| "the role".into());
            Err(
                client::query_error(&format!("cannot create the replication slot {slot}"), &e)
                    .with_hint(replication_fix(&role)),
            )
        }
    }
}

/// Where the server's WAL is, and the slot's hold on it.
pub fn positions(c: &mut client::Client, slot: &str) -> Result<Positions> {
    let r = c
        .query_one(
            "SELECT (CASE WHEN pg_catalog.pg_is_in_recovery()
                          THEN pg_catalog.pg_last_wal_receive_lsn()
                          ELSE pg_catalog.pg_current_wal_lsn() END)::text,
                    (SELECT timeline_id FROM pg_catalog.pg_control_checkpoint())::int8,
                    s.restart_lsn::text, s.wal_status::text, coalesce(s.active, false)
               FROM (SELECT 1) one
               LEFT JOIN pg_catalog.pg_replication_slots s ON s.slot_name = $1",
            &[&slot],
        )
        .map_err(|e| client::query_error("cannot read the server's WAL position", &e))?;
    let lsn = |i: usize| -> Result<Option<Lsn>> {
        r.get::<_, Option<String>>(i)
            .map(|s| Lsn::parse(&s))
            .transpose()
    };
    Ok(Positions {
        current: lsn(0)?.unwrap_or_default(),
        timeline: r.get::<_, Option<i64>>(1).unwrap_or(1) as u32,
        restart: lsn(2)?,
        wal_status: r.get(3),
        active: r.get(4),
    })
}

/// The line that says how to let go of the slot, for every warning about it.
pub fn drop_hint(slot: &str) -> String {
    format!(
        "if OffsiteDB no longer streams this server, drop the slot so the server can recycle its WAL: SELECT pg_drop_replication_slot('{slot}');"
    )
}
