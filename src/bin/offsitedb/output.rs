//! How the command prints: errors with their hint and exit code, notes and warnings at the
//! verbosity asked for (`-q`, `-v`, `RUST_LOG`), tables, manifests.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// `println!` that survives a closed pipe (`offsitedb list | head -1`): the reader is gone, so
/// we stop quietly with the shell's code for it (141) instead of panicking.
macro_rules! outln {
    () => { $crate::output::stdout_line(format_args!("")) };
    ($($t:tt)*) => { $crate::output::stdout_line(format_args!($($t)*)) };
}
pub(crate) use outln;

pub fn stdout_line(args: std::fmt::Arguments) {
    stdout_write(format!("{args}\n").as_bytes());
}

pub fn stdout_write(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|_| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(ExitCode::BrokenPipe.code().into());
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(ExitCode::Io.code().into());
    }
}

use offsitedb::catalog::{DrillRecord, Manifest, Summary};
use offsitedb::exit::ExitCode;
use offsitedb::{Error, units};

use crate::cmd::Global;
use crate::cmd::serve::LogFormat;

/// `-q`: no summaries or progress lines.
static QUIET: AtomicBool = AtomicBool::new(false);

/// Sets the verbosity, and the log lines (`tracing`): `serve` logs at info by default, other
/// commands only with `-v` (info) or `-vv` (debug); `RUST_LOG` (e.g. `offsitedb=debug`) wins.
pub fn init(g: &Global, serve: Option<LogFormat>) {
    QUIET.store(g.quiet, Ordering::Relaxed);
    use tracing_subscriber::filter::{LevelFilter, Targets};
    let default = match (serve.is_some(), g.verbose, g.quiet) {
        (_, 0, true) => LevelFilter::ERROR,
        (true, 0, _) => LevelFilter::INFO,
        (false, 0, _) => LevelFilter::OFF,
        (_, 1, _) => LevelFilter::INFO,
        _ => LevelFilter::DEBUG,
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| match v.parse::<Targets>() {
            Ok(t) => Some(t),
            Err(e) => {
                warn(&format!(
                    "RUST_LOG={v:?} is not a filter ({e}); using the default"
                ));
                None
            }
        })
        .unwrap_or_else(|| Targets::new().with_default(default));
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter);
    match serve {
        Some(LogFormat::Json) => registry.with(fmt.json()).init(),
        Some(LogFormat::Human) => registry
            .with(fmt.with_ansi(std::io::stderr().is_terminal()))
            .init(),
        // One-shot commands: lines as short as the notes around them.
        None => registry
            .with(
                fmt.without_time()
                    .with_ansi(std::io::stderr().is_terminal()),
            )
            .init(),
    }
}

/// Writes lines to stderr in one write: under PostgreSQL's logging collector (wal-push and
/// wal-fetch, and whatever they warn about) a line written in pieces can wait in the collector,
/// its end stuck until some later message arrives.
pub fn stderr_lines(text: &str) {
    use std::io::Write;
    let mut t = String::with_capacity(text.len() + 1);
    t.push_str(text);
    if !t.ends_with('\n') {
        t.push('\n');
    }
    let _ = std::io::stderr().lock().write_all(t.as_bytes());
}

/// Prints `error: …` (and `hint: …`) on stderr and returns the exit code.
pub fn print_error(e: &anyhow::Error) -> ExitCode {
    match e.downcast_ref::<Error>() {
        Some(err) => {
            stderr_lines(&error_text("", err));
            err.kind().exit()
        }
        None => {
            stderr_lines(&format!("error: {e:#}"));
            ExitCode::Internal
        }
    }
}

fn error_text(prefix: &str, err: &Error) -> String {
    match err.hint() {
        Some(h) => format!("error: {prefix}{}\nhint: {h}", err.message()),
        None => format!("error: {prefix}{}", err.message()),
    }
}

