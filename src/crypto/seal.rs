/*!
Sealed format v1 (docs/FORMAT.md has it byte for byte): a 62-byte header, then the plaintext in
chunks, each encrypted with AES-256-GCM under a per-object key, as in the STREAM construction
(age, Tink): the nonce carries the chunk number and a last-chunk flag, and every chunk
authenticates the header. Truncation, reordering, splicing and header edits all fail.

`SealWriter` and `UnsealReader` stream: memory is one chunk, whatever the object's size.
*/

use std::io::{self, Read, Write};

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{AeadInOut, KeyInit, Nonce, Tag};

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::key::{KEY_ID_LEN, KEY_LEN, KeyId, MasterKey};
use crate::error::{Error, Result};

pub const MAGIC: &[u8; 8] = b"OSDBSEAL";
pub const FORMAT_VERSION: u8 = 1;
pub const ALG_AES256GCM: u8 = 1;
pub const SALT_LEN: usize = 32;
pub const HEADER_LEN: usize = 8 + 1 + 1 + KEY_ID_LEN + SALT_LEN + 4;
pub const TAG_LEN: usize = 16;
pub const DEFAULT_CHUNK_SIZE: u32 = 1 << 20;
/// Readers refuse larger chunks, so a damaged header cannot make them allocate gigabytes.
pub const MAX_CHUNK_SIZE: u32 = 16 << 20;
const OBJECT_KEY_INFO: &[u8] = b"offsitedb v1 object";

/// The parsed header of a sealed object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub key_id: KeyId,
    pub salt: [u8; SALT_LEN],
    pub chunk_size: u32,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..8].copy_from_slice(MAGIC);
        h[8] = FORMAT_VERSION;
        h[9] = ALG_AES256GCM;
        h[10..26].copy_from_slice(&self.key_id.0);
        h[26..58].copy_from_slice(&self.salt);
        h[58..62].copy_from_slice(&self.chunk_size.to_be_bytes());
        h
    }

    /// Parses and checks a header. Errors name the problem, not just "bad header".
    pub fn decode(h: &[u8; HEADER_LEN]) -> Result<Self> {
        if &h[..8] != MAGIC {
            return Err(Error::integrity(
                "not an OffsiteDB sealed object (bad magic bytes)",
            ));
        }
        if h[8] != FORMAT_VERSION {
            return Err(Error::integrity(format!(
                "sealed format version {} is not supported (this build reads version {FORMAT_VERSION})",
                h[8]
            ))
            .with_hint("upgrade offsitedb"));
        }
        if h[9] != ALG_AES256GCM {
            return Err(Error::integrity(format!(
                "unknown encryption algorithm {} in sealed header",
                h[9]
            )));
        }
        let chunk_size = u32::from_be_bytes(h[58..62].try_into().unwrap());
        if chunk_size == 0 || chunk_size > MAX_CHUNK_SIZE {
            return Err(Error::integrity(format!(
                "invalid chunk size {chunk_size} in sealed header"
            )));
        }
        Ok(Header {
            key_id: KeyId(h[10..26].try_into().unwrap()),
            salt: h[26..58].try_into().unwrap(),
            chunk_size,
        })
    }
}

