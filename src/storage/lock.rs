/*!
Object Lock: every object uploaded with a retention (`[repository] object_lock`), so that stolen
bucket credentials cannot delete a backup before its time.

S3's rules, which every S3 store with Object Lock follows: a lock needs a versioned bucket
created with Object Lock; an object locked in GOVERNANCE mode can be deleted or unlocked early
only by a key allowed to send `x-amz-bypass-governance-retention`, in COMPLIANCE mode by no one.
A DELETE without a version id still succeeds on a locked object: it adds a delete marker that
hides the object, and the locked version stays (and is billed). So a store with a lock set
deletes every version of a key ([`super::s3`]), and prune asks each object's retain-until date
first ([`super::ReadStore::retention`]) so that it never tries what the store would refuse.

This module holds the pure parts: the setting, the dates, and how far a lock covers a
retention policy (for `check`).
*/

use std::fmt;

use jiff::{SignedDuration, Timestamp};

use crate::error::{Error, Result};
use crate::retention::Keep;

/// Who may lift a lock early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// A key with `s3:BypassGovernanceRetention` may delete early (an administrator's key).
    Governance,
    /// No one may delete before the date, not even the account's root.
    Compliance,
}

impl LockMode {
    /// As S3 spells it in headers.
    pub fn as_s3(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }
}

impl fmt::Display for LockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockMode::Governance => "governance",
            LockMode::Compliance => "compliance",
        })
    }
}

/// `[repository] object_lock = { mode = "governance", days = 30 }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockSetting {
    pub mode: LockMode,
    pub days: u32,
}

/// The longest lock accepted: S3 allows 100 years; more is a typo, not a policy.
pub const MAX_DAYS: i64 = 36_500;

/// What prune adds to an object's upload time when the store does not say its retain-until
/// date (a key without `s3:GetObjectRetention`): our clock and the store's may differ, and a
/// delete tried a day late costs nothing.
pub const ESTIMATE_MARGIN: SignedDuration = SignedDuration::from_hours(24);

impl LockSetting {
    /// Checks a setting as the configuration file spells it.
    pub fn parse(mode: &str, days: i64) -> Result<LockSetting> {
        let mode = match mode {
            "governance" => LockMode::Governance,
            "compliance" => LockMode::Compliance,
            other => {
                return Err(Error::config(format!(
                    "object_lock mode {other:?} is not one OffsiteDB knows"
                ))
                .with_hint(
                    "use mode = \"governance\" (an administrator's key can still delete early) or mode = \"compliance\" (no one can)",
                ));
            }
        };
        if !(1..=MAX_DAYS).contains(&days) {
            return Err(Error::config(format!(
                "object_lock days = {days} is out of range: a lock lasts 1 to {MAX_DAYS} days"
            ))
            .with_hint(
                "set days to how long no one may delete a backup, e.g. days = 30; to upload without a lock, remove object_lock",
            ));
        }
        Ok(LockSetting {
            mode,
            days: days as u32,
        })
    }

    /// The retain-until date of an object uploaded at `now`.
    pub fn retain_until(&self, now: Timestamp) -> Timestamp {
        now.checked_add(SignedDuration::from_hours(24 * i64::from(self.days)))
            .unwrap_or(Timestamp::MAX)
    }

    /// The request headers that lock an object uploaded at `now` (PUT, CreateMultipartUpload).
    pub fn headers(&self, now: Timestamp) -> [(&'static str, String); 2] {
        [
            ("x-amz-object-lock-mode", self.mode.as_s3().to_string()),
            (
                "x-amz-object-lock-retain-until-date",
                iso8601(self.retain_until(now)),
            ),
        ]
    }
}

impl fmt::Display for LockSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} mode, {} {}", self.mode, self.days, days(self.days))
    }
}

/// ISO 8601 UTC to the second, as S3 wants it: `2026-12-05T17:06:31Z`.
pub fn iso8601(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn days(n: u32) -> &'static str {
    if n == 1 { "day" } else { "days" }
}

/// What a store says (or what we estimate) about one object's lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    /// GOVERNANCE or COMPLIANCE, when the store says.
    pub mode: Option<String>,
    /// No delete succeeds before this.
    pub until: Timestamp,
    /// A legal hold: no delete succeeds until it is lifted, whatever the date.
    pub legal_hold: bool,
    /// `until` is an estimate (upload time + the configured days + [`ESTIMATE_MARGIN`]): the
    /// store did not say.
    pub estimated: bool,
}

impl Retention {
    /// Whether a delete at `now` would be refused.
    pub fn holds_at(&self, now: Timestamp) -> bool {
        self.legal_hold || self.until > now
    }
}