/// The library's error inside `e` (a bug's error becomes an internal one).
pub fn library_error(e: anyhow::Error) -> anyhow::Result<Error> {
    e.downcast::<Error>()
}

pub fn print_error_for(source: &str, err: &Error) {
    stderr_lines(&error_text(&format!("{source}: "), err));
}

pub fn warn(msg: &str) {
    stderr_lines(&format!("warning: {msg}"));
}

/// A remark worth a line whatever the verbosity (a fallback taken, something left out): `-q`
/// hides progress and summaries, never these.
pub fn note(msg: &str) {
    stderr_lines(&format!("note: {msg}"));
}

/// A line for the person at the terminal about what was done (stderr; standard output carries
/// the result). Silent with `-q`.
pub fn info(msg: &str) {
    if !QUIET.load(Ordering::Relaxed) {
        stderr_lines(msg);
    }
}

pub fn snapshot_table(items: &[Summary]) {
    let src_w = items
        .iter()
        .map(|s| s.source.len())
        .max()
        .unwrap_or(6)
        .max(6);
    outln!(
        "{:<23}  {:<src_w$}  {:<20}  {:>8}  {:>10}  {:>10}  {:<12}  TESTED RESTORE",
        "ID",
        "SOURCE",
        "CREATED (UTC)",
        "TOOK",
        "DUMP",
        "STORED",
        "STATUS"
    );
    for s in items {
        outln!(
            "{:<23}  {:<src_w$}  {:<20}  {:>8}  {:>10}  {:>10}  {:<12}  {}",
            s.id.as_str(),
            s.source,
            s.created.strftime("%Y-%m-%d %H:%M:%S").to_string(),
            units::duration(std::time::Duration::from_secs_f64(s.duration_seconds)),
            units::bytes(s.plain_bytes),
            units::bytes(s.stored_bytes),
            s.status.label(),
            s.tested_restore_seconds
                .map(|t| units::duration(std::time::Duration::from_secs_f64(t)))
                .unwrap_or_else(|| "-".into())
        );
    }
}

pub fn manifest(m: &Manifest, s: &Summary, drill: Option<&DrillRecord>) {
    let rows: Vec<(&str, String)> = vec![
        ("snapshot", m.snapshot_id.to_string()),
        ("source", format!("{} ({})", m.source.name, m.source.kind)),
        (
            "database",
            format!(
                "{} on {}:{} as {}",
                m.source.database, m.source.host, m.source.port, m.source.user
            ),
        ),
        ("server", format!("PostgreSQL {}", m.server.version)),
        (
            "system id",
            m.server
                .system_identifier
                .clone()
                .unwrap_or_else(|| "(not readable by the role)".into()),
        ),
        (
            "dump",
            format!("{} {} ({})", m.dump.tool, m.dump.version, m.dump.format),
        ),
        ("started", m.started.to_string()),
        (
            "finished",
            format!(
                "{} ({})",
                m.finished,
                units::duration(std::time::Duration::from_secs_f64(m.duration_secs()))
            ),
        ),
        ("dump size", units::bytes(m.sizes.plain_bytes)),
        (
            "compressed",
            format!(
                "{} ({})",
                units::bytes(m.sizes.compressed_bytes),
                m.compression
            ),
        ),
        (
            "stored",
            format!(
                "{} ({}, key id {})",
                units::bytes(m.sizes.stored_bytes),
                m.encryption.algorithm,
                m.encryption.key_id
            ),
        ),
        ("object", m.data.key.clone()),
        ("sha256", format!("{} (stored)", m.data.sha256_stored)),
        (
            "",
            format!("{} (decrypted artifact)", m.data.sha256_compressed),
        ),
        (
            "verified by",
            format!(
                "{} ({} table{}{})",
                m.verification.method.label(),
                m.verification.tables.len(),
                if m.verification.tables.len() == 1 {
                    ""
                } else {
                    "s"
                },
                m.verification
                    .large_objects
                    .as_ref()
                    .map(|l| format!(", {} large objects", l.rows))
                    .unwrap_or_default()
            ),
        ),
        (
            "status",
            match &s.status_reason {
                Some(why) => format!("{} ({why})", s.status.label()),
                None => s.status.label().to_string(),
            },
        ),
        (
            "last drill",
            match drill {
                Some(d) => format!(
                    "{} {} on {} (PostgreSQL {}): tested restore time {}",
                    d.drill_id,
                    if d.passed() { "passed" } else { "FAILED" },
                    d.target,
                    d.server_version,
                    units::duration(std::time::Duration::from_secs_f64(d.timings.total))
                ),
                None => "none yet (offsitedb drill SNAPSHOT)".to_string(),
            },
        ),
        ("written by", m.created_by.clone()),
    ];
    for (k, v) in rows {
        outln!("{k:>11}  {v}");
    }
}

