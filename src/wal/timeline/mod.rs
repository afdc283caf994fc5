/*!
The WAL archive as a model, with no I/O: which segments each timeline holds and where it has
gaps, how far the WAL after a base backup reaches, which segments a restore to a timeline needs,
what `wal-verify` must find, and which files retention may delete. `backup-list`, `wal-show`,
`wal-verify` and `prune` read the listing and the history files, and decide here.

How PostgreSQL reads an archive with timelines (xlogrecovery.c, `XLogFileReadAnyTLI`): the
target timeline's history file lists its ancestors and the LSN where each was left. Recovery
reads each segment from the newest timeline of that list that had begun by then, so a restore
from a base backup on timeline 1 to timeline 3 needs timeline 1's segments up to the one before
the segment holding the switch to 2, then timeline 2's from that segment (the promoted server
copied the old timeline's beginning of it) up to the one before the switch to 3, then timeline
3's. The old timeline's last segment (often archived as `.partial`) is not read.

A timeline is reachable from a base backup when the backup's timeline is in the target's history
and the backup started before the target branched off it ("requested timeline is not a child of
this server's history" otherwise). The model uses the backup's start LSN for that, where
PostgreSQL uses its checkpoint (a little later): a backup that started just before a switch
point and checkpointed after it is counted reachable, and recovery will refuse it.
*/

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::name::{Kind, Lsn, TimelineSwitch, WalName};

/// One archived file: its name and its stored size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct File {
    pub name: WalName,
    pub size: u64,
}

/// What reading a timeline's history file gave: its lines, or why it could not be read.
pub type HistoryRead = std::result::Result<Vec<TimelineSwitch>, String>;

/// Where a base backup starts, as the model needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseStart {
    pub id: String,
    pub timeline: u32,
    /// The number of its first WAL segment (`start_wal`).
    pub start_segment: u64,
    pub start_lsn: Lsn,
    /// Where the copy becomes consistent.
    pub end_lsn: Lsn,
}

/// The segments of one timeline that a restore reads: `first` up to `end` (excluded), or to
/// the end of the archive when `end` is `None` (the target timeline).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub timeline: u32,
    pub first: u64,
    pub end: Option<u64>,
}

/// A run of consecutive segments of one timeline (present, or missing).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SegRange {
    pub first: String,
    pub last: String,
    pub segments: u64,
    /// Stored bytes (0 for missing segments).
    pub bytes: u64,
}

/// One timeline as `wal-show` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TimelineView {
    pub timeline: u32,
    /// The timeline it branched from, and where (from its history file).
    pub parent: Option<u32>,
    pub switch_lsn: Option<Lsn>,
    pub reason: Option<String>,
    /// "archived", "missing" (none for a timeline after 1), "none" (timeline 1 has none), or
    /// "unreadable: why".
    pub history: String,
    pub ranges: Vec<SegRange>,
    /// Missing segments between the first and the last archived one.
    pub gaps: Vec<SegRange>,
    /// `.partial` files, and the streamed partials of segments being written (`wal-stream`).
    pub partial: Vec<String>,
    pub backup: Vec<String>,
}

/// How far the WAL after a base backup reaches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Coverage {
    /// The timeline a restore to the latest point follows (the newest one reachable).
    pub target_timeline: u32,
    /// The end of the last segment present without a gap from the backup's start, and its
    /// timeline; `None` when even the first segment is missing.
    pub restorable_to: Option<Lsn>,
    pub timeline: Option<u32>,
    /// The first missing segment with more WAL after it on the restore's path (a gap), or the
    /// backup's first segment when it is not archived.
    pub missing_from: Option<String>,
    /// The backup's first segment is archived, and there is no gap from it to the newest
    /// segment of its path.
    pub complete: bool,
    /// The WAL reaches the backup's end LSN (the copy can be restored at all).
    pub consistent: bool,
    /// Why the newest timeline of the archive is not the target, when it is not.
    pub newest_unreachable: Option<String>,
}

