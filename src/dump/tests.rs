//! Archives built byte by byte: the cases a real pg_dump rarely or never writes (rows split across
//! chunks, OIDs ≥ 2³¹ in several BLOBS groups, foreign block kinds) and every way to break one.
//! The integration tests (tests/it/dump.rs) run the real pg_dump.

use std::io::Read;

use xxhash_rust::xxh3::xxh3_128;

use super::*;

/// Writes the archive primitives (pg_backup_archiver.c's `WriteInt`, `WriteStr`) with intSize 4,
/// offSize 8.
struct W {
    b: Vec<u8>,
    minor: u8,
}

struct E<'a> {
    id: i64,
    desc: &'a str,
    tag: &'a str,
    defn: Option<&'a str>,
    copy: Option<&'a str>,
    schema: Option<&'a str>,
    owner: Option<&'a str>,
    has_data: bool,
}

impl<'a> E<'a> {
    fn new(id: i64, desc: &'a str, tag: &'a str) -> Self {
        E {
            id,
            desc,
            tag,
            defn: None,
            copy: None,
            schema: None,
            owner: Some("alice"),
            has_data: false,
        }
    }
    fn table(id: i64, schema: &'a str, tag: &'a str, copy: &'a str) -> Self {
        E {
            schema: Some(schema),
            copy: Some(copy),
            has_data: true,
            ..E::new(id, "TABLE DATA", tag)
        }
    }
}

impl W {
    fn new(minor: u8, compression: i64) -> W {
        let mut w = W {
            b: b"PGDMP".to_vec(),
            minor,
        };
        w.b.extend_from_slice(&[1, minor, 0, 4, 8, 1]);
        if minor < 15 {
            w.int(compression);
        } else {
            w.b.push(compression as u8);
        }
        for v in [5, 4, 3, 2, 1, 125, 0] {
            w.int(v);
        }
        w.str(Some("db"));
        w.str(Some("15.1"));
        w.str(Some("15.1"));
        w
    }
    fn int(&mut self, v: i64) {
        self.b.push(u8::from(v < 0));
        self.b
            .extend_from_slice(&(v.unsigned_abs() as u32).to_le_bytes());
    }
    fn str(&mut self, s: Option<&str>) {
        match s {
            None => self.int(-1),
            Some(s) => {
                self.int(s.len() as i64);
                self.b.extend_from_slice(s.as_bytes());
            }
        }
    }
    /// Writes an entry; returns the position of its offset flag.
    fn entry(&mut self, e: &E) -> u64 {
        self.int(e.id);
        self.int(i64::from(e.has_data));
        self.str(Some("0"));
        self.str(Some("0"));
        self.str(Some(e.tag));
        self.str(Some(e.desc));
        self.int(3);
        self.str(e.defn);
        self.str(None);
        self.str(e.copy);
        self.str(e.schema);
        self.str(None);
        self.str(None);
        if self.minor >= 16 {
            self.int(0);
        }
        self.str(e.owner);
        self.str(Some("false"));
        self.str(Some("1"));
        self.str(None);
        let pos = self.b.len() as u64;
        self.b.push(if e.has_data { 1 } else { 3 });
        self.b.extend_from_slice(&[0; 8]);
        pos
    }
    fn toc(&mut self, entries: &[E]) -> Vec<u64> {
        self.int(entries.len() as i64);
        entries.iter().map(|e| self.entry(e)).collect()
    }
    fn chunks(&mut self, chunks: &[&[u8]]) {
        for c in chunks {
            self.int(c.len() as i64);
            self.b.extend_from_slice(c);
        }
        self.int(0);
    }
    fn data(&mut self, id: i64, chunks: &[&[u8]]) -> u64 {
        let pos = self.b.len() as u64;
        self.b.push(1);
        self.int(id);
        self.chunks(chunks);
        pos
    }
    fn blobs(&mut self, id: i64, los: &[(u32, &[&[u8]])]) -> u64 {
        let pos = self.b.len() as u64;
        self.b.push(3);
        self.int(id);
        for (oid, chunks) in los {
            // pg_dump passes the unsigned OID through a C int.
            self.int(i64::from(*oid as i32));
            self.chunks(chunks);
        }
        self.int(0);
        pos
    }
}

