/*!
WAL file names and positions, as PostgreSQL writes them (xlog_internal.h):

```text
000000010000000A000000FE            a segment: timeline, then the segment number as two 8-hex halves
000000010000000A000000FE.partial    the last, incomplete segment of a timeline that was left
000000010000000A000000FE.00A3F000.partial  a streamed partial: the segment while it is being
                                    written, its first 0xA3F000 bytes meaningful (`wal-stream`)
000000010000000A000000FE.00000028.backup   a backup history file (start offset in the name)
00000002.history                    a timeline history file
```

A segment number splits into "log" and "seg" halves by the segment size: with the default 16 MB
there are 256 segments per log (`0x100000000 / size`). Every name starts with its timeline, which
is how the archive groups them (`wal/<source>/<timeline>/<name>`). Names are the only thing taken
from the archiver and the listing; anything else is refused before it becomes an object key or a
path.
*/

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// PostgreSQL's default `wal_segment_size`.
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 << 20;

/// A position in the WAL (`pg_lsn`, written `16/B374D848`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    pub fn parse(s: &str) -> Result<Lsn> {
        let bad = || {
            Error::config(format!(
                "{s:?} is not a WAL position (an LSN like 0/3000060)"
            ))
        };
        let (hi, lo) = s.trim().split_once('/').ok_or_else(bad)?;
        if hi.is_empty() || lo.is_empty() || hi.len() > 8 || lo.len() > 8 {
            return Err(bad());
        }
        let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }

    /// The segment holding this position.
    pub fn segment(self, segment_size: u64) -> u64 {
        self.0 / segment_size
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Lsn::parse(&s).map_err(|e| serde::de::Error::custom(e.message()))
    }
}

/// What kind of file a WAL file name is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Segment,
    Partial,
    /// The current segment as `wal-stream` uploaded it while it was being written: a copy of
    /// the whole file, of which the first `end` bytes hold WAL (the rest is zeros). Each upload
    /// is a new name (Object Lock never lets an object be replaced); the longest one serves
    /// restores until the complete segment is archived.
    Streamed {
        end: u32,
    },
    /// A backup history file; `offset` is the start position's offset in its segment.
    Backup {
        offset: u32,
    },
    History,
}

/// A WAL file name, parsed and validated.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WalName {
    pub timeline: u32,
    /// The segment number as its 16 hex digits say (log * segments-per-log + seg, in the
    /// name's own halves: see [`WalName::segment_number`]). Zero for a history file.
    log: u32,
    seg: u32,
    pub kind: Kind,
}

fn hex8(s: &str) -> Option<u32> {
    (s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u32::from_str_radix(s, 16).ok())
        .flatten()
}

impl WalName {
    /// Parses a file name (no folders): a segment, `.partial`, `.backup` or `.history`.
    pub fn parse(name: &str) -> Result<WalName> {
        let bad = || {
            Error::config(format!(
                "{name:?} is not a WAL file name (like 000000010000000000000003, \
                 00000002.history, or one ending in .partial or .backup)"
            ))
        };
        if let Some(tli) = name.strip_suffix(".history") {
            let timeline = hex8(tli).filter(|&t| t > 0).ok_or_else(bad)?;
            return Ok(WalName {
                timeline,
                log: 0,
                seg: 0,
                kind: Kind::History,
            });
        }
        let (base, kind) = if let Some(b) = name.strip_suffix(".partial") {
            match b.split_once('.') {
                Some((seg, end)) => (
                    seg,
                    Kind::Streamed {
                        end: hex8(end).ok_or_else(bad)?,
                    },
                ),
                None => (b, Kind::Partial),
            }
        } else if let Some(b) = name.strip_suffix(".backup") {
            let (seg, off) = b.split_once('.').ok_or_else(bad)?;
            (
                seg,
                Kind::Backup {
                    offset: hex8(off).ok_or_else(bad)?,
                },
            )
        } else {
            (name, Kind::Segment)
        };
        if base.len() != 24 || !base.is_ascii() {
            return Err(bad());
        }
        let timeline = hex8(&base[..8]).filter(|&t| t > 0).ok_or_else(bad)?;
        let log = hex8(&base[8..16]).ok_or_else(bad)?;
        let seg = hex8(&base[16..]).ok_or_else(bad)?;
        Ok(WalName {
            timeline,
            log,
            seg,
            kind,
        })
    }

    /// The segment `number` of `timeline` (a plain segment name).
    pub fn segment(timeline: u32, number: u64, segment_size: u64) -> WalName {
        let per_log = segments_per_log(segment_size);
        WalName {
            timeline,
            log: (number / per_log) as u32,
            seg: (number % per_log) as u32,
            kind: Kind::Segment,
        }
    }

    /// The history file of `timeline`.
    pub fn history(timeline: u32) -> WalName {
        WalName {
            timeline,
            log: 0,
            seg: 0,
            kind: Kind::History,
        }
    }

    /// The segment number this name is about (for a segment, `.partial` or `.backup`), with
    /// the given segment size.
    pub fn segment_number(&self, segment_size: u64) -> u64 {
        u64::from(self.log) * segments_per_log(segment_size) + u64::from(self.seg)
    }

    /// The position where this segment starts.
    pub fn start_lsn(&self, segment_size: u64) -> Lsn {
        Lsn(self.segment_number(segment_size) * segment_size)
    }

    pub fn is_segment(&self) -> bool {
        self.kind == Kind::Segment
    }

    /// A streamed partial of this segment holding its first `end` bytes.
    pub fn streamed(&self, end: u32) -> WalName {
        WalName {
            kind: Kind::Streamed { end },
            ..self.clone()
        }
    }

