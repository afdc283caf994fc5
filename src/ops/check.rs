/*!
`offsitedb check`: everything a backup needs, tested one step at a time, each failure with its
fix. For a source: the address (and what its provider changes), DNS, TCP, TLS, login, server
version and the pg_dump that will be used, poolers, the role's privileges (every table and
sequence readable; a warning when it can write), and what point-in-time recovery needs (for a
source with `wal = "push"`: REPLICATION, wal_level, archive_mode and archive_command,
max_wal_senders, tablespaces, pg_basebackup; for others one line saying how ready it is). For
the repository: write, read, list and delete
a probe object, the bucket's Object Lock setting, and whether the key is the repository's.

Steps after a failed one that depends on it are skipped, so the first failure is the one to fix.
*/

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::catalog::Repository;
use crate::config::{Settings, SourceSpec, WalMode};
use crate::error::{Error, ErrorKind};
use crate::ops::backup::basebackup::Replication;
use crate::postgres::{self, binaries, pooler, provider};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Warn,
    Fail,
    Skip,
}

/// One line of the checklist.
#[derive(Clone, Debug, Serialize)]
pub struct Item {
    /// The source's name, or "repository".
    pub subject: String,
    pub check: &'static str,
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
    /// The kind of error a failure is (for the exit code).
    #[serde(skip)]
    pub kind: Option<ErrorKind>,
}

struct List<'a> {
    subject: &'a str,
    items: Vec<Item>,
}

impl List<'_> {
    fn push(&mut self, check: &'static str, status: Status, detail: String, fix: Option<String>) {
        self.items.push(Item {
            subject: self.subject.to_string(),
            check,
            status,
            detail,
            fix,
            kind: None,
        });
    }
    fn ok(&mut self, check: &'static str, detail: String) {
        self.push(check, Status::Ok, detail, None);
    }
    fn warn(&mut self, check: &'static str, detail: String, fix: &str) {
        self.push(check, Status::Warn, detail, Some(fix.to_string()));
    }
    fn fail(&mut self, check: &'static str, e: &Error) {
        self.items.push(Item {
            subject: self.subject.to_string(),
            check,
            status: Status::Fail,
            detail: e.message().to_string(),
            fix: e.hint().map(str::to_string),
            kind: Some(e.kind()),
        });
    }
    fn skip(&mut self, checks: &[&'static str]) {
        for c in checks {
            self.push(
                c,
                Status::Skip,
                "skipped: an earlier step failed".into(),
                None,
            );
        }
    }
}

