//! Backup roles (issue 15): the role `role-sql` prints reads everything a backup reads, on
//! PostgreSQL 13, 15 and 18, in a database with two schemas, tables, sequences, large objects,
//! and tables under row-level security (forced, on a partitioned table, on a partition). Where
//! a role lacks something, `check` fails naming what and the fix, and pg_dump then fails too:
//! every case runs both and asserts they agree.

use std::path::PathBuf;

use serde_json::Value;

use crate::common::{Cli, Run, Source, keygen};
use crate::drill::{join_dirs, npm_server, pypi_18, source};

/// The application's database, owned by `app`, built as `app` (so `app` owns every table and
/// large object, like an application's migrations would).
const APP_SQL: &str = "
    SET ROLE app;
    CREATE SCHEMA sales;
    CREATE TABLE public.customers (id serial PRIMARY KEY, name text NOT NULL, photo oid);
    INSERT INTO customers (name, photo)
      SELECT 'customer ' || g, lo_from_bytea(0, convert_to(repeat('photo ' || g, 500), 'UTF8'))
        FROM generate_series(1, 3) g;
    CREATE SEQUENCE sales.invoice_no START 1000;
    SELECT nextval('sales.invoice_no');
    CREATE TABLE sales.orders (id bigserial PRIMARY KEY, customer int, total numeric);
    INSERT INTO sales.orders (customer, total) SELECT g % 3 + 1, g * 1.5 FROM generate_series(1, 200) g;
    -- Row-level security, forced on the owner too.
    CREATE TABLE sales.notes (id int, author text, body text);
    INSERT INTO sales.notes SELECT g, 'user' || g % 4, 'note ' || g FROM generate_series(1, 40) g;
    ALTER TABLE sales.notes ENABLE ROW LEVEL SECURITY;
    ALTER TABLE sales.notes FORCE ROW LEVEL SECURITY;
    CREATE POLICY own ON sales.notes USING (author = current_user);
    -- A partitioned table whose own policies pg_dump never meets (it copies each partition),
    -- and a partition with policies of its own (none: every row hidden from non-owners).
    CREATE TABLE public.events (id int, kind text) PARTITION BY LIST (kind);
    CREATE TABLE public.events_a PARTITION OF public.events FOR VALUES IN ('a');
    CREATE TABLE public.events_b PARTITION OF public.events FOR VALUES IN ('b');
    INSERT INTO public.events SELECT g, CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END
      FROM generate_series(1, 30) g;
    ALTER TABLE public.events ENABLE ROW LEVEL SECURITY;
    ALTER TABLE public.events FORCE ROW LEVEL SECURITY;
    CREATE POLICY nothing ON public.events USING (false);
    ALTER TABLE public.events_b ENABLE ROW LEVEL SECURITY;
    RESET ROLE;";

struct Fixture {
    src: Source,
    dir: tempfile::TempDir,
    key: PathBuf,
    cli: Cli,
}

impl Fixture {
    fn new(major: u32) -> Fixture {
        // Debian's pg_dump 15 serves 13 and 15, PyPI's 18 serves 18: both archive formats.
        let dirs = vec![npm_server(major), pypi_18()];
        let src = source(major, &dirs);
        src.cluster
            .execute(
                "postgres",
                "CREATE ROLE app LOGIN PASSWORD 'app-pw'; CREATE ROLE etl LOGIN PASSWORD 'etl-pw'",
            )
            .unwrap();
        src.create_db("app", "");
        src.cluster
            .execute("postgres", "ALTER DATABASE app OWNER TO app")
            .unwrap();
        src.cluster.execute("app", APP_SQL).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let key = keygen(dir.path(), "master.key");
        let cli = Cli::new()
            .cwd(dir.path())
            .env("OFFSITEDB_PG_BIN_DIRS", &join_dirs(&dirs));
        let f = Fixture { src, dir, key, cli };
        f.use_url(&f.src.url("app"));
        f
    }

    /// Configures source `app` at `url`.
    fn use_url(&self, url: &str) {
        std::fs::write(
            self.dir.path().join("offsitedb.toml"),
            format!(
                "[repository]\nurl = \"{}\"\nkey_file = \"{}\"\n\n[[source]]\nname = \"app\"\nurl = \"{url}\"\n",
                self.dir.path().join("repo").display(),
                self.key.display()
            ),
        )
        .unwrap();
    }

