//! The green/amber/red judgement, as a table of cases.

use super::*;

fn summary(id: &str, minutes_ago: i64, status: Status, now: Timestamp) -> Summary {
    let finished = now - jiff::SignedDuration::from_mins(minutes_ago);
    Summary {
        id: SnapshotId::parse(id).unwrap(),
        source: "app".into(),
        created: finished,
        finished,
        duration_seconds: 1.0,
        database: "app".into(),
        server_version: "16.4".into(),
        plain_bytes: 10,
        stored_bytes: 5,
        compression: "gzip:6".into(),
        status,
        drills: (status != Status::NotDrilled) as usize,
        last_drill: (status != Status::NotDrilled).then(|| SnapshotId::parse(id).unwrap()),
        tested_restore_seconds: (status == Status::Sealed).then_some(2.5),
        status_reason: None,
        drill_unreadable: false,
        warnings: Vec::new(),
    }
}

fn run(job: Job, result: RunResult, minutes_ago: i64, now: Timestamp, error: Option<&str>) -> Run {
    Run {
        id: 1,
        job,
        source: "app".into(),
        started: now - jiff::SignedDuration::from_mins(minutes_ago),
        finished: None,
        result,
        error: error.map(str::to_string),
        snapshot: None,
        plain_bytes: None,
        stored_bytes: None,
        seconds: None,
        worker: None,
        due: None,
        restore_seconds: None,
    }
}

/// The level and the reasons' words for: snapshots (minutes ago, status), the last backup
/// attempt, the last drill run; hourly, stale after 2 h.
fn case(snaps: &[(i64, Status)], attempt: Option<Run>, drill: Option<Run>) -> (Level, String) {
    let now: Timestamp = "2026-11-21T12:00:00Z".parse().unwrap();
    let s: Vec<Summary> = snaps
        .iter()
        .enumerate()
        .map(|(i, (ago, st))| {
            let t = now - jiff::SignedDuration::from_mins(*ago);
            let id = format!(
                "{}-aaaaa{}",
                t.strftime("%Y%m%dT%H%M%SZ"),
                (b'a' + i as u8) as char
            );
            summary(&id, *ago, *st, now)
        })
        .collect();
    let refs: Vec<&Summary> = s.iter().collect();
    let last_drilled = refs
        .iter()
        .rev()
        .find(|x| x.status != Status::NotDrilled)
        .copied();
    let h = judge(&Judged {
        now,
        interval: Some(Duration::from_secs(3600)),
        stale_after: Some(Duration::from_secs(7200)),
        drills: true,
        snapshots: &refs,
        last_drilled,
        drill_problem: Some("table public.t: 10 rows expected, 9 restored".into()),
        last_attempt: attempt,
        last_drill_run: drill,
    });
    assert_eq!(h.word, h.level.word());
    let words: Vec<String> = h.reasons.iter().map(|r| r.text.clone()).collect();
    (h.level, words.join(" | "))
}

#[test]
fn levels_and_their_reasons() {
    let now: Timestamp = "2026-11-21T12:00:00Z".parse().unwrap();
    use Level::*;
    use Status::*;
    let cases: Vec<(Level, &str, (Level, String))> = vec![
        (
            Amber,
            "no backup in the repository yet",
            case(&[], None, None),
        ),
        (
            Green,
            "last backup at 2026-11-21 11:50:00 UTC | the last drill passed",
            case(&[(10, Sealed)], None, None),
        ),
        (
            Amber,
            "no backup since 2026-11-21 10:20:00 UTC: a scheduled run (every 1h00m) was missed",
            case(&[(100, Sealed)], None, None),
        ),
        (
            Red,
            "no backup since 2026-11-21 09:00:00 UTC: longer than stale_after (2h00m)",
            case(&[(180, Sealed)], None, None),
        ),
        (
            Red,
            "failed: table public.t: 10 rows expected, 9 restored",
            case(&[(10, DrillFailed)], None, None),
        ),
        (Red, "is damaged", case(&[(10, Damaged)], None, None)),
        (
            Amber,
            "no snapshot has passed a drill yet",
            case(&[(10, NotDrilled)], None, None),
        ),
        // The newest is not drilled yet (its drill runs): the older one's result stands.
        (
            Green,
            "the last drill passed",
            case(&[(70, Sealed), (5, NotDrilled)], None, None),
        ),
        (
            Red,
            "failed: role \"x\" does not exist",
            case(
                &[(10, Sealed)],
                Some(run(
                    Job::Backup,
                    RunResult::Failed,
                    1,
                    now,
                    Some("role \"x\" does not exist"),
                )),
                None,
            ),
        ),
        (
            Red,
            "failed: no pg_restore",
            case(
                &[(10, Sealed)],
                None,
                Some(run(
                    Job::Drill,
                    RunResult::Failed,
                    1,
                    now,
                    Some("no pg_restore"),
                )),
            ),
        ),
        // A drill run that failed before the last drill record passed is history.
        (
            Green,
            "the last drill passed",
            case(
                &[(10, Sealed)],
                None,
                Some(run(
                    Job::Drill,
                    RunResult::Failed,
                    60,
                    now,
                    Some("no pg_restore"),
                )),
            ),
        ),
    ];
    for (level, words, (got, said)) in cases {
        assert_eq!(got, level, "{said}");
        assert!(said.contains(words), "{words:?} not in {said:?}");
    }
}

