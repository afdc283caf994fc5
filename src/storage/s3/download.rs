/*!
A streaming GET that survives a dropped connection: when the body fails or ends early, it asks
again for the rest (`Range: bytes=N-`, `If-Match: <etag>` so a replaced object is never spliced
in), with the same backoff as every other request.
*/

use std::io::{self, Read};
use std::sync::Arc;

use ureq::http;

use super::{Inner, Req, content_length};
use crate::error::{Error, Result};

pub(super) struct Download {
    inner: Arc<Inner>,
    key: String,
    etag: Option<String>,
    /// Bytes handed out so far.
    offset: u64,
    total: Option<u64>,
    body: Option<ureq::BodyReader<'static>>,
}

impl Download {
    pub(super) fn open(inner: Arc<Inner>, key: String) -> Result<Self> {
        let resp = inner.call(&Req::new(http::Method::GET, Some(&key)))?;
        let total = content_length(&resp);
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(Download {
            inner,
            key,
            etag,
            offset: 0,
            total,
            body: Some(resp.into_body().into_with_config().limit(u64::MAX).reader()),
        })
    }

    /// The size the service reported (`Content-Length`), if it did.
    pub(super) fn total(&self) -> Option<u64> {
        self.total
    }

    fn reopen(&mut self) -> Result<()> {
        let mut req = Req::new(http::Method::GET, Some(&self.key))
            .header("range", format!("bytes={}-", self.offset));
        if let Some(e) = &self.etag {
            req = req.header("if-match", e.clone());
        }
        let resp = self.inner.call(&req)?;
        if resp.status().as_u16() != 206 {
            return Err(Error::storage(format!(
                "the storage service ignored a resume request for {} (HTTP {})",
                self.key,
                resp.status().as_u16()
            )));
        }
        self.body = Some(resp.into_body().into_with_config().limit(u64::MAX).reader());
        Ok(())
    }
}

impl Read for Download {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut failures = 0u32;
        loop {
            if self.body.is_none() {
                self.reopen().map_err(Error::into_io)?;
            }
            let r = self.body.as_mut().unwrap().read(buf);
            let failure = match r {
                Ok(0) if self.total.is_none_or(|t| self.offset >= t) => return Ok(0),
                Ok(0) => Error::storage(format!(
                    "the connection closed after {} of {} bytes of {}",
                    self.offset,
                    self.total.unwrap_or(0),
                    self.key
                ))
                .transient(),
                Ok(n) => {
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Error::storage(format!(
                    "reading {} failed after {} bytes: {}",
                    self.key,
                    self.offset,
                    crate::error::describe_io(&e)
                ))
                .transient(),
            };
            self.body = None;
            failures += 1;
            if failures >= self.inner.opts.retry.attempts {
                return Err(failure.into_io());
            }
            std::thread::sleep(self.inner.opts.retry.delay(failures));
        }
    }
}
