//! `offsitedb role-sql`: the SQL for a read-only backup role, for the server's version.

use anyhow::Result;
use offsitedb::config::SourceKind;
use offsitedb::{Error, ops};

use super::{Global, SourceArgs};
use crate::output;

/// Print the SQL for a read-only backup role, for the server's version
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A configured source or a database URL (same as --source): its server decides the SQL
    #[arg(value_name = "SOURCE", conflicts_with = "source")]
    pub positional: Option<String>,
    #[command(flatten)]
    pub source: SourceArgs,
    /// The role's name
    #[arg(long, default_value = "offsitedb_backup")]
    pub role: String,
    /// Only these schemas, comma-separated (default: all)
    #[arg(long, value_delimiter = ',')]
    pub schemas: Vec<String>,
    /// The server's major version, without connecting (e.g. 13)
    #[arg(long, value_name = "N")]
    pub major: Option<u32>,
}

pub fn run(a: Args, g: &Global) -> Result<()> {
    let s = g.settings()?;
    let source = a.source.or_positional(a.positional);
    let mut schemas: Vec<String> = a.schemas.into_iter().filter(|s| !s.is_empty()).collect();
    let offline = a.major.is_some() && source.source.is_none() && source.name.is_none();
    let (major, database) = if offline {
        (a.major.expect("checked"), None)
    } else {
        let spec = s.one_source(&source.selection(), "role-sql").map_err(|e| {
            if s.file.sources.is_empty() && source.source.is_none() {
                Error::config("which server is the role for?").with_hint(
                    "give its URL (offsitedb role-sql --source postgres://ADMIN@HOST/DB), or its version: --major 16",
                )
            } else {
                e
            }
        })?;
        if spec.kind() == SourceKind::Directory {
            return Err(Error::config(format!(
                "source {:?} is a folder: it has no database role",
                spec.name
            ))
            .into());
        }
        let mut client = offsitedb::postgres::connect(&spec.conninfo, "the source database")?;
        let info = offsitedb::postgres::server_info(&mut client)?;
        let major = a.major.unwrap_or(info.major);
        if major < 14 && schemas.is_empty() {
            // No pg_read_all_data: every schema the database has gets its grants.
            schemas = ops::role_sql::schemas_of(&mut client)?;
        }
        (major, Some(info.database))
    };
    let spec = ops::role_sql::RoleSpec {
        role: a.role,
        schemas,
        major,
        database,
        password: ops::role_sql::generate_password()?,
    };
    let sql = ops::role_sql::sql(&spec)?;
    if g.json {
        return super::print_json(&serde_json::json!({
            "role": spec.role,
            "major": spec.major,
            "database": spec.database,
            "schemas": spec.schemas,
            "sql": sql,
        }));
    }
    output::stdout_write(sql.as_bytes());
    Ok(())
}