/// A drill's result for people: the verdict, the timings, and every mismatch.
pub fn drill_report(d: &DrillRecord) {
    let secs = |s: f64| units::duration(std::time::Duration::from_secs_f64(s));
    if d.method == offsitedb::catalog::manifest::VerifyMethod::FileDigests {
        outln!(
            "{} {}/{}: extracted into {} and checked against the manifest ({} problems)",
            if d.passed() { "PASSED" } else { "FAILED" },
            d.source,
            d.snapshot_id,
            d.target,
            d.problems.len()
        );
        for n in &d.notes {
            outln!("  {n}");
        }
        outln!("  tested restore time {}", secs(d.timings.total));
        for p in d.problems.iter().take(20) {
            outln!("  problem: {p}");
        }
        outln!("  drill record {}", d.drill_id);
        return;
    }
    let bad: Vec<_> = d.tables.iter().filter(|t| !t.ok()).collect();
    outln!(
        "{} {}/{}: {} tables checked ({}), {} mismatched",
        if d.passed() { "PASSED" } else { "FAILED" },
        d.source,
        d.snapshot_id,
        d.tables.len(),
        d.method.label(),
        bad.len()
    );
    outln!(
        "  restored into {} (PostgreSQL {}, pg_restore {}, {} jobs)",
        d.target,
        d.server_version,
        d.pg_restore_version,
        d.jobs
    );
    outln!(
        "  download {}, restore {}, verify {}: tested restore time {}",
        secs(d.timings.download),
        secs(d.timings.restore),
        secs(d.timings.verify),
        secs(d.timings.total)
    );
    for p in &d.problems {
        outln!("  problem: {p}");
    }
    outln!("  drill record {}", d.drill_id);
}

/// A PITR drill record for people.
pub fn pitr_drill_report(d: &offsitedb::catalog::base_drill::BaseDrillRecord) {
    let secs = |s: f64| units::duration(std::time::Duration::from_secs_f64(s.max(0.0)));
    outln!(
        "{} PITR drill of {}/{} (PostgreSQL {}): {} recover{}, {} tables read",
        if d.passed() { "PASSED" } else { "FAILED" },
        d.source,
        d.base_id,
        d.server_version,
        d.targets.len(),
        if d.targets.len() == 1 { "y" } else { "ies" },
        d.tables.len()
    );
    for t in &d.targets {
        let asked = match (&t.kind[..], &t.value) {
            ("latest", _) => "the end of the archive".to_string(),
            (k, Some(v)) if t.random => format!("{k} {v} (random)"),
            (k, Some(v)) => format!("{k} {v}"),
            (k, None) => k.to_string(),
        };
        outln!(
            "  to {asked}: {} at LSN {}, timeline {}, last transaction {} ({})",
            if t.reached { "reached" } else { "NOT reached" },
            t.lsn.map_or("-".into(), |l| l.to_string()),
            t.timeline.map_or("-".into(), |l| l.to_string()),
            t.last_transaction.as_deref().unwrap_or("-"),
            secs(t.seconds)
        );
    }
    outln!(
        "  WAL replayed: {} from LSN {} ({} segments, {} fetched from the archive)",
        units::bytes(d.wal.bytes),
        d.wal.from_lsn,
        d.wal.segments,
        d.wal.segments_fetched
    );
    outln!("  pg_verifybackup: {}", d.verifybackup.detail);
    outln!("  amcheck: {}", d.amcheck.detail);
    outln!(
        "  fetch {}, replay {}, verify {}: tested restore time {}",
        secs(d.timings.fetch),
        secs(d.timings.replay),
        secs(d.timings.verify),
        secs(d.timings.total)
    );
    for n in &d.notes {
        outln!("  note: {n}");
    }
    for p in &d.problems {
        outln!("  problem: {p}");
    }
    outln!("  drill record {}", d.drill_id);
}

