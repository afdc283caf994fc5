/*!
The numbers a report, the dashboard and `list` judge a source by, as pure functions of times and
durations: tested restore time statistics, the recovery point a schedule of backups achieved (the
largest gap between consecutive good backups), and whether each meets its objective.

"Good" is decided by the caller (a snapshot whose latest drill passed, or one not yet drilled when
drills are off); these functions only measure. Times are Unix seconds so the tests read plainly.
*/

use serde::{Deserialize, Serialize};

/// Median, 95th percentile and maximum of tested restore times (seconds), over `count` drills.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub count: usize,
    pub median: f64,
    pub p95: f64,
    pub max: f64,
}

/// `None` for no values. Percentiles by nearest rank (a value that was measured, never an
/// interpolation between two drills).
pub fn stats(values: &[f64]) -> Option<Stats> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        let r = (p * v.len() as f64).ceil() as usize;
        v[r.clamp(1, v.len()) - 1]
    };
    Some(Stats {
        count: v.len(),
        median: rank(0.5),
        p95: rank(0.95),
        max: v[v.len() - 1],
    })
}

/// A stretch of time with no good backup.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Gap {
    /// The good backup before it (or the period's start when none came before).
    pub from: i64,
    /// The next good backup (or the period's end, or now).
    pub to: i64,
    /// Whether `from` is a backup (false: nothing good existed before; the gap runs from the
    /// period's start).
    pub after_backup: bool,
}

impl Gap {
    pub fn seconds(&self) -> i64 {
        self.to - self.from
    }
}

/// The recovery point achieved over `[start, end)`: had the database been lost at any moment,
/// how much would have been lost at worst. `good` are the times of good backups (any order; those
/// before `start` count as the one to lose back to). The worst gap is the largest distance from a
/// moment to the good backup before it, which is the largest gap between consecutive good backups,
/// or from the last one to `end`. The stretch before the first good backup ever is not a gap (the
/// source was not backed up yet); with no good backup at all, the whole period is one. `gaps` lists every gap longer than `promise` (all of them when
/// there is no promise would be noise: then only the largest).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecoveryPoint {
    /// The worst gap, `None` when the period is empty.
    pub worst: Option<Gap>,
    /// Gaps longer than the promise, oldest first.
    pub over_promise: Vec<Gap>,
}

pub fn recovery_point(good: &[i64], start: i64, end: i64, promise: Option<i64>) -> RecoveryPoint {
    if end <= start {
        return RecoveryPoint {
            worst: None,
            over_promise: Vec::new(),
        };
    }
    let mut times: Vec<i64> = good.iter().copied().filter(|t| *t < end).collect();
    times.sort_unstable();
    times.dedup();
    // The last good backup at or before the start anchors the first gap.
    let before = times.iter().rev().find(|t| **t <= start).copied();
    let mut gaps = Vec::new();
    let mut prev = match before {
        Some(t) => (t, true),
        None => (start, false),
    };
    for &t in times.iter().filter(|t| **t > start) {
        // Before the first backup ever there was nothing to lose: a source set up in the middle
        // of the period is measured from its first good backup.
        if prev.1 {
            gaps.push(Gap {
                from: prev.0,
                to: t,
                after_backup: true,
            });
        }
        prev = (t, true);
    }
    gaps.push(Gap {
        from: prev.0,
        to: end,
        after_backup: prev.1,
    });
    let worst = gaps.iter().copied().max_by_key(|g| g.seconds());
    let over_promise = match promise {
        Some(p) => gaps.into_iter().filter(|g| g.seconds() > p).collect(),
        None => Vec::new(),
    };
    RecoveryPoint {
        worst,
        over_promise,
    }
}

/// Achieved against promised: `Some(true)` when met, `None` when there is nothing to compare.
pub fn meets(achieved: Option<f64>, promised: Option<f64>) -> Option<bool> {
    Some(achieved? <= promised?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_use_measured_values() {
        assert_eq!(stats(&[]), None);
        let s = stats(&[3.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!((s.count, s.median, s.p95, s.max), (4, 2.0, 10.0, 10.0));
        let many: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = stats(&many).unwrap();
        assert_eq!((s.median, s.p95, s.max), (50.0, 95.0, 100.0));
        assert_eq!(stats(&[f64::NAN, 4.0]).unwrap().max, 4.0);
    }

    #[test]
    fn recovery_point_is_the_largest_gap_between_good_backups() {
        // Hourly backups with one missing: the gap is two hours.
        let good = [0, 3600, 10800, 14400];
        let rp = recovery_point(&good, 0, 15000, Some(3600));
        let w = rp.worst.unwrap();
        assert_eq!((w.from, w.to, w.seconds()), (3600, 10800, 7200));
        assert_eq!(rp.over_promise.len(), 1);
    }

    #[test]
    fn a_backup_before_the_period_anchors_it_and_the_tail_counts() {
        // The last good backup was before the period; none inside: the whole period plus.
        let rp = recovery_point(&[-100], 0, 1000, None);
        let w = rp.worst.unwrap();
        assert_eq!((w.from, w.to, w.after_backup), (-100, 1000, true));
        // Nothing ever: the gap runs from the period's start, and says so.
        let rp = recovery_point(&[], 0, 1000, Some(10));
        assert!(!rp.worst.unwrap().after_backup);
        assert_eq!(rp.over_promise.len(), 1);
        // First backed up in the middle: measured from that backup, not the period's start.
        let rp = recovery_point(&[800], 0, 1000, Some(500));
        let w = rp.worst.unwrap();
        assert_eq!((w.from, w.to, w.after_backup), (800, 1000, true));
        assert!(rp.over_promise.is_empty());
        // Backups after the end do not shorten the period's tail.
        let rp = recovery_point(&[0, 2000], 0, 1000, None);
        assert_eq!(rp.worst.unwrap().seconds(), 1000);
    }

    #[test]
    fn meets_needs_both_numbers() {
        assert_eq!(meets(Some(1.0), Some(2.0)), Some(true));
        assert_eq!(meets(Some(3.0), Some(2.0)), Some(false));
        assert_eq!(meets(None, Some(2.0)), None);
        assert_eq!(meets(Some(1.0), None), None);
    }
}
