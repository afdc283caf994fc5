/*!
Recovery targets and the plan: which base backup a restore starts from, and whether the target is
inside the window the repository can restore.

The window of a base backup starts where its copy is consistent (`end_lsn`, reached by
`finished`) and ends where the archived WAL ends. A target before the oldest base backup's end,
or after the newest archived WAL, is refused before anything is written: PostgreSQL would
otherwise stop with "recovery ended before configured recovery target was reached" (or, before
14, promote at the end of the WAL without saying that it missed the target).

Times are parsed with an explicit offset only (RFC 3339, or PostgreSQL's own `2026-12-04
10:00:00.5+00`): a time without a zone means different moments on different machines.
*/

use jiff::Timestamp;
use serde::Serialize;

use crate::catalog::Repository;
use crate::catalog::base::BaseManifest;
use crate::error::{Error, Result};
use crate::storage::ReadStore;
use crate::wal::name::{Kind, Lsn, WalName};

/// Where recovery stops.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Target {
    Time(Timestamp),
    Lsn(Lsn),
    Xid(u64),
    Name(String),
    /// The end of the archived WAL (on the latest timeline).
    Latest,
}

impl Target {
    pub fn parse_time(s: &str) -> Result<Target> {
        parse_time(s).map(Target::Time)
    }

    pub fn parse_xid(s: &str) -> Result<Target> {
        s.trim().parse::<u64>().map(Target::Xid).map_err(|_| {
            Error::config(format!(
                "{s:?} is not a transaction id (a number, as txid_current() shows it)"
            ))
        })
    }

    /// The recovery settings that say it (`recovery_target_*`), as `postgresql.conf` lines.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        match self {
            Target::Time(t) => vec![("recovery_target_time", postgres_time(*t))],
            Target::Lsn(l) => vec![("recovery_target_lsn", l.to_string())],
            Target::Xid(x) => vec![("recovery_target_xid", x.to_string())],
            Target::Name(n) => vec![("recovery_target_name", n.clone())],
            Target::Latest => Vec::new(),
        }
    }

    /// For people: "2026-12-04 10:00:00 UTC", "LSN 0/3000060", "the end of the archive".
    pub fn describe(&self) -> String {
        match self {
            Target::Time(t) => format!("{} (UTC)", postgres_time(*t).trim_end_matches("+00")),
            Target::Lsn(l) => format!("LSN {l}"),
            Target::Xid(x) => format!("transaction {x}"),
            Target::Name(n) => format!("restore point {n:?}"),
            Target::Latest => "the end of the archived WAL".into(),
        }
    }
}

/// A time with an explicit offset: RFC 3339 (`2026-12-04T10:00:00Z`, `...+01:00`) or
/// PostgreSQL's output (`2026-12-04 10:00:00.123456+00`).
pub fn parse_time(s: &str) -> Result<Timestamp> {
    let t = s.trim();
    let mut candidates = vec![t.to_string()];
    // PostgreSQL writes an offset of whole hours as "+00"; RFC 3339 wants "+00:00".
    if let Some(at) = t.rfind(['+', '-'])
        && at > 10
        && t[at + 1..].len() == 2
        && t[at + 1..].bytes().all(|b| b.is_ascii_digit())
    {
        candidates.push(format!("{t}:00"));
    }
    for c in &candidates {
        if let Ok(ts) = c.parse::<Timestamp>() {
            return Ok(ts);
        }
    }
    let zoneless = jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M:%S", t).is_ok()
        || t.parse::<jiff::civil::DateTime>().is_ok();
    let hint = if zoneless {
        "give the time zone: add Z (UTC) or an offset such as +01:00"
    } else {
        "write it like 2026-12-04T10:00:00Z or 2026-12-04 10:00:00+00"
    };
    Err(Error::config(format!("{s:?} is not a time with a time zone")).with_hint(hint))
}

/// `2026-12-04 10:00:00.123456+00`: what PostgreSQL reads in `recovery_target_time`.
pub fn postgres_time(t: Timestamp) -> String {
    t.to_zoned(jiff::tz::TimeZone::UTC)
        .strftime("%Y-%m-%d %H:%M:%S%.6f+00")
        .to_string()
}

/// What the repository can restore for a source.
#[derive(Clone, Debug, Serialize)]
pub struct Window {
    /// The oldest base backup's consistent point.
    pub from_lsn: Lsn,
    pub from_time: Timestamp,
    /// The end of the newest archived segment, and when it was archived (an upper bound of
    /// the commits it holds).
    pub to_lsn: Option<Lsn>,
    pub to_time: Option<Timestamp>,
    pub to_segment: Option<String>,
}

impl Window {
    pub fn describe(&self) -> String {
        let from = format!(
            "{} (LSN {})",
            Target::Time(self.from_time).describe(),
            self.from_lsn
        );
        match (&self.to_time, &self.to_lsn) {
            (Some(t), Some(l)) => {
                format!("from {from} to {} (LSN {l})", Target::Time(*t).describe())
            }
            _ => format!("from {from}; no WAL is archived after it"),
        }
    }
}

/// The base backup to start from, and the window.
#[derive(Clone, Debug)]
pub struct Plan {
    pub backup: BaseManifest,
    pub window: Window,
}

