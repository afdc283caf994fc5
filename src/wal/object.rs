/*!
A WAL file in the repository: `wal/<source>/<timeline>/<file name>`, one sealed object (format v1,
docs/FORMAT.md) whose plaintext is a small header and then the file, compressed:

```text
"OSDBWAL1"                      8 bytes
name length                     u16 big-endian, then the file name (ASCII, at most 64 bytes)
size                            u64 big-endian: the file's length
sha256                          32 bytes: the file's digest
pushed at                       i64 big-endian: Unix milliseconds when it was archived
compression                     u8: 0 none, 1 zstd
the file, compressed            to the end of the plaintext
```

Why a header inside the seal: the sealed format authenticates the bytes but not the object's
name, and PostgreSQL reads a swapped segment (segment 5's bytes under segment 6's name) as the
end of the WAL and promotes early. The name inside is checked against the name asked for, the
digest and size against the decompressed bytes, so a swapped, edited or truncated object is
refused, not replayed. The digest also lets `wal-push` tell "the same file again" (fine: the
archiver retries) from "different bytes under an archived name" (refused, with both digests).

A WAL file is at most one segment (16 MB by default, 1 GB at most), so it is handled in memory
whole: read once, hashed, compressed, sealed and written with a create-if-absent request, which
makes "never overwrite a segment" atomic on the store, not a look-then-write race.
*/

use std::io::{Read, Write};

use jiff::Timestamp;
use sha2::{Digest, Sha256};

use super::name::WalName;
use crate::crypto::{MasterKey, SealWriter, UnsealReader};
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"OSDBWAL1";
const MAX_NAME: usize = 64;
/// The largest WAL file: a 1 GB segment (PostgreSQL's maximum segment size).
pub const MAX_FILE: u64 = 1 << 30;
/// The largest stored WAL object: the largest file, incompressible (zstd adds under 1 %), and
/// the seal's tags and header.
pub const MAX_OBJECT: u64 = MAX_FILE + MAX_FILE / 64 + (1 << 20);
/// zstd level for WAL: level 1 keeps the archiver ahead of a busy server on one core.
pub const ZSTD_LEVEL: i32 = 1;

/// How the file is compressed inside the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalCompression {
    None,
    Zstd(i32),
}

/// What the header of a stored WAL file says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalHeader {
    pub name: String,
    pub size: u64,
    pub sha256: [u8; 32],
    pub pushed_at: Timestamp,
    pub compressed: bool,
}

impl WalHeader {
    pub fn digest_hex(&self) -> String {
        crate::units::hex(&self.sha256)
    }
}

/// The folder of a source's WAL archive.
pub fn source_prefix(source: &str) -> String {
    format!("wal/{source}/")
}

/// The object key of one WAL file.
pub fn key(source: &str, name: &WalName) -> String {
    format!("wal/{source}/{}/{name}", name.timeline_hex())
}

/// The SHA-256 of a file's bytes.
pub fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Seals a WAL file's bytes as its repository object. The compressor writes straight into the
/// seal (no plaintext copy of the object is built first).
pub fn encode(
    key: &MasterKey,
    name: &WalName,
    content: &[u8],
    sha256: &[u8; 32],
    compression: WalCompression,
) -> Result<Vec<u8>> {
    if content.len() as u64 > MAX_FILE {
        return Err(Error::config(format!(
            "{name} is {} bytes, over the 1 GB a WAL file can be",
            content.len()
        )));
    }
    let name = name.to_string();
    // WAL compresses well (segments are often mostly zeroes): a guess that rarely regrows.
    let guess = match compression {
        WalCompression::None => content.len(),
        WalCompression::Zstd(_) => content.len() / 2,
    };
    let mut w = SealWriter::new(Vec::with_capacity(guess + 4096), key)?;
    let mut head = Vec::with_capacity(MAGIC.len() + 2 + name.len() + 8 + 32 + 8 + 1);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&(name.len() as u16).to_be_bytes());
    head.extend_from_slice(name.as_bytes());
    head.extend_from_slice(&(content.len() as u64).to_be_bytes());
    head.extend_from_slice(sha256);
    head.extend_from_slice(&(Timestamp::now().as_millisecond()).to_be_bytes());
    head.push(match compression {
        WalCompression::None => 0,
        WalCompression::Zstd(_) => 1,
    });
    let seal_err = |e: std::io::Error| Error::from_io(e, "cannot seal the WAL file");
    w.write_all(&head).map_err(seal_err)?;
    match compression {
        WalCompression::None => w.write_all(content).map_err(seal_err)?,
        WalCompression::Zstd(level) => {
            let zstd_err = |e: std::io::Error| Error::internal(format!("zstd: {e}"));
            let mut enc = zstd::stream::Encoder::new(&mut w, level).map_err(zstd_err)?;
            enc.set_pledged_src_size(Some(content.len() as u64))
                .map_err(zstd_err)?;
            enc.write_all(content).map_err(zstd_err)?;
            enc.finish().map_err(zstd_err)?;
        }
    }
    w.finish()
}