/// A 1.14 or 1.16 archive with every feature, and what its summary must say.
/// `big` is the size of a large object that spans chunks.
fn sample(minor: u8, big: usize) -> (Vec<u8>, Vec<u64>, Vec<u64>) {
    let mut w = W::new(minor, 0);
    let enc = E {
        defn: Some("SET client_encoding = 'UTF8';\n"),
        owner: None,
        ..E::new(1, "ENCODING", "ENCODING")
    };
    let mut seq = E::new(5, "SEQUENCE SET", "s");
    seq.has_data = true; // a foreign kind of data block, skipped
    let entries = [
        enc,
        E::new(2, "EXTENSION", "pgcrypto"),
        E::table(3, "public", "t", "COPY public.t (a, b) FROM stdin;\n"),
        E::table(4, "s p", "z", "COPY \"s p\".z  FROM stdin;\n"),
        seq,
        E {
            owner: Some("bob"),
            has_data: true,
            ..E::new(6, "BLOBS", "BLOBS")
        },
        E {
            has_data: true,
            ..E::new(7, "BLOBS", "BLOBS")
        },
        E::table(8, "public", "empty", "COPY public.empty (x) FROM stdin;\n"),
    ];
    let fields = w.toc(&entries);
    let mut blocks = Vec::new();
    // One row per chunk (pg_dump 13–18), then rows split anywhere (master's 128K blocks).
    blocks.push(w.data(
        3,
        &[
            b"1\ta\\tb\n",
            b"2\t\xc3\xa9\\n\n",
            b"3\t",
            b"x",
            b"y\n4\t\\N\n",
            b"\\.\n\n\n",
        ],
    ));
    blocks.push(w.data(4, &[b"\n", b"\n\n\\", b".\n\n", b"\n"]));
    blocks.push(w.data(5, &[b"SELECT 1;"]));
    let big = vec![7u8; big];
    blocks.push(w.blobs(
        6,
        &[(3_000_000_000, &[b"hel", b"lo"]), (2_147_483_648, &[])],
    ));
    let half = big.len() / 2;
    blocks.push(w.blobs(7, &[(16_385, &[&big[..half], &big[half..]])]));
    blocks.push(w.data(8, &[b"\\.\n\n\n"]));
    (w.b, fields, blocks)
}

fn rows(text: &[&[u8]]) -> (u64, u128) {
    let sum = text.iter().fold(0u128, |s, r| s.wrapping_add(xxh3_128(r)));
    (text.len() as u64, sum)
}

#[test]
fn reads_every_part_of_a_sample_archive() {
    // 1.14: pg_dump 13-15; 1.15: 16 (compression byte); 1.16: 17-18 (relkind in the TOC).
    for minor in [14, 15, 16] {
        let (bytes, fields, blocks) = sample(minor, 40_000);
        let s = inspect(&bytes[..]).unwrap();
        assert_eq!(s.archive_version, format!("1.{minor}.0"));
        assert_eq!((s.dbname.as_str(), s.compression.as_str()), ("db", "none"));
        assert_eq!(s.encoding.as_deref(), Some("UTF8"));
        assert_eq!(s.extensions, ["pgcrypto"]);
        assert_eq!(
            s.owners.iter().map(String::as_str).collect::<Vec<_>>(),
            ["alice", "bob"]
        );
        assert_eq!(s.bytes, bytes.len() as u64);
        let t: Vec<_> = s
            .tables
            .iter()
            .map(|t| {
                (
                    t.dump_id,
                    t.schema.as_str(),
                    t.name.as_str(),
                    t.rows,
                    t.digest,
                )
            })
            .collect();
        let (r1, d1) = rows(&[b"1\ta\\tb", b"2\t\xc3\xa9\\n", b"3\txy", b"4\t\\N"]);
        let (r2, d2) = rows(&[b"", b"", b""]);
        assert_eq!(
            t,
            [
                (3, "public", "t", r1, d1),
                (4, "s p", "z", r2, d2),
                (8, "public", "empty", 0, 0)
            ]
        );
        let lo = s.large_objects.as_ref().unwrap();
        let mut want = 0u128;
        lo_digest_update(&mut want, 3_000_000_000, b"hello");
        lo_digest_update(&mut want, 2_147_483_648, b"");
        lo_digest_update(&mut want, 16_385, &[7u8; 40_000]);
        assert_eq!((lo.dump_id, lo.rows, lo.digest), (6, 3, want));
        let offsets: Vec<_> = s
            .data_offsets
            .iter()
            .map(|o| (o.dump_id, o.field_pos, o.block_pos))
            .collect();
        let ids = [3, 4, 5, 6, 7, 8];
        let field_of = |id: i32| fields[id as usize - 1];
        let want: Vec<_> = ids
            .iter()
            .zip(&blocks)
            .map(|(&id, &b)| (id, field_of(id), b))
            .collect();
        assert_eq!(offsets, want);
    }
}

