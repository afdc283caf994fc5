//! A buffered reader that knows its absolute position and decodes the archive's primitives
//! (`ReadInt`, `ReadStr`, `ReadOffset` in pg_dump's pg_backup_archiver.c). Our own buffer rather
//! than `BufReader`: the hot loop (one small Int per COPY row) reads fixed-size fields in place,
//! and payloads are handed out as slices of the buffer, never copied.

use std::io::{self, Read};

use super::DumpError;

/// Longest string we accept (a function body or a view can be long, but not this long).
pub const MAX_STR: u64 = 256 << 20;

pub struct Input<R> {
    r: R,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    /// Absolute stream position of `buf[0]`.
    base: u64,
    eof: bool,
    int_size: usize,
    off_size: usize,
    /// What we are reading, for "the archive ends early, inside …".
    pub ctx: &'static str,
    /// When set, every byte read is also appended here (raw archive bytes for a streaming
    /// restore; see [`super::Observer`]).
    rec: Option<Vec<u8>>,
}

impl<R: Read> Input<R> {
    pub fn new(r: R, capacity: usize) -> Self {
        Input {
            r,
            buf: vec![0u8; capacity.max(4096)].into_boxed_slice(),
            pos: 0,
            end: 0,
            base: 0,
            eof: false,
            int_size: 4,
            off_size: 8,
            ctx: "the header",
            rec: None,
        }
    }

    /// Starts (or restarts) keeping a copy of every byte read from here on.
    pub fn record(&mut self) {
        self.rec = Some(Vec::new());
    }

