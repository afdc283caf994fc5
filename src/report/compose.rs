/*!
The report's words: what a [`Report`] says, in the order a reader needs it. Page one answers "are
our backups tested?" in one line per source; then one section per source with the figures and
where they come from; then what the fingerprint proves. Both renderers draw this document, so the
PDF and the HTML say the same thing.
*/

use std::time::Duration;

use jiff::Timestamp;

use super::doc::{
    Align, Block, Chart, ChartKind, Column, Document, Fact, Point, Row, Section, Span, Table,
    Threshold, Tone, Unit, Verdict,
};
use super::model::{Report, SourceReport, VerdictKind};
use crate::units::{bytes, spoken};

pub const TITLE: &str = "Restore Drill Report";

pub fn document(r: &Report, attachment: Option<String>) -> Document {
    let mut sections = vec![summary(r)];
    for s in &r.sources {
        sections.push(source(r, s));
    }
    sections.push(about(r));
    Document {
        title: TITLE.into(),
        subtitle: format!("{} · {}", r.period.title(), r.repository.location),
        running_header: format!("OffsiteDB {TITLE} · {}", r.period.title()),
        footer: format!(
            "Generated {} by {} · fingerprint {}",
            day_time(r.generated_at),
            r.generated_by,
            r.fingerprint
        ),
        sections,
        attachment,
    }
}

pub fn tone(k: VerdictKind) -> Tone {
    match k {
        VerdictKind::Passed => Tone::Good,
        VerdictKind::Attention => Tone::Warning,
        VerdictKind::Failed => Tone::Bad,
    }
}

/// "PASSED", "NEEDS ATTENTION", "FAILED": the verdict in words, never colour alone.
pub fn verdict_word(k: VerdictKind) -> &'static str {
    match k {
        VerdictKind::Passed => "PASSED",
        VerdictKind::Attention => "NEEDS ATTENTION",
        VerdictKind::Failed => "FAILED",
    }
}

fn summary(r: &Report) -> Section {
    let period = if r.period.partial {
        format!(
            "{} so far (to {})",
            r.period.title(),
            day_time(r.period.end)
        )
    } else {
        r.period.title()
    };
    let mut blocks = vec![Block::Paragraph(vec![
        Span::plain(
            "Every backup OffsiteDB takes is restored into a throwaway PostgreSQL and checked, table by table, against what was backed up. This report says what those restore drills found in ",
        ),
        Span::bold(period),
        Span::plain("."),
    ])];
    if r.sources.is_empty() {
        blocks.push(Block::Note(
            "The repository holds no backups and no source is configured.".into(),
        ));
    }
    blocks.push(Block::Verdicts(
        r.sources
            .iter()
            .map(|s| {
                let mut details = vec![restore_line(s), recovery_line(s)];
                details.extend(s.verdict.reasons.iter().cloned());
                Verdict {
                    tone: tone(s.verdict.kind),
                    subject: s.name.clone(),
                    headline: s.verdict.headline.clone(),
                    details,
                }
            })
            .collect(),
    ));
    blocks.push(Block::Note(
        "Tested restore time: how long the slowest restore drill of the month took, from download to verified. Recovery point: the most data a loss could have cost, the longest time without a good backup.".into(),
    ));
    Section {
        heading: "Summary".into(),
        new_page: false,
        blocks,
    }
}

fn restore_line(s: &SourceReport) -> String {
    let o = &s.objectives;
    let achieved = match (&s.restore_time, o.achieved_rto_seconds) {
        (Some(st), _) => format!(
            "Tested restore time {} (median {}, {} drill{})",
            secs(st.max),
            secs(st.median),
            st.count,
            if st.count == 1 { "" } else { "s" }
        ),
        _ => "Tested restore time: no passing drill this month".into(),
    };
    match o.rto_seconds {
        Some(p) => format!("{achieved}; objective {} {}", secs(p), met(o.rto_met)),
        None => achieved,
    }
}

fn recovery_line(s: &SourceReport) -> String {
    let o = &s.objectives;
    let what = if s.recovery_point.measured_by == "wal" {
        "WAL archive lag"
    } else {
        "Recovery point achieved"
    };
    let achieved = match o.achieved_rpo_seconds {
        Some(a) => format!("{what} {}", secs(a)),
        None => format!("{what}: unknown"),
    };
    match (o.rpo_seconds, o.rpo_from.as_deref()) {
        (Some(p), Some("rpo")) => format!("{achieved}; objective {} {}", secs(p), met(o.rpo_met)),
        (Some(p), _) => format!(
            "{achieved}; the schedule promises {} {}",
            secs(p),
            met(o.rpo_met)
        ),
        (None, _) => achieved,
    }
}