/// About how far back a retention policy keeps copies: the longest span of its period rules
/// (a month counted as 365/12 days). `last` keeps a count, not a span, so it adds nothing.
pub fn policy_span_days(keep: &Keep) -> u32 {
    let spans = [
        keep.hourly.div_ceil(24),
        keep.daily,
        keep.weekly.saturating_mul(7),
        (u64::from(keep.monthly) * 365).div_ceil(12) as u32,
        keep.yearly.saturating_mul(365),
    ];
    spans.into_iter().max().unwrap_or(0)
}

/// How a lock of `lock_days` covers a policy keeping copies for about `span` days.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Coverage {
    /// Every copy the policy keeps is locked, and prune is not held back much.
    Covers,
    /// Copies older than the lock stay deletable by anyone holding the keys.
    Short { lock: u32, span: u32 },
    /// Copies the policy drops stay stored until their lock ends.
    Long { lock: u32, span: u32 },
}

/// A lock is "much longer" than the policy when it holds dropped copies more than this many
/// days (and more than half the span) past their time: a week of extra storage is noise.
const LONG_SLACK_DAYS: u32 = 30;

pub fn coverage(lock_days: u32, span: u32) -> Coverage {
    if lock_days < span {
        Coverage::Short {
            lock: lock_days,
            span,
        }
    } else if lock_days - span > LONG_SLACK_DAYS.max(span / 2) {
        Coverage::Long {
            lock: lock_days,
            span,
        }
    } else {
        Coverage::Covers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        assert_eq!(
            LockSetting::parse("governance", 30).unwrap(),
            LockSetting {
                mode: LockMode::Governance,
                days: 30
            }
        );
        assert_eq!(
            LockSetting::parse("compliance", 1).unwrap().mode,
            LockMode::Compliance
        );
        for (mode, days, needle) in [
            ("Governance", 30, "mode \"Governance\""),
            ("legal-hold", 30, "mode \"legal-hold\""),
            ("governance", 0, "days = 0 is out of range"),
            ("governance", -3, "days = -3"),
            ("compliance", 36_501, "36501"),
        ] {
            let e = LockSetting::parse(mode, days).unwrap_err();
            assert!(e.message().contains(needle), "{mode} {days}: {e}");
            assert!(e.hint().is_some(), "{mode} {days}");
        }
    }

    #[test]
    fn headers_lock_until_now_plus_days() {
        let now: Timestamp = "2026-12-04T17:06:31.75Z".parse().unwrap();
        let s = LockSetting::parse("compliance", 30).unwrap();
        assert_eq!(
            s.headers(now),
            [
                ("x-amz-object-lock-mode", "COMPLIANCE".to_string()),
                (
                    "x-amz-object-lock-retain-until-date",
                    "2027-01-03T17:06:31Z".to_string()
                ),
            ]
        );
    }

    #[test]
    fn a_retention_holds_until_its_date_or_while_a_legal_hold_lasts() {
        let until: Timestamp = "2026-12-05T00:00:00Z".parse().unwrap();
        let r = Retention {
            mode: Some("GOVERNANCE".into()),
            until,
            legal_hold: false,
            estimated: false,
        };
        assert!(r.holds_at("2026-12-04T23:59:59Z".parse().unwrap()));
        assert!(!r.holds_at(until));
        let held = Retention {
            legal_hold: true,
            ..r
        };
        assert!(held.holds_at("2030-01-01T00:00:00Z".parse().unwrap()));
    }

    fn keep(rules: &str) -> Keep {
        crate::retention::parse_rules(rules).unwrap()
    }

    #[test]
    fn the_span_of_a_policy_is_its_longest_rule() {
        for (rules, span) in [
            ("last=5", 0),
            ("hourly=48", 2),
            ("hourly=25", 2),
            ("daily=7", 7),
            ("daily=7,weekly=4", 28),
            ("daily=7,weekly=4,monthly=12", 365),
            ("monthly=1", 31),
            ("monthly=6,daily=400", 400),
            ("yearly=3", 1095),
        ] {
            assert_eq!(policy_span_days(&keep(rules)), span, "{rules}");
        }
    }

    #[test]
    fn coverage_of_a_lock() {
        for (lock, span, want) in [
            (
                30,
                365,
                Coverage::Short {
                    lock: 30,
                    span: 365,
                },
            ),
            (
                364,
                365,
                Coverage::Short {
                    lock: 364,
                    span: 365,
                },
            ),
            (365, 365, Coverage::Covers),
            (400, 365, Coverage::Covers),
            (547, 365, Coverage::Covers),
            (
                548,
                365,
                Coverage::Long {
                    lock: 548,
                    span: 365,
                },
            ),
            (37, 7, Coverage::Covers),
            (38, 7, Coverage::Long { lock: 38, span: 7 }),
            (1, 0, Coverage::Covers),
        ] {
            assert_eq!(coverage(lock, span), want, "lock {lock} span {span}");
        }
    }
}
