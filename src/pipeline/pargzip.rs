/*!
Gzip on every core, producing one standard gzip member, the way pigz does: the input is cut
into blocks; each block is deflated on a worker thread with the previous block's last 32 KiB as
its dictionary (so the ratio matches single-threaded gzip) and ends with a sync flush (so the
blocks concatenate into one valid deflate stream); the CRC-32s are combined in order.

`gunzip`, Python's gzip module and `pg_restore` after `gunzip` read the result like any .gz.
Memory: about 2 x workers x block size.
*/

use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, FlushCompress, Status};

const WINDOW: usize = 32 * 1024;
pub const DEFAULT_BLOCK: usize = 1 << 20;

struct Job {
    data: Vec<u8>,
    dict: Vec<u8>,
    last: bool,
}

struct Done {
    out: Vec<u8>,
    crc: crc32fast::Hasher,
}

struct Worker {
    jobs: Option<SyncSender<Job>>,
    done: Receiver<io::Result<Done>>,
    handle: Option<JoinHandle<()>>,
}

pub struct ParGzipWriter<W: Write> {
    /// An `Option` only so that `finish` can move it out despite the `Drop` impl.
    inner: Option<W>,
    block: Vec<u8>,
    block_size: usize,
    /// Last 32 KiB of the previous block: the next block's dictionary.
    tail: Vec<u8>,
    workers: Vec<Worker>,
    submitted: u64,
    written: u64,
    crc: crc32fast::Hasher,
    total_in: u64,
}

impl<W: Write> ParGzipWriter<W> {
    /// `level` 1–9; `threads` 0 means one per core.
    pub fn new(mut inner: W, level: u32, threads: usize, block_size: usize) -> io::Result<Self> {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            threads
        };
        // Magic, deflate, no flags, no mtime, no extra flags, OS = Unix.
        inner.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3])?;
        let workers = (0..threads)
            .map(|_| {
                let (jtx, jrx) = sync_channel::<Job>(1);
                let (dtx, drx) = channel();
                let handle = std::thread::Builder::new()
                    .name("gzip".into())
                    .spawn(move || {
                        let mut c = Compress::new(Compression::new(level), false);
                        while let Ok(job) = jrx.recv() {
                            if dtx.send(deflate_block(&mut c, job)).is_err() {
                                return;
                            }
                        }
                    })
                    .expect("spawn gzip thread");
                Worker {
                    jobs: Some(jtx),
                    done: drx,
                    handle: Some(handle),
                }
            })
            .collect();
        Ok(ParGzipWriter {
            inner: Some(inner),
            block: Vec::with_capacity(block_size),
            block_size,
            tail: Vec::new(),
            workers,
            submitted: 0,
            written: 0,
            crc: crc32fast::Hasher::new(),
            total_in: 0,
        })
    }

    fn n(&self) -> u64 {
        self.workers.len() as u64
    }

    /// Writes the oldest finished block to the inner writer, waiting for it if needed.
    fn write_next(&mut self) -> io::Result<()> {
        let w = &self.workers[(self.written % self.n()) as usize];
        let done = w
            .done
            .recv()
            .map_err(|_| io::Error::other("gzip worker exited"))??;
        self.crc.combine(&done.crc);
        self.inner.as_mut().expect("open").write_all(&done.out)?;
        self.written += 1;
        Ok(())
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        while self.submitted - self.written >= 2 * self.n() {
            self.write_next()?;
        }
        let data = std::mem::replace(&mut self.block, Vec::with_capacity(self.block_size));
        let dict = std::mem::take(&mut self.tail);
        if !last {
            let from = data.len().saturating_sub(WINDOW);
            self.tail = data[from..].to_vec();
        }
        self.total_in += data.len() as u64;
        let w = &self.workers[(self.submitted % self.n()) as usize];
        w.jobs
            .as_ref()
            .expect("open")
            .send(Job { data, dict, last })
            .map_err(|_| io::Error::other("gzip worker exited"))?;
        self.submitted += 1;
        Ok(())
    }

    /// Compresses what is left, writes the trailer, and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        while self.written < self.submitted {
            self.write_next()?;
        }
        let crc = self.crc.clone().finalize();
        let isize = self.total_in as u32; // RFC 1952: size modulo 2^32
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&crc.to_le_bytes());
        trailer[4..].copy_from_slice(&isize.to_le_bytes());
        self.inner.as_mut().expect("open").write_all(&trailer)?;
        self.stop();
        Ok(self.inner.take().expect("finish once"))
    }

    fn stop(&mut self) {
        for w in &mut self.workers {
            w.jobs.take();
        }
        for w in &mut self.workers {
            if let Some(h) = w.handle.take() {
                let _ = h.join();
            }
        }
    }
}

fn deflate_block(c: &mut Compress, job: Job) -> io::Result<Done> {
    c.reset();
    if !job.dict.is_empty() {
        c.set_dictionary(&job.dict)
            .map_err(|e| io::Error::other(format!("gzip dictionary: {e}")))?;
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&job.data);
    let flush = if job.last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(job.data.len() + job.data.len() / 8 + 1024);
    let start_in = c.total_in();
    loop {
        let consumed = (c.total_in() - start_in) as usize;
        let before_out = out.len();
        let status = c
            .compress_vec(&job.data[consumed..], &mut out, flush)
            .map_err(|e| io::Error::other(format!("gzip: {e}")))?;
        let consumed = (c.total_in() - start_in) as usize;
        let room_left = out.len() < out.capacity();
        match status {
            Status::StreamEnd => break,
            _ if !job.last && consumed == job.data.len() && room_left => break,
            Status::BufError if out.len() == before_out && room_left => {
                return Err(io::Error::other("gzip made no progress"));
            }
            _ => out.reserve(out.capacity().max(64 * 1024)),
        }
    }
    Ok(Done { out, crc })
}

impl<W: Write> Write for ParGzipWriter<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            let take = (self.block_size - self.block.len()).min(data.len());
            self.block.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.block.len() == self.block_size {
                self.submit(false)?;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for ParGzipWriter<W> {
    fn drop(&mut self) {
        self.stop();
    }
}
