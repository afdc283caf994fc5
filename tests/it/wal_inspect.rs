//! `backup-list`, `wal-show`, `wal-verify` and the WAL part of `prune`, on a repository whose WAL
//! objects and base backup manifests are written through the library: real sealed objects
//! (`wal::object::encode`, `put_new`) holding synthetic segment bytes, and manifests committed
//! through the catalog. The archive's shape is known exactly, so every answer is checked exactly;
//! the end-to-end tests with an archiving server are in pitr.rs.

use offsitedb::catalog::base::{BASE_MANIFEST_VERSION, BaseManifest, base_data_key};
use offsitedb::catalog::manifest::{
    DataObject, DumpRecord, Encryption, ServerRecord, Sizes, SourceInfo,
};
use offsitedb::catalog::{Repository, SnapshotId, SourceKind};
use offsitedb::crypto::{MasterKey, seal_bytes};
use offsitedb::pipeline::Compression;
use offsitedb::storage::WriteStore;
use offsitedb::wal::name::{Lsn, WalName};
use offsitedb::wal::object::{self, WalCompression};
use serde::Deserialize;

use crate::common::{BUCKET, Repo, json};
use crate::proxy::Fault;

pub(crate) const SOURCE: &str = "app";
/// 1 MB segments (`initdb --wal-segsize=1`): small objects, and a segment of random bytes spans
/// two sealed chunks.
pub(crate) const SEG: u64 = 1 << 20;

/// Timeline 2's history: it branched off timeline 1 in segment 10 (0/A00028 with 1 MB segments).
fn t2_history(size: u64) -> String {
    format!(
        "1\t{}\tno recovery target specified\n",
        Lsn(10 * size + 0x28)
    )
}

pub(crate) const B1: &str = "20261101T030000Z-aaaaaa";
pub(crate) const B2: &str = "20261110T030000Z-bbbbbb";
pub(crate) const B3: &str = "20261120T030000Z-cccccc";

pub(crate) struct Archive {
    repo: Repo,
    pub(crate) r: Repository<dyn WriteStore>,
    /// The segment size the base backups record.
    size: u64,
}

/// Segment `n` of timeline `tl`.
pub(crate) fn seg(tl: u32, n: u64) -> String {
    WalName::segment(tl, n, SEG).to_string()
}

impl Archive {
    /// An empty repository in a folder.
    fn empty() -> Archive {
        Archive::empty_in(Repo::local(), SEG)
    }

    /// An empty repository in `repo`, for segments of `size` bytes.
    fn empty_in(repo: Repo, size: u64) -> Archive {
        let key = MasterKey::load_file(&repo.key, &mut |_| {}).unwrap();
        let r = Repository::open_for_writing(repo.store(), key).unwrap();
        r.ensure_created().unwrap();
        Archive { repo, r, size }
    }

    /// Timeline 1: segments 1-9 and 0A.partial; timeline 2 (from timeline 1 at 0/A00028):
    /// its history file and segments 10-15. Base backups B1 (timeline 1, segment 2), B2
    /// (timeline 1, segment 5) and B3 (timeline 2, segment 12), each with its .backup file.
    pub(crate) fn standard() -> Archive {
        Archive::standard_in(Repo::local(), SEG)
    }

    fn standard_in(repo: Repo, size: u64) -> Archive {
        let a = Archive::empty_in(repo, size);
        for n in 1..=9 {
            a.push(&seg(1, n));
        }
        a.push_bytes(
            &format!("{}.partial", seg(1, 10)),
            &segment_bytes("partial", size),
        );
        a.push_bytes("00000002.history", t2_history(size).as_bytes());
        for n in 10..=15 {
            a.push(&seg(2, n));
        }
        a.base(B1, 1, 2);
        a.base(B2, 1, 5);
        a.base(B3, 2, 12);
        a
    }

    /// Archives a segment of (compressible) synthetic bytes.
    fn push(&self, name: &str) {
        self.push_bytes(name, &segment_bytes(name, self.size));
    }

