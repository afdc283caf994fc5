/*!
`offsitedb role-sql`: the SQL for a read-only backup role that can read everything a backup reads,
for the server's version.

PostgreSQL 14 and later have `pg_read_all_data` (SELECT on every table, view and sequence, USAGE
on every schema, now and in the future). Before 14, or when only some schemas are to be backed
up, the role gets USAGE and SELECT per schema, and default privileges so that tables the
database's owners create later are readable too. Two things no table grant covers, and on which
pg_dump fails: large objects (SELECT on each existing one; on 18 default privileges for new ones,
before 18 nothing can, which `check` warns about), and tables with row-level security (pg_dump
refuses a table whose policies would hide rows: BYPASSRLS). Either way the role logs in, reads,
and cannot write: its transactions are read-only by default and it owns nothing.

The fixes `check` and `backup` print for these failures come from here, so they say the same.
*/

use crate::config::SourceSpec;
use crate::error::{Error, Result};

#[derive(Clone, Debug)]
pub struct RoleSpec {
    pub role: String,
    /// Only these schemas (default: all).
    pub schemas: Vec<String>,
    /// The server's major version.
    pub major: u32,
    /// The database, for `GRANT CONNECT`.
    pub database: Option<String>,
    pub password: String,
    /// The roles that own the database's relations or large objects, and its owner: default
    /// privileges are set for what they create later. Empty when unknown (not connected): then
    /// for what the role running the script creates, with a comment.
    pub owners: Vec<String>,
    /// How many large objects the database has now (`None`: not connected).
    pub large_objects: Option<i64>,
}

/// The role for the server of a configured source: its version (unless `major` overrides it),
/// its database, its schemas (before 14, when none are given), the owners of what it holds.
pub fn for_source(
    source: &SourceSpec,
    role: String,
    schemas: Vec<String>,
    major: Option<u32>,
) -> Result<RoleSpec> {
    if source.kind() == crate::catalog::SourceKind::Directory {
        return Err(Error::config(format!(
            "source {:?} is a folder: it has no database role",
            source.name
        )));
    }
    let mut client = crate::postgres::connect(&source.conninfo, "the source database")?;
    let info = crate::postgres::server_info(&mut client)?;
    let major = major.unwrap_or(info.major);
    let mut schemas: Vec<String> = schemas.into_iter().filter(|s| !s.is_empty()).collect();
    if major < 14 && schemas.is_empty() {
        // No pg_read_all_data: every schema the database has gets its grants.
        schemas = schemas_of(&mut client)?;
    }
    let q = |e: &postgres::Error| crate::postgres::client::query_error("cannot list the owners", e);
    let owners = client
        .query(
            "SELECT DISTINCT r.rolname::text FROM (
                 SELECT c.relowner AS o FROM pg_catalog.pg_class c
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.relkind IN ('r', 'p', 'S', 'm', 'f', 'v')
                    AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                    AND n.nspname NOT LIKE 'pg\\_%'
                 UNION SELECT lomowner FROM pg_catalog.pg_largeobject_metadata
                 UNION SELECT datdba FROM pg_catalog.pg_database WHERE datname = current_database()
             ) x JOIN pg_catalog.pg_roles r ON r.oid = x.o
             WHERE r.rolname <> $1 ORDER BY 1",
            &[&role],
        )
        .map_err(|e| q(&e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let large_objects: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_largeobject_metadata",
            &[],
        )
        .map_err(|e| q(&e))?
        .get(0);
    Ok(RoleSpec {
        role,
        schemas,
        major,
        database: Some(info.database),
        password: generate_password()?,
        owners,
        large_objects: Some(large_objects),
    })
}

/// The role for a server of version `major`, without connecting.
pub fn offline(role: String, schemas: Vec<String>, major: u32) -> Result<RoleSpec> {
    Ok(RoleSpec {
        role,
        schemas: schemas.into_iter().filter(|s| !s.is_empty()).collect(),
        major,
        database: None,
        password: generate_password()?,
        owners: Vec::new(),
        large_objects: None,
    })
}

