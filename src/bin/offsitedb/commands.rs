//! One function per subcommand: resolve settings, call the library, print.

use std::io::{IsTerminal, Write};

use anyhow::Result;
use offsitedb::catalog::{Entry, Repository, Summary};
use offsitedb::config::{Overrides, Settings};
use offsitedb::crypto::MasterKey;
use offsitedb::ops;
use offsitedb::postgres::ConnInfo;
use offsitedb::state::State;
use offsitedb::storage::ReadStore;
use offsitedb::{Error, units};

use crate::output::{self, outln, warn};
use crate::{Cli, Command};

pub fn run(cli: Cli) -> Result<()> {
    let settings = || {
        Settings::load(Overrides {
            config: cli.config.clone(),
            repo: cli.repo.clone(),
            key_file: cli.key_file.clone(),
        })
    };
    match cli.command {
        Command::Init {
            source_url,
            name,
            access_key_id,
            secret_access_key,
            schedule,
            keep,
            force,
            no_check,
            interactive,
        } => crate::init::run(
            crate::init::Flags {
                config: cli.config.clone(),
                repo: cli.repo.clone(),
                key_file: cli.key_file.clone(),
                source_url,
                name,
                access_key_id,
                secret_access_key,
                schedule,
                keep,
                force,
                interactive,
            },
            !no_check,
        ),
        Command::Keygen { output } => keygen(output),
        Command::Backup {
            source,
            dir,
            name,
            compression,
            json,
        } => backup(&settings()?, source, dir, name, compression, json),
        Command::List { source, json } => list(&settings()?, source, json),
        Command::Show {
            snapshot,
            source,
            json,
        } => show(&settings()?, &snapshot, source, json),
        Command::Decrypt {
            snapshot,
            source,
            output,
            force,
        } => decrypt(&settings()?, &snapshot, source, output, force),
        Command::Restore {
            snapshot,
            to,
            to_dir,
            force,
            source,
            clean,
            jobs,
            no_owner,
            no_privileges,
            spool_dir,
            json,
        } => {
            let s = settings()?;
            let opts = ops::restore::RestoreOptions {
                clean,
                jobs: jobs.max(1),
                no_owner,
                no_privileges,
                spool_dir,
                pg_bin_dirs: s.pg_bin_dirs().to_vec(),
                progress: true,
            };
            match (to, to_dir) {
                (Some(to), _) => restore(&s, &snapshot, source, &to, &opts, json),
                (None, Some(dir)) => restore_dir(&s, &snapshot, source, &dir, force, json),
                (None, None) => unreachable!("clap requires one"),
            }
        }
        Command::Drill {
            snapshot,
            source,
            drill_server,
            work_dir,
            jobs,
            keep,
            json,
        } => {
            let s = settings()?;
            let opts = ops::drill::DrillOptions {
                pg_bin_dirs: s.pg_bin_dirs().to_vec(),
                drill_server: drill_server.as_deref().map(ConnInfo::parse).transpose()?,
                work_dir,
                jobs,
                keep,
                progress: !json,
            };
            drill(&s, &snapshot, source, &opts, json)
        }
        Command::Demo { keep } => demo(&settings()?, keep),
        Command::Run { source, json } => run_job(&settings()?, &source, json),
        Command::Check { source, json } => check(&settings()?, source, json),
        Command::RoleSql {
            source,
            role,
            schemas,
            major,
        } => role_sql(&settings()?, source, role, schemas, major),
        Command::Serve { listen, log_format } => {
            init_logs(log_format);
            Ok(offsitedb::daemon::serve(settings()?, listen)?)
        }
        Command::AlertTest => alert_test(&settings()?),
        Command::Prune {
            source,
            keep,
            dry_run,
            json,
        } => prune(&settings()?, source, keep, dry_run, json),
        Command::History {
            source,
            limit,
            json,
        } => history(&settings()?, source, limit, json),
    }
}