/// A problem `wal-verify` reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// `missing`, `damaged`, `history`, `parent`, `inconsistent`, `orphan`, `before_start`,
    /// `unreachable`, `name`.
    pub kind: String,
    /// The file, or the range of segments (`FIRST..LAST`), it is about.
    pub name: String,
    pub detail: String,
}

impl Finding {
    fn new(kind: &str, name: impl Into<String>, detail: impl Into<String>) -> Finding {
        Finding {
            kind: kind.to_string(),
            name: name.into(),
            detail: detail.into(),
        }
    }
}

/// What `wal-verify integrity` requires: every segment a restore of any base backup (or, with
/// none, of the oldest archived segment) to its newest reachable timeline reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// The segments below this number, on every timeline, are outside the window.
    pub start: u64,
    /// The first and the last required segment.
    pub first: WalName,
    pub last: Option<WalName>,
    /// Required segments that are not archived, one range each.
    pub missing: Vec<(u32, u64, u64)>,
}

/// The archive of one source.
#[derive(Clone, Debug)]
pub struct Archive {
    segment_size: u64,
    files: Vec<File>,
    /// Plain segments: timeline, then number, to stored size.
    segments: BTreeMap<u32, BTreeMap<u64, u64>>,
    histories: BTreeMap<u32, HistoryRead>,
    /// Segment names that are not valid for this segment size (a part past its end).
    strays: Vec<WalName>,
}

impl Archive {
    /// `files` is every archived file (history files included); `histories` holds what each
    /// history file read gave, by timeline.
    pub fn new(
        mut files: Vec<File>,
        histories: BTreeMap<u32, HistoryRead>,
        segment_size: u64,
    ) -> Archive {
        files.sort_by(|a, b| a.name.cmp(&b.name));
        let mut segments: BTreeMap<u32, BTreeMap<u64, u64>> = BTreeMap::new();
        let mut strays = Vec::new();
        for f in &files {
            if f.name.kind == Kind::History {
                continue;
            }
            let n = f.name.segment_number(segment_size);
            // "…0000000100000040" with 1 GB segments names no segment (4 per log).
            let canonical = WalName::segment(f.name.timeline, n, segment_size);
            if canonical.to_string() != base_of(&f.name) {
                strays.push(f.name.clone());
                continue;
            }
            if f.name.is_segment() {
                segments
                    .entry(f.name.timeline)
                    .or_default()
                    .insert(n, f.size);
            }
        }
        Archive {
            segment_size,
            files,
            segments,
            histories,
            strays,
        }
    }

    pub fn segment_size(&self) -> u64 {
        self.segment_size
    }

    pub fn files(&self) -> &[File] {
        &self.files
    }

    /// The plain segment `number` of `timeline`.
    pub fn name(&self, timeline: u32, number: u64) -> WalName {
        WalName::segment(timeline, number, self.segment_size)
    }

    fn has(&self, timeline: u32, number: u64) -> bool {
        self.segments
            .get(&timeline)
            .is_some_and(|s| s.contains_key(&number))
    }

    /// The segment holding `lsn`.
    fn seg(&self, lsn: Lsn) -> u64 {
        lsn.segment(self.segment_size)
    }

    /// Every timeline with segments or a history file.
    pub fn timeline_ids(&self) -> BTreeSet<u32> {
        self.segments
            .keys()
            .chain(self.histories.keys())
            .copied()
            .collect()
    }

    /// The highest timeline with segments or a history file.
    pub fn newest_timeline(&self) -> Option<u32> {
        self.timeline_ids().last().copied()
    }

    /// The newest plain segment (of the highest timeline that has any).
    pub fn newest_segment(&self) -> Option<WalName> {
        let (tl, segs) = self.segments.iter().next_back()?;
        let (n, _) = segs.iter().next_back()?;
        Some(self.name(*tl, *n))
    }

    /// The oldest plain segment: the lowest number, then the lowest timeline.
    pub fn oldest_segment(&self) -> Option<WalName> {
        self.segments
            .iter()
            .filter_map(|(tl, s)| s.keys().next().map(|n| (*n, *tl)))
            .min()
            .map(|(n, tl)| self.name(tl, n))
    }

