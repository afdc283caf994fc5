//! `offsitedb role-sql`: the SQL for a read-only backup role, for the server's version.

use anyhow::Result;
use offsitedb::{Error, ops};

use super::{Global, SourceOrPositional};
use crate::output;

/// Print the SQL for a read-only backup role, for the server's version
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub source: SourceOrPositional,
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
    let source = a.source.get();
    let offline = source.source.is_none() && source.name.is_none();
    let spec = match (a.major, offline) {
        (Some(m), true) => ops::role_sql::offline(a.role, a.schemas, m)?,
        _ => {
            let spec = s.one_source(&source.selection(), "role-sql").map_err(|e| {
                if s.file.sources.is_empty() && offline {
                    Error::config("which server is the role for?").with_hint(
                        "give its URL (offsitedb role-sql --source postgres://ADMIN@HOST/DB), or its version: --major 16",
                    )
                } else {
                    e
                }
            })?;
            ops::role_sql::for_source(&spec, a.role, a.schemas, a.major)?
        }
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