fn role_sql(
    s: &Settings,
    source: Option<String>,
    role: String,
    schemas: Vec<String>,
    major: Option<u32>,
) -> Result<()> {
    let spec = match (major, &source) {
        (Some(m), None) => ops::role_sql::offline(role, schemas, m)?,
        _ => {
            if source.is_none() && s.file.sources.len() != 1 {
                return Err(Error::config("which server is the role for?")
                    .with_hint("name a configured source (offsitedb role-sql SOURCE), or give its version: --major 16")
                    .into());
            }
            let source = s.backup_sources(None, source.as_deref(), None)?.remove(0);
            ops::role_sql::for_source(&source, role, schemas, major)?
        }
    };
    output::stdout_write(ops::role_sql::sql(&spec)?.as_bytes());
    Ok(())
}

pub fn check(s: &Settings, source: Option<String>, json: bool) -> Result<()> {
    let specs = if source.is_none() && s.file.sources.is_empty() {
        Vec::new()
    } else {
        s.backup_sources(None, source.as_deref(), None)?
    };
    let mut items = Vec::new();
    for spec in &specs {
        items.extend(ops::check::source(spec, s.pg_bin_dirs()));
    }
    items.extend(ops::check::repository(s, &mut |w| warn(&w)));
    if json {
        outln!("{}", serde_json::to_string_pretty(&items)?);
    } else {
        if specs.is_empty() {
            output::note("no source configured: checking the repository only");
        }
        output::checklist(&items);
    }
    let failed: Vec<_> = items
        .iter()
        .filter(|i| i.status == ops::check::Status::Fail)
        .collect();
    match failed.first() {
        None => Ok(()),
        Some(first) => Err(Error::new(
            first.kind.unwrap_or(offsitedb::ErrorKind::Config),
            format!(
                "{} check{} failed; the first: {} {}: {}",
                failed.len(),
                if failed.len() == 1 { "" } else { "s" },
                first.subject,
                first.check,
                first.detail
            ),
        )
        .into()),
    }
}