/// One line for `list`: "app, last 30 days: recovery point 4 d (objective 1 d 6 h: MISSED);
/// slowest tested restore 1 min 11 s (objective 30 min: met)".
pub fn objectives_line(s: &SourceReport) -> String {
    let o = &s.objectives;
    let part = |what: &str, achieved: Option<f64>, promised: Option<f64>, m: Option<bool>| {
        let a = achieved.map(secs).unwrap_or("unknown".into());
        match promised {
            Some(p) => format!(
                "{what} {a} (objective {}: {})",
                secs(p),
                match m {
                    Some(true) => "met",
                    Some(false) => "MISSED",
                    None => "not measured",
                }
            ),
            None => format!("{what} {a}"),
        }
    };
    let rpo = if o.rpo_from.as_deref() == Some("rpo") {
        o.rpo_seconds
    } else {
        None
    };
    format!(
        "{}, last 30 days: {}; {}",
        s.name,
        part(
            "recovery point",
            o.achieved_rpo_seconds,
            rpo,
            if rpo.is_some() { o.rpo_met } else { None }
        ),
        part(
            "slowest tested restore",
            o.achieved_rto_seconds,
            o.rto_seconds,
            o.rto_met
        )
    )
}

fn met(m: Option<bool>) -> &'static str {
    match m {
        Some(true) => "(met)",
        Some(false) => "(MISSED)",
        None => "",
    }
}

