//! `offsitedb keygen`: a new master key.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Result;
use offsitedb::Error;
use offsitedb::crypto::MasterKey;

use super::Global;
use crate::output::{self, warn};

/// Create a new master key
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Write the key to this file (mode 0600; never overwrites). Default: standard output
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Also print a paper copy: the key in hex lines with a checksum each, to keep in a safe
    /// and type back with `offsitedb key import -o FILE`
    #[arg(long)]
    pub paper: bool,
}

pub fn run(a: Args, g: &Global) -> Result<()> {
    let k = MasterKey::generate()?;
    if a.paper {
        if g.json {
            return Err(Error::config(
                "--paper prints the key for a person; it has no --json form",
            )
            .into());
        }
        if let Some(path) = &a.output {
            k.write_new_file(path)?;
            output::info(&format!(
                "wrote a new master key to {} (key id {}); its paper copy follows",
                path.display(),
                k.id()
            ));
        }
        output::stdout_write(offsitedb::ops::key::paper::render(&k).as_bytes());
        output::info(
            "print it and keep it somewhere safe; type it back with: offsitedb key import -o FILE",
        );
        return Ok(());
    }
    match a.output {
        Some(path) => {
            k.write_new_file(&path)?;
            if g.json {
                return super::print_json(&serde_json::json!({
                    "key_id": k.id().to_string(),
                    "file": path.display().to_string(),
                }));
            }
            output::info(&format!(
                "wrote a new master key to {} (key id {})",
                path.display(),
                k.id()
            ));
            output::info(
                "keep a copy somewhere other than the backup bucket: without it no backup can be restored",
            );
        }
        None => {
            if g.json {
                return Err(Error::config(
                    "--json needs -o FILE: the key itself is never printed as JSON",
                )
                .into());
            }
            if std::io::stdout().is_terminal() {
                warn("printing a secret key to the terminal; prefer `offsitedb keygen -o FILE`");
            }
            output::stdout_write(k.to_file_text().as_bytes());
        }
    }
    Ok(())
}
