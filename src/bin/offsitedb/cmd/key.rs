//! `offsitedb key verify|rotate|import|rewrap`: the repository's keys (the work is in
//! `offsitedb::ops::key`).

use std::io::Read;
use std::path::PathBuf;

use anyhow::Result;
use offsitedb::Error;
use offsitedb::config::Settings;
use offsitedb::ops::key::{self, paper, rewrap};
use offsitedb::storage::ReadStore;

use super::Global;
use crate::output::{self, outln, warn};

/// Verify, rotate, type back and re-seal the repository's keys
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Prove that a key file (an offline copy) opens every object of the repository: give it
    /// with --key-file FILE
    Verify(VerifyArgs),
    /// Make a new current key: writes a key file holding it and the older keys, and records
    /// the rotation in the repository
    Rotate(RotateArgs),
    /// Type back a paper copy (`offsitedb keygen --paper`) from standard input into a key file
    Import(ImportArgs),
    /// Copy the repository into a new, empty location, every object sealed with the current
    /// key only (to retire older keys)
    Rewrap(RewrapArgs),
}

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// Read the header of every object (WAL files and data objects too), not only the
    /// manifests and records
    #[arg(long)]
    pub all: bool,
}

#[derive(clap::Args, Debug)]
pub struct RotateArgs {
    /// The new key file (mode 0600; never overwrites)
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// The key file to write (mode 0600; never overwrites)
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct RewrapArgs {
    /// The new location: an S3 URL or a folder, empty (same credentials as the repository)
    #[arg(long, value_name = "URL")]
    pub to: String,
}

pub fn run(a: Args, g: &Global) -> Result<()> {
    match a.command {
        Command::Verify(v) => verify(v, g),
        Command::Rotate(r) => rotate(r, g),
        Command::Import(i) => import(i, g),
        Command::Rewrap(r) => rewrap_cmd(r, g),
    }
}

fn verify(a: VerifyArgs, g: &Global) -> Result<()> {
    let s = g.settings()?;
    if g.key_file.is_none() {
        return Err(Error::config("key verify needs --key-file FILE: the key file to check")
            .with_hint("give the offline copy, e.g. offsitedb key verify --key-file /media/usb/master.key")
            .into());
    }
    let store: Box<dyn ReadStore> = s.open_store()?;
    let v = key::verify(store, super::key(&s)?, a.all)?;
    if g.json {
        super::print_json(&serde_json::json!({
            "repository": v.repository,
            "file_key_ids": v.file_key_ids,
            "all_objects": v.all_objects,
            "keys": v.keys,
            "missing": v.missing,
            "opens_everything": v.opens_everything(),
        }))?;
    } else {
        outln!("repository {}", v.repository);
        outln!("the key file holds key ids {}", v.file_key_ids.join(", "));
        for k in &v.keys {
            let kinds: Vec<String> = k
                .needed
                .kinds
                .iter()
                .map(|(kind, n)| format!("{n} {kind}"))
                .collect();
            let verdict = match &k.opened {
                Some(o) => format!("in the file (opened {o})"),
                None => "MISSING from the file".to_string(),
            };
            outln!(
                "key id {}: {} object{} ({}): {verdict}",
                k.needed.key_id,
                k.needed.objects,
                if k.needed.objects == 1 { "" } else { "s" },
                kinds.join(", ")
            );
        }
    }
    if let Some(e) = v.missing_error() {
        return Err(e.into());
    }
    if !g.json {
        output::info(if v.all_objects {
            "this key file opens every object of the repository (every object's header read)"
        } else {
            "this key file opens every object of the repository (the headers of manifests and records read: data objects are sealed with their manifest's key; --all reads every object's)"
        });
    }
    Ok(())
}

fn rotate(a: RotateArgs, g: &Global) -> Result<()> {
    let s = g.settings()?;
    let repo = super::open_write(&s)?;
    let r = key::rotate(&repo, &a.output)?;
    if g.json {
        return super::print_json(&r);
    }
    outln!(
        "wrote {} (new current key id {}, then the older key id{} {})",
        r.file,
        r.key_id,
        if r.file_key_ids.len() > 2 { "s" } else { "" },
        r.file_key_ids[1..].join(", ")
    );
    outln!(
        "recorded the rotation from key id {} in {}",
        r.previous_key_id,
        r.record
    );
    outln!("next:");
    outln!(
        "  1. point key_file (or OFFSITEDB_KEY_FILE) at {}: new backups are sealed with the new key from then on; older ones stay readable with the older keys it holds",
        r.file
    );
    outln!(
        "  2. keep a copy of {} offline (the old key file no longer opens new backups), and test it: offsitedb key verify --key-file COPY",
        r.file
    );
    Ok(())
}

fn import(a: ImportArgs, g: &Global) -> Result<()> {
    let mut text = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| Error::from_io(e, "cannot read standard input"))?;
    let k = paper::parse(&text)?;
    k.write_new_file(&a.output)?;
    if g.json {
        return super::print_json(&serde_json::json!({
            "key_id": k.id().to_string(),
            "file": a.output.display().to_string(),
        }));
    }
    outln!("wrote key id {} to {}", k.id(), a.output.display());
    Ok(())
}

fn rewrap_cmd(a: RewrapArgs, g: &Global) -> Result<()> {
    let s = g.settings()?;
    let repo = super::open_read(&s)?;
    let mut o = g.overrides();
    o.repo = Some(a.to.clone());
    let dest = Settings::load(o, &mut |w| warn(&w))?;
    let quiet = !g.progress();
    let r = rewrap::rewrap(&repo, dest.open_store()?, &mut |n| {
        if !quiet {
            output::info(&n)
        }
    })?;
    if g.json {
        return super::print_json(&r);
    }
    outln!(
        "copied {} into {}: {} objects ({}), {} snapshots, {} base backups, {} WAL files, every one sealed with key id {}",
        r.from,
        r.to,
        r.objects,
        offsitedb::units::bytes(r.bytes),
        r.snapshots,
        r.base_backups,
        r.wal_files,
        r.key_id
    );
    if !r.skipped_incomplete.is_empty() {
        output::note(&format!(
            "left out {} object{} of interrupted backups (no manifest): {}",
            r.skipped_incomplete.len(),
            if r.skipped_incomplete.len() == 1 {
                ""
            } else {
                "s"
            },
            r.skipped_incomplete.join(", ")
        ));
    }
    if r.skipped_log > 0 {
        output::note(&format!(
            "left out {} log/ object{}: the log starts anew in the copy",
            r.skipped_log,
            if r.skipped_log == 1 { "" } else { "s" }
        ));
    }
    outln!("next:");
    outln!(
        "  1. point the configuration at the copy: url = \"{}\" under [repository] (or --repo / OFFSITEDB_REPO); a key file holding only key id {} opens it",
        a.to,
        r.key_id
    );
    outln!(
        "  2. check it: offsitedb --repo {} key verify --key-file FILE, then offsitedb --repo {} list",
        a.to,
        a.to
    );
    outln!(
        "  3. delete the old location {} once your retention allows (Object Lock may keep it until then); until you do, it still needs the old keys",
        r.from
    );
    Ok(())
}
