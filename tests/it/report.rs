//! `offsitedb report`: a month of a repository built by the tests (daily snapshots with a
//! four-day gap, one failed drill, a source that stopped backing up), read back as JSON (golden),
//! PDF (read by poppler's pdftotext, pdfinfo and pdffonts, pages rendered by pdftoppm) and HTML;
//! fingerprints checked and a tampered report refused; and a real backup and drill of a real
//! PostgreSQL reported in the running month.

use std::path::{Path, PathBuf};

use jiff::{Timestamp, ToSpan};
use offsitedb::catalog::SnapshotId;
use offsitedb::catalog::drill::{DRILL_VERSION, DrillRecord, DrillResult, Timings};
use offsitedb::catalog::manifest::VerifyMethod;
use serde_json::Value;

use crate::common::{Cli, Repo, keygen};
use crate::planted::Planted;

const GOLDEN: &str = "tests/golden/report-2026-11.json";

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// A drill record that took `seconds`, passed or failed with `problem`.
fn drill(
    p: &Planted,
    source: &str,
    id: &SnapshotId,
    at: Timestamp,
    seconds: f64,
    problem: Option<&str>,
) {
    p.repo
        .commit_drill(&DrillRecord {
            drill_version: DRILL_VERSION,
            drill_id: SnapshotId::new(at).unwrap(),
            snapshot_id: id.clone(),
            source: source.into(),
            result: if problem.is_none() {
                DrillResult::Passed
            } else {
                DrillResult::Failed
            },
            started: at,
            finished: at + (seconds as i64).seconds(),
            timings: Timings {
                download: 1.0,
                restore: seconds - 2.0,
                verify: 1.0,
                total: seconds,
            },
            target: "a temporary folder".into(),
            server_version: String::new(),
            pg_restore_version: String::new(),
            jobs: 1,
            method: VerifyMethod::FileDigests,
            tables: Vec::new(),
            problems: problem.map(|p| vec![p.to_string()]).unwrap_or_default(),
            notes: Vec::new(),
            created_by: "written by a test".into(),
        })
        .unwrap();
}

/// `app`: a snapshot every day of November 2026 at 03:00 except the 10th to the 12th, each
/// drilled ten minutes later (40 s + the day), the 20th's drill failed; one from October 31st
/// before it. `billing`: one snapshot in September, none since.
fn november(dir: &Path) -> (Planted, PathBuf) {
    let p = Planted::new(dir);
    let mut days: Vec<Timestamp> = vec![at("2026-10-31T03:00:00Z")];
    for d in (1..=30).filter(|d| !(10..=12).contains(d)) {
        days.push(at(&format!("2026-11-{d:02}T03:00:00Z")));
    }
    for (i, t) in days.iter().enumerate() {
        let id = p.empty_folder("app", *t);
        let day = t.to_zoned(jiff::tz::TimeZone::UTC).day() as f64;
        let failed = (t.to_string() == "2026-11-20T03:00:00Z")
            .then_some("file data/orders.csv: sha256 differs from the manifest");
        drill(
            &p,
            "app",
            &id,
            *t + 10.minutes(),
            40.0 + day + i as f64 % 2.0,
            failed,
        );
    }
    let old = p.empty_folder("billing", at("2026-09-15T03:00:00Z"));
    drill(&p, "billing", &old, at("2026-09-15T03:10:00Z"), 20.0, None);
    let config = dir.join("offsitedb.toml");
    std::fs::write(
        &config,
        format!(
            r#"[repository]
url = "{repo}"
key_file = "{key}"

[[source]]
name = "app"
kind = "directory"
path = "{data}"
schedule = "daily at 03:00"
rpo = "30h"
rto = "30m"
keep = {{ daily = 7, weekly = 4, monthly = 12 }}

[[source]]
name = "billing"
kind = "directory"
path = "{data}"
schedule = "daily at 04:00"
"#,
            repo = p.path.display(),
            key = p.key_file.display(),
            data = dir.display(),
        ),
    )
    .unwrap();
    (p, config)
}

/// Snapshot and drill ids end in a random part: kept to their time.
fn redact_ids(v: &mut Value) {
    match v {
        Value::String(s) if SnapshotId::parse(s).is_ok() => {
            *s = format!("{}-<random>", s.split('-').next().unwrap());
        }
        Value::Array(a) => a.iter_mut().for_each(redact_ids),
        Value::Object(o) => o.values_mut().for_each(redact_ids),
        _ => {}
    }
}