/// Checks one source.
pub fn source(spec: &SourceSpec, pg_bin_dirs: &[std::path::PathBuf]) -> Vec<Item> {
    let mut l = List {
        subject: &spec.name,
        items: Vec::new(),
    };
    if let Some(dir) = &spec.dir {
        match std::fs::read_dir(dir) {
            Ok(entries) => l.ok(
                "folder",
                format!("{} is readable ({} entries at the top)", dir.display(), entries.count()),
            ),
            Err(e) => l.fail(
                "folder",
                &Error::io_at("cannot read the folder", dir, &e).with_hint(
                    "check the path, and that the user running offsitedb may read it (a Docker volume: /var/lib/docker/volumes/NAME/_data, readable by root)",
                ),
            ),
        }
        return l.items;
    }
    let ci = &spec.conninfo;
    let target = ci.redacted();
    l.ok("address", target.clone());
    for n in &spec.notes {
        l.push("address", Status::Warn, n.clone(), None);
    }
    let after_net: Vec<&'static str> = ["tls", "login", "server", "pooler", "read", "write"]
        .into_iter()
        .chain(pitr_checks(spec))
        .collect();
    let after_net = after_net.as_slice();
    if !ci.is_unix_socket() {
        // Every host of a multi-host URL (libpq tries them in order): reachable when one is.
        let hosts: Vec<(String, u16)> = ci.hosts().into_iter().zip(ci.ports()).collect();
        let host = ci.host();
        let hint = provider::unreachable_hint(&hosts[0].0);
        let places = hosts
            .iter()
            .map(|(h, p)| format!("{h}:{p}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut addrs: Vec<SocketAddr> = Vec::new();
        let mut seen = Vec::new();
        let mut failed = None;
        for (h, p) in &hosts {
            match (h.as_str(), *p).to_socket_addrs() {
                Ok(a) => {
                    let a: Vec<SocketAddr> = a.collect();
                    seen.push(if h.parse::<std::net::IpAddr>().is_ok() {
                        format!("{h} is an IP address (no lookup)")
                    } else {
                        format!(
                            "{h} is {}",
                            a.iter()
                                .map(|x| x.ip().to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    });
                    addrs.extend(a);
                }
                Err(e) => failed = failed.or(Some(format!("{h} does not resolve: {e}"))),
            }
        }
        if addrs.is_empty() {
            l.fail(
                "dns",
                &Error::source_db(failed.unwrap_or_else(|| format!("{host} does not resolve")))
                    .with_hint(
                        hint.clone()
                            .unwrap_or_else(|| "check the host name in the URL".into()),
                    ),
            );
            l.skip(&["tcp"]);
            l.skip(after_net);
            return l.items;
        }
        l.ok("dns", seen.join("; "));
        let t = Instant::now();
        let Some(stream) = addrs
            .iter()
            .find_map(|a| TcpStream::connect_timeout(a, Duration::from_secs(10)).ok())
        else {
            l.fail(
                "tcp",
                &Error::source_db(format!("nothing answers on {places}")).with_hint(
                    hint.unwrap_or_else(|| {
                        "check the port, that the server runs, and that a firewall lets this machine in".into()
                    }),
                ),
            );
            l.skip(after_net);
            return l.items;
        };
        l.ok(
            "tcp",
            format!(
                "{places}{} answers ({} ms)",
                if hosts.len() > 1 { ": one" } else { "" },
                t.elapsed().as_millis()
            ),
        );
        let sslmode = ci.sslmode();
        match offers_tls(stream) {
            Ok(true) => l.ok("tls", format!("the server offers TLS; sslmode={sslmode}")),
            Ok(false) if matches!(sslmode.as_str(), "require" | "verify-ca" | "verify-full") => {
                l.fail(
                    "tls",
                    &Error::source_db(format!(
                        "the server does not offer TLS, and sslmode={sslmode} requires it"
                    ))
                    .with_hint("enable ssl on the server, or (on a private network only) set sslmode=disable"),
                );
                l.skip(&after_net[1..]);
                return l.items;
            }
            Ok(false) => l.warn(
                "tls",
                "the server does not offer TLS: the dump crosses the network unencrypted".into(),
                "enable ssl on the server when it is not on a private network",
            ),
            Err(e) => l.warn(
                "tls",
                format!("cannot tell whether the server offers TLS: {e}"),
                "the login step below shows whether connecting works",
            ),
        }
    }

    let mut client = match postgres::connect(ci, "the source database") {
        Ok(c) => c,
        Err(e) => {
            l.fail("login", &e);
            l.skip(&after_net[2..]);
            return l.items;
        }
    };
    l.ok("login", format!("logged in as {}", ci.user()));
    let mut major = None;
    match postgres::server_info(&mut client) {
        Ok(info) => {
            major = Some((info.major, info.version.clone()));
            let dirs = binaries::search_dirs(pg_bin_dirs);
            match binaries::pick(
                "pg_dump",
                info.major,
                &dirs,
                &format!("the server runs PostgreSQL {}", info.version),
            ) {
                Ok(p) => l.ok(
                    "server",
                    format!(
                        "PostgreSQL {}; pg_dump {} ({}) will be used",
                        info.version,
                        p.version,
                        p.path.display()
                    ),
                ),
                Err(e) => l.fail("server", &e),
            }
        }
        Err(e) => l.fail("server", &e),
    }
    match pooler::detect_pooler_within(ci, Duration::from_secs(15)) {
        Ok(pooler::Pooling::Session) => l.ok(
            "pooler",
            "one server session per connection (no pooler in transaction mode)".into(),
        ),
        Ok(pooler::Pooling::Pooled(evidence)) => {
            l.fail("pooler", &pooler::pooler_error(&target, &evidence))
        }
        Ok(pooler::Pooling::Unknown(why)) => l.warn(
            "pooler",
            format!("cannot tell whether a pooler is in front: {why}"),
            "if pg_dump fails, use the database's direct address",
        ),
        Err(e) => l.fail("pooler", &e),
    }

    privileges(&mut client, &mut l);
    pitr(&mut client, spec, major, pg_bin_dirs, &mut l);
    l.items
}

/// The point-in-time recovery lines of a database source.
fn pitr_checks(spec: &SourceSpec) -> Vec<&'static str> {
    match spec.policy.wal {
        WalMode::Push => vec![
            "replication",
            "wal_level",
            "archive_mode",
            "max_wal_senders",
            "tablespaces",
            "pg_basebackup",
        ],
        WalMode::Stream => vec![
            "replication",
            "wal_level",
            "max_wal_senders",
            "tablespaces",
            "pg_basebackup",
            "replication connection",
            "slot",
        ],
        WalMode::Off => vec!["pitr"],
    }
}

/// What base backups and the WAL archive need of the server and the role. With `wal = "push"`
/// each is a line (a failure is what `backup-push` would refuse, with the same fix); without,
/// one line that says what is missing, as information.
fn pitr(
    client: &mut ::postgres::Client,
    spec: &SourceSpec,
    major: Option<(u32, String)>,
    pg_bin_dirs: &[std::path::PathBuf],
    l: &mut List<'_>,
) {
    let r = match Replication::read(client) {
        Ok(r) => r,
        // Information only for a source that does not archive WAL.
        Err(e) if spec.policy.wal == WalMode::Off => {
            return l.warn(
                "pitr",
                e.message().to_string(),
                "nothing to do unless you want point-in-time recovery",
            );
        }
        Err(e) => {
            let checks = pitr_checks(spec);
            l.fail(checks[0], &e);
            l.skip(&checks[1..]);
            return;
        }
    };
    if spec.policy.wal == WalMode::Off {
        let missing: Vec<&str> = [
            (r.role_error().is_some(), "REPLICATION for the role"),
            (r.wal_level_error().is_some(), "wal_level = replica"),
            (r.archive_mode == "off", "archive_mode = on"),
            (r.senders_error().is_some(), "max_wal_senders above 0"),
            (r.tablespace_error().is_some(), "no tablespaces"),
        ]
        .into_iter()
        .filter_map(|(m, what)| m.then_some(what))
        .collect();
        l.ok(
            "pitr",
            format!(
                "point-in-time recovery is off (wal = \"push\" or wal = \"stream\" in the source's configuration turns it on); {}",
                if missing.is_empty() {
                    "the server and the role are ready for it".to_string()
                } else {
                    format!("it would also need {}", missing.join(", "))
                }
            ),
        );
        return;
    }
    match r.role_error() {
        None => l.ok(
            "replication",
            format!(
                "the role {} {}: base backups can connect",
                r.role,
                if r.superuser {
                    "is a superuser"
                } else {
                    "has REPLICATION"
                }
            ),
        ),
        Some(e) => l.fail("replication", &e),
    }
    match r.wal_level_error() {
        None => l.ok("wal_level", format!("wal_level is {}", r.wal_level)),
        Some(e) => l.fail("wal_level", &e),
    }
    if spec.policy.wal == WalMode::Push {
        archive_mode(&r, l);
    }
    senders_and_after(client, spec, &r, major, pg_bin_dirs, l);
}

fn archive_mode(r: &Replication, l: &mut List<'_>) {
    let archive_fix = "as a superuser: ALTER SYSTEM SET archive_mode = on; ALTER SYSTEM SET archive_command = 'offsitedb wal-push %p'; then restart the server (the README shows archive_command lines for each way to find the configuration)";
    match (r.archive_mode.as_str(), r.archive_command.as_deref()) {
        ("off", _) => l.fail(
            "archive_mode",
            &Error::source_db(
                "archive_mode is off: the server archives no WAL, so nothing can be restored past a base backup's end",
            )
            .with_hint(archive_fix),
        ),
        (mode, None) => l.ok(
            "archive_mode",
            format!("archive_mode is {mode} (archive_command is not readable by this role)"),
        ),
        (mode, Some(cmd)) if cmd.trim().is_empty() => l.fail(
            "archive_mode",
            &Error::source_db(format!(
                "archive_mode is {mode} and archive_command is empty: WAL piles up in pg_wal, waiting to be archived"
            ))
            .with_hint(
                "as a superuser: ALTER SYSTEM SET archive_command = 'offsitedb wal-push %p'; SELECT pg_reload_conf()",
            ),
        ),
        (mode, Some(cmd)) if !cmd.contains("wal-push") => l.warn(
            "archive_mode",
            format!("archive_mode is {mode}, and archive_command does not call offsitedb wal-push: {cmd}"),
            "as a superuser: ALTER SYSTEM SET archive_command = 'offsitedb wal-push %p'; SELECT pg_reload_conf()",
        ),
        (mode, Some(cmd)) => l.ok(
            "archive_mode",
            format!("archive_mode is {mode}; archive_command = {cmd}"),
        ),
    }
}

fn senders_and_after(
    client: &mut ::postgres::Client,
    spec: &SourceSpec,
    r: &Replication,
    major: Option<(u32, String)>,
    pg_bin_dirs: &[std::path::PathBuf],
    l: &mut List<'_>,
) {
    match r.senders_error() {
        None => l.ok(
            "max_wal_senders",
            format!("max_wal_senders is {}", r.max_wal_senders),
        ),
        Some(e) => l.fail("max_wal_senders", &e),
    }
    match r.tablespace_error() {
        None => l.ok(
            "tablespaces",
            "no tablespaces besides pg_default and pg_global".into(),
        ),
        Some(e) => l.fail("tablespaces", &e),
    }
    match &major {
        Some((major, version)) => match binaries::pick(
            "pg_basebackup",
            *major,
            &binaries::search_dirs(pg_bin_dirs),
            &format!("the server runs PostgreSQL {version}"),
        ) {
            Ok(p) => l.ok(
                "pg_basebackup",
                format!(
                    "pg_basebackup {} ({}) will be used",
                    p.version,
                    p.path.display()
                ),
            ),
            Err(e) => l.fail("pg_basebackup", &e),
        },
        None => l.skip(&["pg_basebackup"]),
    }
    if spec.policy.wal == WalMode::Stream {
        stream(client, spec, r, major.map(|(m, _)| m), pg_bin_dirs, l);
    }
}

/// `wal = "stream"`: a replication connection works (pg_hba.conf, the platform), and the slot.
fn stream(
    client: &mut ::postgres::Client,
    spec: &SourceSpec,
    r: &Replication,
    major: Option<u32>,
    pg_bin_dirs: &[std::path::PathBuf],
    l: &mut List<'_>,
) {
    use crate::ops::wal_stream::{self, server};
    let slot = &spec.policy.stream.slot;
    match (major, r.role_error()) {
        (Some(m), None) => match wal_stream::probe(&spec.conninfo, m, pg_bin_dirs, client) {
            Ok(()) => l.ok(
                "replication connection",
                "a replication connection works: wal-stream can receive the WAL".into(),
            ),
            Err(e) => l.fail("replication connection", &e),
        },
        _ => l.skip(&["replication connection"]),
    }
    match server::positions(client, slot) {
        Ok(p) => match p.retained() {
            Some(bytes) if bytes > spec.policy.stream.slot_max => l.warn(
                "slot",
                format!(
                    "the replication slot {slot} holds back {} of WAL on the server, over wal_slot_max ({})",
                    crate::units::bytes(bytes),
                    crate::units::bytes(spec.policy.stream.slot_max)
                ),
                &format!(
                    "start the stream (offsitedb wal-stream, or serve) so it catches up; {}",
                    server::drop_hint(slot)
                ),
            ),
            Some(bytes) => l.ok(
                "slot",
                format!(
                    "the replication slot {slot} exists and holds back {} of WAL",
                    crate::units::bytes(bytes)
                ),
            ),
            None if p.wal_status.is_some() || p.active => {
                l.ok("slot", format!("the replication slot {slot} exists"))
            }
            None => l.ok(
                "slot",
                format!("the replication slot {slot} does not exist yet: wal-stream creates it"),
            ),
        },
        Err(e) => l.fail("slot", &e),
    }
}

/// Sends PostgreSQL's SSLRequest: the server answers `S` (TLS) or `N`.
fn offers_tls(mut s: TcpStream) -> std::io::Result<bool> {
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)?;
    match b[0] {
        b'S' => Ok(true),
        b'N' => Ok(false),
        other => Err(std::io::Error::other(format!(
            "unexpected answer {other:#04x}: is this a PostgreSQL server?"
        ))),
    }
}

const USER_RELATIONS: &str = "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'm', 'S', 'f')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'";

/// Every table and sequence readable (pg_dump reads them all); a warning when the role can
/// change anything.
fn privileges(client: &mut ::postgres::Client, l: &mut List<'_>) {
    let unreadable = client.query(
        &format!(
            "SELECT format('%I.%I', n.nspname, c.relname) {USER_RELATIONS}
               AND NOT (has_schema_privilege(n.oid, 'USAGE')
                        AND CASE WHEN c.relkind = 'S' THEN has_sequence_privilege(c.oid, 'SELECT')
                                 ELSE has_table_privilege(c.oid, 'SELECT') END)
             ORDER BY 1"
        ),
        &[],
    );
    match unreadable {
        Ok(rows) if rows.is_empty() => {
            l.ok("read", "the role can read every table and sequence".into())
        }
        Ok(rows) => {
            let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            let shown = if names.len() > 20 {
                format!("{} and {} more", names[..20].join(", "), names.len() - 20)
            } else {
                names.join(", ")
            };
            l.fail(
                "read",
                &Error::source_db(format!(
                    "the role cannot read {} relation{}: {shown}",
                    names.len(),
                    if names.len() == 1 { "" } else { "s" }
                ))
                .with_hint(
                    "grant SELECT on them (PostgreSQL 14+: GRANT pg_read_all_data TO the role); offsitedb role-sql prints a read-only backup role",
                ),
            );
        }
        Err(e) => l.fail(
            "read",
            &postgres::client::query_error("cannot list the relations", &e),
        ),
    }
    match Role::read(client) {
        Ok(role) => {
            row_security(client, &role, l);
            large_objects(client, &role, l);
        }
        Err(e) => {
            l.fail("rls", &e);
            l.skip(&["large-objects"]);
        }
    }
    let writes = client.query_one(
        &format!(
            "SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
                    (SELECT count(*) {USER_RELATIONS} AND c.relkind IN ('r', 'p')
                       AND (has_table_privilege(c.oid, 'INSERT') OR has_table_privilege(c.oid, 'UPDATE')
                            OR has_table_privilege(c.oid, 'DELETE') OR has_table_privilege(c.oid, 'TRUNCATE')))"
        ),
        &[],
    );
    match writes {
        Ok(r) => {
            let superuser: bool = r.get(0);
            let writable: i64 = r.get(1);
            if superuser {
                l.warn(
                    "write",
                    "the role is a superuser: it can change anything".into(),
                    "a read-only role is enough for backups: offsitedb role-sql prints one",
                );
            } else if writable > 0 {
                l.warn(
                    "write",
                    format!("the role can change {writable} table(s)"),
                    "a read-only role is enough for backups: offsitedb role-sql prints one",
                );
            } else {
                l.ok(
                    "write",
                    "the role cannot change any table (read-only)".into(),
                );
            }
        }
        Err(e) => l.fail(
            "write",
            &postgres::client::query_error("cannot check write privileges", &e),
        ),
    }
}

/// The role the check logged in as, and what decides what it may read whatever the grants.
struct Role {
    name: String,
    superuser: bool,
    bypassrls: bool,
    /// `lo_compat_privileges` in its sessions (a superuser may set it for the role).
    lo_compat: bool,
    /// The server's major version.
    major: u32,
}

impl Role {
    fn read(client: &mut ::postgres::Client) -> Result<Role, Error> {
        let r = client
            .query_one(
                "SELECT current_user::text, rolsuper, rolbypassrls,
                        current_setting('lo_compat_privileges') = 'on',
                        current_setting('server_version_num')::int4 / 10000
                   FROM pg_catalog.pg_roles WHERE rolname = current_user",
                &[],
            )
            .map_err(|e| postgres::client::query_error("cannot read the role's attributes", &e))?;
        Ok(Role {
            name: r.get(0),
            superuser: r.get(1),
            bypassrls: r.get(2),
            lo_compat: r.get(3),
            major: r.get::<_, i32>(4) as u32,
        })
    }
}

/// "a, b, c and 3 more"
fn some(names: &[String], at_most: usize) -> String {
    if names.len() > at_most {
        format!(
            "{} and {} more",
            names[..at_most].join(", "),
            names.len() - at_most
        )
    } else {
        names.join(", ")
    }
}

fn plural(n: i64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Tables pg_dump would refuse: it turns row security off, and the server then fails any query
/// that the table's policies would filter. They apply to a role without BYPASSRLS (a superuser
/// has it) on a table with row security enabled, unless the role owns the table (has the owner's
/// privileges) and the table does not FORCE row security on its owner. Only tables whose rows
/// pg_dump copies count: plain tables and partitions (a partitioned table's own policies do not
/// apply when pg_dump copies each partition), not an extension's own tables.
fn row_security(client: &mut ::postgres::Client, role: &Role, l: &mut List<'_>) {
    if role.superuser || role.bypassrls {
        l.ok(
            "rls",
            format!(
                "the role {} row-level security policies",
                if role.superuser {
                    "is a superuser: it reads past"
                } else {
                    "has BYPASSRLS: it reads past"
                }
            ),
        );
        return;
    }
    let hidden = client.query(
        &format!(
            "SELECT format('%I.%I', n.nspname, c.relname), pg_has_role(c.relowner, 'USAGE')
               {USER_RELATIONS}
               AND c.relkind = 'r' AND c.relrowsecurity
               AND (c.relforcerowsecurity OR NOT pg_has_role(c.relowner, 'USAGE'))
               AND NOT EXISTS (
                   SELECT 1 FROM pg_catalog.pg_depend d
                    WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
                      AND d.deptype = 'e'
                      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension x
                                       WHERE c.oid = ANY (x.extconfig)))
             ORDER BY 1"
        ),
        &[],
    );
    match hidden {
        Ok(rows) if rows.is_empty() => l.ok(
            "rls",
            "no row-level security policy applies to the role".into(),
        ),
        Ok(rows) => {
            let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            let owned: Vec<String> = rows
                .iter()
                .filter(|r| r.get::<_, bool>(1))
                .map(|r| r.get(0))
                .collect();
            let mut fix = crate::ops::role_sql::bypassrls_fix(&role.name);
            if !owned.is_empty() {
                fix.push_str(&format!(
                    "; or, for a table the role owns, ALTER TABLE {} NO FORCE ROW LEVEL SECURITY",
                    owned[0]
                ));
            }
            l.fail(
                "rls",
                &Error::source_db(format!(
                    "row-level security policies apply to the role on {}, and pg_dump refuses such tables: {}{}",
                    plural(names.len() as i64, "table", "tables"),
                    some(&names, 20),
                    if owned.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (the role owns {}, and FORCE ROW LEVEL SECURITY holds the owner to the policies too)",
                            some(&owned, 5)
                        )
                    }
                ))
                .with_hint(fix),
            );
        }
        Err(e) => l.fail(
            "rls",
            &postgres::client::query_error("cannot check row-level security", &e),
        ),
    }
}

