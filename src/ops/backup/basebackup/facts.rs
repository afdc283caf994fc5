/*!
What pg_basebackup's stream says about the copy, read as it goes by and checked against each
other before the upload is completed: `backup_label` (where the copy starts in the WAL, on which
timeline, and the segment a restore needs first), `global/pg_control` (which database system it
is), the server's `backup_manifest` (where the copy ends), and pg_basebackup's `-v` lines (start
and end, again). Any disagreement aborts the upload.

The `backup_manifest` entry is also kept whole, compressed as the backup is, as it passes (up to
[`MANIFEST_COPY_MAX`]): it is stored as its own object, which an incremental backup of this one
is given without reading the whole tar again. The tar itself is never held.
*/

use std::io::Read;
use std::sync::Arc;
use std::sync::mpsc::SyncSender;
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::pipeline::{Compression, Compressor, TapReader};
use crate::wal::name::{Lsn, WalName};

/// What `backup_manifest` entries are kept of, at most (its tail holds the WAL ranges).
const MANIFEST_TAIL: usize = 64 << 10;

/// The compressed copy of `backup_manifest` kept in memory, at most (about a million files):
/// past it, the copy is not stored, and an incremental reads the manifest from the tar.
pub(super) const MANIFEST_COPY_MAX: usize = 64 << 20;

/// What the tar reader found in pg_basebackup's stream.
#[derive(Debug, Default)]
pub(super) struct TarFacts {
    label: Option<String>,
    /// The first 8 bytes of `global/pg_control`.
    control: Option<[u8; 8]>,
    /// The end of `backup_manifest`, when there is one.
    manifest_tail: Option<String>,
    /// Why the stream could not be read as a tar archive.
    error: Option<String>,
    /// `backup_manifest`, compressed, or why it was not kept.
    pub(super) manifest_copy: Option<std::result::Result<Vec<u8>, String>>,
}

/// Where the stream's buffers go, and the thread that reads them as a tar archive.
pub(super) type TarReader = (SyncSender<Arc<Vec<u8>>>, JoinHandle<TarFacts>);

/// The tar reader on its own thread, fed by the sink's tap.
/// `copy`: the compression to keep `backup_manifest` in (`None`: not kept).
pub(super) fn spawn_tar_reader(copy: Option<Compression>) -> Result<TarReader> {
    let (tx, rx) = std::sync::mpsc::sync_channel(8);
    let handle = std::thread::Builder::new()
        .name("basebackup-tar".into())
        .spawn(move || {
            // SAFETY: nice(2) changes only this thread's priority.
            unsafe {
                libc::nice(crate::pipeline::sink::NICE);
            }
            let mut r = TapReader::new(rx);
            let mut facts = TarFacts::default();
            if let Err(e) = read_tar(&mut r, &mut facts, copy) {
                facts.error = Some(e.to_string());
            }
            // Keep reading, so the backup never waits on a reader that stopped.
            let _ = std::io::copy(&mut r, &mut std::io::sink());
            facts
        })
        .map_err(|e| Error::internal(format!("cannot start a thread: {e}")))?;
    Ok((tx, handle))
}