/// What changes from run to run, and the version, replaced.
fn redact(mut v: Value) -> Value {
    redact_ids(&mut v);
    for (k, with) in [
        ("generated_at", "<generated>"),
        ("fingerprint", "<fingerprint>"),
        ("generated_by", "offsitedb <version>"),
    ] {
        v[k] = Value::String(with.into());
    }
    v["repository"]["location"] = "<repository>".into();
    v["repository"]["key_id"] = "<key id>".into();
    v
}

fn cli_for(config: &Path) -> Cli {
    Cli::new().env("OFFSITEDB_CONFIG", config.to_str().unwrap())
}

#[test]
fn a_month_with_a_gap_and_a_failed_drill_matches_the_golden_report() {
    let dir = tempfile::tempdir().unwrap();
    let (_p, config) = november(dir.path());
    let cli = cli_for(&config).cwd(dir.path());
    let out = dir.path().join("november.json");
    cli.ok(&[
        "report",
        "--month",
        "2026-11",
        "--format",
        "json",
        "-o",
        out.to_str().unwrap(),
    ]);
    let got: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();

    // The figures the golden file holds, said plainly so a wrong golden cannot hide them.
    let app = &got["sources"][0];
    assert_eq!(app["name"], "app");
    assert_eq!(app["verdict"]["kind"], "failed");
    assert_eq!(
        app["verdict"]["headline"],
        "1 of 27 snapshots could not be restored"
    );
    assert_eq!(app["snapshots"]["taken"], 27);
    assert_eq!(app["snapshots"]["passed"], 26);
    // The gap: the 9th's snapshot to the 13th's, four days, over the promised 30 hours.
    let worst = &app["recovery_point"]["worst"];
    assert_eq!(worst["from"], "2026-11-09T03:00:00Z");
    assert_eq!(worst["to"], "2026-11-13T03:00:00Z");
    assert_eq!(app["objectives"]["rpo_met"], false);
    // The failed snapshot (the 20th) is not a good backup either: 19th to 21st, two days.
    let gaps = app["recovery_point"]["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 2, "{gaps:?}");
    assert_eq!(gaps[1]["from"], "2026-11-19T03:00:00Z");
    // Drills on November 1st..30th (the 31st of October's ran in October): 27, one failed.
    assert_eq!(app["drills"].as_array().unwrap().len(), 27);
    assert_eq!(app["restore_time"]["count"], 26);
    assert_eq!(app["objectives"]["rto_met"], true);
    let billing = &got["sources"][1];
    assert_eq!(billing["verdict"]["kind"], "failed");
    assert_eq!(
        billing["verdict"]["headline"],
        "No backup this month (the last one was taken 2026-09-15)"
    );

    let redacted = serde_json::to_string_pretty(&redact(got)).unwrap() + "\n";
    let golden = crate::common::project_dir().join(GOLDEN);
    if std::env::var_os("OFFSITEDB_BLESS").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, &redacted).unwrap();
    }
    let want = std::fs::read_to_string(&golden)
        .unwrap_or_else(|e| panic!("{}: {e} (OFFSITEDB_BLESS=1 writes it)", golden.display()));
    assert_eq!(
        redacted, want,
        "the report differs from {GOLDEN}; if the change is meant, rerun with OFFSITEDB_BLESS=1 and review the diff"
    );
}