    fn push_bytes(&self, name: &str, content: &[u8]) {
        let n = WalName::parse(name).unwrap();
        let sealed = object::encode(
            self.r.key(),
            &n,
            content,
            &object::digest(content),
            WalCompression::Zstd(object::ZSTD_LEVEL),
        )
        .unwrap();
        assert!(
            self.r
                .store()
                .put_new(&object::key(SOURCE, &n), &sealed)
                .unwrap()
        );
    }

    /// Commits a base backup starting in segment `start` of `timeline` (and its .backup file),
    /// with a small data object.
    pub(crate) fn base(&self, id: &str, timeline: u32, start: u64) {
        let id = SnapshotId::parse(id).unwrap();
        let data = seal_bytes(self.r.key(), b"not really a tar").unwrap();
        let key = base_data_key(SOURCE, &id);
        self.r.store().put(&key, &data).unwrap();
        let start_wal = WalName::segment(timeline, start, self.size);
        let m = BaseManifest {
            base_manifest_version: BASE_MANIFEST_VERSION,
            backup_id: id.clone(),
            source: SourceInfo {
                name: SOURCE.into(),
                kind: SourceKind::Postgres,
                host: "db".into(),
                port: 5432,
                database: "postgres".into(),
                user: "backup".into(),
            },
            server: ServerRecord {
                version: "18.1".into(),
                version_num: 180001,
                major: 18,
                system_identifier: Some("7400000000000000001".into()),
                in_recovery: false,
            },
            timeline,
            start_lsn: Lsn(start * self.size + 0x28),
            end_lsn: Lsn((start + 1) * self.size + 0x100),
            segment_size: self.size,
            start_wal: start_wal.to_string(),
            started: id.time(),
            finished: id.time() + jiff::SignedDuration::from_secs(42),
            sizes: Sizes {
                plain_bytes: 16,
                compressed_bytes: 16,
                stored_bytes: data.len() as u64,
            },
            compression: Compression::default(),
            encryption: Encryption {
                format: 1,
                algorithm: "aes-256-gcm".into(),
                key_id: self.r.key().id().to_string(),
                chunk_size: 1 << 20,
            },
            data: DataObject {
                key,
                salt: String::new(),
                sha256_stored: String::new(),
                sha256_compressed: String::new(),
            },
            tool: DumpRecord::default(),
            server_manifest: true,
            tablespaces: Vec::new(),
            incremental: None,
            created_by: "wal_inspect test".into(),
        };
        self.r.commit_base_manifest(&m).unwrap();
        self.push_bytes(
            &format!("{start_wal}.00000028.backup"),
            b"START WAL LOCATION: ...\n",
        );
    }

    /// The object key of a WAL file.
    fn key(name: &str) -> String {
        object::key(SOURCE, &WalName::parse(name).unwrap())
    }

    pub(crate) fn store(&self) -> &dyn WriteStore {
        self.r.store()
    }

    pub(crate) fn exists(&self, name: &str) -> bool {
        self.store().head(&Archive::key(name)).unwrap().is_some()
    }

    fn remove(&self, name: &str) {
        self.store().delete(&Archive::key(name)).unwrap();
    }

    /// Flips one bit of a stored object, `at` bytes from its start (or, negative, its end).
    fn flip(&self, name: &str, at: i64) {
        let key = Archive::key(name);
        let mut b = self.store().get_bytes(&key).unwrap();
        let i = if at < 0 {
            b.len() - (-at) as usize
        } else {
            at as usize
        };
        b[i] ^= 1;
        self.store().put(&key, &b).unwrap();
    }

    /// Stores a copy of `from`'s object under `to`'s name.
    fn copy(&self, from: &str, to: &str) {
        let b = self.store().get_bytes(&Archive::key(from)).unwrap();
        self.store().put(&Archive::key(to), &b).unwrap();
    }

    pub(crate) fn cli(&self) -> &crate::common::Cli {
        &self.repo.cli
    }
}

