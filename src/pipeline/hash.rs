/*!
Observing stages: they pass bytes through unchanged and report how many went by and their
SHA-256. The backup puts their results straight into the manifest; restore and decrypt compare
them with it, so nothing is ever recomputed or trusted without checking.
*/

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::units::hex;

/// What an observing stage saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Measured {
    pub bytes: u64,
    /// Lowercase hex; empty when the stage only counted.
    pub sha256: String,
}

/// Counts (and optionally hashes) everything written through it. An optional shared counter
/// lets a progress display read the count from another thread.
pub struct MeasureWriter<W: Write> {
    inner: W,
    hasher: Option<Sha256>,
    bytes: u64,
    live: Option<Arc<AtomicU64>>,
}

impl<W: Write> MeasureWriter<W> {
    pub fn hashing(inner: W) -> Self {
        MeasureWriter {
            inner,
            hasher: Some(Sha256::new()),
            bytes: 0,
            live: None,
        }
    }

    pub fn counting(inner: W) -> Self {
        MeasureWriter {
            inner,
            hasher: None,
            bytes: 0,
            live: None,
        }
    }

    pub fn with_live_counter(mut self, c: Arc<AtomicU64>) -> Self {
        self.live = Some(c);
        self
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    pub fn finish(self) -> (W, Measured) {
        let sha256 = self.hasher.map(|h| hex(&h.finalize())).unwrap_or_default();
        (
            self.inner,
            Measured {
                bytes: self.bytes,
                sha256,
            },
        )
    }
}

impl<W: Write> Write for MeasureWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        self.bytes += n as u64;
        if let Some(c) = &self.live {
            c.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The reading counterpart, for restore and decrypt. The result is read through a
/// [`MeasureHandle`], because the reader itself usually ends up inside a decoder.
pub struct MeasureReader<R: Read> {
    inner: R,
    state: Arc<std::sync::Mutex<(Sha256, u64)>>,
    live: Option<Arc<AtomicU64>>,
}

#[derive(Clone)]
pub struct MeasureHandle(Arc<std::sync::Mutex<(Sha256, u64)>>);

impl MeasureHandle {
    /// What went through so far.
    pub fn result(&self) -> Measured {
        let st = self.0.lock().unwrap();
        Measured {
            bytes: st.1,
            sha256: hex(&st.0.clone().finalize()),
        }
    }
}

impl<R: Read> MeasureReader<R> {
    pub fn new(inner: R) -> Self {
        MeasureReader {
            inner,
            state: Arc::new(std::sync::Mutex::new((Sha256::new(), 0))),
            live: None,
        }
    }

    pub fn with_live_counter(mut self, c: Arc<AtomicU64>) -> Self {
        self.live = Some(c);
        self
    }

    pub fn handle(&self) -> MeasureHandle {
        MeasureHandle(self.state.clone())
    }
}

impl<R: Read> Read for MeasureReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut st = self.state.lock().unwrap();
        st.0.update(&buf[..n]);
        st.1 += n as u64;
        if let Some(c) = &self.live {
            c.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_and_reader_agree() {
        let data = b"the quick brown fox".repeat(1000);
        let mut w = MeasureWriter::hashing(Vec::new());
        w.write_all(&data).unwrap();
        let (out, m) = w.finish();
        assert_eq!(out, data);
        assert_eq!(m.bytes, data.len() as u64);

        let mut r = MeasureReader::new(&data[..]);
        let h = r.handle();
        io::copy(&mut r, &mut io::sink()).unwrap();
        assert_eq!(h.result(), m);
        assert_eq!(
            MeasureReader::new(&b""[..]).handle().result().sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
