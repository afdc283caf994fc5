//! The content digests shared by the dump inspector and the drill. Both sides must hash exactly
//! the same bytes, so this is the one definition:
//!
//! - a table: per row, xxh3-128 of the row's COPY text without its newline; the table's digest
//!   is the sum of those hashes mod 2¹²⁸ (order-independent: a restore may return rows in
//!   another order), and its row count is the number of rows;
//! - large objects: per object, xxh3-128 of (decimal OID, a tab, the content); summed the same way.

use xxhash_rust::xxh3::{Xxh3Default, xxh3_128};

/// Hashes COPY text output fed in pieces of any size (rows may span pieces).
///
/// A line `\.` ends the data (pg_dump writes it after the rows; a COPY read through the protocol
/// has none): it is not a row, and what follows it is not hashed.
#[derive(Default)]
pub struct RowHasher {
    rows: u64,
    digest: u128,
    /// Streaming state of a row that spans pieces; only touched when one does.
    state: Option<Box<Xxh3Default>>,
    /// Bytes of the current row seen so far, and the first two of them (to recognise `\.`).
    partial_len: u64,
    head: [u8; 2],
    terminated: bool,
    after_terminator: u64,
    junk_after_terminator: bool,
}

impl RowHasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, mut data: &[u8]) {
        if self.terminated {
            self.after_terminator += data.len() as u64;
            self.junk_after_terminator |= data.iter().any(|&b| b != b'\n');
            return;
        }
        while let Some(i) = memchr::memchr(b'\n', data) {
            let row = &data[..i];
            data = &data[i + 1..];
            let h = if self.partial_len == 0 {
                if row == b"\\." {
                    self.terminate(data);
                    return;
                }
                xxh3_128(row)
            } else {
                self.push_partial(row);
                let total = self.partial_len;
                self.partial_len = 0;
                if total == 2 && self.head == *b"\\." {
                    self.terminate(data);
                    return;
                }
                let state = self.state.get_or_insert_with(Default::default);
                state.update(row);
                state.digest128()
            };
            self.rows += 1;
            self.digest = self.digest.wrapping_add(h);
        }
        if !data.is_empty() {
            if self.partial_len == 0 {
                self.state.get_or_insert_with(Default::default).reset();
            }
            self.push_partial(data);
            self.state.get_or_insert_with(Default::default).update(data);
        }
    }

    /// Records the length and head of a piece of the current row (the state is fed separately).
    fn push_partial(&mut self, piece: &[u8]) {
        for (i, &b) in piece.iter().take(2).enumerate() {
            if let Some(slot) = self.head.get_mut(self.partial_len as usize + i) {
                *slot = b;
            }
        }
        self.partial_len += piece.len() as u64;
    }

    fn terminate(&mut self, rest: &[u8]) {
        self.terminated = true;
        self.update(rest);
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn digest(&self) -> u128 {
        self.digest
    }

    /// True once the `\.` line was seen.
    pub fn terminated(&self) -> bool {
        self.terminated
    }

    /// True if the bytes after `\.` were anything but newlines (pg_dump writes exactly two).
    pub fn junk_after_terminator(&self) -> bool {
        self.junk_after_terminator
    }

    /// True if the input stopped in the middle of a row (COPY ends every row with a newline,
    /// so the data was cut short).
    pub fn partial_row(&self) -> bool {
        self.partial_len > 0
    }
}

/// Adds one large object's hash to `sum`, for content that is in memory.
pub fn lo_digest_update(sum: &mut u128, oid: u32, content: &[u8]) {
    let mut h = LoHasher::new();
    h.begin(oid);
    h.update(content);
    h.end();
    *sum = sum.wrapping_add(h.digest());
}

/// Digests large objects whose content arrives in pieces: `begin(oid)`, any number of
/// `update`, `end()`, for each object, in any order of objects.
#[derive(Default)]
pub struct LoHasher {
    state: Xxh3Default,
    count: u64,
    digest: u128,
}

impl LoHasher {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts an object (discarding any object begun and not ended).
    pub fn begin(&mut self, oid: u32) {
        self.state.reset();
        self.state.update(oid.to_string().as_bytes());
        self.state.update(b"\t");
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.state.update(bytes);
    }

    pub fn end(&mut self) {
        self.count += 1;
        self.digest = self.digest.wrapping_add(self.state.digest128());
    }

    /// How many objects were ended.
    pub fn rows(&self) -> u64 {
        self.count
    }

    pub fn digest(&self) -> u128 {
        self.digest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(text: &[u8]) -> (u64, u128) {
        let mut rows = 0;
        let mut sum = 0u128;
        for line in text.split(|&b| b == b'\n') {
            if line == b"\\." {
                break;
            }
            rows += 1;
            sum = sum.wrapping_add(xxh3_128(line));
        }
        (rows, sum)
    }

    #[test]
    fn any_split_gives_the_same_digest() {
        let long = vec![b'x'; 1000];
        let mut text = b"a\tb\n\n\\\\.\n\\.x\n".to_vec();
        text.extend_from_slice(&long);
        text.extend_from_slice(b"\n\xc3\xa9\\n\n");
        // The reference splits on every '\n', which leaves one empty piece after the last one.
        let (rows, digest) = reference(&text[..text.len() - 1]);
        assert_eq!(rows, 6);
        for piece in [1, 2, 3, 7, 64, 300, text.len()] {
            let mut h = RowHasher::new();
            for c in text.chunks(piece) {
                h.update(c);
            }
            assert_eq!((h.rows(), h.digest()), (rows, digest), "pieces of {piece}");
            assert!(!h.partial_row() && !h.terminated());
        }
    }

    #[test]
    fn stops_at_the_terminator_in_any_split() {
        let text = b"1\tx\n\n2\ty\n\\.\n\n\n";
        let (rows, digest) = reference(text);
        assert_eq!(rows, 3);
        for piece in 1..=text.len() {
            let mut h = RowHasher::new();
            for c in text.chunks(piece) {
                h.update(c);
            }
            assert_eq!((h.rows(), h.digest()), (rows, digest), "pieces of {piece}");
            assert!(h.terminated() && !h.junk_after_terminator() && !h.partial_row());
        }
        let mut h = RowHasher::new();
        h.update(b"1\n\\.\nmore\n");
        assert!(h.terminated() && h.junk_after_terminator());
    }

    #[test]
    fn zero_column_rows_are_empty_lines() {
        let mut h = RowHasher::new();
        h.update(b"\n\n\n\\.\n\n\n");
        assert_eq!(h.rows(), 3);
        assert_eq!(h.digest(), xxh3_128(b"").wrapping_mul(3));
    }

    #[test]
    fn a_cut_row_is_reported() {
        let mut h = RowHasher::new();
        h.update(b"1\n2");
        assert_eq!(h.rows(), 1);
        assert!(h.partial_row());
    }

    #[test]
    fn large_objects_hash_oid_tab_content() {
        let mut streamed = LoHasher::new();
        streamed.begin(3_000_000_000);
        streamed.update(b"hel");
        streamed.update(b"lo");
        streamed.end();
        streamed.begin(7);
        streamed.end();
        let mut sum = 0u128;
        lo_digest_update(&mut sum, 7, b"");
        lo_digest_update(&mut sum, 3_000_000_000, b"hello");
        assert_eq!(streamed.rows(), 2);
        assert_eq!(streamed.digest(), sum);
        let want = xxh3_128(b"3000000000\thello").wrapping_add(xxh3_128(b"7\t"));
        assert_eq!(sum, want);
    }
}
