/*!
The compression stage: gzip (default, parallel, so `gunzip | pg_restore` works without
OffsiteDB) or zstd (multi-threaded, faster and smaller). One place decides the format, the
level, and the matching decoder.
*/

use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::pargzip::{DEFAULT_BLOCK, ParGzipWriter};
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Gzip,
    Zstd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compression {
    pub algorithm: Algorithm,
    pub level: i32,
}

impl Default for Compression {
    fn default() -> Self {
        Compression {
            algorithm: Algorithm::Gzip,
            level: 6,
        }
    }
}

impl Compression {
    /// The file name extension of the decrypted artifact, e.g. `.dump.gz`.
    pub fn extension(&self) -> &'static str {
        match self.algorithm {
            Algorithm::Gzip => "gz",
            Algorithm::Zstd => "zst",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.algorithm {
            Algorithm::Gzip => "gzip",
            Algorithm::Zstd => "zstd",
        };
        write!(f, "{name}:{}", self.level)
    }
}

impl FromStr for Compression {
    type Err = Error;

    /// `gzip`, `gzip:9`, `zstd`, `zstd:19`.
    fn from_str(s: &str) -> Result<Self> {
        let (name, level) =
            match s.split_once(':') {
                Some((n, l)) => (
                    n,
                    Some(l.parse::<i32>().map_err(|_| {
                        Error::config(format!("invalid compression level in {s:?}"))
                    })?),
                ),
                None => (s, None),
            };
        let (algorithm, default, range) = match name.trim().to_ascii_lowercase().as_str() {
            "gzip" | "gz" => (Algorithm::Gzip, 6, 1..=9),
            "zstd" | "zst" => (Algorithm::Zstd, 1, 1..=19),
            _ => {
                return Err(Error::config(format!(
                    "unknown compression {name:?} (use gzip, gzip:LEVEL, zstd or zstd:LEVEL)"
                )));
            }
        };
        let level = level.unwrap_or(default);
        if !range.contains(&level) {
            return Err(Error::config(format!(
                "compression level {level} is out of range for {name} ({}–{})",
                range.start(),
                range.end()
            )));
        }
        Ok(Compression { algorithm, level })
    }
}

/// A compressing writer; call `finish` to flush the end of the stream.
pub enum Compressor<W: Write> {
    Gzip(ParGzipWriter<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Compressor<W> {
    /// `threads` 0 means one per core.
    pub fn new(inner: W, c: Compression, threads: usize) -> Result<Self> {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            threads
        };
        let io_err = |e: io::Error| Error::from_io(e, "cannot start compression");
        Ok(match c.algorithm {
            Algorithm::Gzip => Compressor::Gzip(
                ParGzipWriter::new(inner, c.level as u32, threads, DEFAULT_BLOCK)
                    .map_err(io_err)?,
            ),
            Algorithm::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(inner, c.level).map_err(io_err)?;
                e.include_checksum(true).map_err(io_err)?;
                e.multithread(threads as u32).map_err(io_err)?;
                Compressor::Zstd(e)
            }
        })
    }

    pub fn finish(self) -> Result<W> {
        match self {
            Compressor::Gzip(g) => g.finish(),
            Compressor::Zstd(z) => z.finish(),
        }
        .map_err(|e| Error::from_io(e, "cannot finish compression"))
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Gzip(g) => g.write(buf),
            Compressor::Zstd(z) => z.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A decompressing reader. `into_inner` gives back the compressed stream, so callers can check
/// that nothing follows the end of the compressed data.
pub enum Decoder<R: BufRead> {
    Gzip(Box<flate2::bufread::MultiGzDecoder<R>>),
    Zstd(zstd::stream::read::Decoder<'static, R>),
}

impl<R: BufRead> Decoder<R> {
    pub fn new(r: R, algorithm: Algorithm) -> Result<Self> {
        Ok(match algorithm {
            Algorithm::Gzip => Decoder::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(r))),
            Algorithm::Zstd => Decoder::Zstd(
                zstd::stream::read::Decoder::with_buffer(r)
                    .map_err(|e| Error::from_io(e, "cannot start decompression"))?,
            ),
        })
    }

    pub fn into_inner(self) -> R {
        match self {
            Decoder::Gzip(d) => d.into_inner(),
            Decoder::Zstd(d) => d.finish(),
        }
    }
}

impl<R: BufRead> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Gzip(d) => d.read(buf),
            Decoder::Zstd(d) => d.read(buf),
        }
    }
}