/// Picks the newest base backup that ends before `target` (or the one `backup` names) and
/// checks the target against the window.
pub fn plan<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    source: &str,
    target: &Target,
    backup: Option<&str>,
) -> Result<Plan> {
    let backups = repo.base_manifests(source)?;
    if backups.is_empty() {
        return Err(Error::not_found(format!(
            "no base backups of source {source:?} at {}: nothing to restore a point in time from",
            repo.location()
        ))
        .with_hint(format!(
            "take one with: offsitedb backup-push --source {source}"
        )));
    }
    let window = window(repo, source, &backups)?;
    let outside = |what: &str| {
        Error::config(format!(
            "{} is {what} the window that can be restored: {}",
            target.describe(),
            window.describe()
        ))
    };
    match target {
        Target::Time(t) if *t < window.from_time => {
            return Err(outside("before").with_hint(
                "the oldest base backup ends after it: no restore can reach an earlier moment",
            ));
        }
        Target::Lsn(l) if *l < window.from_lsn => {
            return Err(outside("before").with_hint(
                "the oldest base backup ends after it: no restore can reach an earlier point",
            ));
        }
        Target::Time(t) if window.to_time.is_none_or(|end| *t > end) => {
            return Err(outside("after").with_hint(
                "the WAL after it is not archived yet; on the server, SELECT pg_switch_wal() \
                 archives the current segment, then try again",
            ));
        }
        Target::Lsn(l) if window.to_lsn.is_none_or(|end| *l > end) => {
            return Err(outside("after").with_hint(
                "the WAL after it is not archived yet; on the server, SELECT pg_switch_wal() \
                 archives the current segment, then try again",
            ));
        }
        _ => {}
    }
    let chosen = match backup {
        Some(r) => {
            let m = repo.resolve_base(r, source)?;
            let late = match target {
                Target::Time(t) => m.finished > *t,
                Target::Lsn(l) => m.end_lsn > *l,
                _ => false,
            };
            if late {
                return Err(Error::config(format!(
                    "base backup {} ends after {}: it cannot be restored to it",
                    m.backup_id,
                    target.describe()
                ))
                .with_hint(
                    "leave out --backup to pick the newest one that ends before the target",
                ));
            }
            m
        }
        None => backups
            .iter()
            .rev()
            .find(|m| match target {
                Target::Time(t) => m.finished <= *t,
                Target::Lsn(l) => m.end_lsn <= *l,
                _ => true,
            })
            .cloned()
            .expect("the window check keeps the target after the oldest backup"),
    };
    Ok(Plan {
        backup: chosen,
        window,
    })
}

/// The window: from the oldest base backup's end to the newest archived WAL: the end of the
/// newest complete segment, or further when `wal-stream` uploaded a partial of the segment
/// after it (its last byte of WAL, and when it was uploaded).
pub fn window<S: ReadStore + ?Sized>(
    repo: &Repository<S>,
    source: &str,
    backups: &[BaseManifest],
) -> Result<Window> {
    let oldest = &backups[0];
    let size = oldest.segment_size;
    let end_of = |n: &WalName| match n.kind {
        Kind::Streamed { end } => n.start_lsn(size).0 + u64::from(end),
        _ => n.start_lsn(size).0 + size,
    };
    let newest = crate::wal::list(repo.store(), source)?
        .into_iter()
        .filter(|a| matches!(a.name.kind, Kind::Segment | Kind::Streamed { .. }))
        .max_by_key(|a| (a.name.timeline, end_of(&a.name)));
    let (to_lsn, to_time, to_segment) = match newest {
        Some(a) => {
            let (h, _) =
                crate::wal::object::read_header(repo.store().get(&a.key)?, repo.key(), &a.name)?;
            (
                Some(Lsn(end_of(&a.name))),
                Some(h.pushed_at),
                Some(a.name.to_string()),
            )
        }
        None => (None, None, None),
    };
    Ok(Window {
        from_lsn: oldest.end_lsn,
        from_time: oldest.finished,
        to_lsn,
        to_time,
        to_segment,
    })
}

/// The first segment a base backup needs, as a name (for messages).
pub fn start_segment(m: &BaseManifest) -> Result<WalName> {
    m.start_segment()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_need_a_zone_and_accept_both_spellings() {
        let want: Timestamp = "2026-12-04T10:00:00.5Z".parse().unwrap();
        for s in [
            "2026-12-04T10:00:00.5Z",
            "2026-12-04 10:00:00.5Z",
            "2026-12-04 10:00:00.500000+00",
            "2026-12-04T11:00:00.5+01:00",
            "2026-12-04 11:00:00.5+01",
        ] {
            assert_eq!(parse_time(s).unwrap(), want, "{s}");
        }
        let e = parse_time("2026-12-04 10:00:00").unwrap_err();
        assert!(e.hint().unwrap().contains("time zone"), "{:?}", e.hint());
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn postgres_reads_what_we_write() {
        let t: Timestamp = "2026-12-04T10:00:00.25Z".parse().unwrap();
        assert_eq!(postgres_time(t), "2026-12-04 10:00:00.250000+00");
        assert_eq!(parse_time(&postgres_time(t)).unwrap(), t);
    }

    #[test]
    fn targets_become_recovery_settings() {
        assert_eq!(
            Target::Lsn(Lsn(0x3000060)).settings(),
            vec![("recovery_target_lsn", "0/3000060".to_string())]
        );
        assert_eq!(Target::parse_xid(" 742 ").unwrap(), Target::Xid(742));
        assert!(Target::parse_xid("-1").is_err());
        assert!(Target::Latest.settings().is_empty());
    }
}