    /// The segments a restore reads, from segment `first` of `timeline` (at `lsn`) to the end of
    /// `target`; why not, when `target` cannot be reached from there.
    pub fn restore_path(
        &self,
        timeline: u32,
        first: u64,
        lsn: Lsn,
        target: u32,
    ) -> std::result::Result<Vec<Step>, String> {
        if target == timeline {
            return Ok(vec![Step {
                timeline,
                first,
                end: None,
            }]);
        }
        let history = match self.histories.get(&target) {
            None => return Err(format!("timeline {target} has no history file")),
            Some(Err(why)) => {
                return Err(format!(
                    "the history file of timeline {target} is unusable: {why}"
                ));
            }
            Some(Ok(h)) => h,
        };
        let Some(i) = history.iter().position(|s| s.parent == timeline) else {
            return Err(format!(
                "timeline {target} does not descend from timeline {timeline}"
            ));
        };
        if lsn >= history[i].switch_lsn {
            return Err(format!(
                "timeline {target} branched off timeline {timeline} at {}, before {lsn}",
                history[i].switch_lsn
            ));
        }
        let mut steps = Vec::new();
        let mut from = first;
        for s in &history[i..] {
            let end = self.seg(s.switch_lsn);
            if from < end {
                steps.push(Step {
                    timeline: s.parent,
                    first: from,
                    end: Some(end),
                });
            }
            from = from.max(end);
        }
        steps.push(Step {
            timeline: target,
            first: from,
            end: None,
        });
        Ok(steps)
    }

    /// The newest timeline reachable from segment `first` of `timeline` at `lsn` (the one a
    /// restore to the latest point follows), its path, and why the newest timeline of the
    /// archive is not it, when it is not.
    pub fn latest_path(
        &self,
        timeline: u32,
        first: u64,
        lsn: Lsn,
    ) -> (u32, Vec<Step>, Option<String>) {
        let newest = self.newest_timeline().unwrap_or(timeline).max(timeline);
        let mut why_not = None;
        for t in self
            .timeline_ids()
            .into_iter()
            .rev()
            .filter(|t| *t > timeline)
        {
            match self.restore_path(timeline, first, lsn, t) {
                Ok(steps) => return (t, steps, why_not),
                Err(why) if t == newest => why_not = Some(why),
                Err(_) => {}
            }
        }
        let steps = self
            .restore_path(timeline, first, lsn, timeline)
            .expect("a timeline reaches itself");
        (timeline, steps, why_not)
    }