/// The decoder for a compressed stream (buffered for you).
pub fn decompressor<R: Read>(r: R, algorithm: Algorithm) -> Result<Decoder<io::BufReader<R>>> {
    Decoder::new(io::BufReader::with_capacity(1 << 16, r), algorithm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivial: text with a slowly changing counter and some noise.
        let mut v = Vec::with_capacity(len);
        let mut x: u32 = 12345;
        while v.len() < len {
            x = x.wrapping_mul(1103515245).wrapping_add(12345);
            v.extend_from_slice(
                format!("row {}\t{}\tsome text\n", v.len() / 40, x % 1000).as_bytes(),
            );
        }
        v.truncate(len);
        v
    }

    fn compress(data: &[u8], c: Compression, block: usize) -> Vec<u8> {
        let mut w: Compressor<Vec<u8>> = match c.algorithm {
            Algorithm::Gzip => {
                Compressor::Gzip(ParGzipWriter::new(Vec::new(), c.level as u32, 3, block).unwrap())
            }
            Algorithm::Zstd => Compressor::new(Vec::new(), c, 2).unwrap(),
        };
        for piece in data.chunks(10_007) {
            w.write_all(piece).unwrap();
        }
        w.finish().unwrap()
    }

    fn decompress(data: &[u8], a: Algorithm) -> Vec<u8> {
        let mut out = Vec::new();
        decompressor(data, a)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn gzip_is_one_standard_member_at_any_size() {
        for len in [0, 1, 100, 65_536, 65_537, 300_000] {
            let data = sample(len);
            let gz = compress(&data, "gzip".parse().unwrap(), 65_536);
            // A single-member decoder must read it all: proof it is one member, like pigz's.
            let mut single = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut single)
                .unwrap();
            assert_eq!(single, data, "len {len}");
        }
    }

    #[test]
    fn gzip_output_is_read_by_the_gzip_program() {
        let data = sample(500_000);
        let gz = compress(&data, "gzip:6".parse().unwrap(), 65_536);
        let mut child = Command::new("gzip")
            .args(["-d", "-c"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("gzip is installed");
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || stdin.write_all(&gz).unwrap());
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, data);
    }

    #[test]
    fn dictionary_keeps_the_ratio_of_single_threaded_gzip() {
        let data = sample(2_000_000);
        let par = compress(&data, "gzip:6".parse().unwrap(), 65_536);
        let mut single = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        single.write_all(&data).unwrap();
        let single = single.finish().unwrap();
        assert!(
            (par.len() as f64) < single.len() as f64 * 1.02,
            "parallel {} vs single {}",
            par.len(),
            single.len()
        );
    }

    #[test]
    fn zstd_round_trips() {
        let data = sample(1_000_000);
        let z = compress(&data, "zstd".parse().unwrap(), 0);
        assert!(z.len() < data.len() / 3);
        assert_eq!(decompress(&z, Algorithm::Zstd), data);
    }

    #[test]
    fn parses_compression_names() {
        assert_eq!(
            "gzip".parse::<Compression>().unwrap(),
            Compression::default()
        );
        assert_eq!("zstd:19".parse::<Compression>().unwrap().level, 19);
        assert!("gzip:0".parse::<Compression>().is_err());
        assert!("brotli".parse::<Compression>().is_err());
        assert!("zstd:x".parse::<Compression>().is_err());
    }
}