/// Reads the header of a stored WAL file (the first sealed chunk only), checking that it is
/// the file `expected` names.
pub fn read_header<R: Read>(
    reader: R,
    key: &MasterKey,
    expected: &WalName,
) -> Result<(WalHeader, UnsealReader<R>)> {
    let mut r = UnsealReader::new(reader, key)?;
    let header = parse_header(&mut r, expected)?;
    Ok((header, r))
}

/// Reads a stored WAL file whole into `out`: unsealed, its header checked against `expected`,
/// decompressed, and its size and digest checked. `out` holds unverified bytes until this
/// returns `Ok`: write to a temporary file and rename only then.
pub fn decode<R: Read>(
    reader: R,
    key: &MasterKey,
    expected: &WalName,
    out: &mut dyn Write,
) -> Result<WalHeader> {
    let (header, r) = read_header(reader, key, expected)?;
    decode_rest(header, r, expected, out)
}

/// The rest of [`decode`] after [`read_header`]: decompresses the file into `out` and checks
/// its size and digest against `header` (for a caller that looks at the header first).
pub fn decode_rest<R: Read>(
    header: WalHeader,
    r: UnsealReader<R>,
    expected: &WalName,
    out: &mut dyn Write,
) -> Result<WalHeader> {
    let mut sink = Checked {
        out,
        hasher: Sha256::new(),
        written: 0,
        limit: header.size,
        out_error: None,
    };
    let what = format!("WAL file {expected}");
    let copied = if header.compressed {
        let mut dec = zstd::stream::Decoder::new(r)
            .map_err(|e| Error::integrity(format!("{what}: zstd: {e}")))?;
        std::io::copy(&mut dec, &mut sink)
    } else {
        let mut r = r;
        std::io::copy(&mut r, &mut sink)
    };
    copied.map_err(|e| {
        if let Some(w) = sink.out_error.take() {
            Error::from_io(w, &format!("cannot write {what}"))
        } else if sink.written > sink.limit {
            Error::integrity(format!(
                "{what} holds more bytes than its header says ({})",
                header.size
            ))
        } else {
            Error::from_io(e, &format!("cannot read {what}"))
        }
    })?;
    let got: [u8; 32] = sink.hasher.finalize().into();
    if sink.written != header.size || got != header.sha256 {
        return Err(Error::integrity(format!(
            "{what} does not match its header: {} bytes with sha256 {}, the header says {} bytes with sha256 {}",
            sink.written,
            crate::units::hex(&got),
            header.size,
            header.digest_hex()
        ))
        .with_hint("the object was damaged or replaced in the store"));
    }
    Ok(header)
}