/// Large objects: pg_dump opens each, and fails on the first the role may not read. Readable
/// means: a superuser, or `lo_compat_privileges` on, or SELECT in the object's ACL (its default:
/// the owner's) for PUBLIC or a role whose privileges the role has. PostgreSQL 18 computes that
/// itself (has_largeobject_privilege); before 18 the ACL is read here the same way.
fn large_objects(client: &mut ::postgres::Client, role: &Role, l: &mut List<'_>) {
    const CHECK: &str = "large-objects";
    let readable = if role.superuser || role.lo_compat {
        "true"
    } else if role.major >= 18 {
        "pg_catalog.has_largeobject_privilege(m.oid, 'SELECT')"
    } else {
        "EXISTS (SELECT 1 FROM pg_catalog.aclexplode(
                     coalesce(m.lomacl, pg_catalog.acldefault('L', m.lomowner))) a
                  WHERE a.privilege_type = 'SELECT'
                    AND (a.grantee = 0 OR pg_catalog.pg_has_role(a.grantee, 'USAGE')))"
    };
    let counted = client.query_one(
        &format!(
            "SELECT count(*), count(*) FILTER (WHERE NOT r),
                    array_to_string((array_agg(oid ORDER BY oid) FILTER (WHERE NOT r))[1:5], ', ')
               FROM (SELECT m.oid, {readable} AS r
                       FROM pg_catalog.pg_largeobject_metadata m) x"
        ),
        &[],
    );
    let (total, unreadable, first): (i64, i64, Option<String>) = match counted {
        Ok(r) => (r.get(0), r.get(1), r.get(2)),
        Err(e) => {
            l.fail(
                CHECK,
                &postgres::client::query_error("cannot check the large objects", &e),
            );
            return;
        }
    };
    if unreadable > 0 {
        l.fail(
            CHECK,
            &Error::source_db(format!(
                "the role cannot read {} (of {total}), and pg_dump stops at the first: {}{}",
                plural(unreadable, "large object", "large objects"),
                first.unwrap_or_default(),
                if unreadable > 5 { ", ..." } else { "" }
            ))
            .with_hint(crate::ops::role_sql::large_object_fix(&role.name)),
        );
        return;
    }
    let all = format!(
        "the role can read the database's {}",
        plural(total, "large object", "large objects")
    );
    if total == 0 {
        return l.ok(CHECK, "the database has no large objects".into());
    }
    if role.superuser || role.lo_compat {
        let why = if role.superuser {
            "a superuser"
        } else {
            "lo_compat_privileges is on: it could change them too"
        };
        return l.ok(CHECK, format!("{all} ({why})"));
    }
    // The owners of today's large objects will likely create more. What the role owns (or
    // acts for) it reads; what others create it reads only through default privileges (18+).
    let defaults = if role.major >= 18 {
        "AND NOT EXISTS (
             SELECT 1 FROM pg_catalog.pg_default_acl d, pg_catalog.aclexplode(d.defaclacl) a
              WHERE d.defaclobjtype = 'L' AND d.defaclrole = m.lomowner
                AND d.defaclnamespace = 0 AND a.privilege_type = 'SELECT'
                AND (a.grantee = 0 OR pg_catalog.pg_has_role(a.grantee, 'USAGE')))"
    } else {
        ""
    };
    let uncovered = client.query_one(
        &format!(
            "SELECT string_agg(DISTINCT o.rolname::text, ', ' ORDER BY o.rolname::text),
                    string_agg(DISTINCT quote_ident(o.rolname), ', ')
               FROM pg_catalog.pg_largeobject_metadata m
               JOIN pg_catalog.pg_roles o ON o.oid = m.lomowner
              WHERE NOT pg_catalog.pg_has_role(m.lomowner, 'USAGE') {defaults}"
        ),
        &[],
    );
    let (owners, quoted): (Option<String>, Option<String>) = match uncovered {
        Ok(row) => (row.get(0), row.get(1)),
        Err(e) => {
            return l.fail(
                CHECK,
                &postgres::client::query_error("cannot read the large objects' owners", &e),
            );
        }
    };
    let (Some(owners), Some(quoted)) = (owners, quoted) else {
        return l.ok(
            CHECK,
            if role.major >= 18 {
                format!("{all}, and default privileges cover the ones their owners create later")
            } else {
                format!("{all} (it owns them, as it will the ones it creates)")
            },
        );
    };
    let r = crate::ops::role_sql::ident(&role.name);
    if role.major < 18 {
        l.warn(
            CHECK,
            format!(
                "{all}, but PostgreSQL {} has no default privileges for large objects: the ones {owners} create later are unreadable until granted, and backups fail until then",
                role.major
            ),
            &format!(
                "after large objects are added, grant again as a superuser or their owner: {} (e.g. before each backup); or, as a superuser, ALTER ROLE {r} SET lo_compat_privileges = on, which lifts every large-object privilege check for that role",
                crate::ops::role_sql::large_object_grant(&role.name)
            ),
        );
    } else {
        l.warn(
            CHECK,
            format!(
                "{all}, but the ones {owners} create later will not be readable (no default privileges for the role)"
            ),
            &format!(
                "as a superuser: ALTER DEFAULT PRIVILEGES FOR ROLE {quoted} GRANT SELECT ON LARGE OBJECTS TO {r} (offsitedb role-sql prints it)"
            ),
        );
    }
}