/// A segment's bytes: its name, then zeros (compresses to almost nothing).
fn segment_bytes(name: &str, size: u64) -> Vec<u8> {
    let mut v = vec![0u8; size as usize];
    v[..name.len()].copy_from_slice(name.as_bytes());
    v
}

/// A segment of pseudo-random bytes: it does not compress, so its object spans more than one
/// sealed chunk (1 MB each).
fn random_segment(size: u64) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

// What the commands print with --json: only the fields read here.

#[derive(Debug, Deserialize)]
struct BaseLine {
    id: String,
    timeline: u32,
    start_lsn: String,
    end_lsn: String,
    start_wal: String,
    wal: Option<Coverage>,
}

#[derive(Debug, Deserialize)]
struct Coverage {
    target_timeline: u32,
    restorable_to: Option<String>,
    timeline: Option<u32>,
    missing_from: Option<String>,
    complete: bool,
    consistent: bool,
}

#[derive(Debug, Deserialize)]
struct Show {
    source: String,
    segment_size: u64,
    segment_size_from: String,
    files: usize,
    base_backups: usize,
    timelines: Vec<Timeline>,
    newest: Option<Newest>,
}

#[derive(Debug, Deserialize)]
struct Timeline {
    timeline: u32,
    parent: Option<u32>,
    switch_lsn: Option<String>,
    history: String,
    ranges: Vec<Range>,
    gaps: Vec<Range>,
    partial: Vec<String>,
    backup: Vec<String>,
}

#[derive(Debug, Deserialize, PartialEq)]
struct Range {
    first: String,
    last: String,
    segments: u64,
}

