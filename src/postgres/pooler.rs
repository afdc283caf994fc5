/*!
Any connection pooler in transaction or statement mode (PgBouncer, Supavisor, RDS Proxy pinning
aside) breaks pg_dump's session settings. [`detect_pooler`] proves from the server's answers that
consecutive statements of one client land in different server sessions, before anything is
dumped, so the error can say so and give the direct address as the fix.
*/

use crate::error::{Error, Result};

use super::ConnInfo;

/// The error for a database behind a pooler in transaction or statement mode.
pub fn pooler_error(target: &str, evidence: &str) -> Error {
    Error::source_db(format!(
        "{target} is behind a connection pooler in transaction or statement mode ({evidence}): pg_dump needs one server session for the whole dump"
    ))
    .with_hint(
        "use the database's direct address instead of the pooler's (Neon: the host without -pooler; Supabase: db.PROJECT.supabase.co:5432; PgBouncer: the server it points to, or a pool in session mode)",
    )
}

/// Proves whether statements of one client connection may run in different server sessions, as
/// behind a pooler in transaction or statement mode: connection A holds a server session in a
/// transaction while B sets a session variable; after A lets go, a pooler hands B the session A
/// released (PgBouncer reuses the most recent one), where B's variable is not set. A direct
/// connection, or a pooler in session mode, keeps it. Returns the evidence when pooled.
/// What the pooler probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// One server session per connection (direct, or a pooler in session mode).
    Session,
    /// Statements of one connection ran in different sessions: the evidence.
    Pooled(String),
    /// The probe could not tell (a pool with no second connection free): why.
    Unknown(String),
}

/// [`probe`] with a time limit: behind a pooler whose pool is full the second connection waits
/// for the first, which waits for the probe; that is no reason to fail a backup.
pub fn detect_pooler_within(ci: &ConnInfo, limit: std::time::Duration) -> Result<Pooling> {
    let ci = ci.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("pooler-probe".into())
        .spawn(move || {
            let _ = tx.send(detect_pooler(&ci));
        })
        .map_err(|e| Error::internal(format!("cannot start a thread: {e}")))?;
    match rx.recv_timeout(limit) {
        Ok(Ok(None)) => Ok(Pooling::Session),
        Ok(Ok(Some(evidence))) => Ok(Pooling::Pooled(evidence)),
        Ok(Err(e)) => Err(e),
        // The probe thread stays blocked until its connections time out or the process ends.
        Err(_) => Ok(Pooling::Unknown(format!(
            "a second connection did not get a server session within {}s",
            limit.as_secs()
        ))),
    }
}

pub fn detect_pooler(ci: &ConnInfo) -> Result<Option<String>> {
    let mut a = super::connect(ci, "the source database")?;
    let mut b = super::connect(ci, "the source database")?;
    let q = |c: &mut postgres::Client, sql: &str| -> Result<Option<String>> {
        c.simple_query(sql)
            .map_err(|e| super::client::query_error("cannot probe the connection", &e))
            .map(|msgs| {
                msgs.into_iter().find_map(|m| match m {
                    postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                    _ => None,
                })
            })
    };
    if let Err(e) = a.simple_query("BEGIN") {
        let msg = e.to_string();
        if msg.contains("statement mode") || msg.contains("transaction blocks not allowed") {
            return Ok(Some(format!("it refused BEGIN: {msg}")));
        }
        return Err(super::client::query_error(
            "cannot probe the connection",
            &e,
        ));
    }
    let a_pid = q(&mut a, "SELECT pg_backend_pid()")?;
    let b_pid = q(&mut b, "SELECT pg_backend_pid()")?;
    let mut nonce = [0u8; 8];
    let _ = getrandom::fill(&mut nonce);
    let nonce = crate::units::hex(&nonce);
    q(&mut b, &format!("SET offsitedb.probe = '{nonce}'"))?;
    q(&mut a, "COMMIT")?;
    let b_pid_after = q(&mut b, "SELECT pg_backend_pid()")?;
    let kept = q(&mut b, "SELECT current_setting('offsitedb.probe', true)")?;
    if b_pid != b_pid_after || kept.as_deref() != Some(nonce.as_str()) {
        let released = a_pid == b_pid_after;
        return Ok(Some(format!(
            "one client's statements ran in server sessions {} and {}{}",
            b_pid.unwrap_or_default(),
            b_pid_after.unwrap_or_default(),
            if released {
                " (the one another client had just released)"
            } else {
                ""
            }
        )));
    }
    Ok(None)
}
