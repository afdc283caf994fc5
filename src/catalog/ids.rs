/*!
Typed names: snapshot ids (`20261121T031500Z-k3f9qa`, sortable by time: the UTC second the backup
started, then 6 random base32 characters so two backups in one second never collide) and source
names (safe in object keys and file names).
*/

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SnapshotId(String);

const B32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

impl SnapshotId {
    pub fn new(at: Timestamp) -> Result<Self> {
        let mut r = [0u8; 6];
        getrandom::fill(&mut r).map_err(|e| Error::internal(format!("random: {e}")))?;
        let suffix: String = r.iter().map(|b| B32[(*b & 31) as usize] as char).collect();
        Ok(SnapshotId(format!(
            "{}-{suffix}",
            at.strftime("%Y%m%dT%H%M%SZ")
        )))
    }

    pub fn parse(s: &str) -> Result<Self> {
        let ok = s.len() == 23
            && s.as_bytes()[8] == b'T'
            && s.as_bytes()[15] == b'Z'
            && s.as_bytes()[16] == b'-'
            && s[..8].bytes().all(|b| b.is_ascii_digit())
            && s[9..15].bytes().all(|b| b.is_ascii_digit())
            && s[17..].bytes().all(|b| B32.contains(&b));
        if ok && Self::time_of(s).is_some() {
            Ok(SnapshotId(s.to_string()))
        } else {
            Err(Error::config(format!(
                "{s:?} is not a snapshot id (like 20261121T031500Z-k3f9qa)"
            )))
        }
    }

    fn time_of(s: &str) -> Option<Timestamp> {
        jiff::civil::DateTime::strptime("%Y%m%dT%H%M%S", &s[..15])
            .ok()?
            .to_zoned(jiff::tz::TimeZone::UTC)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The second the snapshot was started.
    pub fn time(&self) -> Timestamp {
        Self::time_of(&self.0).expect("validated on construction")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SnapshotId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::parse(&s)
    }
}

impl From<SnapshotId> for String {
    fn from(id: SnapshotId) -> String {
        id.0
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SnapshotId({})", self.0)
    }
}

/// Source names appear in object keys and file names: 1–64 characters of `A-Za-z0-9._-`,
/// starting with a letter or digit.
pub fn check_source_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::config(format!(
            "invalid source name {name:?}: use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_round_trip() {
        let t1: Timestamp = "2026-11-21T03:15:00Z".parse().unwrap();
        let t2: Timestamp = "2026-11-21T03:15:01Z".parse().unwrap();
        let a = SnapshotId::new(t1).unwrap();
        let b = SnapshotId::new(t2).unwrap();
        assert!(a < b);
        assert!(a.as_str().starts_with("20261121T031500Z-"));
        assert_eq!(a.time(), t1);
        assert_eq!(SnapshotId::parse(a.as_str()).unwrap(), a);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<SnapshotId>(&json).unwrap(), a);
    }

    #[test]
    fn rejects_malformed_ids() {
        for s in [
            "",
            "latest",
            "20261121T031500Z",
            "20261121T031500Z-ABCDEF",
            "20261321T031500Z-abcdef",
            "20261121X031500Z-abcdef",
            "20261121T031500Z-abcde1",
        ] {
            assert!(SnapshotId::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn source_names() {
        for good in ["fly-db", "a", "prod.main_1", "X9"] {
            assert!(check_source_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", ".x", "a/b", "a b", "ü", &"x".repeat(65)] {
            assert!(check_source_name(bad).is_err(), "{bad}");
        }
    }
}