/// A job's steps, one line each.
pub fn job_report(r: &offsitedb::ops::job::JobReport) {
    let secs = |s: f64| units::duration(std::time::Duration::from_secs_f64(s));
    match &r.backup.error {
        None => outln!(
            "backup  ok      {} in {}",
            r.snapshot.as_deref().unwrap_or("-"),
            secs(r.backup.seconds)
        ),
        Some(e) => outln!("backup  FAILED  {e}"),
    }
    if let Some(d) = &r.drill {
        match &d.error {
            None => outln!(
                "drill   passed  tested restore time {}",
                secs(r.restore_seconds.unwrap_or(d.seconds))
            ),
            Some(e) => outln!("drill   FAILED  {e}"),
        }
    }
    if let Some(p) = &r.prune {
        outln!(
            "prune   ok      {} deleted, {} kept{}",
            p.deleted.len(),
            p.plan.decisions.iter().filter(|d| d.keep).count(),
            p.plan
                .held
                .as_ref()
                .map(|h| format!(" ({h})"))
                .unwrap_or_default()
        );
    }
    if let Some(e) = &r.prune_error {
        outln!("prune   FAILED  {e}");
    }
    if let Some(why) = &r.prune_skipped {
        outln!("prune   skipped {why}");
    }
}

/// What a prune keeps and why, and what it deletes.
pub fn prune_report(r: &offsitedb::ops::prune::PruneReport) {
    outln!("{}: keep {}", r.source, r.policy);
    if let Some(h) = &r.plan.held {
        outln!("  {h}");
    }
    let verb = if r.dry_run { "would delete" } else { "delete" };
    for d in &r.plan.decisions {
        if d.keep {
            outln!(
                "  keep          {}  {:<12} {}",
                d.id,
                d.status.label(),
                d.reasons.join("; ")
            );
        } else {
            outln!("  {verb:<13} {}  {}", d.id, d.status.label());
        }
    }
    for s in &r.skipped {
        outln!("  skipped       {s}");
    }
    for l in &r.leftovers_removed {
        outln!("  {verb:<13} {l}  (interrupted upload, no manifest)");
    }
    for l in &r.leftovers_kept {
        outln!("  keep          {l}");
    }
    if r.unfinished_uploads_aborted > 0 {
        outln!(
            "  {} {} unfinished multipart upload(s)",
            if r.dry_run { "would abort" } else { "aborted" },
            r.unfinished_uploads_aborted
        );
    }
    let n = r.plan.deletions().count();
    if r.dry_run {
        outln!("{}: dry run, {n} snapshot(s) would be deleted", r.source);
    } else {
        outln!(
            "{}: {} snapshot(s) deleted{}",
            r.source,
            r.deleted.len(),
            if r.skipped.is_empty() {
                String::new()
            } else {
                format!(", {} skipped", r.skipped.len())
            }
        );
    }
}

