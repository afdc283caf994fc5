/*!
The backup sink: bytes in, a sealed object in the repository out.

```text
count ─► compress ─► sha256 ─► seal ─► sha256 ─► upload
```

The caller's thread only moves bytes from the source (pg_dump's pipe) into buffers; the stages run
on a thread of their own at a lower CPU priority (nice +5; compression and upload threads inherit
it). On a host shared with the database, the database and pg_dump are the critical path of a
backup, so the backup's own work yields to them instead of competing.

Nothing is stored unless the caller's `on_eof` check passes after the source ended: any failure
before that drops the stages, which aborts the upload.
*/

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};

use super::{Compression, Compressor, Counters, MeasureWriter, Measured};
use crate::crypto::seal::{DEFAULT_CHUNK_SIZE, SALT_LEN};
use crate::crypto::{MasterKey, SealWriter};
use crate::error::{Error, ErrorKind, Result};
use crate::storage::Upload;

/// How much lower the stages' CPU priority is than the caller's.
pub const NICE: i32 = 5;
const BUF: usize = 256 * 1024;

pub struct SinkSpec<'a> {
    pub upload: Box<dyn Upload>,
    pub key: &'a MasterKey,
    pub compression: Compression,
    /// Compression threads; 0 = one per core.
    pub threads: usize,
    pub counters: Counters,
}

/// What each stage saw, for the manifest.
#[derive(Clone, Debug)]
pub struct SinkResult {
    pub plain: Measured,
    pub compressed: Measured,
    pub stored: Measured,
    pub salt: [u8; SALT_LEN],
}

enum Msg {
    Data(Arc<Vec<u8>>),
    /// The source ended and the caller's check passed: complete the object.
    Commit,
}

/// Streams `source` through the sink. After the source's end, `on_eof` decides: `Ok` completes
/// the upload, an error aborts it and is returned. If a stage fails first, its error is returned
/// and `on_eof` is dropped without being called.
///
/// `tap`, if given, receives every buffer too (the dump inspector reads it on its own thread).
/// A tap that hangs up is simply no longer fed; it never fails the backup.
pub fn run(
    spec: SinkSpec<'_>,
    source: &mut dyn Read,
    tap: Option<SyncSender<Arc<Vec<u8>>>>,
    on_eof: impl FnOnce() -> Result<()>,
) -> Result<SinkResult> {
    let (tx, rx) = sync_channel::<Msg>(4);
    let (back_tx, back_rx) = channel::<Vec<u8>>();
    std::thread::scope(|s| {
        let worker = std::thread::Builder::new()
            .name("backup-sink".into())
            .spawn_scoped(s, move || stages(spec, rx, back_tx))
            .expect("spawn backup sink thread");
        let early = match feed(source, &tx, tap, &back_rx) {
            Ok(()) => match on_eof() {
                Ok(()) => {
                    // If the send fails, the stages already failed and say why below.
                    let _ = tx.send(Msg::Commit);
                    None
                }
                Err(e) => Some(e),
            },
            Err(e) => e,
        };
        // Without a Commit, the stages see the channel close and abort the upload.
        drop(tx);
        let joined = worker
            .join()
            .unwrap_or_else(|_| Err(Error::internal("the backup sink thread panicked")));
        match early {
            Some(e) => Err(e),
            None => joined,
        }
    })
}

/// Moves the source into the channel. `Err(None)`: the stages are gone (they hold the error).
fn feed(
    source: &mut dyn Read,
    tx: &SyncSender<Msg>,
    mut tap: Option<SyncSender<Arc<Vec<u8>>>>,
    back: &Receiver<Vec<u8>>,
) -> Result<(), Option<Error>> {
    loop {
        crate::interrupt::check().map_err(Some)?;
        let mut buf = back.try_recv().unwrap_or_else(|_| Vec::with_capacity(BUF));
        buf.resize(BUF, 0);
        let n = loop {
            match source.read(&mut buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    crate::interrupt::check().map_err(Some)?;
                }
                Err(e) => return Err(Some(Error::from_io(e, "cannot read the dump"))),
            }
        };
        if n == 0 {
            return Ok(());
        }
        buf.truncate(n);
        let buf = Arc::new(buf);
        if let Some(t) = &tap
            && t.send(buf.clone()).is_err()
        {
            tap = None;
        }
        tx.send(Msg::Data(buf)).map_err(|_| None)?;
    }
}

/// The stages, on their own thread.
fn stages(spec: SinkSpec<'_>, rx: Receiver<Msg>, back: Sender<Vec<u8>>) -> Result<SinkResult> {
    // SAFETY: nice(2) only changes this thread's priority (a Linux per-thread attribute);
    // raising the value needs no privilege, and failure is harmless.
    unsafe {
        libc::nice(NICE);
    }
    let stored =
        MeasureWriter::hashing(spec.upload).with_live_counter(spec.counters.output.clone());
    let sealed = SealWriter::with_chunk_size(stored, spec.key, DEFAULT_CHUNK_SIZE)?;
    let salt = sealed.salt();
    let compressed = MeasureWriter::hashing(sealed);
    let compressor = Compressor::new(compressed, spec.compression, spec.threads)?;
    let mut plain =
        MeasureWriter::counting(compressor).with_live_counter(spec.counters.input.clone());
    loop {
        match rx.recv() {
            Ok(Msg::Data(buf)) => {
                plain
                    .write_all(&buf)
                    .map_err(|e| Error::from_io(e, "backup failed"))?;
                // Reused unless the tap still holds it.
                if let Some(b) = Arc::into_inner(buf) {
                    let _ = back.send(b);
                }
            }
            Ok(Msg::Commit) => break,
            // The caller gave up: dropping the stages aborts the upload.
            Err(_) => {
                return Err(Error::new(ErrorKind::Internal, "backup abandoned"));
            }
        }
    }
    let (compressor, plain_m) = plain.finish();
    if plain_m.bytes == 0 {
        return Err(Error::process("the dump was empty (pg_dump wrote nothing)"));
    }
    let compressed = compressor.finish()?;
    let (sealed, compressed_m) = compressed.finish();
    let stored = sealed.finish()?;
    let (upload, stored_m) = stored.finish();
    let uploaded = upload.finish()?;
    if uploaded != stored_m.bytes {
        return Err(Error::internal(format!(
            "uploaded {uploaded} bytes but sealed {}",
            stored_m.bytes
        )));
    }
    Ok(SinkResult {
        plain: plain_m,
        compressed: compressed_m,
        stored: stored_m,
        salt,
    })
}