#[test]
fn restore_commands_are_the_documented_ones() {
    let m: crate::catalog::Manifest = serde_json::from_value(serde_json::json!({
        "manifest_version": 1, "snapshot_id": "20261121T031500Z-k3f7qa",
        "source": {"name": "app", "kind": "postgres", "host": "h", "port": 5432, "database": "app", "user": "u"},
        "server": {"version": "16.4", "version_num": 160004, "major": 16, "system_identifier": null, "in_recovery": false},
        "dump": {"tool": "pg_dump", "version": "16.4", "major": 16, "format": "custom", "arguments": []},
        "started": "2026-11-21T03:15:00Z", "finished": "2026-11-21T03:15:05Z",
        "sizes": {"plain_bytes": 10, "compressed_bytes": 8, "stored_bytes": 9},
        "compression": {"algorithm": "gzip", "level": 6},
        "encryption": {"format": 1, "algorithm": "AES-256-GCM", "key_id": "k", "chunk_size": 1048576},
        "data": {"key": "snapshots/app/20261121T031500Z-k3f7qa/data", "salt": "00", "sha256_stored": "", "sha256_compressed": ""},
        "created_by": "offsitedb test"
    }))
    .unwrap();
    let loc = Location::parse(
        "s3://bucket/offsitedb?endpoint=https://s3.example.com",
        Some("r"),
    )
    .unwrap();
    let c = restore_commands(&m, Some(&loc));
    assert_eq!(
        c.offsitedb,
        "offsitedb restore 20261121T031500Z-k3f7qa --source app --to postgres://..."
    );
    assert_eq!(
        c.decrypt,
        "offsitedb decrypt 20261121T031500Z-k3f7qa --source app | gunzip | pg_restore --dbname postgres://..."
    );
    assert_eq!(
        c.without_offsitedb,
        [
            "aws s3 cp s3://bucket/offsitedb/snapshots/app/20261121T031500Z-k3f7qa/data data",
            "python3 tools/offsitedb-decrypt.py master.key < data | gunzip | pg_restore --dbname postgres://...",
        ]
    );
}

#[test]
fn the_wal_archive_lag_is_said_and_warned_past_its_limit() {
    let now: Timestamp = "2026-11-21T12:00:00Z".parse().unwrap();
    let r = wal_reason(Some("2026-11-21T11:58:00Z".parse().unwrap()), now);
    assert_eq!(r.level, Level::Green);
    assert_eq!(r.text, "WAL archived up to 2026-11-21 11:58:00 UTC");
    let r = wal_reason(Some("2026-11-21T11:00:00Z".parse().unwrap()), now);
    assert_eq!(r.level, Level::Amber);
    assert!(r.text.contains("more than 15 min ago"), "{}", r.text);
    assert!(r.text.contains("archive_timeout"), "{}", r.text);
    let r = wal_reason(None, now);
    assert_eq!(r.level, Level::Amber);
    assert!(r.text.contains("no WAL archived"), "{}", r.text);
}