/// Counts what the inspector read, to prove it reads to the end.
struct Counting<'a>(&'a [u8], u64);

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // Small, odd reads: every field gets split somewhere.
        let k = buf.len().min(7);
        let n = self.0.read(&mut buf[..k])?;
        self.1 += n as u64;
        Ok(n)
    }
}

fn inspect_all(bytes: &[u8]) -> Result<DumpSummary, DumpError> {
    let mut c = Counting(bytes, 0);
    let r = inspect(&mut c);
    assert_eq!(c.1, bytes.len() as u64, "the input was not read to its end");
    r
}

#[test]
fn every_truncation_is_an_error_or_ends_at_a_block() {
    let (bytes, _, blocks) = sample(16, 10);
    let first_block = blocks[0] as usize;
    for cut in 0..bytes.len() {
        match inspect_all(&bytes[..cut]) {
            Ok(s) => {
                // Only a cut at a block boundary reads as a (shorter) archive.
                assert!(cut >= first_block, "cut at {cut} passed");
                assert!(blocks.contains(&(cut as u64)), "cut at {cut} passed");
                assert_eq!(s.bytes, cut as u64);
            }
            Err(DumpError::Malformed { what, at }) => {
                assert!(at <= cut as u64, "{what} at {at}, cut {cut}");
            }
            Err(e) => panic!("cut at {cut}: {e}"),
        }
    }
}

#[test]
fn corruption_anywhere_never_panics_and_is_read_through() {
    // 1.14: pg_dump 13-15; 1.15: 16 (compression byte); 1.16: 17-18 (relkind in the TOC).
    for minor in [14, 15, 16] {
        let (bytes, _, _) = sample(minor, 10);
        for i in 0..bytes.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= flip;
                let _ = inspect_all(&b);
            }
        }
    }
}

#[test]
fn lying_lengths_are_refused_without_allocating_them() {
    let mut w = W::new(14, 0);
    w.int(1);
    w.int(1);
    w.int(0);
    w.int(i64::from(u32::MAX)); // a 4 GiB catalog id
    let e = inspect_all(&w.b).unwrap_err();
    assert!(
        matches!(&e, DumpError::Malformed { what, .. } if what.contains("256 MiB")),
        "{e}"
    );

    // A 200 MiB string that is not there: the error comes at the end of the input.
    let mut w = W::new(14, 0);
    w.int(1);
    w.int(1);
    w.int(0);
    w.int(200 << 20);
    w.b.extend_from_slice(b"short");
    let e = inspect_all(&w.b).unwrap_err();
    assert!(
        matches!(&e, DumpError::Malformed { what, .. } if what.contains("ends early")),
        "{e}"
    );

    // A table of contents that claims two billion entries.
    let mut w = W::new(14, 0);
    w.int(i64::from(i32::MAX));
    assert!(matches!(
        inspect_all(&w.b),
        Err(DumpError::Malformed { .. })
    ));
}

#[test]
fn other_versions_formats_and_compression_are_unsupported() {
    let unsupported = |bytes: &[u8], needle: &str| match inspect_all(bytes) {
        Err(DumpError::Unsupported { what }) => assert!(what.contains(needle), "{what}"),
        other => panic!("{needle}: {other:?}"),
    };
    let (good, _, _) = sample(14, 10);
    for (minor, v) in [(13, "1.13.0"), (17, "1.17.0")] {
        let mut b = good.clone();
        b[6] = minor;
        unsupported(&b, v);
    }
    let mut b = good.clone();
    b[..5].copy_from_slice(b"PGDMQ");
    unsupported(&b, "PGDMP");
    unsupported(b"--\n-- PostgreSQL database dump\n--\n", "PGDMP");
    let mut b = good.clone();
    b[10] = 3; // tar
    unsupported(&b, "format 3");
    for (minor, level, name) in [
        (14, -1, "gzip"),
        (14, 6, "gzip"),
        (15, 3, "zstd"),
        (16, 2, "lz4"),
    ] {
        let mut w = W::new(minor, level);
        w.toc(&[]);
        unsupported(&w.b, name);
    }
    // Table data written as INSERT statements has no COPY statement.
    let mut w = W::new(14, 0);
    let mut e = E::table(1, "public", "t", "");
    e.copy = None;
    w.toc(&[e]);
    w.data(1, &[b"INSERT INTO public.t VALUES (1);\n"]);
    unsupported(&w.b, "--inserts");
}

