/*!
A minimal frontend/backend protocol client for one job: reading `COPY … TO STDOUT` fast over a
unix socket of a server we started ourselves (trust authentication, no TLS).

The server sends one CopyData message per row. The `postgres` crate hands each message through
its connection machinery (about half a microsecond a row, as much CPU as the server spends
printing a narrow row); here the socket is read in large buffers and rows are handed out as
slices of them. Anything this client does not speak (a password request, for instance) makes
[`RawConn::connect`] return `None`, and the caller uses the `postgres` crate instead.
*/

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

const BUFFER: usize = 1 << 20;

pub struct RawConn {
    s: UnixStream,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

/// A server error (its message) or a broken connection.
#[derive(Debug)]
pub enum RawError {
    Server(String),
    Io(io::Error),
}

impl std::fmt::Display for RawError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RawError::Server(m) => f.write_str(m),
            RawError::Io(e) => write!(f, "the connection failed: {e}"),
        }
    }
}

impl From<io::Error> for RawError {
    fn from(e: io::Error) -> Self {
        RawError::Io(e)
    }
}

fn protocol(what: impl Into<String>) -> RawError {
    RawError::Io(io::Error::new(io::ErrorKind::InvalidData, what.into()))
}

impl RawConn {
    /// Connects to `socket_dir/.s.PGSQL.port` as `user`. `Ok(None)` when the server wants
    /// anything but trust authentication.
    pub fn connect(
        socket_dir: &Path,
        port: u16,
        user: &str,
        dbname: &str,
    ) -> Result<Option<RawConn>, RawError> {
        let s = UnixStream::connect(socket_dir.join(format!(".s.PGSQL.{port}")))?;
        let mut c = RawConn {
            s,
            buf: vec![0u8; BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
        };
        let mut body = Vec::new();
        body.extend_from_slice(&196608i32.to_be_bytes()); // protocol 3.0
        for (k, v) in [
            ("user", user),
            ("database", dbname),
            ("application_name", "offsitedb"),
        ] {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut msg = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        msg.extend_from_slice(&body);
        c.s.write_all(&msg)?;
        loop {
            let (tag, len) = c.header()?;
            let payload = c.take(len)?;
            match tag {
                b'R' => {
                    let code = payload
                        .get(..4)
                        .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                    if code != Some(0) {
                        return Ok(None);
                    }
                }
                b'E' => return Err(RawError::Server(error_message(&payload))),
                b'Z' => return Ok(Some(c)),
                _ => {} // ParameterStatus, BackendKeyData, NoticeResponse
            }
        }
    }

    /// Runs statements (simple query protocol), failing on the first error.
    pub fn execute(&mut self, sql: &str) -> Result<(), RawError> {
        self.query(sql)?;
        let mut error = None;
        loop {
            let (tag, len) = self.header()?;
            let payload = self.take(len)?;
            match tag {
                b'E' => error = Some(error_message(&payload)),
                b'Z' => return error.map_or(Ok(()), |e| Err(RawError::Server(e))),
                _ => {}
            }
        }
    }

    /// Runs `COPY … TO STDOUT` and hands the rows to `f` in pieces (a row may span pieces).
    pub fn copy_out(&mut self, sql: &str, mut f: impl FnMut(&[u8])) -> Result<(), RawError> {
        self.query(sql)?;
        let mut error = None;
        loop {
            let (tag, len) = self.header()?;
            if tag == b'd' {
                // Row data straight from the buffer, in as many pieces as it arrives in.
                let mut left = len;
                while left > 0 {
                    if self.start == self.end {
                        self.fill(1)?;
                    }
                    let k = left.min(self.end - self.start);
                    f(&self.buf[self.start..self.start + k]);
                    self.start += k;
                    left -= k;
                }
                continue;
            }
            let payload = self.take(len)?;
            match tag {
                b'E' => error = Some(error_message(&payload)),
                b'Z' => return error.map_or(Ok(()), |e| Err(RawError::Server(e))),
                _ => {} // CopyOutResponse, CopyDone, CommandComplete, notices
            }
        }
    }

    fn query(&mut self, sql: &str) -> Result<(), RawError> {
        let mut msg = Vec::with_capacity(sql.len() + 6);
        msg.push(b'Q');
        msg.extend_from_slice(&((sql.len() + 5) as i32).to_be_bytes());
        msg.extend_from_slice(sql.as_bytes());
        msg.push(0);
        self.s.write_all(&msg)?;
        Ok(())
    }

    /// A message's type and payload length.
    fn header(&mut self) -> Result<(u8, usize), RawError> {
        self.fill(5)?;
        let b = &self.buf[self.start..self.start + 5];
        let tag = b[0];
        let len = i32::from_be_bytes([b[1], b[2], b[3], b[4]]);
        self.start += 5;
        if len < 4 {
            return Err(protocol(format!("a message of length {len}")));
        }
        Ok((tag, len as usize - 4))
    }

    /// A whole (small) payload, copied.
    fn take(&mut self, len: usize) -> Result<Vec<u8>, RawError> {
        if len > 64 << 20 {
            return Err(protocol(format!("a message of {len} bytes")));
        }
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            if self.start == self.end {
                self.fill(1)?;
            }
            let k = (len - out.len()).min(self.end - self.start);
            out.extend_from_slice(&self.buf[self.start..self.start + k]);
            self.start += k;
        }
        Ok(out)
    }

    /// Makes at least `n` (≤ buffer size) bytes available at `start`.
    fn fill(&mut self, n: usize) -> Result<(), RawError> {
        if self.end - self.start >= n {
            return Ok(());
        }
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        while self.end < n {
            match self.s.read(&mut self.buf[self.end..]) {
                Ok(0) => return Err(protocol("the server closed the connection")),
                Ok(k) => self.end += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

impl Drop for RawConn {
    fn drop(&mut self) {
        let _ = self.s.write_all(&[b'X', 0, 0, 0, 4]);
    }
}

/// The `M` (message) field of an ErrorResponse, with its `D` (detail) if any.
fn error_message(payload: &[u8]) -> String {
    let mut message = String::new();
    let mut detail = None;
    for field in payload.split(|&b| b == 0) {
        match field.split_first() {
            Some((b'M', v)) => message = String::from_utf8_lossy(v).into_owned(),
            Some((b'D', v)) => detail = Some(String::from_utf8_lossy(v).into_owned()),
            _ => {}
        }
    }
    match detail {
        Some(d) => format!("{message} ({d})"),
        None => message,
    }
}
