//! The SQLite store's own cases (the contract both stores keep is in tests/it/state_store.rs).

use super::*;
use rusqlite::Connection;

#[test]
fn runs_and_alerts_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/state.db");
    let s = State::open(&path).unwrap();
    let t0: Timestamp = "2026-11-21T03:00:00Z".parse().unwrap();
    let t1: Timestamp = "2026-11-21T03:00:12.5Z".parse().unwrap();
    let a = s.start(Job::Backup, "app", t0).unwrap();
    s.finish(
        a,
        t1,
        &Outcome {
            snapshot: Some("20261121T030000Z-abcdef".into()),
            plain_bytes: Some(1000),
            stored_bytes: Some(300),
            ..Default::default()
        },
    )
    .unwrap();
    let b = s.start(Job::Backup, "app", t1).unwrap();
    s.finish(
        b,
        t1,
        &Outcome {
            error: Some("cannot connect".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let _running = s.start(Job::Drill, "other", t1).unwrap();

    let h = s.history(Some("app"), 10).unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h[0].result, RunResult::Failed);
    assert_eq!(h[1].result, RunResult::Ok);
    assert_eq!(h[1].seconds, Some(12.5));
    assert_eq!(h[1].stored_bytes, Some(300));
    let ok = s
        .last("app", Job::Backup, Some(RunResult::Ok))
        .unwrap()
        .unwrap();
    assert_eq!(ok.finished, Some(t1));
    assert_eq!(
        s.last("app", Job::Backup, None)
            .unwrap()
            .unwrap()
            .error
            .as_deref(),
        Some("cannot connect")
    );
    assert!(s.last("app", Job::Drill, None).unwrap().is_none());

    // A new process finds the step that was running when the last one died.
    drop(s);
    let s = State::open(&path).unwrap();
    assert_eq!(
        s.close_interrupted(None, "offsitedb stopped while this ran")
            .unwrap(),
        1
    );
    assert_eq!(
        s.history(Some("other"), 1).unwrap()[0].result,
        RunResult::Interrupted
    );

    assert!(s.alert("app", "backup_failed").unwrap().is_none());
    let st = AlertState {
        firing: true,
        since: t1,
        message: Some("cannot connect".into()),
    };
    assert_eq!(
        s.switch_alert("app", "backup_failed", true, "cannot connect", t1)
            .unwrap(),
        Some(None)
    );
    assert_eq!(s.alert("app", "backup_failed").unwrap(), Some(st));
}

#[test]
fn processes_opening_a_new_file_at_once_agree() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let p = path.clone();
            std::thread::spawn(move || State::open(&p).map(|_| ()))
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    assert!(
        State::open(&path)
            .unwrap()
            .history(None, 1)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_file_from_a_newer_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    State::open(&path).unwrap();
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let e = State::open(&path).err().unwrap();
    assert!(e.message().contains("newer offsitedb"), "{e:?}");
}
