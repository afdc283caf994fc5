//! The receiving end of the sink's tap: the buffers the backup streams, read back as a `Read` by
//! an observer on its own thread (the dump inspector), without copying them.

use std::io::Read;
use std::sync::Arc;
use std::sync::mpsc::Receiver;

pub struct TapReader {
    rx: Receiver<Arc<Vec<u8>>>,
    current: Option<Arc<Vec<u8>>>,
    pos: usize,
}

impl TapReader {
    pub fn new(rx: Receiver<Arc<Vec<u8>>>) -> Self {
        TapReader {
            rx,
            current: None,
            pos: 0,
        }
    }
}

impl Read for TapReader {
    /// End of stream when the sender hangs up (the source ended, or the backup failed).
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(buf) = &self.current
                && self.pos < buf.len()
            {
                let n = out.len().min(buf.len() - self.pos);
                out[..n].copy_from_slice(&buf[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            match self.rx.recv() {
                Ok(b) => {
                    self.current = Some(b);
                    self.pos = 0;
                }
                Err(_) => {
                    self.current = None;
                    return Ok(0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_buffers_in_order_then_ends() {
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        let t = std::thread::spawn(move || {
            for chunk in [&b"hello "[..], b"", b"tap", b" reader"] {
                tx.send(Arc::new(chunk.to_vec())).unwrap();
            }
        });
        let mut s = String::new();
        TapReader::new(rx).read_to_string(&mut s).unwrap();
        t.join().unwrap();
        assert_eq!(s, "hello tap reader");
    }
}