    /// The bytes kept since [`Input::record`]; keeps recording.
    pub fn recorded(&mut self) -> Vec<u8> {
        self.rec.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Stops recording and drops what was kept.
    pub fn stop_recording(&mut self) {
        self.rec = None;
    }

    /// Absolute position of the next byte.
    pub fn position(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Sets the header's `intSize` and `offSize`, which the caller checked (1..=32).
    pub fn set_widths(&mut self, int_size: u8, off_size: u8) {
        self.int_size = int_size.into();
        self.off_size = off_size.into();
    }

    pub fn malformed(&self, what: impl Into<String>) -> DumpError {
        DumpError::Malformed {
            what: what.into(),
            at: self.position(),
        }
    }

    pub fn malformed_at(&self, what: impl Into<String>, at: u64) -> DumpError {
        DumpError::Malformed {
            what: what.into(),
            at,
        }
    }

    fn truncated(&self) -> DumpError {
        self.malformed(format!("the archive ends early, inside {}", self.ctx))
    }

    fn read_more(&mut self) -> io::Result<()> {
        loop {
            match self.r.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Makes `n` bytes (at most the buffer size) available at `pos`, unless the stream ends
    /// first. Returns how many are available.
    fn fill(&mut self, n: usize) -> io::Result<usize> {
        if self.end - self.pos >= n {
            return Ok(self.end - self.pos);
        }
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.end, 0);
            self.base += self.pos as u64;
            self.end -= self.pos;
            self.pos = 0;
        }
        while self.end < n && !self.eof {
            self.read_more()?;
        }
        Ok(self.end)
    }

    /// True when no byte is left (a clean end between data blocks).
    pub fn at_eof(&mut self) -> io::Result<bool> {
        Ok(self.fill(1)? == 0)
    }

    fn take(&mut self, n: usize) -> Result<&[u8], DumpError> {
        if self.fill(n)? < n {
            return Err(self.truncated());
        }
        let start = self.pos;
        self.pos += n;
        if let Some(r) = self.rec.as_mut() {
            r.extend_from_slice(&self.buf[start..start + n]);
        }
        Ok(&self.buf[start..start + n])
    }

    pub fn bytes<const N: usize>(&mut self) -> Result<[u8; N], DumpError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub fn byte(&mut self) -> Result<u8, DumpError> {
        Ok(self.bytes::<1>()?[0])
    }

    /// An Int: a sign byte (non-zero = negative), then `intSize` bytes of magnitude, little-endian.
    /// Every value pg_dump writes fits in 32 bits; the result is in ±(2³²−1), so a large-object
    /// OID ≥ 2³¹ (written as a negative C int) survives `as i32 as u32`.
    pub fn int(&mut self) -> Result<i64, DumpError> {
        let at = self.position();
        let width = self.int_size;
        let b = self.take(1 + width)?;
        let negative = b[0] != 0;
        let magnitude: u64 = if width == 4 {
            u32::from_le_bytes([b[1], b[2], b[3], b[4]]).into()
        } else {
            let mut m = 0u64;
            for (i, &x) in b[1..].iter().enumerate() {
                if i >= 4 {
                    if x != 0 {
                        return Err(self.malformed_at("an integer wider than 32 bits", at));
                    }
                } else {
                    m |= u64::from(x) << (8 * i);
                }
            }
            m
        };
        Ok(if negative {
            -(magnitude as i64)
        } else {
            magnitude as i64
        })
    }

    /// An Offset: the flag byte and the position, which must fit in 64 bits.
    pub fn offset(&mut self) -> Result<(u8, u64), DumpError> {
        let at = self.position();
        let width = self.off_size;
        let b = self.take(1 + width)?;
        let mut v = 0u64;
        for (i, &x) in b[1..].iter().enumerate() {
            if i >= 8 {
                if x != 0 {
                    return Err(self.malformed_at("a file offset wider than 64 bits", at));
                }
            } else {
                v |= u64::from(x) << (8 * i);
            }
        }
        Ok((b[0], v))
    }

    /// A Str's length: `None` for NULL (−1).
    fn str_len(&mut self) -> Result<Option<u64>, DumpError> {
        let at = self.position();
        match self.int()? {
            -1 => Ok(None),
            n if n < 0 => Err(self.malformed_at(format!("a string of length {n}"), at)),
            n if n as u64 > MAX_STR => {
                Err(self.malformed_at(format!("a string of {n} bytes (more than 256 MiB)"), at))
            }
            n => Ok(Some(n as u64)),
        }
    }

    /// A Str, NULL as `None`. The vector grows with the bytes that actually arrive, so a lying
    /// length costs nothing until the data is there.
    pub fn string(&mut self) -> Result<Option<Vec<u8>>, DumpError> {
        let Some(len) = self.str_len()? else {
            return Ok(None);
        };
        let mut v = Vec::with_capacity(len.min(4096) as usize);
        self.consume(len, |s| v.extend_from_slice(s))?;
        Ok(Some(v))
    }

    /// A Str as text, NULL as `None`. Archive strings are in the database encoding; names that
    /// are not UTF-8 are kept readable rather than refused.
    pub fn text(&mut self) -> Result<Option<String>, DumpError> {
        Ok(self.string()?.map(|v| match String::from_utf8(v) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }))
    }

    /// Skips a Str; false if it was NULL.
    pub fn skip_string(&mut self) -> Result<bool, DumpError> {
        match self.str_len()? {
            Some(len) => {
                self.consume(len, |_| {})?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Passes the next `n` bytes to `f`, in as many slices as the buffer needs.
    pub fn consume(&mut self, mut n: u64, mut f: impl FnMut(&[u8])) -> Result<(), DumpError> {
        while n > 0 {
            if self.pos == self.end {
                self.base += self.end as u64;
                self.pos = 0;
                self.end = 0;
                if self.eof {
                    return Err(self.truncated());
                }
                self.read_more()?;
                continue;
            }
            let k = (self.end - self.pos).min(usize::try_from(n).unwrap_or(usize::MAX));
            if let Some(r) = self.rec.as_mut() {
                r.extend_from_slice(&self.buf[self.pos..self.pos + k]);
            }
            f(&self.buf[self.pos..self.pos + k]);
            self.pos += k;
            n -= k as u64;
        }
        Ok(())
    }

    /// Reads and discards everything left; returns the total stream length.
    pub fn drain(&mut self) -> io::Result<u64> {
        loop {
            self.base += self.end as u64;
            self.pos = 0;
            self.end = 0;
            if self.eof {
                return Ok(self.base);
            }
            self.read_more()?;
        }
    }
}