    fn url(&self, user: &str, password: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/app",
            self.src.cluster.port()
        )
    }

    /// `role-sql` for `role`, applied by the superuser; returns the role's URL and the SQL.
    fn role_sql(&self, role: &str, edit: impl Fn(&str) -> String) -> (String, String) {
        self.use_url(&self.src.url("app"));
        let sql = self.cli.ok(&["role-sql", "--role", role]).stdout;
        self.src.cluster.execute("app", &edit(&sql)).unwrap();
        let password = sql
            .split("PASSWORD '")
            .nth(1)
            .and_then(|r| r.split('\'').next())
            .unwrap()
            .to_string();
        (self.url(role, &password), sql)
    }

    fn sql(&self, sql: &str) {
        self.src.cluster.execute("app", sql).unwrap();
    }

    /// `check --json`'s items and exit code, then `backup`: asserts they agree (both pass, or
    /// both fail), and returns the items and the backup's run.
    fn verdicts(&self, url: &str) -> (bool, Vec<Value>, Run) {
        self.use_url(url);
        let r = self.cli.run(&["check", "--json"]);
        let items: Vec<Value> = serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}\n{}", r.stdout, r.stderr));
        let backup = self.cli.run(&["backup", "--json"]);
        assert_eq!(
            r.code == 0,
            backup.code == 0,
            "check and backup disagree: check exit {}:\n{items:#?}\nbackup exit {}:\n{}",
            r.code,
            backup.code,
            backup.stderr
        );
        (r.code == 0, items, backup)
    }

    /// Both pass; returns check's items and the snapshot's id.
    fn both_pass(&self, url: &str) -> (Vec<Value>, String) {
        let (ok, items, backup) = self.verdicts(url);
        assert!(ok, "{items:#?}\n{}", backup.stderr);
        let snapshot: Value = serde_json::from_str(&backup.stdout).unwrap();
        (items, snapshot["id"].as_str().unwrap().to_string())
    }

    /// Both fail: check at `check` (the only failure), the backup with one error line (exit 5)
    /// holding `backup_needle`. Returns check's failed item and the backup's stderr.
    fn both_fail(&self, url: &str, check: &str, backup_needle: &str) -> (Value, String) {
        let (ok, items, _) = self.verdicts(url);
        assert!(!ok);
        let failed: Vec<&Value> = items.iter().filter(|i| i["status"] == "fail").collect();
        assert_eq!(failed.len(), 1, "{items:#?}");
        assert_eq!(failed[0]["check"], check, "{items:#?}");
        // Again through `fails`, which holds the message to one error line and one hint.
        let r = self.cli.fails(&["backup"], 5, backup_needle);
        (failed[0].clone(), r.stderr)
    }

    /// A snapshot's drill: passed, with `rows` restored rows per "schema.name".
    fn drill_has(&self, snapshot: &str, rows: &[(&str, u64)]) {
        let r = self.cli.ok(&["drill", snapshot, "--json"]);
        let d: Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(d["result"], "passed", "{d:#}");
        for (name, n) in rows {
            let t = d["tables"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| {
                    format!(
                        "{}.{}",
                        t["schema"].as_str().unwrap(),
                        t["name"].as_str().unwrap()
                    ) == *name
                })
                .unwrap_or_else(|| panic!("no {name} in {d:#}"));
            assert_eq!(t["restored_rows"], *n, "{name}: {d:#}");
        }
    }
}

fn item<'a>(items: &'a [Value], check: &str) -> &'a Value {
    items
        .iter()
        .find(|i| i["subject"] == "app" && i["check"] == check)
        .unwrap_or_else(|| panic!("no {check} in {items:#?}"))
}

fn text(v: &Value, field: &str) -> String {
    v[field].as_str().unwrap_or("").to_string()
}

/// The tables a failed "rls" item names (after the last ": ", before any " (").
fn rls_tables(failed: &Value) -> Vec<String> {
    let detail = text(failed, "detail");
    let list = detail.split(": ").nth(1).unwrap();
    let list = list.split(" (").next().unwrap();
    list.split(", ").map(str::to_string).collect()
}

/// The `DO` statement a fix carries, to run it as the superuser would.
fn grant_in(fix: &str) -> String {
    let start = fix.find("DO $g$").expect(fix);
    let end = fix[start + 6..].find("$g$;").expect(fix) + start + 10;
    fix[start..end].to_string()
}

