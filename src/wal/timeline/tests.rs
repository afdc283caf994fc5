//! The model's tables: gaps, coverage across timeline switches, restore paths, the integrity
//! window, retention's prefix, and history inconsistencies.

use super::*;
use crate::wal::name::{DEFAULT_SEGMENT_SIZE, parse_history};

const MB16: u64 = DEFAULT_SEGMENT_SIZE;

/// Segment `n` of timeline `tl` as its name.
fn s(tl: u32, n: u64) -> String {
    WalName::segment(tl, n, MB16).to_string()
}

/// An archive of 16 MB segments holding `names` (100 bytes each) and the history files
/// `histories` (timeline, text; an unparsable text is kept as the error).
fn archive(names: &[String], histories: &[(u32, &str)]) -> Archive {
    archive_sized(names, histories, MB16)
}

fn archive_sized(names: &[String], histories: &[(u32, &str)], size: u64) -> Archive {
    let mut files: Vec<File> = names
        .iter()
        .map(|n| File {
            name: WalName::parse(n).unwrap(),
            size: 100,
        })
        .collect();
    let mut h = BTreeMap::new();
    for (tl, text) in histories {
        files.push(File {
            name: WalName::history(*tl),
            size: 50,
        });
        h.insert(
            *tl,
            parse_history(text).map_err(|e| e.message().to_string()),
        );
    }
    Archive::new(files, h, size)
}

/// Segments `a..=b` of timeline `tl`.
fn run(tl: u32, a: u64, b: u64) -> Vec<String> {
    (a..=b).map(|n| s(tl, n)).collect()
}

fn cat(parts: &[Vec<String>]) -> Vec<String> {
    parts.concat()
}

fn without(mut v: Vec<String>, gone: &[String]) -> Vec<String> {
    v.retain(|n| !gone.contains(n));
    v
}

fn base(tl: u32, seg: u64, end: u64) -> BaseStart {
    BaseStart {
        id: format!("b{tl}-{seg}"),
        timeline: tl,
        start_segment: seg,
        start_lsn: Lsn(seg * MB16 + 0x28),
        end_lsn: Lsn(end),
    }
}

/// Timeline 2 left timeline 1 in segment 5; timeline 3 left timeline 2 in segment 8.
const T2: &str = "1\t0/5000028\tno recovery target specified\n";
const T3: &str = "1\t0/5000028\tno recovery target specified\n2\t0/8000000\tat restore point\n";

#[test]
fn ranges_and_gaps_per_timeline() {
    type Runs<'a> = &'a [(&'a str, &'a str, u64)];
    let cases: Vec<(Vec<String>, u64, Runs, Runs)> = vec![
        (
            run(1, 1, 3),
            MB16,
            &[("000000010000000000000001", "000000010000000000000003", 3)],
            &[],
        ),
        (
            cat(&[run(1, 1, 2), run(1, 5, 6), run(1, 9, 9)]),
            MB16,
            &[
                ("000000010000000000000001", "000000010000000000000002", 2),
                ("000000010000000000000005", "000000010000000000000006", 2),
                ("000000010000000000000009", "000000010000000000000009", 1),
            ],
            &[
                ("000000010000000000000003", "000000010000000000000004", 2),
                ("000000010000000000000007", "000000010000000000000008", 2),
            ],
        ),
        // The log boundary: 256 segments of 16 MB per log.
        (
            vec![
                "0000000100000000000000FF".into(),
                "000000010000000100000000".into(),
            ],
            MB16,
            &[("0000000100000000000000FF", "000000010000000100000000", 2)],
            &[],
        ),
        // 64 segments of 64 MB per log: 3F is the last of log 0.
        (
            vec![
                "00000001000000000000003F".into(),
                "000000010000000100000000".into(),
            ],
            64 << 20,
            &[("00000001000000000000003F", "000000010000000100000000", 2)],
            &[],
        ),
        // The same names with 16 MB segments have a gap of 192.
        (
            vec![
                "00000001000000000000003F".into(),
                "000000010000000100000000".into(),
            ],
            MB16,
            &[
                ("00000001000000000000003F", "00000001000000000000003F", 1),
                ("000000010000000100000000", "000000010000000100000000", 1),
            ],
            &[("000000010000000000000040", "0000000100000000000000FF", 192)],
        ),
    ];
    for (names, size, ranges, gaps) in cases {
        let a = archive_sized(&names, &[], size);
        let t = &a.timelines()[0];
        let got = |v: &[SegRange]| -> Vec<(String, String, u64)> {
            v.iter()
                .map(|r| (r.first.clone(), r.last.clone(), r.segments))
                .collect()
        };
        let want = |v: &[(&str, &str, u64)]| -> Vec<(String, String, u64)> {
            v.iter()
                .map(|(a, b, n)| (a.to_string(), b.to_string(), *n))
                .collect()
        };
        assert_eq!(got(&t.ranges), want(ranges), "{names:?}");
        assert_eq!(got(&t.gaps), want(gaps), "{names:?}");
        assert_eq!(
            t.ranges.iter().map(|r| r.bytes).sum::<u64>(),
            100 * names.len() as u64
        );
    }
}