fn init_logs(format: crate::LogFormat) {
    let b = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        crate::LogFormat::Json => b.json().init(),
        crate::LogFormat::Human => b.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

fn dispatcher(s: &Settings) -> Result<offsitedb::alerts::Dispatcher> {
    let channels = offsitedb::alerts::Channels::from_config(s.file.alerts.as_ref())?;
    Ok(offsitedb::alerts::Dispatcher::start(channels, |d| {
        warn(&format!(
            "alert delivery to {} failed after {} attempts: {}",
            d.channel,
            d.attempts,
            d.error.as_deref().unwrap_or("")
        ))
    }))
}

fn alert_test(s: &Settings) -> Result<()> {
    let channels = offsitedb::alerts::Channels::from_config(s.file.alerts.as_ref())?;
    if channels.is_empty() && s.file.sources.iter().all(|src| src.heartbeat.is_empty()) {
        return Err(Error::config("no alert channel is configured")
            .with_hint("add webhook, slack, email or heartbeat under [alerts] in offsitedb.toml")
            .into());
    }
    let a = offsitedb::alerts::Alert::new(
        offsitedb::alerts::Event::Test,
        true,
        "test",
        "a test alert from offsitedb alert-test: if you read this, alerts reach you".into(),
    );
    let mut results = offsitedb::alerts::deliver(&channels, &a);
    let own: Vec<_> = s
        .file
        .sources
        .iter()
        .flat_map(|src| src.heartbeat.iter().cloned())
        .collect();
    results.extend(offsitedb::alerts::ping(
        &channels,
        offsitedb::alerts::Ping::Success,
        &own,
    ));
    let mut failed = 0;
    for d in &results {
        if d.ok {
            outln!("ok      {}", d.channel);
        } else {
            failed += 1;
            outln!(
                "FAILED  {}: {}",
                d.channel,
                d.error.as_deref().unwrap_or("")
            );
        }
    }
    if failed > 0 {
        return Err(Error::new(
            offsitedb::ErrorKind::Alert,
            format!("{failed} of {} alert channels failed", results.len()),
        )
        .into());
    }
    Ok(())
}

fn run_job(s: &Settings, source: &str, json: bool) -> Result<()> {
    let specs = s.backup_sources(None, Some(source), None)?;
    let spec = &specs[0];
    let dispatcher = dispatcher(s)?;
    let opts = ops::job::JobOptions {
        backup: ops::backup::BackupOptions {
            pg_bin_dirs: s.pg_bin_dirs().to_vec(),
            progress: !json,
            ..Default::default()
        },
        drill: ops::drill::DrillOptions {
            pg_bin_dirs: s.pg_bin_dirs().to_vec(),
            progress: !json,
            ..Default::default()
        },
    };
    let state_path = s.state_path()?;
    let result = offsitedb::daemon::job_with_alerts(
        s,
        spec,
        &state_path,
        &opts,
        &dispatcher,
        None,
        &mut |n| output::note(&n),
    );
    // Alerts and pings go out before the process ends.
    dispatcher.finish(std::time::Duration::from_secs(60));
    let mut report = result?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        output::job_report(&report);
    }
    match report
        .backup_failure
        .take()
        .or(report.drill_failure.take())
        .or(report.prune_failure.take())
    {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

fn prune(
    s: &Settings,
    source: Option<String>,
    keep: Option<String>,
    dry_run: bool,
    json: bool,
) -> Result<()> {
    let rules = keep
        .as_deref()
        .map(offsitedb::retention::parse_rules)
        .transpose()?;
    let repo = Repository::open_for_writing(s.open_store()?, key(s)?)?;
    // Configured sources carry their policy; with --keep any source in the repository will do.
    let mut targets: Vec<(String, offsitedb::config::Policy)> = Vec::new();
    let configured = s
        .file
        .sources
        .iter()
        .any(|c| Some(&c.name) == source.as_ref());
    match (&source, &rules) {
        // A source only in the repository, pruned by the rules given.
        (Some(name), Some(_)) if !configured => targets.push((name.clone(), Default::default())),
        _ => {
            for spec in s.backup_sources(None, source.as_deref(), None)? {
                targets.push((spec.name, spec.policy));
            }
        }
    }
    // The history says whether backups are failing (then nothing is deleted): a state file that
    // exists but cannot be read stops the prune rather than lose that protection.
    let state_path = s.state_path()?;
    let state = if state_path.exists() {
        Some(State::open(&state_path)?)
    } else {
        warn(&format!(
            "no run history on this machine ({}): only the repository can show failing backups (a newest snapshot that failed its drill)",
            state_path.display()
        ));
        None
    };
    let mut reports = Vec::new();
    for (name, policy) in targets {
        let snapshots = ops::list::list(&repo, Some(&name), &mut |w| warn(&w))?;
        let failing = match &state {
            Some(st) => ops::job::failing(st, &name)?,
            None => None,
        };
        let opts = ops::prune::PruneOptions {
            keep: rules.unwrap_or(policy.keep),
            tz: policy.tz.clone(),
            dry_run,
            failing,
            grace: ops::prune::DEFAULT_GRACE,
        };
        let r = ops::prune::run(&repo, &name, &snapshots, &opts, jiff::Timestamp::now())?;
        if !json {
            output::prune_report(&r);
        }
        reports.push(r);
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&reports)?);
    }
    Ok(())
}

fn history(s: &Settings, source: Option<String>, limit: usize, json: bool) -> Result<()> {
    let path = s.state_path()?;
    if !path.exists() {
        if json {
            outln!("[]");
        } else {
            eprintln!("no runs recorded yet ({} does not exist)", path.display());
        }
        return Ok(());
    }
    let state = State::open(&path)?;
    let runs = state.history(source.as_deref(), limit)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&runs)?);
    } else {
        output::history(&runs);
    }
    Ok(())
}

fn key(s: &Settings) -> Result<MasterKey> {
    Ok(s.master_key(&mut |w| warn(&w))?)
}

/// Opens an existing repository with only its read half: these commands cannot write.
fn open_read(s: &Settings) -> Result<Repository<dyn ReadStore>> {
    let store: Box<dyn ReadStore> = s.open_store()?;
    Ok(Repository::open(store, key(s)?)?)
}