#[test]
fn a_report_verifies_and_a_changed_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_p, config) = november(dir.path());
    let cli = cli_for(&config).cwd(dir.path());
    let json = dir.path().join("r.json");
    cli.ok(&[
        "report",
        "--month",
        "2026-11",
        "--format",
        "json",
        "-o",
        json.to_str().unwrap(),
    ]);
    let ok = cli.ok(&["report", "verify", json.to_str().unwrap()]);
    assert!(ok.stdout.contains("matches"), "{}", ok.stdout);
    assert!(
        ok.stdout
            .contains("app: FAILED: 1 of 27 snapshots could not be restored"),
        "{}",
        ok.stdout
    );

    // One figure changed: refused, exit 7 (integrity).
    let text = std::fs::read_to_string(&json).unwrap();
    let edited = text.replacen("\"failed\": 1,", "\"failed\": 0,", 1);
    assert_ne!(edited, text);
    std::fs::write(&json, edited).unwrap();
    cli.fails(
        &["report", "verify", json.to_str().unwrap()],
        7,
        "does not match the report's content",
    );

    // Another repository's key: refused the same way.
    let other = keygen(dir.path(), "other.key");
    let fresh = dir.path().join("fresh.json");
    cli.ok(&[
        "report",
        "--month",
        "2026-11",
        "--format",
        "json",
        "-o",
        fresh.to_str().unwrap(),
    ]);
    cli.clone_with("OFFSITEDB_KEY_FILE", other.to_str().unwrap())
        .fails(
            &["report", "verify", fresh.to_str().unwrap()],
            7,
            "does not match",
        );

    // Not a report at all.
    let junk = dir.path().join("junk.pdf");
    std::fs::write(&junk, b"%PDF-1.7 nothing here").unwrap();
    cli.fails(
        &["report", "verify", junk.to_str().unwrap()],
        7,
        "carries no OffsiteDB report data",
    );
}

#[test]
fn months_that_make_no_sense_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_p, config) = november(dir.path());
    let cli = cli_for(&config).cwd(dir.path());
    cli.fails(
        &["report", "--month", "2026-13"],
        3,
        "invalid month \"2026-13\"",
    );
    cli.fails(&["report", "--month", "2999-01"], 3, "has not started yet");
    cli.fails(
        &["report", "--source", "nope", "--month", "2026-11"],
        3,
        "nope",
    );
}

/// A real backup and drill of a real PostgreSQL, reported in the running month.
#[test]
fn a_real_backup_and_drill_is_reported_with_its_tested_restore_time() {
    let repo = Repo::local().with_source(
        "shop",
        "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g;",
    );
    let url = repo.src().url("shop");
    repo.cli.ok(&["backup", "--source", &url]);
    repo.cli.ok(&["drill", "latest", "--source", "shop"]);
    let month = Timestamp::now().strftime("%Y-%m").to_string();
    let r = repo
        .cli
        .ok(&["report", "--month", &month, "--format", "json"]);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let s = &v["sources"][0];
    assert_eq!(s["name"], "shop");
    assert_eq!(s["kind"], "database");
    assert_eq!(v["period"]["partial"], true);
    assert_eq!(s["verdict"]["kind"], "passed", "{s}");
    assert_eq!(
        s["verdict"]["headline"],
        "The snapshot was drilled and passed"
    );
    assert!(s["restore_time"]["max"].as_f64().unwrap() > 0.0, "{s}");
    assert_eq!(v["repository"]["provider"], "local folder");
    assert!(
        s["failed_runs"].is_array(),
        "the history of this machine is read: {s}"
    );
}

/// `list` says achieved against promised for the sources that promise something.
#[test]
fn list_shows_objectives_achieved_against_promised() {
    let dir = tempfile::tempdir().unwrap();
    let (_p, config) = november(dir.path());
    let out = cli_for(&config).ok(&["list"]).stdout;
    let line = out
        .lines()
        .find(|l| l.starts_with("app, last 30 days: "))
        .unwrap_or_else(|| panic!("no objectives line for app:\n{out}"));
    // The newest good backup is from November 30th: days ago, over the 30 hours promised.
    assert!(line.contains("(objective 1 d 6 h: MISSED)"), "{line}");
    assert!(line.contains("slowest tested restore"), "{line}");
    // billing promises nothing but its schedule: no line.
    assert!(!out.contains("billing, last 30 days"), "{out}");
}