fn read_tar(
    r: &mut dyn Read,
    facts: &mut TarFacts,
    copy: Option<Compression>,
) -> std::io::Result<()> {
    let mut archive = tar::Archive::new(r);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path_bytes().into_owned();
        let path = path.strip_prefix(b"./").unwrap_or(&path);
        match path {
            b"backup_label" => {
                let mut s = String::new();
                entry.by_ref().take(1 << 16).read_to_string(&mut s)?;
                facts.label = Some(s);
            }
            b"global/pg_control" => {
                let mut b = [0u8; 8];
                entry.read_exact(&mut b)?;
                facts.control = Some(b);
            }
            b"backup_manifest" => {
                let mut tail: Vec<u8> = Vec::new();
                let mut buf = vec![0u8; 64 << 10];
                let mut kept = copy.map(|c| Compressor::new(Capped(Vec::new()), c, 1));
                loop {
                    let n = entry.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    if let Some(Ok(w)) = &mut kept
                        && let Err(e) = std::io::Write::write_all(w, &buf[..n])
                    {
                        kept = Some(Err(Error::internal(e.to_string())));
                    }
                    tail.extend_from_slice(&buf[..n]);
                    if tail.len() > 2 * MANIFEST_TAIL {
                        tail.drain(..tail.len() - MANIFEST_TAIL);
                    }
                }
                facts.manifest_tail = Some(String::from_utf8_lossy(&tail).into_owned());
                facts.manifest_copy = kept.map(|k| {
                    k.and_then(Compressor::finish)
                        .map(|c| c.0)
                        .map_err(|e| e.message().to_string())
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// The fuzz target for pg_basebackup's stream (`crate::fuzzing`): read as a tar as the backup
/// reads it (keeping `backup_manifest`, zstd-compressed), then its facts gathered and checked.
pub(crate) fn fuzz_tar(data: &[u8]) {
    let mut facts = TarFacts::default();
    if let Err(e) = read_tar(&mut &data[..], &mut facts, Some(super::DEFAULT_COMPRESSION)) {
        facts.error = Some(e.to_string());
    }
    let expect = Expect {
        segment_size: 16 << 20,
        system_identifier: None,
    };
    let _ = Facts::gather(&facts, &[], &expect);
}

/// A buffer that refuses to grow past [`MANIFEST_COPY_MAX`].
struct Capped(Vec<u8>);

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MANIFEST_COPY_MAX {
            return Err(std::io::Error::other(format!(
                "backup_manifest is over {} compressed",
                crate::units::bytes(MANIFEST_COPY_MAX as u64)
            )));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What the manifest records must match.
pub(super) struct Expect {
    pub(super) segment_size: u64,
    /// From `pg_control_system()`, when the role may call it.
    pub(super) system_identifier: Option<String>,
}

/// Where the copy lies in the WAL and which cluster it is, from every witness, checked against
/// each other.
#[derive(Debug, PartialEq)]
pub(super) struct Facts {
    pub(super) timeline: u32,
    pub(super) start_lsn: Lsn,
    pub(super) end_lsn: Lsn,
    pub(super) start_wal: String,
    pub(super) system_identifier: String,
    pub(super) server_manifest: bool,
}

/// What `backup_label` says.
#[derive(Debug, PartialEq)]
struct Label {
    start_lsn: Lsn,
    start_wal: String,
    timeline: u32,
}

impl Facts {
    pub(super) fn gather(tar: &TarFacts, stderr: &[String], expect: &Expect) -> Result<Facts> {
        let unreadable = |what: &str| {
            Error::integrity(format!(
                "pg_basebackup's output {what}{}",
                tar.error
                    .as_deref()
                    .map(|e| format!(" (it could not be read as a tar archive: {e})"))
                    .unwrap_or_default()
            ))
        };
        let label = parse_label(
            tar.label
                .as_deref()
                .ok_or_else(|| unreadable("has no backup_label"))?,
        )?;
        let control = tar
            .control
            .ok_or_else(|| unreadable("has no global/pg_control"))?;
        let system_identifier = system_identifier(control, expect.system_identifier.as_deref())?;
        let told = parse_stderr(stderr);
        if let Some((lsn, tli)) = told.start
            && (lsn, tli) != (label.start_lsn, label.timeline)
        {
            return Err(Error::integrity(format!(
                "pg_basebackup says the copy starts at {lsn} on timeline {tli}, its backup_label says {} on timeline {}",
                label.start_lsn, label.timeline
            )));
        }
        let from_manifest = tar.manifest_tail.as_deref().and_then(manifest_wal_end);
        let end_lsn = match (told.end, from_manifest) {
            (Some(a), Some(b)) if a != b => {
                return Err(Error::integrity(format!(
                    "pg_basebackup says the copy ends at {a}, the server's backup_manifest says {b}"
                )));
            }
            (Some(a), _) => a,
            (None, Some(b)) => b,
            (None, None) => {
                return Err(Error::integrity(
                    "pg_basebackup did not say where the copy ends in the WAL (no \"write-ahead log end point\" line, no backup_manifest)",
                ));
            }
        };
        if end_lsn < label.start_lsn {
            return Err(Error::integrity(format!(
                "the copy ends at {end_lsn}, before it starts ({})",
                label.start_lsn
            )));
        }
        let computed = WalName::segment(
            label.timeline,
            label.start_lsn.segment(expect.segment_size),
            expect.segment_size,
        )
        .to_string();
        if computed != label.start_wal {
            return Err(Error::integrity(format!(
                "backup_label names segment {} for {} on timeline {}, which is segment {computed} with {}-byte segments",
                label.start_wal, label.start_lsn, label.timeline, expect.segment_size
            )));
        }
        Ok(Facts {
            timeline: label.timeline,
            start_lsn: label.start_lsn,
            end_lsn,
            start_wal: label.start_wal,
            system_identifier,
            server_manifest: tar.manifest_tail.is_some(),
        })
    }
}

/// `START WAL LOCATION: 0/2000028 (file 000000010000000000000002)` and `START TIMELINE: 1`.
fn parse_label(text: &str) -> Result<Label> {
    let bad = |what: &str| Error::integrity(format!("backup_label {what}: {text:?}"));
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let loc = field("START WAL LOCATION:").ok_or_else(|| bad("has no START WAL LOCATION"))?;
    let (lsn, rest) = loc
        .split_once(' ')
        .ok_or_else(|| bad("has an unreadable START WAL LOCATION"))?;
    let start_lsn = Lsn::parse(lsn).map_err(|_| bad("has an unreadable START WAL LOCATION"))?;
    let file = rest
        .trim()
        .strip_prefix("(file ")
        .and_then(|f| f.strip_suffix(')'))
        .ok_or_else(|| bad("has an unreadable START WAL LOCATION"))?;
    let name = WalName::parse(file).map_err(|_| bad("names no WAL segment"))?;
    if !name.is_segment() {
        return Err(bad("names no WAL segment"));
    }
    let timeline = match field("START TIMELINE:") {
        Some(t) => t
            .parse::<u32>()
            .map_err(|_| bad("has an unreadable START TIMELINE"))?,
        // Written since PostgreSQL 9.6; the segment's name holds it too.
        None => name.timeline,
    };
    Ok(Label {
        start_lsn,
        start_wal: name.to_string(),
        timeline,
    })
}

/// What pg_basebackup's `-v` lines say.
#[derive(Debug, Default, PartialEq)]
struct Told {
    start: Option<(Lsn, u32)>,
    end: Option<Lsn>,
}

/// `write-ahead log start point: 0/2000028 on timeline 1`, `write-ahead log end point: 0/2000100`.
fn parse_stderr(lines: &[String]) -> Told {
    let mut t = Told::default();
    for l in lines {
        if let Some(rest) = l.split("write-ahead log start point: ").nth(1)
            && let Some((lsn, tli)) = rest.split_once(" on timeline ")
            && let (Ok(lsn), Ok(tli)) = (Lsn::parse(lsn), tli.trim().parse::<u32>())
        {
            t.start = Some((lsn, tli));
        }
        if let Some(rest) = l.split("write-ahead log end point: ").nth(1)
            && let Ok(lsn) = Lsn::parse(rest.split_whitespace().next().unwrap_or(""))
        {
            t.end = Some(lsn);
        }
    }
    t
}

/// The last `End-LSN` of the manifest's `WAL-Ranges` (the one the copy ends on).
pub(super) fn manifest_wal_end(tail: &str) -> Option<Lsn> {
    let ranges = tail.rsplit_once("\"WAL-Ranges\"")?.1;
    let after = ranges.rsplit_once("\"End-LSN\"")?.1;
    let value = after.split('"').nth(1)?;
    Lsn::parse(value).ok()
}

/// The system identifier at the start of `pg_control`, as a decimal string: in the byte order of
/// the machine that wrote it, which is this one's unless the server said otherwise.
fn system_identifier(control: [u8; 8], from_sql: Option<&str>) -> Result<String> {
    let native = u64::from_ne_bytes(control).to_string();
    let Some(sql) = from_sql else {
        return Ok(native);
    };
    if sql == native {
        return Ok(native);
    }
    let swapped = u64::from_ne_bytes(control).swap_bytes().to_string();
    if sql == swapped {
        return Ok(swapped);
    }
    Err(Error::integrity(format!(
        "the copy's pg_control is of database system {native}, and the server says it is {sql}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    const LABEL: &str = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
CHECKPOINT LOCATION: 0/2000060
BACKUP METHOD: streamed
BACKUP FROM: primary
START TIME: 2026-12-04 07:26:07 UTC
LABEL: offsitedb
START TIMELINE: 1
";

    fn lines(s: &[&str]) -> Vec<String> {
        s.iter().map(|l| l.to_string()).collect()
    }

    fn expect() -> Expect {
        Expect {
            segment_size: 16 << 20,
            system_identifier: Some("7449999999999999999".into()),
        }
    }

    fn tar(manifest: Option<&str>) -> TarFacts {
        TarFacts {
            label: Some(LABEL.into()),
            control: Some(7449999999999999999u64.to_ne_bytes()),
            manifest_tail: manifest.map(str::to_string),
            error: None,
            manifest_copy: None,
        }
    }

    const STDERR: &[&str] = &[
        "pg_basebackup: initiating base backup, waiting for checkpoint to complete",
        "pg_basebackup: checkpoint completed",
        "pg_basebackup: write-ahead log start point: 0/2000028 on timeline 1",
        "pg_basebackup: write-ahead log end point: 0/2000100",
        "pg_basebackup: base backup completed",
    ];

    const MANIFEST: &str = r#"{ "Path": "global/pg_control", "Size": 8192 } ],
"WAL-Ranges": [
{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }
],
"Manifest-Checksum": "abc"}
"#;

    #[test]
    fn reads_backup_label() {
        assert_eq!(
            parse_label(LABEL).unwrap(),
            Label {
                start_lsn: Lsn(0x2000028),
                start_wal: "000000010000000000000002".into(),
                timeline: 1
            }
        );
        for bad in [
            "",
            "START WAL LOCATION: 0/2000028\n",
            "START WAL LOCATION: zz (file 000000010000000000000002)\n",
            "START WAL LOCATION: 0/2000028 (file 00000001.history)\n",
        ] {
            assert_eq!(
                parse_label(bad).unwrap_err().kind(),
                ErrorKind::Integrity,
                "{bad}"
            );
        }
    }

    #[test]
    fn reads_the_verbose_lines_and_the_manifest_range() {
        assert_eq!(
            parse_stderr(&lines(STDERR)),
            Told {
                start: Some((Lsn(0x2000028), 1)),
                end: Some(Lsn(0x2000100))
            }
        );
        assert_eq!(manifest_wal_end(MANIFEST), Some(Lsn(0x2000100)));
        // Two ranges (a standby that switched timeline): the last one ends the copy.
        let two = r#""WAL-Ranges": [
{ "Timeline": 2, "Start-LSN": "0/3000000", "End-LSN": "0/3000200" },
{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/3000000" }
],"#;
        assert_eq!(manifest_wal_end(two), Some(Lsn(0x3000000)));
        assert_eq!(manifest_wal_end("{}"), None);
    }

    #[test]
    fn every_witness_must_agree() {
        let e = expect();
        let f = Facts::gather(&tar(Some(MANIFEST)), &lines(STDERR), &e).unwrap();
        assert_eq!(
            f,
            Facts {
                timeline: 1,
                start_lsn: Lsn(0x2000028),
                end_lsn: Lsn(0x2000100),
                start_wal: "000000010000000000000002".into(),
                system_identifier: "7449999999999999999".into(),
                server_manifest: true,
            }
        );
        // Without a manifest (a server before 13), the verbose lines alone.
        let f = Facts::gather(&tar(None), &lines(STDERR), &e).unwrap();
        assert!(!f.server_manifest);
        assert_eq!(f.end_lsn, Lsn(0x2000100));
        // Without the end line, the manifest alone.
        let f = Facts::gather(&tar(Some(MANIFEST)), &lines(&STDERR[..3]), &e).unwrap();
        assert_eq!(f.end_lsn, Lsn(0x2000100));

        let fails = |t: TarFacts, stderr: &[&str], e: &Expect, needle: &str| {
            let err = Facts::gather(&t, &lines(stderr), e).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Integrity);
            assert!(err.message().contains(needle), "{err}");
        };
        fails(
            tar(None),
            &STDERR[..3],
            &e,
            "did not say where the copy ends",
        );
        let mut other_end = STDERR.to_vec();
        other_end[3] = "pg_basebackup: write-ahead log end point: 0/2000200";
        fails(tar(Some(MANIFEST)), &other_end, &e, "backup_manifest says");
        let mut other_start = STDERR.to_vec();
        other_start[2] = "pg_basebackup: write-ahead log start point: 0/2000028 on timeline 2";
        fails(tar(None), &other_start, &e, "its backup_label says");
        let mut before = STDERR.to_vec();
        before[3] = "pg_basebackup: write-ahead log end point: 0/1000000";
        fails(tar(None), &before, &e, "before it starts");
        fails(
            TarFacts {
                label: None,
                error: Some("unexpected EOF".into()),
                ..tar(None)
            },
            STDERR,
            &e,
            "has no backup_label (it could not be read as a tar archive: unexpected EOF)",
        );
        fails(
            TarFacts {
                control: None,
                ..tar(None)
            },
            STDERR,
            &e,
            "has no global/pg_control",
        );
        let other_system = Expect {
            system_identifier: Some("42".into()),
            ..expect()
        };
        fails(tar(None), STDERR, &other_system, "the server says it is 42");
        // 1 GB segments: 0/2000028 is in segment 0, not 2.
        let big = Expect {
            segment_size: 1 << 30,
            ..expect()
        };
        fails(
            tar(None),
            STDERR,
            &big,
            "which is segment 000000010000000000000000",
        );
    }

    #[test]
    fn system_identifiers_in_either_byte_order() {
        let id = 7449999999999999999u64;
        let s = id.to_string();
        assert_eq!(system_identifier(id.to_ne_bytes(), None).unwrap(), s);
        assert_eq!(system_identifier(id.to_ne_bytes(), Some(&s)).unwrap(), s);
        // Written by a machine of the other byte order.
        assert_eq!(
            system_identifier(id.swap_bytes().to_ne_bytes(), Some(&s)).unwrap(),
            s
        );
    }

    #[test]
    fn backup_manifest_is_kept_whole_as_the_tar_passes() {
        let mut b = tar::Builder::new(Vec::new());
        let big = format!("{}{MANIFEST}", "{ \"Path\": \"x\" },\n".repeat(20_000));
        for (name, body) in [
            ("backup_label", LABEL.as_bytes()),
            ("base/1/1259", &[7u8; 8192][..]),
            ("backup_manifest", big.as_bytes()),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            b.append_data(&mut h, name, body).unwrap();
        }
        let bytes = b.into_inner().unwrap();
        for algorithm in [
            crate::pipeline::Algorithm::Zstd,
            crate::pipeline::Algorithm::Gzip,
        ] {
            let c = Compression {
                algorithm,
                level: 1,
            };
            let mut facts = TarFacts::default();
            read_tar(&mut &bytes[..], &mut facts, Some(c)).unwrap();
            let copy = facts.manifest_copy.unwrap().unwrap();
            let mut plain = String::new();
            crate::pipeline::decompressor(&copy[..], algorithm)
                .unwrap()
                .read_to_string(&mut plain)
                .unwrap();
            assert_eq!(plain, big);
            assert!(copy.len() < big.len() / 10);
            assert_eq!(
                manifest_wal_end(facts.manifest_tail.as_deref().unwrap()),
                Some(Lsn(0x2000100))
            );
        }
        let mut facts = TarFacts::default();
        read_tar(&mut &bytes[..], &mut facts, None).unwrap();
        assert!(facts.manifest_copy.is_none());
    }
}