    /// The plain segment a `.partial`, streamed partial or `.backup` file is about.
    pub fn plain(&self) -> WalName {
        WalName {
            kind: Kind::Segment,
            ..self.clone()
        }
    }

    /// The object folder name of its timeline: 8 hex digits.
    pub fn timeline_hex(&self) -> String {
        format!("{:08X}", self.timeline)
    }

    /// The next segment on the same timeline (a plain segment name).
    pub fn next(&self, segment_size: u64) -> WalName {
        WalName::segment(
            self.timeline,
            self.segment_number(segment_size) + 1,
            segment_size,
        )
    }
}

impl fmt::Display for WalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind == Kind::History {
            return write!(f, "{:08X}.history", self.timeline);
        }
        write!(f, "{:08X}{:08X}{:08X}", self.timeline, self.log, self.seg)?;
        match self.kind {
            Kind::Segment | Kind::History => Ok(()),
            Kind::Partial => f.write_str(".partial"),
            Kind::Streamed { end } => write!(f, ".{end:08X}.partial"),
            Kind::Backup { offset } => write!(f, ".{offset:08X}.backup"),
        }
    }
}

/// How many segments one "log" (the first half of the number) holds.
pub fn segments_per_log(segment_size: u64) -> u64 {
    0x1_0000_0000 / segment_size
}

/// Checks a `wal_segment_size`: a power of two from 1 MB to 1 GB.
pub fn check_segment_size(size: u64) -> Result<u64> {
    if size.is_power_of_two() && ((1 << 20)..=(1 << 30)).contains(&size) {
        Ok(size)
    } else {
        Err(Error::integrity(format!(
            "{size} is not a WAL segment size (a power of two from 1 MB to 1 GB)"
        )))
    }
}

/// One line of a timeline history file: `parent_tli  switch_lsn  reason`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineSwitch {
    /// The timeline that was left.
    pub parent: u32,
    /// Where the next timeline branched off it.
    pub switch_lsn: Lsn,
    pub reason: String,
}

/// Parses a `.history` file: the ancestors of its timeline, oldest first. Comment and blank
/// lines are skipped, as PostgreSQL does; anything else malformed is an error.
pub fn parse_history(text: &str) -> Result<Vec<TimelineSwitch>> {
    let mut out: Vec<TimelineSwitch> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.splitn(3, char::is_whitespace);
        let bad = || Error::integrity(format!("a timeline history line is malformed: {line:?}"));
        let parent: u32 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let lsn = parts
            .next()
            .map(str::trim)
            .ok_or_else(bad)
            .and_then(|l| Lsn::parse(l).map_err(|_| bad()))?;
        if out.last().is_some_and(|p| p.parent >= parent) {
            return Err(Error::integrity(format!(
                "timeline history is not in ascending order at {line:?}"
            )));
        }
        out.push(TimelineSwitch {
            parent,
            switch_lsn: lsn,
            reason: parts.next().unwrap_or("").trim().to_string(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for n in [
            "000000010000000A000000FE",
            "000000010000000A000000FE.partial",
            "000000010000000A000000FE.00A3F000.partial",
            "000000010000000000000002.00000028.backup",
            "0000000A.history",
        ] {
            assert_eq!(WalName::parse(n).unwrap().to_string(), n);
        }
        for bad in [
            "",
            "00000001000000000000000",
            "000000010000000000000002x",
            "00000000000000000000000A",
            "../00000001.history",
            "00000001.history.partial",
            "0000000g0000000000000001",
            "000000010000000000000001.backup",
            "000000010000000000000001.123.partial",
            "000000010000000000000001.0000000G.partial",
            "RECOVERYXLOG",
        ] {
            assert!(WalName::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn segment_arithmetic_follows_segment_size() {
        let n = WalName::parse("000000010000000100000002").unwrap();
        assert_eq!(n.segment_number(DEFAULT_SEGMENT_SIZE), 256 + 2);
        assert_eq!(n.segment_number(64 << 20), 64 + 2);
        assert_eq!(
            WalName::parse("0000000100000000000000FF")
                .unwrap()
                .next(DEFAULT_SEGMENT_SIZE)
                .to_string(),
            "000000010000000100000000"
        );
        assert_eq!(
            WalName::segment(3, 257, DEFAULT_SEGMENT_SIZE).to_string(),
            "000000030000000100000001"
        );
        assert_eq!(n.start_lsn(DEFAULT_SEGMENT_SIZE).to_string(), "1/2000000");
    }

    #[test]
    fn lsn_parses_and_prints_as_postgres_does() {
        let l = Lsn::parse("16/B374D848").unwrap();
        assert_eq!(l.0, 0x16_B374_D848);
        assert_eq!(l.to_string(), "16/B374D848");
        assert_eq!(Lsn::parse("0/0").unwrap(), Lsn(0));
        for bad in ["", "1", "/1", "1/", "x/1", "123456789/0", "1/2/3"] {
            assert!(Lsn::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn history_files_parse() {
        let h = "1\t0/3000158\tno recovery target specified\n\n2\t0/5000000\tbefore 2026-12-04 10:00:00+00\n";
        let s = parse_history(h).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].parent, 1);
        assert_eq!(s[0].switch_lsn, Lsn(0x3000158));
        assert_eq!(s[1].reason, "before 2026-12-04 10:00:00+00");
        assert!(parse_history("2\t0/1\n1\t0/2\n").is_err());
        assert!(parse_history("x y z").is_err());
    }
}