/// A drill slower than the source's `rto` alerts once; met again, it resolves once.
#[test]
fn a_drill_over_the_recovery_time_objective_alerts_once_per_change() {
    use crate::daemon::Receiver;
    let src = crate::common::Source::start();
    // Enough rows that a restore takes more than one second however fast the machine.
    src.create_db(
        "app",
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS h FROM generate_series(1, 400000) g",
    );
    let hooks = Receiver::start();
    let config = |rto: &str| {
        format!(
            "[state]\npath = \"state.db\"\n\n[alerts]\nwebhook = [\"{}\"]\n\n[[source]]\nname = \"app\"\nurl = \"{}\"\nrto = \"{rto}\"\n",
            hooks.url("/hook"),
            src.url("app")
        )
    };
    let s = Repo::local().with_config(&config("1s"));
    for _ in 0..2 {
        s.cli.ok(&["run", "app"]);
    }
    s.write_config(&config("1h"));
    s.cli.ok(&["run", "app"]);
    let (hook, seen) = hooks.alerts("/hook");
    let seen: Vec<(&str, &str)> = seen.iter().map(|(e, s)| (e.as_str(), s.as_str())).collect();
    assert_eq!(
        seen,
        [("rto_missed", "firing"), ("rto_missed", "resolved")],
        "{hook:#?}"
    );
    assert!(
        hook[0]
            .message
            .contains("over the recovery time objective of 1.0 s"),
        "{hook:#?}"
    );
}

/// The PDF attached to a mail, decoded.
fn attachment(mail: &str, name: &str) -> Vec<u8> {
    let at = mail
        .find(&format!("filename=\"{name}\""))
        .unwrap_or_else(|| panic!("no attachment {name} in:\n{mail}"));
    let part = &mail[at..];
    let body_start = part
        .find("\r\n\r\n")
        .map(|i| i + 4)
        .or_else(|| part.find("\n\n").map(|i| i + 2))
        .unwrap();
    let b64: String = part[body_start..]
        .lines()
        .take_while(|l| !l.starts_with("--"))
        .map(str::trim)
        .collect();
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

/// `serve` writes the last full month's report into the repository once and mails it as a PDF;
/// started again, it neither rewrites nor resends it.
#[test]
fn serve_stores_the_last_months_report_once_and_mails_it() {
    use crate::daemon::Smtp;
    let dir = tempfile::tempdir().unwrap();
    let (p, config) = november(dir.path());
    let smtp = Smtp::start(None, false);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[state]\npath = \"{}\"\n\n[alerts]\nemail = {{ smtp = \"smtp://127.0.0.1:{}?tls=none\", from = \"backups@example.com\", to = [\"ops@example.com\"] }}\n",
        dir.path().join("state.db").display(),
        smtp.port
    ));
    std::fs::write(&config, text).unwrap();
    let now = Timestamp::now();
    let month = offsitedb::report::model::Period::last_full(now).month;
    // In the first hour of a month the last one's jobs may still be finishing: serve waits.
    let settling = now.to_zoned(jiff::tz::TimeZone::UTC).day() == 1
        && now.to_zoned(jiff::tz::TimeZone::UTC).hour() == 0;
    let key = format!("reports/{month}");
    let start = || {
        let settings = offsitedb::config::Settings::load(
            offsitedb::config::Overrides {
                config: Some(config.clone()),
                ..Default::default()
            },
            &mut |_| {},
        )
        .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        offsitedb::daemon::spawn(settings, listener).unwrap()
    };
    use offsitedb::storage::ReadStore;
    let running = start();
    if settling {
        std::thread::sleep(std::time::Duration::from_secs(5));
        running.stop().unwrap();
        assert!(
            smtp.messages().is_empty(),
            "written within the month's first hour"
        );
        return;
    }
    let t = std::time::Instant::now();
    while smtp.messages().is_empty() {
        assert!(t.elapsed().as_secs() < 60, "no report mailed");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    running.stop().unwrap();
    assert!(
        p.repo.store().head(&key).unwrap().is_some(),
        "{key} not stored"
    );
    let stored = offsitedb::ops::report::read_month(&p.repo, &month).unwrap();
    assert!(offsitedb::report::fingerprint::check(&stored, p.repo.key()).unwrap());
    let names: Vec<&str> = stored.sources.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["app", "billing"]);

    let mail = &smtp.messages()[0];
    assert!(mail.contains("Restore Drill Report"), "{mail}");
    assert!(
        mail.contains(&format!(
            "app: {}",
            offsitedb::report::compose::verdict_word(stored.sources[0].verdict.kind)
        )),
        "{mail}"
    );
    let pdf = attachment(mail, &format!("offsitedb-report-{month}.pdf"));
    assert!(pdf.starts_with(b"%PDF-"), "the attachment is not a PDF");
    // The PDF carries the stored report: verify accepts it with the repository's key.
    let file = dir.path().join("mailed.pdf");
    std::fs::write(&file, &pdf).unwrap();
    let ok = cli_for(&config).ok(&["report", "verify", file.to_str().unwrap()]);
    assert!(ok.stdout.contains("matches"), "{}", ok.stdout);

    // Started again: the month is stored, so nothing is written or sent.
    let running = start();
    std::thread::sleep(std::time::Duration::from_secs(5));
    running.stop().unwrap();
    assert_eq!(smtp.messages().len(), 1, "the report was mailed twice");
}