fn roles(major: u32) {
    let f = Fixture::new(major);
    let lo = "pg_catalog.pg_largeobject";

    // The role role-sql prints, applied by the superuser: check passes, the backup passes, and
    // the drill finds every large object and every row behind the policies.
    let (bk, sql) = f.role_sql("offsitedb_backup", str::to_string);
    assert_eq!(
        sql.contains("ON LARGE OBJECTS TO \"offsitedb_backup\""),
        major >= 18,
        "{sql}"
    );
    let (items, id) = f.both_pass(&bk);
    for c in ["read", "rls", "write"] {
        assert_eq!(item(&items, c)["status"], "ok", "{c}: {items:#?}");
    }
    let los = item(&items, "large-objects");
    if major >= 18 {
        assert_eq!(los["status"], "ok", "{items:#?}");
        assert!(
            text(los, "detail").contains("default privileges cover"),
            "{los:#}"
        );
    } else {
        // Readable today; the ones created later will not be: said, with the fix.
        assert_eq!(los["status"], "warn", "{items:#?}");
        assert!(
            text(los, "detail").contains("no default privileges for large objects"),
            "{los:#}"
        );
        assert!(
            text(los, "fix").contains("GRANT SELECT ON LARGE OBJECT"),
            "{los:#}"
        );
    }
    f.drill_has(
        &id,
        &[
            (lo, 3),
            ("sales.notes", 40),
            ("public.events_a", 15),
            ("public.events_b", 15),
            ("sales.orders", 200),
        ],
    );

    // The application adds a large object and a table after role-sql ran. On 18 the default
    // privileges cover both; before 18 the table is covered and the large object is not, and
    // check and backup both say which and how to fix it.
    f.sql("SET ROLE app; SELECT lo_from_bytea(0, 'added later'); CREATE TABLE sales.later AS SELECT 1 AS x; RESET ROLE");
    let id = if major >= 18 {
        f.both_pass(&bk).1
    } else {
        let (failed, stderr) = f.both_fail(&bk, "large-objects", "large object");
        assert!(
            text(&failed, "detail").starts_with("the role cannot read 1 large object (of 4)"),
            "{failed:#}"
        );
        let fix = text(&failed, "fix");
        assert!(
            stderr.contains(&format!("hint: {fix}")),
            "the same fix:\n{stderr}\n{fix}"
        );
        f.sql(&grant_in(&fix));
        f.both_pass(&bk).1
    };
    f.drill_has(&id, &[(lo, 4), ("sales.later", 1)]);

    // A role that owns no default privileges (etl) adds one: unreadable on every version until
    // granted; on 18 check then says its next ones need default privileges, and that fix holds.
    f.sql("SET ROLE etl; SELECT lo_from_bytea(0, 'from etl'); RESET ROLE");
    let (failed, stderr) = f.both_fail(&bk, "large-objects", "large object");
    assert!(
        text(&failed, "detail").contains("cannot read 1 large object (of 5)"),
        "{failed:#}"
    );
    let fix = text(&failed, "fix");
    assert!(stderr.contains(&format!("hint: {fix}")), "{stderr}");
    f.sql(&grant_in(&fix));
    let (items, id) = f.both_pass(&bk);
    if major >= 18 {
        let los = item(&items, "large-objects");
        assert_eq!(los["status"], "warn", "{items:#?}");
        assert!(
            text(los, "detail").contains("the ones etl create later"),
            "{los:#}"
        );
        let fix = text(los, "fix");
        let stmt = fix
            .split("as a superuser: ")
            .nth(1)
            .unwrap()
            .split(" (")
            .next()
            .unwrap();
        assert_eq!(
            stmt,
            "ALTER DEFAULT PRIVILEGES FOR ROLE etl GRANT SELECT ON LARGE OBJECTS TO \"offsitedb_backup\""
        );
        f.sql(stmt);
        f.sql("SET ROLE etl; SELECT lo_from_bytea(0, 'from etl, later'); RESET ROLE");
        let (items, id) = f.both_pass(&bk);
        assert_eq!(item(&items, "large-objects")["status"], "ok", "{items:#?}");
        f.drill_has(&id, &[(lo, 6)]);
    } else {
        f.drill_has(&id, &[(lo, 5)]);
    }

    // A table another role (etl) creates: pg_read_all_data (14+) covers it, the per-schema
    // grants and default privileges of 13 do not (they are for the owners role-sql saw).
    f.sql("GRANT USAGE, CREATE ON SCHEMA sales TO etl; SET ROLE etl; CREATE TABLE sales.etl_runs AS SELECT 1 AS id; RESET ROLE");
    if major >= 14 {
        f.both_pass(&bk);
    } else {
        let (failed, stderr) = f.both_fail(&bk, "read", "table sales.etl_runs");
        assert!(
            text(&failed, "detail").contains("cannot read 1 relation: sales.etl_runs"),
            "{failed:#}"
        );
        let hint = stderr.split("hint: ").nth(1).unwrap();
        assert!(
            hint.starts_with("GRANT SELECT ON sales.etl_runs TO \"offsitedb_backup\" ("),
            "{stderr}"
        );
        f.sql(hint.split(" (").next().unwrap());
        f.both_pass(&bk);
    }
    f.sql("SET ROLE etl; DROP TABLE sales.etl_runs; RESET ROLE");

    // Without BYPASSRLS: the tables whose policies apply are named (the forced one, the
    // partition; not the partitioned table), and the backup names the one pg_dump met.
    f.sql("ALTER ROLE offsitedb_backup NOBYPASSRLS");
    let (failed, stderr) = f.both_fail(&bk, "rls", "row-level security");
    assert_eq!(
        rls_tables(&failed),
        ["public.events_b", "sales.notes"],
        "{failed:#}"
    );
    assert!(
        text(&failed, "fix").contains("ALTER ROLE \"offsitedb_backup\" BYPASSRLS"),
        "{failed:#}"
    );
    assert!(
        stderr.contains("pg_dump cannot read table public.events_b")
            || stderr.contains("pg_dump cannot read table sales.notes"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: as a superuser: ALTER ROLE \"offsitedb_backup\" BYPASSRLS"),
        "{stderr}"
    );
    f.sql("ALTER ROLE offsitedb_backup BYPASSRLS");
    f.both_pass(&bk);

    // The owner as the backup role: owners pass their tables' policies unless FORCEd, and a
    // partitioned table's own policies never meet pg_dump.
    let owner = f.url("app", "app-pw");
    f.sql("SET ROLE etl; SELECT lo_unlink(oid) FROM pg_largeobject_metadata WHERE lomowner = 'etl'::regrole; RESET ROLE");
    let (failed, stderr) = f.both_fail(&owner, "rls", "sales.notes");
    assert_eq!(rls_tables(&failed), ["sales.notes"], "{failed:#}");
    assert!(
        text(&failed, "fix").contains("NO FORCE ROW LEVEL SECURITY"),
        "{failed:#}"
    );
    assert!(
        stderr.contains("ALTER TABLE sales.notes NO FORCE ROW LEVEL SECURITY"),
        "{stderr}"
    );
    f.sql("ALTER TABLE sales.notes NO FORCE ROW LEVEL SECURITY");
    let (items, _) = f.both_pass(&owner);
    // It owns every large object, and will own the ones it creates: no warning.
    let los = item(&items, "large-objects");
    assert_eq!(los["status"], "ok", "{items:#?}");
    f.sql("ALTER TABLE sales.notes FORCE ROW LEVEL SECURITY");

    // The user's report: a role made from role-sql without the large-object grant. check no
    // longer says OK: it fails, counting them, as the backup does.
    let (partial, _) = f.role_sql("partial", |sql| {
        let start = sql.find("DO $g$").unwrap();
        let end = sql[start..].find("$g$;").unwrap() + start + 4;
        format!("{}{}", &sql[..start], &sql[end..])
    });
    let (failed, stderr) = f.both_fail(&partial, "large-objects", "large object");
    assert!(
        text(&failed, "detail").starts_with("the role cannot read 4 large objects (of 4)"),
        "{failed:#}"
    );
    assert!(
        stderr.contains("GRANT SELECT ON LARGE OBJECT %s TO %I', o, 'partial'"),
        "{stderr}"
    );
}

#[test]
fn the_backup_role_reads_everything_on_13() {
    roles(13);
}

#[test]
fn the_backup_role_reads_everything_on_15() {
    roles(15);
}

#[test]
fn the_backup_role_reads_everything_on_18() {
    roles(18);
}