/// Checks the repository: the store answers every operation a backup and a prune use, and the
/// key is the repository's.
pub fn repository(settings: &Settings, note: &mut dyn FnMut(String)) -> Vec<Item> {
    let mut l = List {
        subject: "repository",
        items: Vec::new(),
    };
    let store = match settings.open_store() {
        Ok(s) => s,
        Err(e) => {
            l.fail("store", &e);
            l.skip(&["write", "read", "list", "delete", "lock", "key"]);
            return l.items;
        }
    };
    let loc = store.location();
    let mut nonce = [0u8; 8];
    let _ = getrandom::fill(&mut nonce);
    let key = format!("probes/check-{}", crate::units::hex(&nonce));
    let body = format!("offsitedb check {}", crate::units::hex(&nonce));
    if let Err(e) = store.put(&key, body.as_bytes()) {
        l.fail("write", &e);
        l.skip(&["read", "list", "delete", "lock", "key"]);
        return l.items;
    }
    l.ok("write", format!("wrote {key} in {loc}"));
    match store.get_small(&key, 4096) {
        Ok(b) if b == body.as_bytes() => l.ok("read", "read it back, unchanged".into()),
        Ok(_) => l.fail(
            "read",
            &Error::storage("the probe object came back changed")
                .with_hint("check the store (a proxy or a cache rewriting objects?)"),
        ),
        Err(e) => l.fail("read", &e),
    }
    match store.list("probes/") {
        Ok(objs) if objs.iter().any(|o| o.key == key) => l.ok("list", "listing finds it".into()),
        Ok(_) => l.fail(
            "list",
            &Error::storage("the listing does not show the probe object").with_hint(
                "the credentials need the list permission (s3:ListBucket) on the bucket",
            ),
        ),
        Err(e) => l.fail("list", &e),
    }
    match store.delete(&key) {
        Ok(()) => l.ok("delete", "deleted it (prune can remove old snapshots)".into()),
        Err(e) => l.fail(
            "delete",
            &Error::new(e.kind(), e.message().to_string()).with_hint(
                if settings.object_lock().ok().flatten().is_some() {
                    "with object_lock set, prune deletes object versions: it needs s3:ListBucketVersions and s3:DeleteObjectVersion; without them no retention works"
                } else {
                    "prune needs the delete permission (s3:DeleteObject; B2: deleteFiles); without it no retention works"
                },
            ),
        ),
    }
    l.items
        .extend(super::check_lock::items(settings, store.object_lock()));
    match settings.master_key(note) {
        Err(e) => l.fail("key", &e),
        Ok(k) => {
            let id = k.id().to_string();
            match Repository::open(store, k) {
                Ok(_) => l.ok("key", format!("the key (id {id}) opens the repository")),
                Err(e) if e.kind() == ErrorKind::NotFound => l.ok(
                    "key",
                    format!(
                        "no repository yet: the first backup creates it with this key (id {id})"
                    ),
                ),
                Err(e) => l.fail("key", &e),
            }
        }
    }
    l.items
}