    /// How far the WAL after `base` reaches on the way to the newest reachable timeline.
    pub fn coverage(&self, base: &BaseStart) -> Coverage {
        let (target, steps, why_not) =
            self.latest_path(base.timeline, base.start_segment, base.start_lsn);
        let mut last: Option<(u32, u64)> = None;
        let mut gap = None;
        'walk: for (i, step) in steps.iter().enumerate() {
            let mut n = step.first;
            while step.end.is_none_or(|e| n < e) {
                if self.has(step.timeline, n) {
                    last = Some((step.timeline, n));
                    n += 1;
                    continue;
                }
                if self.any_after(&steps, i, n) {
                    gap = Some(self.name(step.timeline, n));
                }
                break 'walk;
            }
        }
        let restorable_to = last.map(|(_, n)| Lsn((n + 1) * self.segment_size));
        if last.is_none() {
            // Not even the first segment: the backup cannot be restored.
            let s = steps[0];
            gap = Some(self.name(s.timeline, s.first));
        }
        Coverage {
            target_timeline: target,
            restorable_to,
            timeline: last.map(|(t, _)| t),
            complete: gap.is_none(),
            missing_from: gap.map(|g| g.to_string()),
            consistent: restorable_to.is_some_and(|r| r >= base.end_lsn),
            newest_unreachable: why_not,
        }
    }

    /// Whether any segment after `n` of step `i` is archived on the rest of the path.
    fn any_after(&self, steps: &[Step], i: usize, n: u64) -> bool {
        steps[i..].iter().enumerate().any(|(k, s)| {
            let from = if k == 0 { n + 1 } else { s.first };
            self.segments
                .get(&s.timeline)
                .is_some_and(|segs| match s.end {
                    Some(e) => from < e && segs.range(from..e).next().is_some(),
                    None => segs.range(from..).next().is_some(),
                })
        })
    }

    /// Every timeline: its parent and switch point, its segment ranges and gaps, its
    /// `.partial` and `.backup` files.
    pub fn timelines(&self) -> Vec<TimelineView> {
        self.timeline_ids()
            .into_iter()
            .chain(self.files.iter().map(|f| f.name.timeline))
            .collect::<BTreeSet<u32>>()
            .into_iter()
            .map(|tl| {
                let (history, last) = match self.histories.get(&tl) {
                    None if tl == 1 => ("none".to_string(), None),
                    None => ("missing".to_string(), None),
                    Some(Ok(h)) => ("archived".to_string(), h.last()),
                    Some(Err(why)) => (format!("unreadable: {why}"), None),
                };
                let (ranges, gaps) = self.runs(tl);
                let of = |pick: fn(&Kind) -> bool| -> Vec<String> {
                    self.files
                        .iter()
                        .filter(|f| f.name.timeline == tl && pick(&f.name.kind))
                        .map(|f| f.name.to_string())
                        .collect()
                };
                TimelineView {
                    timeline: tl,
                    parent: last.map(|s| s.parent),
                    switch_lsn: last.map(|s| s.switch_lsn),
                    reason: last.map(|s| s.reason.clone()),
                    history,
                    ranges,
                    gaps,
                    partial: of(|k| matches!(k, Kind::Partial | Kind::Streamed { .. })),
                    backup: of(|k| matches!(k, Kind::Backup { .. })),
                }
            })
            .collect()
    }

    /// The runs of consecutive segments of a timeline, and the gaps between them.
    fn runs(&self, timeline: u32) -> (Vec<SegRange>, Vec<SegRange>) {
        let mut runs: Vec<(u64, u64, u64)> = Vec::new();
        for (&n, &size) in self.segments.get(&timeline).into_iter().flatten() {
            match runs.last_mut() {
                Some((_, last, bytes)) if *last + 1 == n => {
                    *last = n;
                    *bytes += size;
                }
                _ => runs.push((n, n, size)),
            }
        }
        let range = |a: u64, b: u64, bytes: u64| SegRange {
            first: self.name(timeline, a).to_string(),
            last: self.name(timeline, b).to_string(),
            segments: b - a + 1,
            bytes,
        };
        let gaps = runs
            .windows(2)
            .map(|w| range(w[0].1 + 1, w[1].0 - 1, 0))
            .collect();
        (runs.iter().map(|&(a, b, s)| range(a, b, s)).collect(), gaps)
    }

    /// The paths of every base backup (or, with none, of the oldest segment) to its newest
    /// reachable timeline, and the segments of them that are missing. `None` when there is
    /// nothing to require (no base backup and no segment).
    pub fn integrity_window(&self, bases: &[BaseStart]) -> Option<Window> {
        let starts: Vec<(u32, u64, Lsn)> = if bases.is_empty() {
            let o = self.oldest_segment()?;
            let n = o.segment_number(self.segment_size);
            vec![(o.timeline, n, Lsn(n * self.segment_size))]
        } else {
            bases
                .iter()
                .map(|b| (b.timeline, b.start_segment, b.start_lsn))
                .collect()
        };
        // Required ranges per timeline, [first, end).
        let mut need: BTreeMap<u32, Vec<(u64, u64)>> = BTreeMap::new();
        for (tl, first, lsn) in &starts {
            let (_, steps, _) = self.latest_path(*tl, *first, *lsn);
            for s in steps {
                let end = match s.end {
                    Some(e) => e,
                    // The target: up to its newest archived segment.
                    None => self
                        .segments
                        .get(&s.timeline)
                        .and_then(|m| m.keys().next_back())
                        .map_or(s.first, |&last| (last + 1).max(s.first)),
                };
                if s.first < end {
                    need.entry(s.timeline).or_default().push((s.first, end));
                }
            }
        }
        let start = starts.iter().map(|s| s.1).min()?;
        let (first_tl, first_n) = starts
            .iter()
            .map(|s| (s.1, s.0))
            .min()
            .map(|(n, t)| (t, n))?;
        let mut missing = Vec::new();
        let mut last: Option<(u32, u64)> = None;
        for (tl, mut ranges) in need {
            ranges.sort();
            let mut merged: Vec<(u64, u64)> = Vec::new();
            for (a, b) in ranges {
                match merged.last_mut() {
                    Some((_, e)) if a <= *e => *e = (*e).max(b),
                    _ => merged.push((a, b)),
                }
            }
            let empty = BTreeMap::new();
            let present = self.segments.get(&tl).unwrap_or(&empty);
            for (a, b) in merged {
                let mut next = a;
                for (&n, _) in present.range(a..b) {
                    if n > next {
                        missing.push((tl, next, n - 1));
                    }
                    next = n + 1;
                }
                if next < b {
                    missing.push((tl, next, b - 1));
                }
                if last.is_none_or(|(t, _)| tl >= t) {
                    last = Some((tl, b - 1));
                }
            }
        }
        Some(Window {
            start,
            first: self.name(first_tl, first_n),
            last: last.map(|(t, n)| self.name(t, n)),
            missing,
        })
    }

    /// The files `wal-verify integrity` authenticates: every history file, and every other
    /// file from segment `start` on (on every timeline).
    pub fn in_window(&self, start: u64) -> Vec<&File> {
        self.files
            .iter()
            .filter(|f| {
                f.name.kind == Kind::History || f.name.segment_number(self.segment_size) >= start
            })
            .collect()
    }

    /// What `wal-verify timeline` checks: every history file parses, names an older parent
    /// that exists and whose own history it continues, with ascending switch points; every
    /// timeline after 1 with segments has a history file and no segment before its start; and
    /// the newest timeline is reachable from `from` (the oldest base backup, or else the
    /// oldest segment).
    pub fn timeline_findings(&self, from: Option<&BaseStart>) -> Vec<Finding> {
        let mut out = Vec::new();
        let hname = |t: u32| WalName::history(t).to_string();
        for (&tl, read) in &self.histories {
            let h = match read {
                Err(why) => {
                    out.push(Finding::new("history", hname(tl), why.clone()));
                    continue;
                }
                Ok(h) => h,
            };
            let Some(last) = h.last() else {
                out.push(Finding::new(
                    "history",
                    hname(tl),
                    format!("the history file of timeline {tl} names no parent"),
                ));
                continue;
            };
            if last.parent >= tl {
                out.push(Finding::new(
                    "history",
                    hname(tl),
                    format!(
                        "timeline {tl} names timeline {} as its parent, which is not older",
                        last.parent
                    ),
                ));
                continue;
            }
            if let Some(w) = h.windows(2).find(|w| w[1].switch_lsn < w[0].switch_lsn) {
                out.push(Finding::new(
                    "history",
                    hname(tl),
                    format!(
                        "switch points go backwards: timeline {} at {}, then timeline {} at {}",
                        w[0].parent, w[0].switch_lsn, w[1].parent, w[1].switch_lsn
                    ),
                ));
            }
            let ancestors: Vec<(u32, Lsn)> = h[..h.len() - 1]
                .iter()
                .map(|s| (s.parent, s.switch_lsn))
                .collect();
            if last.parent == 1 {
                if !ancestors.is_empty() {
                    out.push(Finding::new(
                        "inconsistent",
                        hname(tl),
                        format!(
                            "timeline {tl} branched from timeline 1 but lists {} earlier switch(es)",
                            ancestors.len()
                        ),
                    ));
                }
                continue;
            }
            match self.histories.get(&last.parent) {
                None => out.push(Finding::new(
                    "parent",
                    hname(last.parent),
                    format!(
                        "timeline {}, the parent of timeline {tl}, has no history file",
                        last.parent
                    ),
                )),
                Some(Err(_)) => {}
                Some(Ok(ph)) => {
                    let theirs: Vec<(u32, Lsn)> =
                        ph.iter().map(|s| (s.parent, s.switch_lsn)).collect();
                    if theirs != ancestors {
                        out.push(Finding::new(
                            "inconsistent",
                            hname(tl),
                            format!(
                                "timeline {tl}'s history does not continue its parent's ({}): {} against {}",
                                hname(last.parent),
                                show_switches(&ancestors),
                                show_switches(&theirs)
                            ),
                        ));
                    }
                }
            }
            if last.switch_lsn < self.start_of(last.parent) {
                out.push(Finding::new(
                    "inconsistent",
                    hname(tl),
                    format!(
                        "timeline {tl} branched off timeline {} at {}, before timeline {} began",
                        last.parent, last.switch_lsn, last.parent
                    ),
                ));
            }
        }
        for (&tl, segs) in &self.segments {
            if tl == 1 {
                continue;
            }
            let first = segs.keys().next().copied().unwrap_or(0);
            match self.histories.get(&tl) {
                None => out.push(Finding::new(
                    "orphan",
                    hname(tl),
                    format!(
                        "timeline {tl} has segments ({} on) but no history file: recovery cannot follow it",
                        self.name(tl, first)
                    ),
                )),
                Some(Ok(h)) => {
                    if let Some(last) = h.last() {
                        let begin = self.seg(last.switch_lsn);
                        if first < begin {
                            out.push(Finding::new(
                                "before_start",
                                self.name(tl, first).to_string(),
                                format!(
                                    "segment of timeline {tl} before the segment where it began ({})",
                                    self.name(tl, begin)
                                ),
                            ));
                        }
                    }
                }
                Some(Err(_)) => {}
            }
        }
        for s in &self.strays {
            out.push(Finding::new(
                "name",
                s.to_string(),
                format!(
                    "not a segment name with {} MB segments",
                    self.segment_size >> 20
                ),
            ));
        }
        let start = match from {
            Some(b) => Some((b.timeline, b.start_segment, b.start_lsn)),
            None => self.oldest_segment().map(|o| {
                let n = o.segment_number(self.segment_size);
                (o.timeline, n, Lsn(n * self.segment_size))
            }),
        };
        if let (Some((tl, first, lsn)), Some(newest)) = (start, self.newest_timeline())
            && newest > tl
            && let Err(why) = self.restore_path(tl, first, lsn, newest)
        {
            let whence = match from {
                Some(b) => format!("the oldest base backup ({}, timeline {tl})", b.id),
                None => format!("the oldest segment ({})", self.name(tl, first)),
            };
            out.push(Finding::new(
                "unreachable",
                hname(newest),
                format!("the newest timeline, {newest}, cannot be reached from {whence}: {why}"),
            ));
        }
        out
    }

    /// Where a timeline begins: its switch point, or 0 for one without a usable history.
    fn start_of(&self, timeline: u32) -> Lsn {
        match self.histories.get(&timeline) {
            Some(Ok(h)) => h.last().map_or(Lsn(0), |s| s.switch_lsn),
            _ => Lsn(0),
        }
    }

    /// The files retention may delete when the base backups starting at segments `kept` are
    /// kept: on every timeline, the files below the oldest of them (segments, `.partial` and
    /// `.backup` files; never a history file), oldest first per timeline. So what goes is a
    /// prefix of each timeline, and everything a kept backup reads stays. `None` (delete
    /// nothing) when no base backup is kept.
    pub fn prunable(&self, kept: &[u64]) -> Option<(u64, Vec<&File>)> {
        let cut = kept.iter().min().copied()?;
        let files = self
            .files
            .iter()
            .filter(|f| {
                f.name.kind != Kind::History && f.name.segment_number(self.segment_size) < cut
            })
            .collect();
        Some((cut, files))
    }
}

/// The segment name a `.partial` or `.backup` file is about (its first 24 characters).
fn base_of(name: &WalName) -> String {
    let s = name.to_string();
    s.get(..24).unwrap_or(&s).to_string()
}

fn show_switches(s: &[(u32, Lsn)]) -> String {
    if s.is_empty() {
        return "(no earlier switch)".to_string();
    }
    s.iter()
        .map(|(p, l)| format!("{p}@{l}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