/// Run history as a table, newest first.
pub fn history(runs: &[offsitedb::state::Run]) {
    if runs.is_empty() {
        info("no runs recorded yet");
        return;
    }
    outln!(
        "{:<20}  {:<12}  {:<6}  {:<11}  {:>8}  {:<24}  error",
        "started",
        "source",
        "job",
        "result",
        "took",
        "snapshot"
    );
    for r in runs {
        let took = r
            .seconds
            .map(|s| units::duration(std::time::Duration::from_secs_f64(s.max(0.0))))
            .unwrap_or_else(|| "-".into());
        // A fleet's runs say which worker ran them.
        let by = r
            .worker
            .as_deref()
            .map(|w| format!("[{w}] "))
            .unwrap_or_default();
        outln!(
            "{:<20}  {:<12}  {:<6}  {:<11}  {:>8}  {:<24}  {}{}",
            r.started.strftime("%Y-%m-%d %H:%M:%S"),
            r.source,
            r.job,
            r.result,
            took,
            r.snapshot.as_deref().unwrap_or("-"),
            by,
            r.error.as_deref().unwrap_or("")
        );
    }
}

/// `fleet`: the workers, then every scheduled job.
pub fn fleet(f: &offsitedb::ops::fleet::Fleet) {
    let ago = |t: jiff::Timestamp| {
        let s = f.at.duration_since(t).as_secs().max(0) as u64;
        format!("{} ago", units::duration(std::time::Duration::from_secs(s)))
    };
    outln!("{}", f.state);
    outln!();
    if f.workers.is_empty() {
        info("no worker has reported yet");
    } else {
        outln!(
            "{:<24}  {:<7}  {:<16}  {:<20}  running",
            "worker",
            "status",
            "labels",
            "last heartbeat"
        );
        for w in &f.workers {
            outln!(
                "{:<24}  {:<7}  {:<16}  {:<20}  {}",
                w.row.name,
                if w.alive { "alive" } else { "silent" },
                if w.row.labels.is_empty() {
                    "-".to_string()
                } else {
                    w.row.labels.join(",")
                },
                ago(w.row.seen),
                if w.row.running.is_empty() {
                    "-".to_string()
                } else {
                    w.row.running.join(", ")
                }
            );
        }
    }
    outln!();
    outln!(
        "{:<16}  {:<7}  {:<16}  {:<28}  {:<12}  last",
        "source",
        "job",
        "schedule",
        "state",
        "requires"
    );
    for j in &f.jobs {
        let state = match (&j.running_on, &j.row.action) {
            (Some(w), _) => format!("running on {w}"),
            (None, Some(a)) => format!("{a} asked for"),
            (None, None) if j.row.kind == "backup" || j.row.kind == "base" => {
                format!("due {}", j.row.due.strftime("%Y-%m-%d %H:%M:%S"))
            }
            (None, None) => "waiting for a worker".to_string(),
        };
        let last = match &j.last {
            Some(r) => format!(
                "{} {}{}{}",
                r.result,
                r.finished.map(ago).unwrap_or_default(),
                r.worker
                    .as_deref()
                    .map(|w| format!(" on {w}"))
                    .unwrap_or_default(),
                r.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
            None => "-".into(),
        };
        outln!(
            "{:<16}  {:<7}  {:<16}  {:<28}  {:<12}  {}",
            j.row.source,
            j.row.kind,
            j.row.schedule,
            state,
            if j.row.requires.is_empty() {
                "-".to_string()
            } else {
                j.row.requires.join(",")
            },
            last
        );
    }
}

/// `check`'s list: one line per step, the fix under each failure or warning.
pub fn checklist(items: &[offsitedb::ops::check::Item]) {
    use offsitedb::ops::check::Status;
    let w = items
        .iter()
        .map(|i| i.check.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let mut subject = "";
    for i in items {
        if i.subject != subject {
            subject = &i.subject;
            outln!("{subject}");
        }
        let mark = match i.status {
            Status::Ok => "✓",
            Status::Warn => "!",
            Status::Fail => "✗",
            Status::Skip => "-",
        };
        outln!("  {mark} {:<w$} {}", i.check, i.detail);
        if let Some(f) = &i.fix {
            outln!("    {:<w$} fix: {f}", "");
        }
    }
}
