/*!
Whether a recovery got where it was sent, and, when it did not, which WAL segment stopped it.

The server's log says what happened, in its words and in `wal-fetch`'s (the `restore_command`
writes to the server's stderr): `restored log file "X" from archive` for each segment replayed
from the archive, `offsitedb wal-fetch: X is not in the archive` where the archive ended (or has
a hole), `error: wal-fetch X: ...` for a segment that could not be fetched (damaged, swapped, the
store down), and `FATAL: could not restore file "X" from archive` when PostgreSQL gave up on it.
These functions read those lines; they do no I/O.
*/

use crate::wal::name::{Kind, Lsn, WalName};

/// Segments the server restored from the archive, in the order it did (history files left out).
pub(super) fn restored_segments(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| quoted_after(l, "restored log file \""))
        .filter(|n| is_segment(n))
        .collect()
}

/// The timeline of the last segment restored from the archive.
pub(super) fn last_timeline(log: &str) -> Option<u32> {
    restored_segments(log)
        .last()
        .and_then(|n| WalName::parse(n).ok())
        .map(|n| n.timeline)
}

/// The first segment `wal-fetch` did not find in the archive (where recovery ran out of WAL).
pub(super) fn first_not_archived(log: &str) -> Option<String> {
    log.lines().find_map(|l| {
        let rest = l.split("offsitedb wal-fetch: ").nth(1)?;
        let name = rest.strip_suffix(" is not in the archive")?.trim();
        is_segment(name).then(|| name.to_string())
    })
}

/// The segment PostgreSQL could not restore, and the line that says why: `wal-fetch`'s own
/// error when there is one (it says what is wrong with the object), else the server's FATAL.
pub(super) fn failed_segment(log: &str) -> Option<(String, String)> {
    let fetch = log.lines().rev().find_map(|l| {
        let at = l.find("error: wal-fetch ")?;
        let line = &l[at..];
        let name = line["error: wal-fetch ".len()..]
            .split(':')
            .next()?
            .trim()
            .to_string();
        Some((name, line.trim().to_string()))
    });
    if let Some(f) = fetch.filter(|(n, _)| is_segment(n)) {
        return Some(f);
    }
    log.lines().rev().find_map(|l| {
        let name = quoted_after(l, "could not restore file \"")?;
        let line = l.find("FATAL:").map_or(l, |at| &l[at..]);
        Some((name, line.trim().to_string()))
    })
}

/// The segment after the one holding `lsn` on `timeline`: where a recovery that stopped at
/// `lsn` without an error ran out of WAL.
pub(super) fn segment_after(lsn: Lsn, timeline: u32, segment_size: u64) -> String {
    WalName::segment(timeline, lsn.segment(segment_size) + 1, segment_size).to_string()
}

/// `"X"` after `marker` in `line`.
fn quoted_after(line: &str, marker: &str) -> Option<String> {
    let rest = &line[line.find(marker)? + marker.len()..];
    Some(rest[..rest.find('"')?].to_string())
}

fn is_segment(name: &str) -> bool {
    WalName::parse(name).is_ok_and(|n| n.kind == Kind::Segment)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
2026-12-04 10:00:00.000 UTC [10] LOG:  starting point-in-time recovery to WAL location (LSN) \"0/5000100\"
offsitedb wal-fetch: 00000002.history is not in the archive
offsitedb wal-fetch: 000000010000000000000003 (16 MiB) from the archive in 12 ms; 3 more fetched ahead
2026-12-04 10:00:00.100 UTC [10] LOG:  restored log file \"000000010000000000000003\" from archive
2026-12-04 10:00:00.200 UTC [10] LOG:  restored log file \"000000010000000000000004\" from archive
offsitedb wal-fetch: 000000010000000000000006 is not in the archive
offsitedb wal-fetch: 00000002.history is not in the archive
";

    #[test]
    fn reads_what_was_restored_and_where_the_archive_ended() {
        assert_eq!(
            restored_segments(LOG),
            ["000000010000000000000003", "000000010000000000000004"]
        );
        assert_eq!(last_timeline(LOG), Some(1));
        assert_eq!(
            first_not_archived(LOG).as_deref(),
            Some("000000010000000000000006")
        );
        assert_eq!(failed_segment(LOG), None);
    }

    #[test]
    fn names_the_segment_that_failed() {
        let log = format!(
            "{LOG}error: wal-fetch 000000010000000000000005: 000000010000000000000005: authentication failed\n\
             hint: recovery stops here\n\
             2026-12-04 10:00:01 UTC [10] FATAL:  could not restore file \"000000010000000000000005\" from archive: child process exited with exit code 200\n"
        );
        let (name, line) = failed_segment(&log).unwrap();
        assert_eq!(name, "000000010000000000000005");
        assert!(line.starts_with("error: wal-fetch"), "{line}");
        let fatal_only = "x [1] FATAL:  could not restore file \"000000020000000000000009\" from archive: child process exited with exit code 200";
        let (name, line) = failed_segment(fatal_only).unwrap();
        assert_eq!(name, "000000020000000000000009");
        assert!(line.starts_with("FATAL:"), "{line}");
    }

    #[test]
    fn the_segment_after_a_position() {
        assert_eq!(
            segment_after(Lsn(0x0400_0128), 1, 16 << 20),
            "000000010000000000000005"
        );
    }
}