#[test]
fn timelines_show_parent_switch_point_and_special_files() {
    let names = cat(&[
        run(1, 1, 4),
        vec![
            format!("{}.partial", s(1, 5)),
            format!("{}.00000028.backup", s(1, 2)),
        ],
        run(2, 5, 6),
    ]);
    let a = archive(&names, &[(2, T2)]);
    let t = a.timelines();
    assert_eq!(t.len(), 2);
    assert_eq!((t[0].parent, t[0].history.as_str()), (None, "none"));
    assert_eq!(t[0].partial, [format!("{}.partial", s(1, 5))]);
    assert_eq!(t[0].backup, [format!("{}.00000028.backup", s(1, 2))]);
    assert_eq!(t[1].parent, Some(1));
    assert_eq!(t[1].switch_lsn, Some(Lsn(0x5000028)));
    assert_eq!(t[1].reason.as_deref(), Some("no recovery target specified"));
    assert_eq!(t[1].history, "archived");
    assert_eq!(a.newest_segment().unwrap().to_string(), s(2, 6));
    assert_eq!(a.oldest_segment().unwrap().to_string(), s(1, 1));
}

#[test]
fn restore_paths_follow_the_history_of_the_target() {
    let a = archive(
        &cat(&[run(1, 1, 9), run(2, 5, 9), run(3, 8, 9)]),
        &[(2, T2), (3, T3)],
    );
    let step = |timeline, first, end| Step {
        timeline,
        first,
        end,
    };
    type Want = std::result::Result<Vec<Step>, &'static str>;
    let cases: Vec<((u32, u64, u64), u32, Want)> = vec![
        ((1, 2, 0x2000028), 1, Ok(vec![step(1, 2, None)])),
        (
            (1, 2, 0x2000028),
            2,
            Ok(vec![step(1, 2, Some(5)), step(2, 5, None)]),
        ),
        (
            (1, 2, 0x2000028),
            3,
            Ok(vec![
                step(1, 2, Some(5)),
                step(2, 5, Some(8)),
                step(3, 8, None),
            ]),
        ),
        // Started in the switch segment, before the switch: timeline 2's copy of it.
        ((1, 5, 0x5000000), 2, Ok(vec![step(2, 5, None)])),
        (
            (2, 6, 0x6000000),
            3,
            Ok(vec![step(2, 6, Some(8)), step(3, 8, None)]),
        ),
        // Started on timeline 1 after timeline 2 left it.
        (
            (1, 6, 0x6000000),
            2,
            Err("branched off timeline 1 at 0/5000028, before 0/6000000"),
        ),
        ((2, 5, 0x5000100), 1, Err("timeline 1 has no history file")),
        ((1, 2, 0x2000028), 4, Err("timeline 4 has no history file")),
    ];
    for ((tl, first, lsn), target, want) in cases {
        let got = a.restore_path(tl, first, Lsn(lsn), target);
        match (&got, &want) {
            (Ok(g), Ok(w)) => assert_eq!(g, w, "{tl}/{first} to {target}"),
            (Err(g), Err(w)) => assert!(g.contains(w), "{g}"),
            _ => panic!("{tl}/{first} to {target}: {got:?}, expected {want:?}"),
        }
    }
    // A history without its timeline in it.
    let b = archive(&run(1, 1, 3), &[(3, "2\t0/8000000\tx\n")]);
    let e = b.restore_path(1, 1, Lsn(0x1000000), 3).unwrap_err();
    assert!(e.contains("does not descend from timeline 1"), "{e}");
}

