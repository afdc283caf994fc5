/*!
Streaming multipart upload with bounded memory.

Bytes fill a part buffer; a full part goes to one of `concurrency` upload threads (the hand-off
blocks while all are busy, which is the backpressure that keeps memory at about
(concurrency + 1) x part size). Each part keeps its bytes until it is stored, so a transient
failure retries that part alone. Objects smaller than one part go up in a single PUT.

All parts but the last have the same size (Cloudflare R2 requires it), so the part size is
fixed when the upload starts, from the caller's size estimate: S3 allows 10,000 parts.
A failed or dropped upload is aborted so no parts linger (and the store shows nothing).
*/

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use ureq::http;

use super::{Inner, Req, abort_multipart, xml};
use crate::error::{Error, Result};
use crate::storage::Upload;

pub const MIN_PART_SIZE: u64 = 5 << 20;
pub const MAX_PART_SIZE: u64 = 5 << 30;
pub const MAX_PARTS: u64 = 10_000;
const DEFAULT_PART_SIZE: u64 = 8 << 20;

/// The part size for an object of at most `size_hint` bytes: 8 MiB, or larger (in whole MiB)
/// when 9,000 parts (leaving headroom under the 10,000 limit) would not hold it.
pub fn choose_part_size(size_hint: Option<u64>) -> u64 {
    let need = size_hint.unwrap_or(0).div_ceil(9_000);
    let mib = 1u64 << 20;
    need.div_ceil(mib)
        .saturating_mul(mib)
        .clamp(DEFAULT_PART_SIZE, MAX_PART_SIZE)
}

struct Part {
    number: u32,
    data: Vec<u8>,
}

struct PartDone {
    number: u32,
    etag: Result<String>,
    /// The emptied buffer, for reuse.
    buf: Vec<u8>,
}

struct Multipart {
    upload_id: String,
    jobs: Option<SyncSender<Part>>,
    done: Receiver<PartDone>,
    workers: Vec<JoinHandle<()>>,
    etags: BTreeMap<u32, String>,
    in_flight: usize,
}

pub(super) struct S3Upload {
    inner: Arc<Inner>,
    key: String,
    part_size: usize,
    buf: Vec<u8>,
    spare: Vec<Vec<u8>>,
    next_part: u32,
    written: u64,
    mp: Option<Multipart>,
    /// The first error any part hit; the next write (or `finish`) returns it.
    failed: Option<Error>,
    closed: bool,
}