#[test]
fn inconsistent_blocks_are_malformed() {
    let malformed = |bytes: &[u8], needle: &str| match inspect_all(bytes) {
        Err(DumpError::Malformed { what, .. }) => assert!(what.contains(needle), "{what}"),
        other => panic!("{needle}: {other:?}"),
    };
    let table = || E::table(1, "public", "t", "COPY public.t (a) FROM stdin;\n");
    let mut w = W::new(14, 0);
    w.toc(&[table()]);
    w.data(2, &[]);
    malformed(&w.b, "dump id 2");

    let mut w = W::new(14, 0);
    w.toc(&[table()]);
    w.data(1, &[b"1\n\\.\n\n\n"]);
    w.data(1, &[b"1\n\\.\n\n\n"]);
    malformed(&w.b, "second data block");

    let mut w = W::new(14, 0);
    w.toc(&[table()]);
    w.data(1, &[b"1\n2\n"]);
    malformed(&w.b, "end marker");

    let mut w = W::new(14, 0);
    w.toc(&[table()]);
    w.blobs(1, &[]);
    malformed(&w.b, "type 3");

    let mut w = W::new(14, 0);
    w.toc(&[table()]);
    w.b.push(2);
    w.int(1);
    malformed(&w.b, "block type 2");

    let mut w = W::new(14, 0);
    w.toc(&[table()]);
    w.b.push(1);
    w.int(1);
    w.int(-5);
    malformed(&w.b, "length -5");
}

#[test]
fn stop_mode_leaves_the_rest_unread() {
    let mut b = b"not an archive at all".to_vec();
    b.resize(1 << 20, b'x');
    let mut c = Counting(&b, 0);
    assert!(inspect_with(&mut c, OnError::Stop).is_err());
    assert!(c.1 < 4096, "read {} bytes", c.1);
}

#[test]
fn rewritten_offsets_are_the_block_positions() {
    let (bytes, fields, blocks) = sample(16, 10);
    let s = inspect(&bytes[..]).unwrap();
    let mut f = tempfile::tempfile().unwrap();
    std::io::Write::write_all(&mut f, &bytes).unwrap();
    rewrite_offsets(&mut f, &s).unwrap();
    let mut out = Vec::new();
    std::io::Seek::rewind(&mut f).unwrap();
    f.read_to_end(&mut out).unwrap();
    let mut want = bytes.clone();
    let ids = [3usize, 4, 5, 6, 7, 8];
    for (id, block) in ids.iter().zip(&blocks) {
        let p = fields[id - 1] as usize;
        want[p] = 2;
        want[p + 1..p + 9].copy_from_slice(&block.to_le_bytes());
    }
    assert_eq!(out, want);
    // Entries without data keep flag 3, and the result still inspects the same.
    assert_eq!(out[fields[0] as usize], 3);
    let again = inspect(&out[..]).unwrap();
    assert_eq!(again.tables, s.tables);
    // Doing it twice changes nothing; a different file is refused.
    rewrite_offsets(&mut f, &s).unwrap();
    let mut other = tempfile::tempfile().unwrap();
    let mut wrong = bytes.clone();
    wrong[fields[2] as usize] = 3;
    std::io::Write::write_all(&mut other, &wrong).unwrap();
    let e = rewrite_offsets(&mut other, &s).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
}

#[test]
fn errors_convert_to_the_crate_error() {
    let e: crate::Error = DumpError::Unsupported { what: "x".into() }.into();
    assert_eq!(e.kind(), crate::ErrorKind::Tool);
    let e: crate::Error = DumpError::Malformed {
        what: "x".into(),
        at: 7,
    }
    .into();
    assert_eq!(e.kind(), crate::ErrorKind::Integrity);
    assert!(e.message().contains("byte 7"));
}