#[test]
fn coverage_follows_timeline_switches_to_the_first_missing_segment() {
    let full = cat(&[run(1, 1, 5), run(2, 5, 9)]);
    struct Case {
        what: &'static str,
        names: Vec<String>,
        base: BaseStart,
        target: u32,
        to: Option<(u64, u32)>,
        missing: Option<String>,
        complete: bool,
        consistent: bool,
        unreachable: bool,
    }
    let cases = vec![
        Case {
            what: "complete across the switch",
            names: full.clone(),
            base: base(1, 2, 0x2000100),
            target: 2,
            to: Some((0xA000000, 2)),
            missing: None,
            complete: true,
            consistent: true,
            unreachable: false,
        },
        Case {
            what: "timeline 1's switch segment is not needed",
            names: without(full.clone(), &[s(1, 5)]),
            base: base(1, 2, 0x2000100),
            target: 2,
            to: Some((0xA000000, 2)),
            missing: None,
            complete: true,
            consistent: true,
            unreachable: false,
        },
        Case {
            what: "a gap on the parent",
            names: without(full.clone(), &[s(1, 3)]),
            base: base(1, 2, 0x2000100),
            target: 2,
            to: Some((0x3000000, 1)),
            missing: Some(s(1, 3)),
            complete: false,
            consistent: true,
            unreachable: false,
        },
        Case {
            what: "the child's first segment is missing",
            names: without(full.clone(), &[s(2, 5)]),
            base: base(1, 2, 0x2000100),
            target: 2,
            to: Some((0x5000000, 1)),
            missing: Some(s(2, 5)),
            complete: false,
            consistent: true,
            unreachable: false,
        },
        Case {
            what: "the end of the archive is no gap",
            names: run(1, 2, 4),
            base: base(1, 2, 0x2000100),
            target: 2,
            to: Some((0x5000000, 1)),
            missing: None,
            complete: true,
            consistent: true,
            unreachable: false,
        },
        Case {
            what: "not yet archived to the backup's end",
            names: run(1, 2, 2),
            base: base(1, 2, 0x3000100),
            target: 2,
            to: Some((0x3000000, 1)),
            missing: None,
            complete: true,
            consistent: false,
            unreachable: false,
        },
        Case {
            what: "the first segment is missing",
            names: run(1, 3, 4),
            base: base(1, 2, 0x2000100),
            target: 2,
            to: None,
            missing: Some(s(1, 2)),
            complete: false,
            consistent: false,
            unreachable: false,
        },
        Case {
            what: "taken on timeline 1 after timeline 2 branched",
            names: cat(&[run(1, 1, 7), run(2, 5, 9)]),
            base: base(1, 6, 0x6000100),
            target: 1,
            to: Some((0x8000000, 1)),
            missing: None,
            complete: true,
            consistent: true,
            unreachable: true,
        },
        Case {
            what: "a base backup on the child",
            names: full.clone(),
            base: base(2, 7, 0x7000100),
            target: 2,
            to: Some((0xA000000, 2)),
            missing: None,
            complete: true,
            consistent: true,
            unreachable: false,
        },
    ];
    for c in cases {
        let a = archive(&c.names, &[(2, T2)]);
        let got = a.coverage(&c.base);
        assert_eq!(got.target_timeline, c.target, "{}", c.what);
        assert_eq!(
            got.restorable_to.zip(got.timeline),
            c.to.map(|(l, t)| (Lsn(l), t)),
            "{}",
            c.what
        );
        assert_eq!(got.missing_from, c.missing, "{}", c.what);
        assert_eq!(got.complete, c.complete, "{}", c.what);
        assert_eq!(got.consistent, c.consistent, "{}", c.what);
        assert_eq!(
            got.newest_unreachable.is_some(),
            c.unreachable,
            "{}",
            c.what
        );
    }
    // Two switches: timeline 1, then 2, then 3.
    let a = archive(
        &cat(&[run(1, 1, 4), run(2, 5, 7), run(3, 8, 12)]),
        &[(2, T2), (3, T3)],
    );
    let c = a.coverage(&base(1, 2, 0x2000100));
    assert_eq!(
        (c.target_timeline, c.restorable_to),
        (3, Some(Lsn(0xD000000)))
    );
    assert!(c.complete);
    let a = archive(
        &cat(&[run(1, 1, 4), run(2, 5, 6), run(3, 8, 12)]),
        &[(2, T2), (3, T3)],
    );
    assert_eq!(a.coverage(&base(1, 2, 0)).missing_from, Some(s(2, 7)));
}