fn object_cipher(key: &[u8; KEY_LEN], salt: &[u8; SALT_LEN]) -> Aes256Gcm {
    let hk = Hkdf::<Sha256>::new(Some(salt), key);
    let mut okm = Zeroizing::new([0u8; 32]);
    hk.expand(OBJECT_KEY_INFO, okm.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    Aes256Gcm::new_from_slice(okm.as_ref()).expect("32-byte key")
}

fn nonce(index: u32, last: bool) -> Nonce<Aes256Gcm> {
    let mut n = [0u8; 12];
    n[7..11].copy_from_slice(&index.to_be_bytes());
    n[11] = u8::from(last);
    n.into()
}

/// Encrypts everything written to it into `inner` as one sealed object.
/// Call [`SealWriter::finish`]: without it the object has no last chunk and will not open.
pub struct SealWriter<W: Write> {
    inner: W,
    cipher: Aes256Gcm,
    header: [u8; HEADER_LEN],
    chunk_size: usize,
    buf: Vec<u8>,
    index: u32,
}

impl<W: Write> SealWriter<W> {
    /// This object's random salt: recorded in manifests, it names this exact object.
    pub fn salt(&self) -> [u8; SALT_LEN] {
        self.header[26..58].try_into().expect("32 bytes")
    }

    pub fn new(inner: W, key: &MasterKey) -> Result<Self> {
        Self::with_chunk_size(inner, key, DEFAULT_CHUNK_SIZE)
    }

    pub fn with_chunk_size(mut inner: W, key: &MasterKey, chunk_size: u32) -> Result<Self> {
        assert!(chunk_size > 0 && chunk_size <= MAX_CHUNK_SIZE);
        let mut salt = [0u8; SALT_LEN];
        getrandom::fill(&mut salt)
            .map_err(|e| Error::internal(format!("the system random generator failed: {e}")))?;
        let header = Header {
            key_id: key.id(),
            salt,
            chunk_size,
        }
        .encode();
        inner
            .write_all(&header)
            .map_err(|e| Error::from_io(e, "cannot write sealed header"))?;
        Ok(SealWriter {
            inner,
            cipher: object_cipher(key.bytes(), &salt),
            header,
            chunk_size: chunk_size as usize,
            buf: Vec::with_capacity(chunk_size as usize + TAG_LEN),
            index: 0,
        })
    }

    fn seal_chunk(&mut self, last: bool) -> io::Result<()> {
        let tag = self
            .cipher
            .encrypt_inout_detached(
                &nonce(self.index, last),
                &self.header,
                self.buf.as_mut_slice().into(),
            )
            .map_err(|_| io::Error::other("AES-GCM encryption failed"))?;
        self.buf.extend_from_slice(&tag);
        self.inner.write_all(&self.buf)?;
        self.buf.clear();
        self.index = self.index.checked_add(1).ok_or_else(|| {
            Error::internal("object too large for the sealed format (2^32 chunks)").into_io()
        })?;
        Ok(())
    }

    /// Seals the final chunk (possibly empty) and returns the inner writer.
    pub fn finish(mut self) -> Result<W> {
        self.seal_chunk(true)
            .map_err(|e| Error::from_io(e, "cannot write sealed object"))?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for SealWriter<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            // A full buffer is sealed only once more data arrives, so that the last chunk
            // is always known to be last.
            if self.buf.len() == self.chunk_size {
                self.seal_chunk(false)?;
            }
            let take = (self.chunk_size - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads a sealed object and yields its plaintext, failing on any modification.
pub struct UnsealReader<R: Read> {
    inner: R,
    parsed: Header,
    cipher: Aes256Gcm,
    header: [u8; HEADER_LEN],
    chunk_size: usize,
    /// The current chunk, read and then decrypted in place: `plain[pos..end]` is its plaintext
    /// not yet handed out. It grows with what is read, up to a chunk, and never shrinks.
    plain: Vec<u8>,
    pos: usize,
    end: usize,
    /// One byte read past a full chunk to learn whether it was the last.
    carry: Option<u8>,
    index: u32,
    done: bool,
    /// Set by the first failure: from then on nothing more is handed out.
    failed: bool,
}

impl<R: Read> UnsealReader<R> {
    /// Reads and checks the header, and picks the key of the keyring that the header's key id
    /// names; a missing key is reported here, before any decryption.
    pub fn new(mut inner: R, key: &MasterKey) -> Result<Self> {
        let mut header = [0u8; HEADER_LEN];
        let got = read_full(&mut inner, &mut header)
            .map_err(|e| Error::from_io(e, "cannot read sealed header"))?;
        if got < HEADER_LEN {
            return Err(Error::integrity(format!(
                "object is truncated: {got} bytes, shorter than the {HEADER_LEN}-byte sealed header"
            )));
        }
        let h = Header::decode(&header)?;
        let Some(secret) = key.secret(&h.key_id) else {
            return Err(key.missing_error("object", &h.key_id));
        };
        Ok(UnsealReader {
            inner,
            cipher: object_cipher(secret, &h.salt),
            parsed: h.clone(),
            header,
            chunk_size: h.chunk_size as usize,
            // Not the chunk size: the header is not authenticated until the first chunk is, and a
            // 62-byte object must not cost the 16 MiB its header may claim.
            plain: Vec::new(),
            pos: 0,
            end: 0,
            carry: None,
            index: 0,
            done: false,
            failed: false,
        })
    }

    /// The object's header: its salt names this exact object.
    pub fn header(&self) -> &Header {
        &self.parsed
    }

    fn next_chunk(&mut self) -> Result<()> {
        let full = self.chunk_size + TAG_LEN;
        self.pos = 0;
        self.end = 0;
        let mut filled = 0;
        if let Some(b) = self.carry.take() {
            if self.plain.is_empty() {
                self.plain.push(0);
            }
            self.plain[0] = b;
            filled = 1;
        }
        // The buffer doubles as data arrives (from 64 KiB), so memory follows what the object
        // holds; once grown to a chunk it is reused, never zeroed again.
        while filled < full {
            if filled == self.plain.len() {
                let more = filled.max(64 << 10).min(full - filled);
                self.plain.resize(filled + more, 0);
            }
            let want = self.plain.len();
            filled += read_full(&mut self.inner, &mut self.plain[filled..want])
                .map_err(|e| Error::from_io(e, "cannot read sealed object"))?;
            if filled < want {
                break;
            }
        }
        let last = if filled == full {
            let mut one = [0u8; 1];
            let more = read_full(&mut self.inner, &mut one)
                .map_err(|e| Error::from_io(e, "cannot read sealed object"))?;
            if more == 1 {
                self.carry = Some(one[0]);
                false
            } else {
                true
            }
        } else {
            true
        };
        if filled < TAG_LEN {
            return Err(Error::integrity(format!(
                "object is truncated: it ends inside chunk {} (no final chunk)",
                self.index
            )));
        }
        let body = filled - TAG_LEN;
        let tag = Tag::<Aes256Gcm>::try_from(&self.plain[body..filled]).expect("16-byte tag");
        self.cipher
            .decrypt_inout_detached(
                &nonce(self.index, last),
                &self.header,
                (&mut self.plain[..body]).into(),
                &tag,
            )
            .map_err(|_| {
                let why = if last {
                    "it was modified or truncated"
                } else {
                    "it was modified"
                };
                Error::integrity(format!("chunk {} failed authentication: {why}", self.index))
            })?;
        self.end = body;
        self.index += 1;
        self.done = last;
        Ok(())
    }
}

impl<R: Read> Read for UnsealReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos < self.end {
                let n = (self.end - self.pos).min(out.len());
                out[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            if self.failed {
                return Err(Error::integrity("the object failed to open earlier").into_io());
            }
            if self.done || out.is_empty() {
                return Ok(0);
            }
            if let Err(e) = self.next_chunk() {
                // Never hand out a partly decrypted buffer on a later call.
                self.failed = true;
                self.pos = 0;
                self.end = 0;
                return Err(e.into_io());
            }
        }
    }
}

/// Reads just the 62-byte header of a sealed object (which key sealed it, without opening it).
/// A shorter object is an integrity error.
pub fn read_header(r: &mut impl Read) -> Result<Header> {
    let mut header = [0u8; HEADER_LEN];
    let got =
        read_full(r, &mut header).map_err(|e| Error::from_io(e, "cannot read sealed header"))?;
    if got < HEADER_LEN {
        return Err(Error::integrity(format!(
            "object is truncated: {got} bytes, shorter than the {HEADER_LEN}-byte sealed header"
        )));
    }
    Header::decode(&header)
}

/// Reads until `buf` is full or the reader is at end of file; returns the count.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Seals a small in-memory value (manifests, repository config).
pub fn seal_bytes(key: &MasterKey, plain: &[u8]) -> Result<Vec<u8>> {
    let mut w = SealWriter::new(Vec::with_capacity(plain.len() + 128), key)?;
    w.write_all(plain)
        .map_err(|e| Error::from_io(e, "cannot seal"))?;
    w.finish()
}

/// Opens a small sealed value completely.
pub fn unseal_bytes(key: &MasterKey, sealed: &[u8]) -> Result<Vec<u8>> {
    let mut r = UnsealReader::new(sealed, key)?;
    let mut out = Vec::new();
    r.read_to_end(&mut out)
        .map_err(|e| Error::from_io(e, "cannot unseal"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn key() -> MasterKey {
        MasterKey::from_bytes([7; 32])
    }

    fn seal(plain: &[u8], chunk: u32) -> Vec<u8> {
        let mut w = SealWriter::with_chunk_size(Vec::new(), &key(), chunk).unwrap();
        // Odd write sizes exercise the buffer boundaries.
        for piece in plain.chunks(7) {
            w.write_all(piece).unwrap();
        }
        w.finish().unwrap()
    }

    fn open(sealed: &[u8]) -> Result<Vec<u8>> {
        unseal_bytes(&key(), sealed)
    }

    #[test]
    fn round_trips_at_every_boundary() {
        for chunk in [1u32, 16, 64] {
            for len in [0usize, 1, 15, 16, 17, 63, 64, 65, 128, 129, 1000] {
                let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
                let sealed = seal(&plain, chunk);
                let chunks = len.div_ceil(chunk as usize).max(1);
                assert_eq!(sealed.len(), HEADER_LEN + len + chunks * TAG_LEN);
                assert_eq!(open(&sealed).unwrap(), plain, "chunk {chunk} len {len}");
            }
        }
    }

    #[test]
    fn every_single_byte_flip_is_caught() {
        let plain: Vec<u8> = (0..100u8).collect();
        let sealed = seal(&plain, 32);
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            let e = open(&bad).unwrap_err();
            // A flipped key-id byte reads as the wrong key; anything else as damage.
            assert!(
                matches!(e.kind(), ErrorKind::Integrity | ErrorKind::Key),
                "byte {i}: {e:?}"
            );
        }
    }

    #[test]
    fn truncation_at_any_point_is_caught() {
        let plain: Vec<u8> = (0..100u8).collect();
        let sealed = seal(&plain, 32);
        for cut in 0..sealed.len() {
            let e = open(&sealed[..cut]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Integrity, "cut at {cut}: {e:?}");
        }
    }

    #[test]
    fn appended_and_reordered_chunks_are_caught() {
        let plain: Vec<u8> = (0..96u8).collect();
        let sealed = seal(&plain, 32);
        let mut longer = sealed.clone();
        longer.extend_from_slice(&sealed[HEADER_LEN..HEADER_LEN + 48]);
        assert!(open(&longer).is_err());

        let c = 32 + TAG_LEN;
        let mut swapped = sealed.clone();
        let (a, b) = (HEADER_LEN, HEADER_LEN + c);
        let first = sealed[a..a + c].to_vec();
        swapped[a..a + c].copy_from_slice(&sealed[b..b + c]);
        swapped[b..b + c].copy_from_slice(&first);
        assert_eq!(open(&swapped).unwrap_err().kind(), ErrorKind::Integrity);
    }

    #[test]
    fn a_reader_stays_failed_after_an_error() {
        let plain: Vec<u8> = (0..100u8).collect();
        let mut sealed = seal(&plain, 32);
        sealed[HEADER_LEN + 5] ^= 1;
        let mut r = UnsealReader::new(&sealed[..], &key()).unwrap();
        let mut buf = [0u8; 200];
        assert!(r.read(&mut buf).is_err());
        for _ in 0..3 {
            assert!(
                r.read(&mut buf).is_err(),
                "a second read must not return bytes"
            );
        }
    }

    #[test]
    fn memory_follows_the_object_not_the_chunk_size_its_header_claims() {
        let mut sealed = seal(b"a small manifest", MAX_CHUNK_SIZE);
        let mut r = UnsealReader::new(&sealed[..], &key()).unwrap();
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"a small manifest");
        assert!(r.plain.capacity() <= 64 << 10, "{}", r.plain.capacity());
        // Damaged, too: refused without reserving the chunk.
        sealed[HEADER_LEN] ^= 1;
        let mut r = UnsealReader::new(&sealed[..], &key()).unwrap();
        assert!(r.read_to_end(&mut out).is_err());
        assert!(r.plain.capacity() <= 64 << 10, "{}", r.plain.capacity());
    }

    #[test]
    fn wrong_key_names_both_key_ids() {
        let sealed = seal(b"hello", 16);
        let other = MasterKey::from_bytes([8; 32]);
        let e = unseal_bytes(&other, &sealed).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Key);
        assert!(e.message().contains(&key().id().to_string()));
        assert!(e.message().contains(&other.id().to_string()));
    }

    #[test]
    fn a_keyring_opens_what_any_of_its_keys_sealed_and_seals_with_the_first() {
        let old = key();
        let new = MasterKey::from_bytes([8; 32]);
        let ring = MasterKey::with_older(&new, &old);
        assert_eq!(ring.id(), new.id());
        let sealed_old = seal(b"old", 16);
        assert_eq!(unseal_bytes(&ring, &sealed_old).unwrap(), b"old");
        let sealed_new = seal_bytes(&ring, b"new").unwrap();
        assert_eq!(&sealed_new[10..26], &new.id().0);
        assert_eq!(unseal_bytes(&new, &sealed_new).unwrap(), b"new");
        assert_eq!(read_header(&mut &sealed_new[..]).unwrap().key_id, new.id());
        // A ring without the sealing key names the object's key id and every id it holds.
        let third = MasterKey::from_bytes([9; 32]);
        let e = unseal_bytes(&MasterKey::with_older(&third, &new), &sealed_old).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Key);
        for id in [old.id(), third.id(), new.id()] {
            assert!(e.message().contains(&id.to_string()), "{e}");
        }
    }

    #[test]
    fn header_layout_is_fixed() {
        let sealed = seal(b"x", 1 << 20);
        assert_eq!(&sealed[..8], b"OSDBSEAL");
        assert_eq!(sealed[8], 1);
        assert_eq!(sealed[9], 1);
        assert_eq!(&sealed[10..26], &key().id().0);
        assert_eq!(&sealed[58..62], &[0, 0x10, 0, 0]);
        assert_eq!(HEADER_LEN, 62);
    }
}