fn keygen(output: Option<std::path::PathBuf>) -> Result<()> {
    let k = MasterKey::generate()?;
    match output {
        Some(path) => {
            k.write_new_file(&path)?;
            eprintln!(
                "wrote a new master key to {} (key id {})",
                path.display(),
                k.id()
            );
            eprintln!(
                "keep a copy somewhere other than the backup bucket: without it no backup can be restored"
            );
        }
        None => {
            if std::io::stdout().is_terminal() {
                warn("printing a secret key to the terminal; prefer `offsitedb keygen -o FILE`");
            }
            output::stdout_write(k.to_file_text().as_bytes());
        }
    }
    Ok(())
}

fn backup(
    s: &Settings,
    source: Option<String>,
    dir: Option<std::path::PathBuf>,
    name: Option<String>,
    compression: Option<String>,
    json: bool,
) -> Result<()> {
    let specs = match dir {
        Some(d) => {
            let name = name.ok_or_else(|| {
                Error::config("--name is required with --dir").with_hint(
                    "name the source, e.g. --name uploads: snapshots are grouped by name",
                )
            })?;
            offsitedb::catalog::check_source_name(&name)?;
            let c = compression
                .as_deref()
                .map(str::parse::<offsitedb::pipeline::Compression>)
                .transpose()?
                .unwrap_or_default();
            vec![offsitedb::config::SourceSpec::directory(&name, d, c)]
        }
        None => s.backup_sources(source.as_deref(), name.as_deref(), compression.as_deref())?,
    };
    let key = key(s)?;
    let repo = Repository::open_for_writing(s.open_store()?, key)?;
    let opts = ops::backup::BackupOptions {
        pg_bin_dirs: s.pg_bin_dirs().to_vec(),
        progress: !json,
        threads: 0,
        counts_only: false,
    };
    let mut failed: Option<Error> = None;
    let mut done = Vec::new();
    for spec in &specs {
        if specs.len() > 1 {
            eprintln!("backing up {}", spec.name);
        }
        match ops::backup::run_source(&repo, spec, &opts, &mut |n| output::note(&n)) {
            Ok(m) => {
                let entry = Entry {
                    source: spec.name.clone(),
                    id: m.snapshot_id.clone(),
                    data_size: Some(m.sizes.stored_bytes),
                    drills: Vec::new(),
                };
                let summary = Summary::new(&m, &entry, None);
                if !json {
                    eprintln!(
                        "{}: {} dumped, {} stored ({}, {}), in {}",
                        spec.name,
                        units::bytes(m.sizes.plain_bytes),
                        units::bytes(m.sizes.stored_bytes),
                        m.compression,
                        m.encryption.algorithm,
                        units::duration(std::time::Duration::from_secs_f64(m.duration_secs()))
                    );
                    outln!("{}", m.snapshot_id);
                }
                done.push(summary);
            }
            Err(e) if specs.len() > 1 => {
                output::print_error_for(&spec.name, &e);
                failed.get_or_insert(e);
            }
            Err(e) => return Err(e.into()),
        }
    }
    if json {
        let v = if specs.len() == 1 && done.len() == 1 {
            serde_json::to_value(&done[0])?
        } else {
            serde_json::to_value(&done)?
        };
        outln!("{}", serde_json::to_string_pretty(&v)?);
    }
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

fn list(s: &Settings, source: Option<String>, json: bool) -> Result<()> {
    let repo = open_read(s)?;
    let items = ops::list::list(&repo, source.as_deref(), &mut |w| warn(&w))?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&items)?);
    } else if items.is_empty() {
        eprintln!("no snapshots in {}", repo.location());
    } else {
        output::snapshot_table(&items);
    }
    Ok(())
}