impl S3Upload {
    pub(super) fn new(inner: Arc<Inner>, key: String, size_hint: Option<u64>) -> Result<Self> {
        let part_size = match inner.opts.part_size {
            Some(p) if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&p) => {
                return Err(Error::config(format!(
                    "part size {} is outside S3's limits (5 MiB to 5 GiB)",
                    crate::units::bytes(p)
                )));
            }
            Some(p) => p,
            None => choose_part_size(size_hint),
        } as usize;
        Ok(S3Upload {
            inner,
            key,
            part_size,
            buf: Vec::new(),
            spare: Vec::new(),
            next_part: 1,
            written: 0,
            mp: None,
            failed: None,
            closed: false,
        })
    }

    fn start_multipart(&mut self) -> Result<()> {
        let root = self.inner.call_xml(
            &Req::new(http::Method::POST, Some(&self.key))
                .query("uploads", "")
                .locked(&self.inner),
        )?;
        let upload_id = root.text_of("UploadId").to_string();
        if upload_id.is_empty() {
            return Err(Error::storage(format!(
                "the storage service returned no upload id for {}",
                self.key
            )));
        }
        let (jobs_tx, jobs_rx) = sync_channel::<Part>(0);
        let (done_tx, done_rx) = channel::<PartDone>();
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let workers = (0..self.inner.opts.concurrency.max(1))
            .map(|_| {
                let inner = self.inner.clone();
                let key = self.key.clone();
                let id = upload_id.clone();
                let jobs = jobs_rx.clone();
                let done = done_tx.clone();
                std::thread::Builder::new()
                    .name("s3-part".into())
                    .spawn(move || part_worker(&inner, &key, &id, &jobs, &done))
                    .expect("spawn upload thread")
            })
            .collect();
        self.mp = Some(Multipart {
            upload_id,
            jobs: Some(jobs_tx),
            done: done_rx,
            workers,
            etags: BTreeMap::new(),
            in_flight: 0,
        });
        Ok(())
    }

    fn record(&mut self, d: PartDone) {
        let mp = self.mp.as_mut().expect("multipart started");
        mp.in_flight -= 1;
        match d.etag {
            Ok(etag) => {
                mp.etags.insert(d.number, etag);
            }
            Err(e) => {
                self.failed.get_or_insert(e);
            }
        }
        if self.spare.is_empty() {
            self.spare.push(d.buf);
        }
    }

    /// Collects finished parts without waiting.
    fn poll(&mut self) {
        while let Some(d) = self.mp.as_ref().and_then(|mp| mp.done.try_recv().ok()) {
            self.record(d);
        }
    }

    fn send_part(&mut self) -> Result<()> {
        if self.next_part as u64 > MAX_PARTS {
            return Err(Error::storage(format!(
                "the backup is larger than {MAX_PARTS} parts of {}",
                crate::units::bytes(self.part_size as u64)
            ))
            .with_hint("set part_size under [repository] in offsitedb.toml to a larger size"));
        }
        if self.mp.is_none() {
            self.start_multipart()?;
        }
        let data = std::mem::replace(&mut self.buf, self.spare.pop().unwrap_or_default());
        let part = Part {
            number: self.next_part,
            data,
        };
        self.next_part += 1;
        let mp = self.mp.as_mut().unwrap();
        mp.in_flight += 1;
        if mp.jobs.as_ref().unwrap().send(part).is_err() {
            // Every worker has exited; the reason is in the done channel.
            self.wait_all();
            return Err(self
                .failed
                .take()
                .unwrap_or_else(|| Error::internal("upload threads exited without a result")));
        }
        self.poll();
        match self.failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Stops the workers and collects every outstanding result.
    fn wait_all(&mut self) {
        let Some(mp) = self.mp.as_mut() else { return };
        mp.jobs.take();
        let workers = std::mem::take(&mut mp.workers);
        while self.mp.as_ref().is_some_and(|mp| mp.in_flight > 0) {
            match self.mp.as_ref().unwrap().done.recv() {
                Ok(d) => self.record(d),
                // Every worker is gone; nothing more will arrive.
                Err(_) => break,
            }
        }
        for w in workers {
            let _ = w.join();
        }
    }

    fn complete(&mut self) -> Result<()> {
        self.wait_all();
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let mp = self.mp.as_ref().unwrap();
        let expected = self.next_part - 1;
        if mp.etags.len() as u32 != expected {
            return Err(Error::internal(format!(
                "{} of {expected} parts reported done",
                mp.etags.len()
            )));
        }
        let mut body = String::from("<CompleteMultipartUpload>");
        for (n, etag) in &mp.etags {
            body.push_str(&format!(
                "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>",
                xml::escape(etag)
            ));
        }
        body.push_str("</CompleteMultipartUpload>");
        let done = self.inner.call_xml(
            &Req::new(http::Method::POST, Some(&self.key))
                .query("uploadId", &mp.upload_id)
                .body(body.as_bytes()),
        );
        match done {
            Ok(_) => Ok(()),
            // A retry whose first attempt completed the upload (and whose answer was lost) finds
            // no upload: if the object is there with every byte, it is done.
            Err(e) if e.message().contains("NoSuchUpload") => {
                let head = self
                    .inner
                    .call(&Req::new(http::Method::HEAD, Some(&self.key)));
                match head.ok().and_then(|r| super::content_length(&r)) {
                    Some(n) if n == self.written => Ok(()),
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    fn abort_now(&mut self) -> Result<()> {
        self.closed = true;
        self.wait_all();
        match self.mp.take() {
            Some(mp) => abort_multipart(&self.inner, &self.key, &mp.upload_id).map_err(|e| {
                self.inner.remember_abandoned(&self.key, &mp.upload_id);
                e.context(format!(
                    "could not abort the unfinished upload of {} (it is invisible to OffsiteDB; the next backup aborts it)",
                    self.key
                ))
            }),
            None => Ok(()),
        }
    }
}

fn part_worker(
    inner: &Inner,
    key: &str,
    upload_id: &str,
    jobs: &Mutex<Receiver<Part>>,
    done: &Sender<PartDone>,
) {
    loop {
        let job = jobs.lock().unwrap().recv();
        let Ok(mut part) = job else { return };
        let number = part.number.to_string();
        let etag = inner
            .call(
                &Req::new(http::Method::PUT, Some(key))
                    .query("partNumber", &number)
                    .query("uploadId", upload_id)
                    .body(&part.data),
            )
            .and_then(|resp| {
                resp.headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
                    .ok_or_else(|| {
                        Error::storage(format!(
                            "the storage service returned no ETag for part {number}"
                        ))
                    })
            });
        let failed = etag.is_err();
        part.data.clear();
        if done
            .send(PartDone {
                number: part.number,
                etag,
                buf: part.data,
            })
            .is_err()
            || failed
        {
            return;
        }
    }
}

impl Write for S3Upload {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Err(io::Error::other("upload already closed"));
        }
        let n = data.len();
        while !data.is_empty() {
            if self.buf.capacity() < self.part_size {
                self.buf.reserve_exact(self.part_size - self.buf.len());
            }
            let take = (self.part_size - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == self.part_size {
                self.send_part().map_err(Error::into_io)?;
            }
        }
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Upload for S3Upload {
    fn finish(mut self: Box<Self>) -> Result<u64> {
        let result = if self.mp.is_none() {
            // Small object: one PUT.
            self.closed = true;
            let data = std::mem::take(&mut self.buf);
            self.inner
                .call(
                    &Req::new(http::Method::PUT, Some(&self.key))
                        .body(&data)
                        .locked(&self.inner),
                )
                .map(|_| ())
        } else {
            let tail = if self.buf.is_empty() {
                Ok(())
            } else {
                self.send_part()
            };
            tail.and_then(|_| self.complete())
        };
        match result {
            Ok(()) => {
                self.closed = true;
                self.mp = None;
                Ok(self.written)
            }
            Err(e) => {
                // Best effort: the original error is the one to report.
                let _ = self.abort_now();
                Err(e)
            }
        }
    }

    fn abort(mut self: Box<Self>) -> Result<()> {
        self.abort_now()
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        if self.mp.is_some() {
            let _ = self.abort_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes_fit_the_part_limit() {
        let mib = 1u64 << 20;
        assert_eq!(choose_part_size(None), 8 * mib);
        assert_eq!(choose_part_size(Some(1 << 30)), 8 * mib);
        // 500 GB needs parts of about 53 MiB to stay under 9,000 parts.
        let p = choose_part_size(Some(500_000_000_000));
        assert!(500_000_000_000u64.div_ceil(p) <= 9_000, "{p}");
        assert_eq!(p % mib, 0);
        assert_eq!(choose_part_size(Some(u64::MAX)), MAX_PART_SIZE);
    }
}