fn source(r: &Report, s: &SourceReport) -> Section {
    let mut blocks = Vec::new();
    let t = tone(s.verdict.kind);
    let mut facts = vec![
        Fact::new(
            "Verdict",
            format!("{}: {}", verdict_word(s.verdict.kind), s.verdict.headline),
        )
        .toned(t),
        Fact::new("Kind", s.kind.clone()),
        Fact::new(
            "Schedule",
            s.schedule
                .clone()
                .unwrap_or_else(|| "not configured on this machine".into()),
        ),
    ];
    let c = &s.snapshots;
    facts.push(Fact::new(
        "Snapshots",
        format!(
            "{} taken, {} drilled, {} passed, {} failed, {} not drilled{}",
            c.taken,
            c.drilled,
            c.passed,
            c.failed,
            c.not_drilled,
            if c.damaged > 0 {
                format!(", {} damaged", c.damaged)
            } else {
                String::new()
            }
        ) + &if c.pruned > 0 {
            format!(
                " ({} of them deleted by retention since, counted from this machine's history)",
                c.pruned
            )
        } else {
            String::new()
        },
    ));
    facts.push(Fact::new("Restore time", restore_line(s)).toned(met_tone(s.objectives.rto_met)));
    if let Some(st) = &s.restore_time {
        facts.push(Fact::new(
            "Restore time spread",
            format!(
                "median {}, 95th percentile {}, slowest {}",
                secs(st.median),
                secs(st.p95),
                secs(st.max)
            ),
        ));
    }
    facts.push(Fact::new("Recovery point", recovery_line(s)).toned(met_tone(s.objectives.rpo_met)));
    for reason in &s.verdict.reasons {
        facts.push(Fact::new("Needs a look", reason.clone()).toned(t));
    }
    blocks.push(Block::Facts(facts));

    let rto = s.objectives.rto_seconds.map(|y| Threshold {
        y,
        label: format!("objective {}", secs(y)),
    });
    blocks.push(Block::Chart(Chart {
        title: "Tested restore time per drill".into(),
        kind: ChartKind::Line,
        unit: Unit::Seconds,
        x_range: range(r),
        points: s
            .drills
            .iter()
            .map(|d| Point {
                x: d.at.as_second() as f64,
                y: d.total_seconds,
                tone: if d.passed { Tone::Good } else { Tone::Bad },
            })
            .collect(),
        threshold: rto,
        empty: "No drill ran this month.".into(),
    }));
    blocks.push(Block::Chart(Chart {
        title: "Backup size (stored, compressed and encrypted)".into(),
        kind: ChartKind::Bars,
        unit: Unit::Bytes,
        x_range: range(r),
        points: s
            .snapshot_list
            .iter()
            .map(|x| Point {
                x: x.taken.as_second() as f64,
                y: x.stored_bytes as f64,
                tone: Tone::Neutral,
            })
            .collect(),
        threshold: None,
        empty: "No snapshot was taken this month.".into(),
    }));

    blocks.push(Block::Subheading("Drills".into()));
    blocks.push(Block::Table(Table {
        columns: vec![
            col("When", Align::Left, false),
            col("Snapshot", Align::Left, true),
            col("Result", Align::Left, false),
            col("Restore time", Align::Right, false),
            col("Tables", Align::Right, false),
        ],
        rows: s
            .drills
            .iter()
            .map(|d| Row {
                cells: vec![
                    day_time(d.at),
                    d.snapshot.clone(),
                    if d.passed { "passed" } else { "FAILED" }.into(),
                    secs(d.total_seconds),
                    if d.tables_mismatched > 0 {
                        format!("{} ({} wrong)", d.tables, d.tables_mismatched)
                    } else {
                        d.tables.to_string()
                    },
                ],
                tone: if d.passed { Tone::Good } else { Tone::Bad },
            })
            .collect(),
        empty: "No drill ran this month.".into(),
    }));
    // A table cell is cut to fit: the reasons a drill failed are written out in full.
    for d in s.drills.iter().filter(|d| !d.passed) {
        blocks.push(Block::Paragraph(vec![
            Span::bold(format!("Failed drill {} of snapshot ", day_time(d.at))).toned(Tone::Bad),
            Span::mono(d.snapshot.clone()),
            Span::plain(format!(": {}", d.problems.join("; "))),
        ]));
    }

    blocks.push(Block::Subheading("Gaps".into()));
    let gap_rows: Vec<Row> = s
        .recovery_point
        .gaps
        .iter()
        .map(|g| Row {
            cells: vec![
                if g.after_backup {
                    day_time(g.from)
                } else {
                    format!("{} (no good backup before)", day_time(g.from))
                },
                day_time(g.to),
                secs(g.seconds),
            ],
            tone: Tone::Warning,
        })
        .collect();
    blocks.push(Block::Table(Table {
        columns: vec![
            col("From (last good backup)", Align::Left, false),
            col("To", Align::Left, false),
            col("Without a good backup", Align::Right, false),
        ],
        rows: gap_rows,
        empty: match s.objectives.rpo_seconds {
            Some(p) => format!("No gap longer than {} this month.", secs(p)),
            None => "No objective or schedule to measure gaps against.".into(),
        },
    }));

    blocks.push(Block::Subheading("Snapshots".into()));
    blocks.push(Block::Table(Table {
        columns: vec![
            col("Taken", Align::Left, false),
            col("Snapshot", Align::Left, true),
            col("Status", Align::Left, false),
            col("Backup took", Align::Right, false),
            col("Data", Align::Right, false),
            col("Stored", Align::Right, false),
        ],
        rows: s
            .snapshot_list
            .iter()
            .map(|x| Row {
                cells: vec![
                    day_time(x.taken),
                    x.id.clone(),
                    x.status.clone(),
                    secs(x.seconds),
                    bytes(x.plain_bytes),
                    bytes(x.stored_bytes),
                ],
                tone: match x.status.as_str() {
                    "sealed" => Tone::Good,
                    "not drilled" => Tone::Warning,
                    _ => Tone::Bad,
                },
            })
            .collect(),
        empty: "No snapshot was taken this month.".into(),
    }));

    if let Some(runs) = &s.failed_runs {
        blocks.push(Block::Subheading(
            "Failed runs (this machine's history)".into(),
        ));
        blocks.push(Block::Table(Table {
            columns: vec![
                col("When", Align::Left, false),
                col("Step", Align::Left, false),
                col("Error", Align::Left, false),
            ],
            rows: runs
                .iter()
                .map(|f| Row {
                    cells: vec![day_time(f.at), f.job.replace('_', " "), f.error.clone()],
                    tone: Tone::Bad,
                })
                .collect(),
            empty: "No run failed this month.".into(),
        }));
    }

    if let Some(p) = &s.pitr {
        blocks.push(Block::Subheading("Point-in-time recovery".into()));
        let window = match (p.window_from, p.window_to) {
            (Some(f), Some(t)) => format!("any moment from {} to {}", day_time(f), day_time(t)),
            (Some(f), None) => format!("from {}; no WAL archived after it", day_time(f)),
            _ => "unknown".into(),
        };
        blocks.push(Block::Facts(vec![
            Fact::new(
                "Base backups",
                format!(
                    "{} kept, {} taken this month; newest {}",
                    p.base_backups,
                    p.base_backups_in_period,
                    p.newest_base_backup.map(day_time).unwrap_or("none".into())
                ),
            ),
            Fact::new("Restorable", window),
            Fact::new("WAL segments archived", p.wal_segments.to_string()),
            Fact::new(
                "Archive lag at generation",
                p.archive_lag_seconds.map(secs).unwrap_or("unknown".into()),
            ),
            Fact::new(
                "Point-in-time drills",
                "not run by this version: the base backups were checked with pg_verifybackup when fetched",
            ),
        ]));
    }

    blocks.push(Block::Subheading("Retention and protection".into()));
    let rep = &r.repository;
    let mut facts = vec![
        Fact::new(
            "Retention policy",
            s.retention
                .policy
                .clone()
                .unwrap_or("not configured on this machine".into()),
        ),
        Fact::new(
            "Kept now",
            format!(
                "{} snapshot{}{}",
                s.retention.kept,
                if s.retention.kept == 1 { "" } else { "s" },
                s.retention
                    .oldest
                    .map(|t| format!(", the oldest from {}", day(t)))
                    .unwrap_or_default()
            ),
        ),
        Fact::new("Stored at", rep.provider.clone()),
    ];
    if let Some(b) = &rep.bucket {
        facts.push(Fact::new("Bucket", b.clone()).mono());
    }
    if let Some(rg) = &rep.region {
        facts.push(Fact::new("Region", rg.clone()));
    }
    facts.push(Fact::new("Encryption", rep.encryption.clone()));
    facts.push(Fact::new("Key id", rep.key_id.clone()).mono());
    facts.push(Fact::new(
        "Object Lock",
        rep.object_lock
            .clone()
            .unwrap_or("not read by this version".into()),
    ));
    blocks.push(Block::Facts(facts));
    for w in &s.warnings {
        blocks.push(Block::Note(format!("Warning: {w}")));
    }
    Section {
        heading: format!("{} ({})", s.name, s.kind),
        new_page: true,
        blocks,
    }
}

