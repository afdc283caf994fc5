/*!
`offsitedb role-sql`: the SQL for a read-only backup role, for the server's version.

PostgreSQL 14 and later have `pg_read_all_data` (SELECT on every table, view and sequence, USAGE
on every schema, now and in the future). Before 14, or when only some schemas are to be backed
up, the role gets USAGE and SELECT per schema, and default privileges so that tables created
later are readable too. Either way the role logs in, reads, and cannot write: its transactions
are read-only by default and it owns nothing.
*/

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
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

pub fn sql(spec: &RoleSpec) -> Result<String> {
    if spec.role.is_empty() || spec.role.len() > 63 {
        return Err(Error::config("the role name must be 1 to 63 characters"));
    }
    let r = ident(&spec.role);
    let mut s = format!(
        "-- A read-only role for OffsiteDB backups (PostgreSQL {}).\n\
         -- Run as a superuser, e.g.: psql \"$ADMIN_URL\" -f backup-role.sql\n\
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
        for schema in schemas {
            let n = ident(&schema);
            s.push_str(&format!(
                "\nGRANT USAGE ON SCHEMA {n} TO {r};\n\
                 GRANT SELECT ON ALL TABLES IN SCHEMA {n} TO {r};\n\
                 GRANT SELECT ON ALL SEQUENCES IN SCHEMA {n} TO {r};\n\
                 -- Tables created later by the role running this script are readable too; run\n\
                 -- these again with FOR ROLE <owner> for tables other roles will create.\n\
                 ALTER DEFAULT PRIVILEGES IN SCHEMA {n} GRANT SELECT ON TABLES TO {r};\n\
                 ALTER DEFAULT PRIVILEGES IN SCHEMA {n} GRANT SELECT ON SEQUENCES TO {r};\n"
            ));
        }
    }
    s.push_str(
        "\n-- Large objects (if the database has any) need: GRANT SELECT ON LARGE OBJECT <oid> TO\n\
         -- the role for each, or lo_compat_privileges = on on the server.\n",
    );
    Ok(s)
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
        let s = sql(&spec(16, &["sales", "we\"ird"])).unwrap();
        assert!(
            s.contains("SCHEMA \"sales\"") && s.contains("SCHEMA \"we\"\"ird\""),
            "{s}"
        );
        assert!(!s.contains("pg_read_all_data TO"), "{s}");
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