fn parse_header(r: &mut dyn Read, expected: &WalName) -> Result<WalHeader> {
    let what = format!("WAL file {expected}");
    let short = |e: std::io::Error| Error::from_io(e, &format!("cannot read the header of {what}"));
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(short)?;
    if &magic != MAGIC {
        return Err(Error::integrity(format!(
            "{what}: the object is not a WAL file of this format (no OSDBWAL1 header)"
        )));
    }
    let mut len = [0u8; 2];
    r.read_exact(&mut len).map_err(short)?;
    let len = u16::from_be_bytes(len) as usize;
    if len > MAX_NAME {
        return Err(Error::integrity(format!(
            "{what}: the header's name is {len} bytes long"
        )));
    }
    let mut name = vec![0u8; len];
    r.read_exact(&mut name).map_err(short)?;
    let name = String::from_utf8_lossy(&name).into_owned();
    if name != expected.to_string() {
        return Err(Error::integrity(format!(
            "the object stored as {expected} holds {name:?}: it was moved or swapped in the store"
        ))
        .with_hint("recovery must not replay it; put back the right object, or restore to a point before it"));
    }
    let mut fixed = [0u8; 8 + 32 + 8 + 1];
    r.read_exact(&mut fixed).map_err(short)?;
    let size = u64::from_be_bytes(fixed[..8].try_into().unwrap());
    if size > MAX_FILE {
        return Err(Error::integrity(format!(
            "{what}: the header says {size} bytes, over the 1 GB a WAL file can be"
        )));
    }
    let sha256: [u8; 32] = fixed[8..40].try_into().unwrap();
    let ms = i64::from_be_bytes(fixed[40..48].try_into().unwrap());
    let pushed_at = Timestamp::from_millisecond(ms).map_err(|_| {
        Error::integrity(format!("{what}: the header's archive time is out of range"))
    })?;
    let compressed = match fixed[48] {
        0 => false,
        1 => true,
        c => {
            return Err(Error::integrity(format!(
                "{what}: unknown compression {c} in its header"
            )));
        }
    };
    Ok(WalHeader {
        name,
        size,
        sha256,
        pushed_at,
        compressed,
    })
}

/// Hashes and counts what passes, and refuses more than `limit` bytes (a decompression bomb
/// under a small header).
struct Checked<'a> {
    out: &'a mut dyn Write,
    hasher: Sha256,
    written: u64,
    limit: u64,
    /// A failure of `out` (a full disk), told apart from a failure to read the object.
    out_error: Option<std::io::Error>,
}

impl Write for Checked<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.written += buf.len() as u64;
        if self.written > self.limit {
            return Err(std::io::Error::other("more bytes than the header says"));
        }
        self.hasher.update(buf);
        if let Err(e) = self.out.write_all(buf) {
            let kind = e.kind();
            self.out_error = Some(e);
            return Err(std::io::Error::new(kind, "cannot write the WAL file"));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (MasterKey, WalName, Vec<u8>) {
        let key = MasterKey::from_bytes([7; 32]);
        let name = WalName::parse("000000010000000000000003").unwrap();
        let content: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        (key, name, content)
    }

    #[test]
    fn round_trips_compressed_and_plain() {
        let (key, name, content) = sample();
        for c in [WalCompression::Zstd(ZSTD_LEVEL), WalCompression::None] {
            let sealed = encode(&key, &name, &content, &digest(&content), c).unwrap();
            let mut out = Vec::new();
            let h = decode(&sealed[..], &key, &name, &mut out).unwrap();
            assert_eq!(out, content);
            assert_eq!(h.size, content.len() as u64);
            assert_eq!(h.sha256, digest(&content));
        }
    }

    #[test]
    fn refuses_a_swapped_name_a_wrong_digest_and_a_wrong_key() {
        let (key, name, content) = sample();
        let sealed = encode(
            &key,
            &name,
            &content,
            &digest(&content),
            WalCompression::Zstd(1),
        )
        .unwrap();
        let other = WalName::parse("000000010000000000000004").unwrap();
        let e = decode(&sealed[..], &key, &other, &mut Vec::new()).unwrap_err();
        assert!(e.message().contains("swapped"), "{}", e.message());

        let lying = encode(&key, &name, &content, &[0; 32], WalCompression::Zstd(1)).unwrap();
        let e = decode(&lying[..], &key, &name, &mut Vec::new()).unwrap_err();
        assert!(
            e.message().contains("does not match its header"),
            "{}",
            e.message()
        );

        let wrong = MasterKey::from_bytes([8; 32]);
        assert!(decode(&sealed[..], &wrong, &name, &mut Vec::new()).is_err());

        let mut flipped = sealed.clone();
        let at = flipped.len() - 40;
        flipped[at] ^= 1;
        assert!(decode(&flipped[..], &key, &name, &mut Vec::new()).is_err());
    }

    #[test]
    fn keys_group_by_timeline() {
        let n = WalName::parse("00000002000000000000000A.partial").unwrap();
        assert_eq!(
            key("db", &n),
            "wal/db/00000002/00000002000000000000000A.partial"
        );
        assert_eq!(
            key("db", &WalName::history(2)),
            "wal/db/00000002/00000002.history"
        );
    }
}