fn about(r: &Report) -> Section {
    Section {
        heading: "About this report".into(),
        new_page: false,
        blocks: vec![
            Block::Facts(vec![
                Fact::new(
                    "Period",
                    format!(
                        "{} to {} (UTC){}",
                        day_time(r.period.start),
                        day_time(r.period.end),
                        if r.period.partial {
                            ", month not over"
                        } else {
                            ""
                        }
                    ),
                ),
                Fact::new("Generated", day_time(r.generated_at)),
                Fact::new("By", r.generated_by.clone()),
                Fact::new("Repository", r.repository.location.clone()).mono(),
                Fact::new("Fingerprint", r.fingerprint.clone()).mono(),
            ]),
            Block::Paragraph(vec![
                Span::plain(
                    "Built from the repository alone (snapshot manifests and drill records, base backups and WAL), so any machine holding the key and the bucket writes the same figures; failed runs come from the history of the machine that wrote it. The fingerprint is a keyed digest (HMAC-SHA-256 under a key derived from the repository key) of the report's data, which this document carries (report.json). ",
                ),
                Span::mono("offsitedb report verify FILE"),
                Span::plain(
                    " recomputes it: a match proves the carried data was written by a holder of the key and not changed since. It does not prove that the drawn pages match that data (compare the figures verify prints), nor that nothing was deleted from the bucket before the report was written.",
                ),
            ]),
        ],
    }
}

fn met_tone(m: Option<bool>) -> Tone {
    match m {
        Some(true) => Tone::Good,
        Some(false) => Tone::Warning,
        None => Tone::Neutral,
    }
}

fn col(title: &str, align: Align, mono: bool) -> Column {
    Column {
        title: title.into(),
        align,
        mono,
    }
}

fn range(r: &Report) -> (f64, f64) {
    (
        r.period.start.as_second() as f64,
        r.period.end.as_second() as f64,
    )
}

fn secs(s: f64) -> String {
    spoken(Duration::from_secs_f64(s.max(0.0)))
}

/// "2026-11-04 03:00 UTC".
pub fn day_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M UTC").to_string()
}

fn day(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d").to_string()
}