/// Where the settings come from: the configuration file (and how it was found), and for an S3
/// repository where its credentials come from. Never fails: a missing file is fine.
pub fn configuration(settings: &Settings) -> Vec<Item> {
    let mut l = List {
        subject: "configuration",
        items: Vec::new(),
    };
    l.ok("file", settings.describe_file());
    // Where the history, the alert state and the sources' locks are: every run on this machine
    // (the daemon's and a command typed by hand) must find the same folder.
    if let Ok(at @ crate::state::StateAt::Postgres(_)) = settings.state_at() {
        match at.open().and_then(|st| st.workers()) {
            Ok(w) => l.ok(
                "shared state",
                format!(
                    "{} (a fleet: run history, alert state, leases; {} worker{} recorded)",
                    at.describe(),
                    w.len(),
                    if w.len() == 1 { "" } else { "s" }
                ),
            ),
            Err(e) => l.fail("shared state", &e),
        }
    }
    match settings.state_path() {
        Ok(p) => {
            let mut fallback = None;
            match settings.lock_dir(&mut |w| fallback = Some(w)) {
                Ok(_) if fallback.is_none() => l.ok(
                    "state",
                    format!(
                        "{} (run history, alert state; locks beside it): every run of a source on this machine must use this folder to see the others",
                        p.display()
                    ),
                ),
                Ok(_) => l.warn(
                    "state",
                    fallback.unwrap_or_default(),
                    "set path under [state] in the configuration (or OFFSITEDB_STATE_DIR) to a folder this user can write",
                ),
                Err(e) => l.fail("state", &e),
            }
        }
        Err(e) => l.warn(
            "state",
            e.message().to_string(),
            "set path under [state] in the configuration (or OFFSITEDB_STATE_DIR)",
        ),
    }
    if let Ok(crate::storage::Location::S3(_)) = settings.location() {
        match settings.aws() {
            Ok(a) => match a.credentials_from {
                Some(from) => l.ok("s3 keys", format!("from {from}")),
                None => l.fail(
                    "s3 keys",
                    &Error::config("no S3 credentials found").with_hint(
                        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (~/.aws/credentials), or access_key_id and secret_access_key under [repository]",
                    ),
                ),
            },
            Err(e) => l.fail("s3 keys", &e),
        }
    }
    l.items
}