/// A fresh password: 24 characters from an unambiguous alphabet (about 137 bits).
pub fn generate_password() -> Result<String> {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut out = String::with_capacity(24);
    while out.len() < 24 {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).map_err(|e| Error::internal(format!("random: {e}")))?;
        // Rejection sampling keeps every character equally likely.
        for x in b {
            let limit = 256 - (256 % ALPHABET.len());
            if (x as usize) < limit && out.len() < 24 {
                out.push(ALPHABET[x as usize % ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}

/// The database's own schemas (not the system's).
pub fn schemas_of(client: &mut postgres::Client) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT nspname::text FROM pg_namespace
             WHERE nspname NOT IN ('pg_catalog', 'information_schema')
               AND nspname NOT LIKE 'pg\\_%' ORDER BY 1",
            &[],
        )
        .map_err(|e| crate::postgres::client::query_error("cannot list the schemas", &e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// `name` quoted as an SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `body` between dollar quotes whose tag it does not contain.
fn dollar_quoted(body: &str) -> String {
    let mut tag = "$g$".to_string();
    let mut n = 0;
    while body.contains(&tag) {
        n += 1;
        tag = format!("$g{n}$");
    }
    format!("{tag}{body}{tag}")
}

/// One statement that grants `role` SELECT on every large object the user running it may grant
/// on (a superuser: all; otherwise those of the roles it acts for).
pub fn large_object_grant(role: &str) -> String {
    format!(
        "DO {};",
        dollar_quoted(&format!(
            "DECLARE o oid; BEGIN FOR o IN SELECT oid FROM pg_catalog.pg_largeobject_metadata \
             WHERE pg_catalog.pg_has_role(lomowner, 'USAGE') LOOP \
             EXECUTE format('GRANT SELECT ON LARGE OBJECT %s TO %I', o, {}); END LOOP; END",
            literal(role)
        ))
    )
}

/// The fix for large objects the role cannot read: `check` and `backup` say the same.
pub fn large_object_fix(role: &str) -> String {
    format!(
        "grant the role SELECT on them, as a superuser or their owner: {} (offsitedb role-sql \
         prints it, with what keeps new ones readable); or, as a superuser, ALTER ROLE {} SET \
         lo_compat_privileges = on, which lifts every large-object privilege check for that role",
        large_object_grant(role),
        ident(role)
    )
}

/// The fix for tables whose row-level security applies to the role.
pub fn bypassrls_fix(role: &str) -> String {
    format!(
        "as a superuser: ALTER ROLE {} BYPASSRLS (it reads past the policies and still writes nothing)",
        ident(role)
    )
}

/// The fix for a table, sequence or schema the role cannot read.
pub fn grant_fix(role: &str, kind: &str, name: &str) -> String {
    let r = ident(role);
    let grant = match kind {
        "schema" => format!("GRANT USAGE ON SCHEMA {name} TO {r}"),
        "sequence" => format!("GRANT SELECT ON SEQUENCE {name} TO {r}"),
        _ => format!("GRANT SELECT ON {name} TO {r}"),
    };
    format!(
        "{grant} (PostgreSQL 14+: GRANT pg_read_all_data TO {r} reads every table and sequence); offsitedb role-sql prints a read-only backup role"
    )
}

pub fn sql(spec: &RoleSpec) -> Result<String> {
    if spec.role.is_empty() || spec.role.len() > 63 {
        return Err(Error::config("the role name must be 1 to 63 characters"));
    }
    let r = ident(&spec.role);
    // Default privileges apply to what these roles create later.
    let (for_roles, for_note) = if spec.owners.is_empty() {
        (
            String::new(),
            "-- These cover what the role running this script creates; run them again with\n\
             -- FOR ROLE <owner> for every role that will create more.\n",
        )
    } else {
        (
            format!(
                " FOR ROLE {}",
                spec.owners
                    .iter()
                    .map(|o| ident(o))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "-- These cover what the database's owners create later; add FOR ROLE <role> for any\n\
             -- other role that will.\n",
        )
    };
    let mut s = format!(
        "-- A read-only role for OffsiteDB backups (PostgreSQL {}).\n\
         -- Run as a superuser, e.g.: psql \"$ADMIN_URL\" -v ON_ERROR_STOP=1 -f backup-role.sql\n\
         -- The password appears in the server log if it logs DDL: then set it with \\password.\n\
         -- Keep the password in your secret store; the backup URL is then\n\
         --   postgres://{}:PASSWORD@HOST:5432/{}\n\n\
         CREATE ROLE {r} LOGIN PASSWORD {};\n\
         -- Its transactions are read-only unless it asks otherwise (pg_dump reads only).\n\
         ALTER ROLE {r} SET default_transaction_read_only = on;\n\
         -- pg_dump reads every row and refuses a table whose row-level security policies would\n\
         -- hide some; BYPASSRLS lets the role read past them (it still writes nothing). Setting\n\
         -- it takes a superuser.\n\
         ALTER ROLE {r} BYPASSRLS;\n",
        spec.major,
        spec.role,
        spec.database.as_deref().unwrap_or("DBNAME"),
        literal(&spec.password),
    );
    if let Some(db) = &spec.database {
        s.push_str(&format!(
            "GRANT CONNECT ON DATABASE {} TO {r};\n",
            ident(db)
        ));
    }
    if spec.major >= 14 && spec.schemas.is_empty() {
        s.push_str(&format!(
            "-- Read every table, view and sequence in every schema, including ones created later.\n\
             GRANT pg_read_all_data TO {r};\n"
        ));
    } else {
        let schemas: Vec<String> = if spec.schemas.is_empty() {
            s.push_str(
                "-- PostgreSQL before 14 has no pg_read_all_data: grants per schema. Add a block\n\
                 -- for every other schema the database has (\\dn in psql lists them).\n",
            );
            vec!["public".to_string()]
        } else {
            spec.schemas.clone()
        };
        s.push_str(&format!(
            "-- Default privileges make tables and sequences created later readable too.\n{for_note}"
        ));
        for schema in schemas {
            let n = ident(&schema);
            s.push_str(&format!(
                "\nGRANT USAGE ON SCHEMA {n} TO {r};\n\
                 GRANT SELECT ON ALL TABLES IN SCHEMA {n} TO {r};\n\
                 GRANT SELECT ON ALL SEQUENCES IN SCHEMA {n} TO {r};\n\
                 ALTER DEFAULT PRIVILEGES{for_roles} IN SCHEMA {n} GRANT SELECT ON TABLES TO {r};\n\
                 ALTER DEFAULT PRIVILEGES{for_roles} IN SCHEMA {n} GRANT SELECT ON SEQUENCES TO {r};\n"
            ));
        }
    }
    s.push_str(&large_objects(spec, &r, &for_roles, for_note));
    Ok(s)
}

/// Large objects: no table grant (nor pg_read_all_data) covers them, and pg_dump reads each.
fn large_objects(spec: &RoleSpec, r: &str, for_roles: &str, for_note: &str) -> String {
    let now = match spec.large_objects {
        Some(0) => "-- The database has none now.\n".to_string(),
        Some(1) => "-- The database has 1 now.\n".to_string(),
        Some(n) => format!("-- The database has {n} now.\n"),
        None => String::new(),
    };
    let block = format!(
        "\nDECLARE\n  o record;\n  skipped bigint := 0;\nBEGIN\n  \
         FOR o IN SELECT oid, lomowner FROM pg_catalog.pg_largeobject_metadata LOOP\n    \
         IF pg_catalog.pg_has_role(o.lomowner, 'USAGE') THEN\n      \
         EXECUTE format('GRANT SELECT ON LARGE OBJECT %s TO %I', o.oid, {});\n    \
         ELSE\n      skipped := skipped + 1;\n    END IF;\n  END LOOP;\n  \
         IF skipped > 0 THEN\n    \
         RAISE WARNING '% large objects belong to roles you are not a member of: run this again as a superuser or as their owner', skipped;\n  \
         END IF;\nEND\n",
        literal(&spec.role)
    );
    let mut s = format!(
        "\n-- Large objects: pg_dump reads every one, and no table grant covers them.\n{now}\
         -- SELECT on each existing one. Only a superuser or the object's owner may grant it: this\n\
         -- block grants what the user running it may, and warns about the rest.\n\
         DO {};\n",
        dollar_quoted(&block)
    );
    if spec.major >= 18 {
        s.push_str(&format!(
            "-- Large objects created later are readable too (PostgreSQL 18+).\n\
             {for_note}\
             ALTER DEFAULT PRIVILEGES{for_roles} GRANT SELECT ON LARGE OBJECTS TO {r};\n"
        ));
    } else {
        s.push_str(&format!(
            "-- PostgreSQL {} has no default privileges for large objects: each one created later\n\
             -- needs the grant again (run the block above again, e.g. before each backup; offsitedb\n\
             -- check warns while large objects exist, and fails when one is unreadable). Or, as a\n\
             -- superuser: ALTER ROLE {r} SET lo_compat_privileges = on, which turns every\n\
             -- large-object privilege check off for this role (it could then change them too).\n",
            spec.major
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(major: u32, schemas: &[&str]) -> RoleSpec {
        RoleSpec {
            role: "offsitedb_backup".into(),
            schemas: schemas.iter().map(|s| s.to_string()).collect(),
            major,
            database: Some("app".into()),
            password: "pw'x".into(),
            owners: vec!["app".into(), "etl".into()],
            large_objects: Some(3),
        }
    }

    #[test]
    fn by_version_and_schemas() {
        let s = sql(&spec(16, &[])).unwrap();
        assert!(
            s.contains("GRANT pg_read_all_data TO \"offsitedb_backup\";"),
            "{s}"
        );
        assert!(s.contains("PASSWORD 'pw''x'"), "{s}");
        assert!(s.contains("GRANT CONNECT ON DATABASE \"app\""), "{s}");
        assert!(s.contains("BYPASSRLS"), "{s}");
        assert!(!s.contains("ON ALL TABLES"), "{s}");
        let s = sql(&spec(13, &[])).unwrap();
        assert!(!s.contains("pg_read_all_data TO"), "{s}");
        assert!(
            s.contains("GRANT SELECT ON ALL TABLES IN SCHEMA \"public\""),
            "{s}"
        );
        // Tables the database's owners create later, not only the script runner's.
        assert!(
            s.contains("ALTER DEFAULT PRIVILEGES FOR ROLE \"app\", \"etl\" IN SCHEMA \"public\" GRANT SELECT ON TABLES"),
            "{s}"
        );
        let s = sql(&spec(16, &["sales", "we\"ird"])).unwrap();
        assert!(
            s.contains("SCHEMA \"sales\"") && s.contains("SCHEMA \"we\"\"ird\""),
            "{s}"
        );
        assert!(!s.contains("pg_read_all_data TO"), "{s}");
    }

    #[test]
    fn large_objects_by_version() {
        for major in [13, 15, 17, 18] {
            let s = sql(&spec(major, &[])).unwrap();
            assert!(
                s.contains("GRANT SELECT ON LARGE OBJECT %s TO %I', o.oid, 'offsitedb_backup'"),
                "{s}"
            );
            assert!(s.contains("-- The database has 3 now.\n"), "{s}");
            let defaults = "ALTER DEFAULT PRIVILEGES FOR ROLE \"app\", \"etl\" GRANT SELECT ON LARGE OBJECTS TO \"offsitedb_backup\";";
            assert_eq!(s.contains(defaults), major >= 18, "{major}: {s}");
            assert_eq!(
                s.contains("has no default privileges for large objects"),
                major < 18,
                "{s}"
            );
            // Read-only: nothing but SELECT is granted.
            assert!(!s.contains("UPDATE"), "{s}");
        }
        // Not connected: default privileges for the script's runner, and how to add others.
        let s = sql(&offline("b".into(), vec![], 18).unwrap()).unwrap();
        assert!(
            s.contains("ALTER DEFAULT PRIVILEGES GRANT SELECT ON LARGE OBJECTS TO \"b\";")
                && s.contains("FOR ROLE <owner>"),
            "{s}"
        );
    }

    #[test]
    fn dollar_quotes_never_end_early() {
        let g = large_object_grant("a$g$b'c");
        assert!(g.starts_with("DO $g1$") && g.ends_with("$g1$;"), "{g}");
        assert!(g.contains("'a$g$b''c'"), "{g}");
        let s = sql(&RoleSpec {
            role: "x$g$".into(),
            ..spec(18, &[])
        })
        .unwrap();
        assert!(s.contains("DO $g1$"), "{s}");
    }

    #[test]
    fn passwords_are_long_and_fresh() {
        let a = generate_password().unwrap();
        let b = generate_password().unwrap();
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