fn show(s: &Settings, reference: &str, source: Option<String>, json: bool) -> Result<()> {
    let repo = open_read(s)?;
    let (m, summary, drill) = ops::list::show(&repo, reference, source.as_deref())?;
    if json {
        // The whole manifest, and where the snapshot stands.
        let mut v = serde_json::to_value(&m)?;
        v["status"] = serde_json::to_value(summary.status)?;
        v["last_drill"] = serde_json::to_value(&drill)?;
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        output::manifest(&m, &summary, drill.as_deref());
    }
    Ok(())
}

fn decrypt(
    s: &Settings,
    reference: &str,
    source: Option<String>,
    out: Option<std::path::PathBuf>,
    force: bool,
) -> Result<()> {
    let repo = open_read(s)?;
    let entry = repo.resolve(reference, source.as_deref())?;
    match out {
        Some(path) => {
            let m = ops::decrypt::run(
                &repo,
                &entry,
                ops::decrypt::Output::File { path: &path, force },
            )?;
            eprintln!(
                "wrote {} ({}, {}), verified against the manifest",
                path.display(),
                units::bytes(m.sizes.compressed_bytes),
                m.compression
            );
        }
        None => {
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

fn restore_dir(
    s: &Settings,
    reference: &str,
    source: Option<String>,
    dir: &std::path::Path,
    force: bool,
    json: bool,
) -> Result<()> {
    let repo = open_read(s)?;
    let entry = repo.resolve(reference, source.as_deref())?;
    let m = repo.manifest(&entry.source, &entry.id)?;
    let report = ops::directory::restore(&repo, &m, dir, force, !json)?;
    for n in report.notes.iter().take(20) {
        warn(n);
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        eprintln!(
            "restored {}/{} into {}: {} files, {}, every one checked against the manifest, in {}",
            report.source,
            report.snapshot,
            report.target,
            report.files,
            units::bytes(report.bytes),
            units::duration(std::time::Duration::from_secs_f64(report.seconds))
        );
    }
    Ok(())
}

fn restore(
    s: &Settings,
    reference: &str,
    source: Option<String>,
    to: &str,
    opts: &ops::restore::RestoreOptions,
    json: bool,
) -> Result<()> {
    let target = ConnInfo::parse(to)?;
    let repo = open_read(s)?;
    let entry = repo.resolve(reference, source.as_deref())?;
    let report = ops::restore::run(&repo, &entry, &target, opts, &mut |n| warn(&n))?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        eprintln!(
            "restored {}/{} into {} in {} (pg_restore {}, {} job{})",
            report.source,
            report.snapshot,
            report.target,
            units::duration(std::time::Duration::from_secs_f64(report.seconds)),
            report.pg_restore,
            report.jobs,
            if report.jobs == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

fn drill(
    s: &Settings,
    reference: &str,
    source: Option<String>,
    opts: &ops::drill::DrillOptions,
    json: bool,
) -> Result<()> {
    let repo = Repository::open(s.open_store()?, key(s)?)?;
    let entry = repo.resolve(reference, source.as_deref())?;
    let outcome = ops::drill::run(&repo, &entry, opts, &mut |n| output::note(&n))?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&outcome.record)?);
    } else {
        output::drill_report(&outcome.record);
    }
    match outcome.failure {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

fn demo(s: &Settings, keep: Option<std::path::PathBuf>) -> Result<()> {
    outln!("OffsiteDB demo: back up a sample database, restore it, and check it.\n");
    let report = ops::demo::run(keep, s.pg_bin_dirs().to_vec(), &mut |what, took| {
        outln!("  ✓ {:>6}  {what}", units::duration(took));
    })?;
    outln!();
    outln!("  {:<14} {:>12} {:>12}", "table", "source rows", "restored");
    for c in &report.counts {
        outln!(
            "  {:<14} {:>12} {:>12}",
            c.table,
            c.source_rows,
            c.restored_rows
        );
    }
    outln!(
        "\ndemo passed in {}: snapshot {} restored with identical row counts.",
        units::duration(report.total),
        report.snapshot_id
    );
    if let Some(dir) = report.kept {
        outln!(
            "the repository and its key are in {0}; try:\n  offsitedb list --repo {0}/repository --key-file {0}/master.key",
            dir.display()
        );
    }
    Ok(())
}