/// The November report as a PDF, read by an independent reader (poppler), and as HTML: the
/// figures of the golden JSON are on the pages; pages are kept as PNG test artifacts.
#[test]
fn the_pdf_and_html_reports_say_what_the_json_says() {
    use crate::report_render::{artifacts, poppler};
    let dir = tempfile::tempdir().unwrap();
    let (_p, config) = november(dir.path());
    let cli = cli_for(&config).cwd(dir.path());
    // The default name, in the working folder; a second run does not replace it.
    cli.ok(&["report", "--month", "2026-11"]);
    let pdf = dir.path().join("offsitedb-report-2026-11.pdf");
    assert!(pdf.exists());
    cli.fails(&["report", "--month", "2026-11"], 3, "exists");
    let path = pdf.to_str().unwrap();

    let info = poppler("pdfinfo", &[path]);
    assert!(
        info.contains("Title:") && info.contains("Restore Drill Report"),
        "{info}"
    );
    assert!(info.contains("(A4)"), "A4: {info}");
    let pages: usize = info
        .lines()
        .find_map(|l| l.strip_prefix("Pages:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pages >= 4, "summary, two sources and more: {pages} pages");
    let fonts = poppler("pdffonts", &[path]);
    assert!(fonts.contains("DejaVuSans"), "{fonts}");
    for line in fonts.lines().filter(|l| l.contains("DejaVu")) {
        assert!(line.contains(" yes "), "a font not embedded: {line}");
    }
    let text = poppler("pdftotext", &["-layout", path, "-"]);
    let first = text.split('\u{c}').next().unwrap();
    for want in [
        "Restore Drill Report",
        "November 2026",
        "1 of 27 snapshots could not be restored",
        "No backup this month (the last one was taken 2026-09-15)",
        "recovery point 4 d missed the promised 1 d 6 h",
    ] {
        assert!(first.contains(want), "page 1 lacks {want:?}:\n{first}");
    }
    for want in [
        "Tested restore time per drill",
        "median 57 s, 95th percentile 1 min 9 s, slowest 1 min 11 s",
        "sha256 differs from the manifest",
        "2026-11-09 03:00 UTC",
        "daily 7, weekly 4, monthly 12",
        "AES-256-GCM",
        "page 1 of",
        "offsitedb report verify FILE",
    ] {
        assert!(text.contains(want), "the PDF lacks {want:?}:\n{text}");
    }
    // The carried data verifies.
    assert!(
        cli.ok(&["report", "verify", path])
            .stdout
            .contains("matches")
    );
    // Pages as images, kept for people to look at.
    let out = artifacts();
    poppler(
        "pdftoppm",
        &[
            "-png",
            "-r",
            "70",
            "-f",
            "1",
            "-l",
            "3",
            path,
            out.join("november").to_str().unwrap(),
        ],
    );
    assert!(
        std::fs::read_dir(&out)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("november"))
    );

    // US Letter.
    let letter = dir.path().join("letter.pdf");
    cli.ok(&[
        "report",
        "--month",
        "2026-11",
        "--paper",
        "letter",
        "-o",
        letter.to_str().unwrap(),
    ]);
    let info = poppler("pdfinfo", &[letter.to_str().unwrap()]);
    assert!(info.contains("612 x 792 pts (letter)"), "{info}");

    // HTML: the same words, one file, and it verifies too.
    let html = dir.path().join("november.html");
    cli.ok(&[
        "report",
        "--month",
        "2026-11",
        "--format",
        "html",
        "-o",
        html.to_str().unwrap(),
    ]);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("1 of 27 snapshots could not be restored"));
    assert!(page.contains("<svg"), "charts inline");
    assert!(
        !page.contains("src=\"http") && !page.contains("href=\"http"),
        "nothing fetched"
    );
    assert!(
        cli.ok(&["report", "verify", html.to_str().unwrap()])
            .stdout
            .contains("matches")
    );
}