#[derive(Debug, Deserialize)]
struct Newest {
    name: String,
    end_lsn: String,
    archived_at: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Verify {
    check: String,
    ok: bool,
    from: Option<String>,
    to: Option<String>,
    checked: usize,
    problems: Vec<Problem>,
}

#[derive(Debug, Deserialize)]
struct Problem {
    kind: String,
    name: String,
    detail: String,
}

#[derive(Debug, Deserialize)]
struct Prune {
    dry_run: bool,
    deleted: Vec<String>,
    base_backups: Option<BasePrune>,
    wal: Option<WalPrune>,
}

#[derive(Debug, Deserialize)]
struct BasePrune {
    deleted: Vec<String>,
    plan: BasePlan,
}

#[derive(Debug, Deserialize)]
struct BasePlan {
    held: Option<String>,
    decisions: Vec<Decision>,
}

#[derive(Debug, Deserialize)]
struct Decision {
    id: String,
    keep: bool,
    reasons: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct WalPrune {
    keep_from: Option<String>,
    held: Option<String>,
    deleted: Vec<WalDeleted>,
    files_deleted: usize,
    files_kept: usize,
}

#[derive(Debug, Deserialize, PartialEq)]
struct WalDeleted {
    timeline: u32,
    first: String,
    last: String,
    files: usize,
}

fn backup_list(a: &Archive) -> Vec<BaseLine> {
    json(&a.cli().ok(&["backup-list", "--source", SOURCE, "--json"]))
}

#[test]
fn backup_list_shows_each_base_backup_and_how_far_its_wal_reaches() {
    let a = Archive::standard();
    let list = backup_list(&a);
    assert_eq!(
        list.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(),
        [B1, B2, B3]
    );
    let b1 = &list[0];
    assert_eq!(
        (b1.timeline, b1.start_lsn.as_str(), b1.end_lsn.as_str()),
        (1, "0/200028", "0/300100")
    );
    assert_eq!(b1.start_wal, seg(1, 2));
    for b in &list {
        let c = b.wal.as_ref().unwrap();
        // Across the switch: timeline 1 to segment 9, timeline 2 from 10 to 15.
        assert_eq!(c.target_timeline, 2, "{}", b.id);
        assert_eq!(c.restorable_to.as_deref(), Some("0/1000000"), "{}", b.id);
        assert_eq!(c.timeline, Some(2));
        assert!(
            c.complete && c.consistent && c.missing_from.is_none(),
            "{c:?}"
        );
    }
    let human = a.cli().ok(&["backup-list"]).stdout;
    assert_eq!(
        human
            .matches("WAL to 0/1000000 on timeline 2, complete")
            .count(),
        3,
        "{human}"
    );

    // A gap on timeline 1 stops the two older backups there; the newest starts after it.
    a.remove(&seg(1, 7));
    let list = backup_list(&a);
    for b in &list[..2] {
        let c = b.wal.as_ref().unwrap();
        assert_eq!(c.missing_from.as_deref(), Some(seg(1, 7).as_str()));
        assert_eq!(c.restorable_to.as_deref(), Some("0/700000"));
        assert_eq!(c.timeline, Some(1));
        assert!(!c.complete);
    }
    assert!(list[2].wal.as_ref().unwrap().complete);
    let human = a.cli().ok(&["backup-list", "--source", SOURCE]).stdout;
    assert!(
        human.contains(&format!(
            "WAL to 0/700000 on timeline 1, then missing from {}",
            seg(1, 7)
        )),
        "{human}"
    );

    // The start segment itself missing.
    a.remove(&seg(2, 12));
    let c = backup_list(&a).remove(2).wal.unwrap();
    assert_eq!(c.missing_from, Some(seg(2, 12)));
    assert_eq!(c.restorable_to, None);
}

#[test]
fn wal_show_shows_timelines_ranges_gaps_and_the_newest_segment() {
    let a = Archive::standard();
    a.remove(&seg(1, 4));
    a.remove(&seg(1, 5));
    let s: Show = json(&a.cli().ok(&["wal-show", "--source", SOURCE, "--json"]));
    assert_eq!(s.source, SOURCE);
    assert_eq!(
        (s.segment_size, s.segment_size_from.as_str()),
        (SEG, "base_backup")
    );
    assert_eq!(s.base_backups, 3);
    // 7 + 1 partial + 1 history + 6 + 3 .backup files.
    assert_eq!(s.files, 18);
    assert_eq!(s.timelines.len(), 2);
    let t1 = &s.timelines[0];
    assert_eq!(
        (t1.timeline, t1.parent, t1.history.as_str()),
        (1, None, "none")
    );
    let range = |first: String, last: String, segments| Range {
        first,
        last,
        segments,
    };
    assert_eq!(
        t1.ranges,
        [
            range(seg(1, 1), seg(1, 3), 3),
            range(seg(1, 6), seg(1, 9), 4)
        ]
    );
    assert_eq!(t1.gaps, [range(seg(1, 4), seg(1, 5), 2)]);
    assert_eq!(t1.partial, [format!("{}.partial", seg(1, 10))]);
    assert_eq!(
        t1.backup,
        [
            format!("{}.00000028.backup", seg(1, 2)),
            format!("{}.00000028.backup", seg(1, 5))
        ]
    );
    let t2 = &s.timelines[1];
    assert_eq!(
        (t2.parent, t2.switch_lsn.as_deref(), t2.history.as_str()),
        (Some(1), Some("0/A00028"), "archived")
    );
    assert_eq!(t2.ranges, [range(seg(2, 10), seg(2, 15), 6)]);
    let newest = s.newest.unwrap();
    assert_eq!(
        (newest.name, newest.end_lsn.as_str()),
        (seg(2, 15), "0/1000000")
    );
    let at: jiff::Timestamp = newest.archived_at.unwrap().parse().unwrap();
    assert!((jiff::Timestamp::now() - at).get_seconds().abs() < 3600);

    let human = a.cli().ok(&["wal-show", "--source", SOURCE]).stdout;
    for want in [
        format!("GAP      {}..{}  2 segments missing", seg(1, 4), seg(1, 5)),
        "timeline 2, from timeline 1 at 0/A00028 (no recovery target specified)".to_string(),
        format!("newest   {} (WAL to 0/1000000), archived", seg(2, 15)),
    ] {
        assert!(human.contains(&want), "{want:?} not in:\n{human}");
    }
}

#[test]
fn without_a_base_backup_the_segment_size_comes_from_a_segment_header() {
    let a = Archive::empty();
    for n in 3..=5 {
        a.push(&seg(1, n));
    }
    let s: Show = json(&a.cli().ok(&["wal-show", "--source", SOURCE, "--json"]));
    assert_eq!(
        (s.segment_size, s.segment_size_from.as_str()),
        (SEG, "wal_header")
    );
    assert_eq!(s.timelines[0].ranges.len(), 1, "{:?}", s.timelines);
    // Integrity then starts at the oldest segment, and says so.
    let r = a.cli().ok(&["wal-verify", "integrity", "--source", SOURCE]);
    assert!(
        r.stderr
            .contains("no base backup of app: checking from the oldest archived segment"),
        "{}",
        r.stderr
    );
    assert!(
        r.stdout.contains(&format!("{}..{}", seg(1, 3), seg(1, 5))),
        "{}",
        r.stdout
    );
}

#[test]
fn wal_verify_integrity_names_missing_ranges_and_damaged_objects() {
    let a = Archive::standard();
    let ok: Verify = json(
        &a.cli()
            .ok(&["wal-verify", "integrity", "--source", SOURCE, "--json"]),
    );
    assert!(ok.ok && ok.problems.is_empty(), "{ok:?}");
    assert_eq!(ok.check, "integrity");
    assert_eq!(ok.from, Some(seg(1, 2)));
    assert_eq!(ok.to, Some(seg(2, 15)));
    // From B1's segment 2 on: 8 + 1 partial + history + 6 + 3 .backup files.
    assert_eq!(ok.checked, 19);

    a.remove(&seg(1, 7));
    a.remove(&seg(1, 8));
    a.remove(&seg(2, 11));
    let range = format!("{}..{}", seg(1, 7), seg(1, 8));
    a.cli()
        .fails(&["wal-verify", "integrity", "--source", SOURCE], 7, &range);
    let r = a
        .cli()
        .run(&["wal-verify", "integrity", "--source", SOURCE, "--json"]);
    assert_eq!(r.code, 7, "{}", r.stderr);
    let v: Verify = json(&r);
    let missing: Vec<(&str, &str)> = v
        .problems
        .iter()
        .map(|p| (p.kind.as_str(), p.name.as_str()))
        .collect();
    // One segment is named alone.
    let t2 = seg(2, 11);
    assert_eq!(
        missing,
        [("missing", range.as_str()), ("missing", t2.as_str())]
    );
    assert!(!v.ok);
}

#[test]
fn wal_verify_reads_headers_and_with_read_data_every_byte() {
    let a = Archive::standard();
    // A segment that does not compress: its object has a second chunk.
    a.remove(&seg(2, 13));
    a.push_bytes(&seg(2, 13), &random_segment(SEG));
    a.cli()
        .ok(&["wal-verify", "integrity", "--source", SOURCE, "--read-data"]);

    // A flip in the last chunk: the headers are fine, the data is not.
    a.flip(&seg(2, 13), -40);
    a.cli().ok(&["wal-verify", "integrity", "--source", SOURCE]);
    let r = a.cli().fails(
        &[
            "wal-verify",
            "integrity",
            "--source",
            SOURCE,
            "--read-data",
            "--jobs",
            "2",
        ],
        7,
        &format!("{} damaged", seg(2, 13)),
    );
    assert!(r.stderr.contains("failed authentication"), "{}", r.stderr);

    // A flip in the first chunk is caught by the header check alone.
    a.flip(&seg(1, 3), 100);
    let r = a
        .cli()
        .run(&["wal-verify", "integrity", "--source", SOURCE, "--json"]);
    assert_eq!(r.code, 7, "{}", r.stderr);
    let v: Verify = json(&r);
    assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
    assert_eq!(
        (v.problems[0].kind.as_str(), v.problems[0].name.as_str()),
        ("damaged", seg(1, 3).as_str())
    );

    // An object copied over another's name: its header names the other.
    a.copy(&seg(1, 6), &seg(1, 5));
    let r = a
        .cli()
        .run(&["wal-verify", "integrity", "--source", SOURCE, "--json"]);
    let v: Verify = json(&r);
    let p = v
        .problems
        .iter()
        .find(|p| p.name == seg(1, 5))
        .expect("segment 5 reported");
    assert!(p.detail.contains("swapped"), "{}", p.detail);
}

#[test]
fn wal_verify_timeline_finds_a_missing_or_bogus_history_file() {
    let a = Archive::standard();
    let ok: Verify = json(
        &a.cli()
            .ok(&["wal-verify", "timeline", "--source", SOURCE, "--json"]),
    );
    assert!(ok.ok && ok.problems.is_empty(), "{ok:?}");

    // Timeline 3 claims to come from timeline 2 in segment 4, before timeline 2 began (10), and
    // without timeline 2's own switch from timeline 1.
    a.push_bytes("00000003.history", b"2\t0/400000\tbogus\n");
    let r = a.cli().fails(
        &["wal-verify", "timeline", "--source", SOURCE],
        7,
        "00000003.history",
    );
    assert!(r.stdout.contains("inconsistent"), "{}", r.stdout);
    let v: Verify = json(
        &a.cli()
            .run(&["wal-verify", "timeline", "--source", SOURCE, "--json"]),
    );
    let kinds: Vec<&str> = v.problems.iter().map(|p| p.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["inconsistent", "inconsistent", "unreachable"],
        "{:?}",
        v.problems
    );
    assert!(v.problems.iter().all(|p| p.name == "00000003.history"));
    assert!(
        v.problems[2]
            .detail
            .contains("the newest timeline, 3, cannot be reached from the oldest base backup"),
        "{}",
        v.problems[2].detail
    );

    // Timeline 2's history file gone: its segments cannot be followed.
    a.remove("00000003.history");
    a.remove("00000002.history");
    let r = a.cli().fails(
        &["wal-verify", "timeline", "--source", SOURCE],
        7,
        "00000002.history",
    );
    assert!(r.stdout.contains("orphan"), "{}", r.stdout);
    // ...and backup-list no longer follows the switch.
    let c = backup_list(&a).remove(0).wal.unwrap();
    assert_eq!(
        (c.target_timeline, c.restorable_to.as_deref()),
        (1, Some("0/A00000"))
    );

    // --read-data is for integrity.
    a.cli().fails(
        &["wal-verify", "timeline", "--source", SOURCE, "--read-data"],
        3,
        "--read-data is for wal-verify integrity",
    );
}

#[test]
fn prune_deletes_the_wal_below_the_oldest_kept_base_backup() {
    let a = Archive::standard();
    // last=2 keeps B2 and B3: B1 goes, and the WAL below B2's segment 5.
    let run = |keep: &str, extra: &[&str]| -> Prune {
        let mut args = vec!["prune", "--source", SOURCE, "--keep", keep, "--json"];
        args.extend_from_slice(extra);
        let mut v: Vec<Prune> = json(&a.cli().ok(&args));
        v.remove(0)
    };
    let dry = run("last=2", &["--dry-run"]);
    assert!(dry.dry_run && dry.deleted.is_empty());
    let base = dry.base_backups.as_ref().unwrap();
    let doomed: Vec<&str> = base
        .plan
        .decisions
        .iter()
        .filter(|d| !d.keep)
        .map(|d| d.id.as_str())
        .collect();
    assert_eq!(doomed, [B1]);
    let newest = base.plan.decisions.iter().find(|d| d.id == B3).unwrap();
    assert_eq!(newest.reasons, ["newest base backup", "last 2 (1 of 2)"]);
    let wal = dry.wal.as_ref().unwrap();
    assert_eq!(wal.keep_from, Some(seg(1, 5)));
    assert_eq!(
        wal.deleted,
        [WalDeleted {
            timeline: 1,
            first: seg(1, 1),
            last: seg(1, 4),
            // Segments 1-4 and B1's .backup file.
            files: 5,
        }]
    );
    assert_eq!((wal.files_deleted, wal.files_kept), (5, 15));
    // A dry run deletes nothing.
    assert!(a.exists(&seg(1, 1)));
    assert_eq!(backup_list(&a).len(), 3);
    let human = a
        .cli()
        .ok(&["prune", "--source", SOURCE, "--keep", "last=2", "--dry-run"])
        .stdout;
    assert!(
        human.contains(&format!(
            "would delete  {}..{}  5 files",
            seg(1, 1),
            seg(1, 4)
        )),
        "{human}"
    );

    // A base backup's PITR drill records (`drill --pitr`) go with it (a failed one: a passed
    // one would keep it as the newest drill-passed base backup).
    let record = crate::base_retention::drill_record(B1, false);
    a.r.commit_base_drill(&record).unwrap();
    let drill =
        offsitedb::catalog::base_drill::base_drill_key(SOURCE, &record.base_id, &record.drill_id);
    let done = run("last=2", &[]);
    assert_eq!(done.base_backups.unwrap().deleted, [B1]);
    assert!(a.store().head(&drill).unwrap().is_none(), "{drill} is left");
    assert_eq!(done.wal.unwrap().files_deleted, 5);
    for n in 1..=4 {
        assert!(!a.exists(&seg(1, n)), "segment {n} is still there");
    }
    assert!(!a.exists(&format!("{}.00000028.backup", seg(1, 2))));
    assert!(a.exists(&seg(1, 5)) && a.exists(&format!("{}.00000028.backup", seg(1, 5))));
    assert!(a.exists("00000002.history"));
    assert_eq!(
        backup_list(&a)
            .iter()
            .map(|b| b.id.as_str())
            .collect::<Vec<_>>(),
        [B2, B3]
    );
    // What is left is whole.
    a.cli().ok(&["wal-verify", "integrity", "--source", SOURCE]);

    // last=1 keeps B3 (timeline 2, segment 12): the rest of timeline 1, its .partial, and
    // timeline 2's segments 10-11 go; the history file stays.
    let p = run("last=1", &[]);
    let wal = p.wal.unwrap();
    assert_eq!(wal.keep_from, Some(seg(2, 12)));
    assert_eq!(
        wal.deleted
            .iter()
            .map(|d| (d.timeline, d.first.clone(), d.last.clone()))
            .collect::<Vec<_>>(),
        [
            (1, seg(1, 5), format!("{}.partial", seg(1, 10))),
            (2, seg(2, 10), seg(2, 11)),
        ]
    );
    assert!(a.exists("00000002.history"));
    assert!(a.exists(&format!("{}.00000028.backup", seg(2, 12))));
    a.cli().ok(&["wal-verify", "integrity", "--source", SOURCE]);
    a.cli().ok(&["wal-verify", "timeline", "--source", SOURCE]);
}

#[test]
fn prune_deletes_no_wal_while_the_newest_base_backup_is_damaged_or_none_exists() {
    let a = Archive::standard();
    a.store()
        .delete(&base_data_key(SOURCE, &SnapshotId::parse(B3).unwrap()))
        .unwrap();
    let r = a
        .cli()
        .ok(&["prune", "--source", SOURCE, "--keep", "last=1", "--json"]);
    let p: Vec<Prune> = json(&r);
    let base = p[0].base_backups.as_ref().unwrap();
    assert!(base.deleted.is_empty());
    let held = base.plan.held.as_deref().unwrap();
    assert!(
        held.contains(&format!("the newest base backup, {B3}, is damaged")),
        "{held}"
    );
    let wal = p[0].wal.as_ref().unwrap();
    assert_eq!(wal.held.as_deref(), Some(held));
    assert_eq!(wal.files_deleted, 0);
    assert!(a.exists(&seg(1, 1)));

    // WAL with no base backup at all is kept.
    let b = Archive::empty();
    for n in 1..=3 {
        b.push(&seg(1, n));
    }
    let p: Vec<Prune> = json(
        &b.cli()
            .ok(&["prune", "--source", SOURCE, "--keep", "last=1", "--json"]),
    );
    let wal = p[0].wal.as_ref().unwrap();
    assert_eq!(
        wal.held.as_deref(),
        Some("no base backup: the WAL is kept until one exists")
    );
    assert!(b.exists(&seg(1, 1)));
}

#[test]
fn a_source_without_wal_is_not_found() {
    let a = Archive::standard();
    for args in [
        &["wal-show", "--source", "other"][..],
        &["wal-verify", "integrity", "--source", "other"],
        &["wal-verify", "timeline", "--source", "other"],
    ] {
        a.cli()
            .fails(args, 8, "no wal archived for source \"other\"");
    }
    // Without --source and without a configuration, the command asks which.
    a.cli().fails(&["wal-show"], 3, "no source given");
    let r = a.cli().ok(&["backup-list", "--source", "other"]);
    assert!(
        r.stdout.is_empty() && r.stderr.contains("no base backups"),
        "{}",
        r.stderr
    );
}

/// On S3, the header check reads the first sealed chunk of each object and drops the rest of
/// the response; `--read-data` reads all of it. Seen through a proxy that cuts the response for
/// one 4 MB segment of random bytes (four chunks) after 2 MB: a reader that wants the rest asks
/// again from where it stopped (a `range` request), and the header check never does.
#[test]
fn on_s3_the_header_check_does_not_download_the_whole_segment() {
    const BIG: &str = "00000002000000000000000D";
    let size = 4 << 20;
    let repo = Repo::s3("walinspect");
    let proxy = crate::proxy::Proxy::start(repo.weed.as_ref().unwrap().port);
    let a = Archive::standard_in(repo, size);
    a.remove(BIG);
    a.push_bytes(BIG, &random_segment(size));
    let cli = a.cli().clone_with(
        "OFFSITEDB_REPO",
        &format!(
            "s3://{BUCKET}/walinspect?endpoint={}&region=us-east-1",
            proxy.endpoint()
        ),
    );
    let resumed = || {
        proxy
            .seen()
            .iter()
            .filter(|s| s.method == "GET" && s.target.contains(BIG))
            .map(|s| s.headers.iter().any(|(k, _)| k == "range"))
            .collect::<Vec<bool>>()
    };

    proxy.inject("GET", BIG, Fault::CutResponseAfter(2 << 20), 1);
    let v: Verify = json(&cli.ok(&["wal-verify", "integrity", "--source", SOURCE, "--json"]));
    assert!(v.ok, "{v:?}");
    assert_eq!(
        resumed(),
        [false],
        "the header check asked for more of {BIG}"
    );

    proxy.inject("GET", BIG, Fault::CutResponseAfter(2 << 20), 1);
    cli.ok(&["wal-verify", "integrity", "--source", SOURCE, "--read-data"]);
    assert_eq!(
        resumed(),
        [false, false, true],
        "--read-data did not read {BIG} to its end"
    );

    // The damage past the first chunk, found only by reading it.
    a.flip(BIG, -100);
    cli.ok(&["wal-verify", "integrity", "--source", SOURCE]);
    cli.fails(
        &["wal-verify", "integrity", "--source", SOURCE, "--read-data"],
        7,
        &format!("{BIG} damaged"),
    );
}

/// `verify` covers the WAL: a segment deleted from the middle of the range the base backups need
/// is named, with the integrity exit code.
#[test]
fn verify_names_a_deleted_wal_segment() {
    let a = Archive::standard();
    let before = a.cli().run(&["verify", "--source", SOURCE, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&before.stdout).unwrap();
    assert_eq!(v["errors"], 0, "{v:#}");
    assert!(
        v["sources"][0]["wal_files_checked"].as_u64().unwrap() > 0,
        "{v:#}"
    );
    a.remove(&seg(1, 7));
    let r = a.cli().run(&["verify", "--source", SOURCE, "--json"]);
    assert_eq!(r.code, 7, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let wal: Vec<&str> = v["sources"][0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "wal")
        .map(|f| f["message"].as_str().unwrap())
        .collect();
    assert!(wal.iter().any(|m| m.contains(&seg(1, 7))), "{v:#}");
}