#[test]
fn the_integrity_window_names_every_missing_range() {
    type Missing = Vec<(u32, u64, u64)>;
    type Case = (
        &'static str,
        Vec<String>,
        Vec<BaseStart>,
        Missing,
        String,
        Option<String>,
    );
    let cases: Vec<Case> = vec![
        (
            "none missing",
            cat(&[run(1, 1, 5), run(2, 5, 9)]),
            vec![base(1, 2, 0)],
            vec![],
            s(1, 2),
            Some(s(2, 9)),
        ),
        (
            "gaps on both timelines",
            without(
                cat(&[run(1, 1, 5), run(2, 5, 9)]),
                &[s(1, 3), s(2, 7), s(2, 8)],
            ),
            vec![base(1, 2, 0)],
            vec![(1, 3, 3), (2, 7, 8)],
            s(1, 2),
            Some(s(2, 9)),
        ),
        (
            "the parent's tail before the switch",
            cat(&[run(1, 2, 3), run(2, 5, 6)]),
            vec![base(1, 2, 0)],
            vec![(1, 4, 4)],
            s(1, 2),
            Some(s(2, 6)),
        ),
        (
            "no base backup: from the oldest segment",
            without(run(1, 3, 4), &[]),
            vec![],
            vec![],
            s(1, 3),
            Some(s(1, 4)),
        ),
        (
            "no base backup: from the oldest segment, across the switch",
            without(cat(&[run(1, 3, 4), run(2, 5, 9)]), &[s(1, 4), s(2, 6)]),
            vec![],
            vec![(1, 4, 4), (2, 6, 6)],
            s(1, 3),
            Some(s(2, 9)),
        ),
        (
            "every base backup's path counts",
            cat(&[run(1, 1, 3), run(1, 6, 8), run(2, 5, 9)]),
            vec![base(1, 1, 0), base(1, 6, 0)],
            // The first one goes to timeline 2 (needs 1/4); the second cannot (timeline
            // 2 left before it) and reads timeline 1 to its end.
            vec![(1, 4, 4)],
            s(1, 1),
            Some(s(2, 9)),
        ),
    ];
    for (what, names, bases, missing, first, last) in cases {
        let a = archive(&names, &[(2, T2)]);
        let w = a.integrity_window(&bases).unwrap();
        assert_eq!(w.missing, missing, "{what}");
        assert_eq!(w.first.to_string(), first, "{what}");
        assert_eq!(w.last.map(|l| l.to_string()), last, "{what}");
    }
    assert!(archive(&[], &[(2, T2)]).integrity_window(&[]).is_none());
    // What is authenticated: from the window's start, and every history file.
    let a = archive(&cat(&[run(1, 1, 4), run(2, 5, 6)]), &[(2, T2)]);
    let w = a.integrity_window(&[base(1, 3, 0)]).unwrap();
    let checked: Vec<String> = a
        .in_window(w.start)
        .iter()
        .map(|f| f.name.to_string())
        .collect();
    assert_eq!(
        checked,
        [
            s(1, 3),
            s(1, 4),
            "00000002.history".into(),
            s(2, 5),
            s(2, 6)
        ]
    );
}

