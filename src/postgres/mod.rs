/*!
Everything about talking to PostgreSQL: connection strings ([`conninfo`]), hosted providers and
poolers ([`provider`], [`pooler`]), our own connection and what it learns about the server ([`client`]), and
finding pg_dump, pg_restore and the server programs ([`binaries`]).
*/

pub mod binaries;
pub mod client;
pub mod conninfo;
pub mod pooler;
pub mod provider;
pub mod rawcopy;

pub use binaries::PgProgram;
pub use client::{ServerInfo, connect, server_info};
pub use conninfo::ConnInfo;

/// Environment for a child PostgreSQL client (pg_dump, pg_restore) made by
/// [`crate::process::command`] (which withholds an inherited `PGPASSWORD`): the password goes
/// here, never on the command line, and nothing may prompt.
pub fn child_env(cmd: &mut std::process::Command, ci: &ConnInfo) {
    if let Some(p) = ci.password() {
        cmd.env("PGPASSWORD", p);
    }
    if std::env::var_os("PGCONNECT_TIMEOUT").is_none() && ci.get("connect_timeout").is_none() {
        cmd.env("PGCONNECT_TIMEOUT", "15");
    }
    cmd.env("PGAPPNAME", "offsitedb");
}
