/*!
Where a drill restores: a throwaway cluster of the source's major version (tuned for restore
speed, unix socket only), or a temporary database on a scratch server (`--drill-server`), dropped
afterwards unless `--keep`. Also what the target must have before anything is restored: the
extensions the dump creates (named with their package when missing) and, in a throwaway
cluster, the roles that own objects (created without login).
*/

use crate::catalog::drill::TableCheck;
use crate::catalog::{Manifest, SnapshotId};
use crate::cluster::{Cluster, ClusterOptions};
use crate::error::{Error, Result};
use crate::postgres::{self, ConnInfo, binaries, client};
use crate::storage::WriteStore;

use super::{Attempt, Ctx, Restored};

/// The throwaway cluster's server programs (`initdb`, `postgres`) of the source's major, or an
/// error saying how to get them.
pub(super) fn check_server_programs(m: &Manifest, dirs: &[std::path::PathBuf]) -> Result<()> {
    binaries::server_dir(Some(m.server.major), dirs).map_err(|e| {
        e.context(format!(
            "a drill restores into a throwaway PostgreSQL {} (the source's version)",
            m.server.major
        ))
        .with_hint(format!(
            "install the PostgreSQL {} server (apt-get install postgresql-{}), list its bin directory in \
             OFFSITEDB_PG_BIN_DIRS, or drill on a scratch server with --drill-server URL",
            m.server.major, m.server.major
        ))
    })?;
    Ok(())
}

/// Connections a throwaway cluster must accept for `jobs`: the loaders, the verifiers and
/// post-data's `pg_restore -j` can all be open at once, plus pg_restore's leader and ours.
fn max_connections(jobs: usize) -> u32 {
    (3 * jobs + 10).max(30) as u32
}

impl<S: WriteStore + ?Sized> Ctx<'_, S> {
    /// An empty result naming the drill's target.
    pub(super) fn restored(&self, cluster: Option<&Cluster>) -> Restored {
        Restored {
            target_label: match &self.opts.drill_server {
                Some(ci) => ci.redacted(),
                None => "throwaway cluster".to_string(),
            },
            server_version: cluster
                .map(|c| c.version().version.clone())
                .unwrap_or_default(),
            ..Restored::default()
        }
    }

    /// The throwaway cluster (None with --drill-server). It runs until dropped, and dies with
    /// the thread that started it (PR_SET_PDEATHSIG): call this on the drill's own thread.
    pub(super) fn start_cluster(&self) -> Result<Option<Cluster>> {
        if self.opts.drill_server.is_some() {
            return Ok(None);
        }
        Cluster::start(&ClusterOptions {
            major: Some(self.m.server.major),
            bin_dirs: self.opts.pg_bin_dirs.clone(),
            tuned_for_restore: true,
            parent_dir: Some(self.work.to_path_buf()),
            max_connections: Some(max_connections(self.jobs)),
            ..Default::default()
        })
        .map(Some)
    }

    /// The database to restore into, checked and with the roles the archive names (`extensions`
    /// and `owners`: what the archive itself names, beside the manifest's).
    pub(super) fn ready_target(
        &self,
        cluster: Option<&Cluster>,
        extensions: &[String],
        owners: &[String],
        notes: &mut Vec<String>,
    ) -> Result<Ready> {
        let (scratch, target, server_version) = self.prepare_target(cluster, notes)?;
        self.before_restore(cluster, &target, &server_version, extensions, owners, notes)?;
        Ok(Ready {
            scratch,
            target,
            server_version,
        })
    }

    /// A restore that ran to its end, with what it found. With --keep the scratch database
    /// stays.
    pub(super) fn done(
        &self,
        mut restored: Restored,
        ready: &mut Ready,
        tables: Vec<TableCheck>,
        problems: Vec<String>,
        mut notes: Vec<String>,
    ) -> Attempt {
        self.keep_scratch(&mut ready.scratch, &mut notes);
        restored.tables = tables;
        restored.problems = problems;
        restored.notes = notes;
        Attempt::Done(restored)
    }

    /// The database to restore into: the source's name in the throwaway cluster, or a
    /// temporary database on the drill server (dropped when the guard is).
    fn prepare_target(
        &self,
        cluster: Option<&Cluster>,
        notes: &mut Vec<String>,
    ) -> Result<(Option<ScratchDb>, ConnInfo, String)> {
        let m = self.m;
        match (&self.opts.drill_server, cluster) {
            (Some(admin), _) => {
                let db = format!(
                    "offsitedb_drill_{}",
                    SnapshotId::new(self.started)?
                        .as_str()
                        .to_lowercase()
                        .replace('-', "_")
                );
                let mut c = postgres::connect(admin, "the drill server")?;
                let info = postgres::server_info(&mut c)?;
                if info.major != m.server.major {
                    notes.push(format!(
                        "the drill server runs PostgreSQL {}, the source ran {}",
                        info.version, m.server.version
                    ));
                }
                c.batch_execute(&create_database_sql(&db, m)).map_err(|e| {
                    let err = client::query_error("cannot create the drill database", &e);
                    if e.code() == Some(&::postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) {
                        err.with_hint(format!(
                            "the drill server's role needs CREATEDB (ALTER ROLE {} CREATEDB), or \
                             leave out --drill-server to drill in a throwaway cluster",
                            quote_ident(&admin.user())
                        ))
                    } else {
                        err
                    }
                })?;
                Ok((
                    Some(ScratchDb {
                        admin: admin.clone(),
                        name: db.clone(),
                        keep: false,
                    }),
                    admin.with_dbname(&db),
                    info.version,
                ))
            }
            (None, Some(cl)) => {
                let mut db = m.source.database.clone();
                // Every new cluster has these (managed servers often name the app's database
                // `postgres`): the drill restores under another name, which nothing in the dump names.
                if matches!(db.as_str(), "postgres" | "template0" | "template1") {
                    db = format!("offsitedb_drill_{db}");
                    notes.push(format!(
                        "restored as {db}: a new cluster already has a database named {}",
                        m.source.database
                    ));
                }
                cl.execute("postgres", &create_database_sql(&db, m))?;
                Ok((None, cl.conninfo(&db), cl.version().version.clone()))
            }
            (None, None) => Err(Error::internal("a drill needs a cluster or a drill server")),
        }
    }

    /// With --keep, the scratch database of a drill that ran to its end stays (one dropped
    /// for a fallback must not, or the second attempt could not create it).
    fn keep_scratch(&self, scratch: &mut Option<ScratchDb>, notes: &mut Vec<String>) {
        if let Some(db) = scratch.as_mut().filter(|_| self.opts.keep) {
            db.keep = true;
            notes.push(format!(
                "the drill database {} is kept on the drill server (drop it with DROP DATABASE {})",
                db.name,
                quote_ident(&db.name)
            ));
        }
    }

    /// Checks and roles before anything is restored, with what the archive itself names.
    fn before_restore(
        &self,
        cluster: Option<&Cluster>,
        target: &ConnInfo,
        server_version: &str,
        extensions: &[String],
        owners: &[String],
        notes: &mut Vec<String>,
    ) -> Result<()> {
        // Extensions the drill target lacks: the drill cannot prove anything until they are there.
        check_extensions(target, self.m, extensions, server_version)?;
        if let Some(cl) = cluster {
            create_owner_roles(cl, self.m, owners, notes);
        }
        notes.push(
            "restored with --no-owner --no-privileges: a drill proves data, not grants".to_string(),
        );
        Ok(())
    }
}