#[test]
fn retention_deletes_a_prefix_below_the_oldest_kept_base_backup() {
    let names = cat(&[
        run(1, 1, 7),
        vec![
            format!("{}.partial", s(1, 5)),
            format!("{}.00000028.backup", s(1, 2)),
            format!("{}.00000028.backup", s(1, 6)),
        ],
        run(2, 5, 9),
    ]);
    let a = archive(&names, &[(2, T2)]);
    let cases: Vec<(&[u64], Option<Vec<String>>)> = vec![
        (&[], None),
        (&[1], Some(vec![])),
        (
            &[6, 8],
            Some(vec![
                s(1, 1),
                s(1, 2),
                format!("{}.00000028.backup", s(1, 2)),
                s(1, 3),
                s(1, 4),
                s(1, 5),
                format!("{}.partial", s(1, 5)),
                s(2, 5),
            ]),
        ),
        (
            &[3],
            Some(vec![
                s(1, 1),
                s(1, 2),
                format!("{}.00000028.backup", s(1, 2)),
            ]),
        ),
    ];
    for (kept, want) in cases {
        let got = a
            .prunable(kept)
            .map(|(_, f)| f.iter().map(|f| f.name.to_string()).collect::<Vec<_>>());
        assert_eq!(got, want, "kept {kept:?}");
    }
    // Whatever the cut, a history file stays and each timeline loses a prefix.
    for cut in 0..12 {
        let (_, gone) = a.prunable(&[cut]).unwrap();
        assert!(gone.iter().all(|f| f.name.kind != Kind::History));
        for tl in [1, 2] {
            let nums: Vec<u64> = a
                .files()
                .iter()
                .filter(|f| f.name.timeline == tl && f.name.is_segment())
                .map(|f| f.name.segment_number(MB16))
                .collect();
            let deleted: Vec<bool> = nums
                .iter()
                .map(|n| {
                    gone.iter()
                        .any(|f| f.name == WalName::segment(tl, *n, MB16))
                })
                .collect();
            assert!(
                deleted.windows(2).all(|w| w[0] || !w[1]),
                "cut {cut}: {deleted:?}"
            );
        }
    }
}

#[test]
fn timeline_checks_find_inconsistent_histories() {
    let segs = cat(&[run(1, 1, 5), run(2, 5, 8), run(3, 8, 9)]);
    let t3_other = "1\t0/4000000\tx\n2\t0/8000000\ty\n";
    type Case<'a> = (
        &'a str,
        Vec<String>,
        Vec<(u32, &'a str)>,
        Option<BaseStart>,
        Vec<&'a str>,
    );
    let cases: Vec<Case> = vec![
        (
            "consistent",
            segs.clone(),
            vec![(2, T2), (3, T3)],
            Some(base(1, 2, 0)),
            vec![],
        ),
        (
            "no base backup",
            segs.clone(),
            vec![(2, T2), (3, T3)],
            None,
            vec![],
        ),
        (
            "a child that rewrites its parent's history",
            segs.clone(),
            vec![(2, T2), (3, t3_other)],
            Some(base(1, 2, 0)),
            vec!["inconsistent"],
        ),
        (
            "a parent without a history file",
            run(1, 1, 5),
            vec![(3, T3)],
            Some(base(1, 2, 0)),
            vec!["parent"],
        ),
        (
            "an unparsable history file",
            segs.clone(),
            vec![(2, T2), (3, "garbage here")],
            Some(base(1, 2, 0)),
            // The newest timeline has no usable history, so it cannot be reached either.
            vec!["history", "unreachable"],
        ),
        (
            "switch points going backwards",
            run(1, 1, 9),
            vec![
                (2, "1\t0/8000000\tx\n"),
                (3, "1\t0/8000000\tx\n2\t0/5000000\ty\n"),
            ],
            Some(base(1, 2, 0)),
            vec!["history", "inconsistent"],
        ),
        (
            "segments without a history file",
            cat(&[run(1, 1, 5), run(2, 5, 8)]),
            vec![],
            Some(base(1, 2, 0)),
            vec!["orphan", "unreachable"],
        ),
        (
            "the newest timeline left before the oldest base backup",
            cat(&[run(1, 1, 7), run(2, 5, 8)]),
            vec![(2, T2)],
            Some(base(1, 6, 0)),
            vec!["unreachable"],
        ),
        (
            "a segment before its timeline began",
            cat(&[run(1, 1, 5), run(2, 3, 8)]),
            vec![(2, T2)],
            Some(base(1, 2, 0)),
            vec!["before_start"],
        ),
        (
            "a parent that is not older",
            run(1, 1, 5),
            vec![(2, "2\t0/5000000\tx\n")],
            None,
            vec!["history", "unreachable"],
        ),
    ];
    for (what, names, hist, from, kinds) in cases {
        let a = archive(&names, &hist);
        let got: Vec<String> = a
            .timeline_findings(from.as_ref())
            .into_iter()
            .map(|f| f.kind)
            .collect();
        assert_eq!(got, kinds, "{what}");
    }
    // The finding names the file.
    let a = archive(&segs, &[(2, T2), (3, t3_other)]);
    let f = &a.timeline_findings(None)[0];
    assert_eq!(f.name, "00000003.history");
    assert!(
        f.detail.contains("does not continue its parent's"),
        "{}",
        f.detail
    );
}
