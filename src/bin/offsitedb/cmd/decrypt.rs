//! `offsitedb decrypt`: a snapshot's artifact as stored, decrypted (a standard .dump.gz).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Result;
use offsitedb::{Error, ops, units};

use super::{Global, SourceArgs};
use crate::output;

/// Write a snapshot's artifact, unencrypted (.dump.gz or .dump.zst), for pg_restore
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Snapshot id, a unique prefix of one, or "latest"
    pub snapshot: String,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Output file (default: standard output)
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Replace an existing output file
    #[arg(long)]
    pub force: bool,
}

#[derive(serde::Serialize)]
struct Written<'a> {
    source: &'a str,
    snapshot: &'a str,
    file: String,
    bytes: u64,
    compression: String,
    sha256: &'a str,
}

pub fn run(a: Args, g: &Global) -> Result<()> {
    let s = g.settings()?;
    let name = a.source.name_filter(&s)?;
    let repo = super::open_read(&s)?;
    let entry = repo.resolve(&a.snapshot, name.as_deref())?;
    match a.output {
        Some(path) => {
            let m = ops::decrypt::run(
                &repo,
                &entry,
                ops::decrypt::Output::File {
                    path: &path,
                    force: a.force,
                },
            )?;
            if g.json {
                return super::print_json(&Written {
                    source: &m.source.name,
                    snapshot: m.snapshot_id.as_str(),
                    file: path.display().to_string(),
                    bytes: m.sizes.compressed_bytes,
                    compression: m.compression.to_string(),
                    sha256: &m.data.sha256_compressed,
                });
            }
            output::info(&format!(
                "wrote {} ({}, {}), verified against the manifest",
                path.display(),
                units::bytes(m.sizes.compressed_bytes),
                m.compression
            ));
        }
        None => {
            if g.json {
                return Err(Error::config(
                    "--json needs -o FILE: standard output carries the archive",
                )
                .into());
            }
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                return Err(Error::config("refusing to write a binary archive to the terminal")
                    .with_hint("pass -o FILE, or pipe it: offsitedb decrypt latest | gunzip | pg_restore -d URL")
                    .into());
            }
            let mut lock = stdout.lock();
            ops::decrypt::run(&repo, &entry, ops::decrypt::Output::Stream(&mut lock))?;
            lock.flush()
                .map_err(|e| Error::from_io(e, "cannot write to standard output"))?;
        }
    }
    Ok(())
}