pub(super) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

pub(super) fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn create_database_sql(db: &str, m: &Manifest) -> String {
    let enc = &m.verification.session.client_encoding;
    let mut sql = format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(db));
    if !enc.is_empty() {
        // With the C locale any server encoding is allowed: the drill database stores text in
        // the source's encoding, so nothing is converted on the way in or out.
        sql.push_str(&format!(
            " ENCODING {} LC_COLLATE 'C' LC_CTYPE 'C'",
            quote_literal(enc)
        ));
    }
    sql
}

/// The database a restore goes into, ready for it.
pub(super) struct Ready {
    /// The temporary database on the drill server, dropped with this (None in a cluster).
    pub scratch: Option<ScratchDb>,
    pub target: ConnInfo,
    pub server_version: String,
}

pub(super) struct ScratchDb {
    admin: ConnInfo,
    name: String,
    keep: bool,
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if let Ok(mut c) = postgres::connect(&self.admin, "the drill server") {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(&self.name)
            ));
        }
    }
}

/// Fails when the drill target lacks an extension the dump creates, naming it and its package.
fn check_extensions(
    target: &ConnInfo,
    m: &Manifest,
    in_archive: &[String],
    server_version: &str,
) -> Result<()> {
    let mut wanted: Vec<String> = m.verification.extensions.clone();
    wanted.extend(in_archive.iter().cloned());
    wanted.sort();
    wanted.dedup();
    if wanted.is_empty() {
        return Ok(());
    }
    let mut c = postgres::connect(target, "the drill database")?;
    let available: std::collections::HashSet<String> = c
        .query("SELECT name::text FROM pg_available_extensions", &[])
        .map_err(|e| client::query_error("cannot list the available extensions", &e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let missing: Vec<&String> = wanted.iter().filter(|e| !available.contains(*e)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let major = major_of(server_version);
    let names: Vec<String> = missing.iter().map(|e| format!("{e:?}")).collect();
    let packages: Vec<String> = missing
        .iter()
        .map(|e| extension_package(e, major))
        .collect();
    Err(Error::tool(format!(
        "the drill server (PostgreSQL {server_version}) lacks the extension{} {} that snapshot {}/{} needs",
        if missing.len() == 1 { "" } else { "s" },
        names.join(", "),
        m.source.name,
        m.snapshot_id
    ))
    .with_hint(format!(
        "install {} for PostgreSQL {major} where the drill runs, or drill on a server that has it (--drill-server URL)",
        packages.join(", ")
    )))
}

pub(super) fn major_of(version: &str) -> u32 {
    version
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The extensions PostgreSQL ships in contrib.
const CONTRIB: &[&str] = &[
    "adminpack",
    "amcheck",
    "autoinc",
    "bloom",
    "btree_gin",
    "btree_gist",
    "citext",
    "cube",
    "dblink",
    "dict_int",
    "dict_xsyn",
    "earthdistance",
    "file_fdw",
    "fuzzystrmatch",
    "hstore",
    "insert_username",
    "intagg",
    "intarray",
    "isn",
    "lo",
    "ltree",
    "moddatetime",
    "pageinspect",
    "pg_buffercache",
    "pg_freespacemap",
    "pg_prewarm",
    "pg_stat_statements",
    "pg_surgery",
    "pg_trgm",
    "pg_visibility",
    "pg_walinspect",
    "pgcrypto",
    "pgrowlocks",
    "pgstattuple",
    "postgres_fdw",
    "refint",
    "seg",
    "sslinfo",
    "tablefunc",
    "tcn",
    "tsm_system_rows",
    "tsm_system_time",
    "unaccent",
    "uuid-ossp",
    "xml2",
];

/// The Debian/Ubuntu package (apt.postgresql.org) that provides an extension.
pub fn extension_package(ext: &str, major: u32) -> String {
    if CONTRIB.contains(&ext) {
        return format!(
            "the contrib modules (postgresql-contrib; on Debian part of postgresql-{major})"
        );
    }
    let pkg = match ext {
        "postgis"
        | "postgis_raster"
        | "postgis_topology"
        | "postgis_sfcgal"
        | "postgis_tiger_geocoder"
        | "address_standardizer" => format!("postgresql-{major}-postgis-3"),
        "vector" => format!("postgresql-{major}-pgvector"),
        "timescaledb" => format!("timescaledb-2-postgresql-{major} (packagecloud.io/timescale)"),
        "pg_cron" => format!("postgresql-{major}-cron"),
        "pgaudit" => format!("postgresql-{major}-pgaudit"),
        "pg_partman" => format!("postgresql-{major}-partman"),
        "pg_repack" => format!("postgresql-{major}-repack"),
        "hypopg" => format!("postgresql-{major}-hypopg"),
        "pgrouting" => format!("postgresql-{major}-pgrouting"),
        "h3" | "h3_postgis" => format!("postgresql-{major}-h3"),
        "orafce" => format!("postgresql-{major}-orafce"),
        "pg_hint_plan" => format!("postgresql-{major}-pg-hint-plan"),
        "hll" => format!("postgresql-{major}-hll"),
        "plv8" => format!("postgresql-{major}-plv8"),
        "plpython3u" => format!("postgresql-plpython3-{major}"),
        "plperl" | "plperlu" => format!("postgresql-plperl-{major}"),
        "pltcl" | "pltclu" => format!("postgresql-pltcl-{major}"),
        other => format!(
            "postgresql-{major}-{} (or whatever package provides the {other} extension)",
            other.replace('_', "-")
        ),
    };
    format!("{pkg} (extension {ext})")
}

/// In a throwaway cluster, the roles that own objects exist as NOLOGIN roles, so statements
/// that name them (policies, for instance) restore. Owners themselves are not restored.
fn create_owner_roles(cl: &Cluster, m: &Manifest, in_archive: &[String], notes: &mut Vec<String>) {
    let mut owners: Vec<String> = m.verification.owners.clone();
    owners.extend(in_archive.iter().cloned());
    owners.sort();
    owners.dedup();
    owners.retain(|o| o != crate::cluster::SUPERUSER && !o.is_empty());
    if owners.is_empty() {
        return;
    }
    let sql: String = owners
        .iter()
        .map(|o| {
            format!(
                "DO $$BEGIN CREATE ROLE {} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END$$;",
                quote_ident(o)
            )
        })
        .collect();
    if cl.execute("postgres", &sql).is_ok() {
        notes.push(format!(
            "roles of the dump created in the drill cluster (without login): {}",
            owners.join(", ")
        ));
    }
}
