/*!
Streaming stages. Transforming stages (compress, seal) change bytes; observing stages (measure)
pass them through and report counts and hashes when they finish, which go straight into the
manifest (pgBackRest's IO filters work the same way). Everything is a `Write` or a `Read`, so a
pipeline is just stages nested inside each other, in constant memory.
*/

pub mod compress;
pub mod hash;
pub mod pargzip;
pub mod progress;
pub mod sink;
pub mod tap;

pub use compress::{Algorithm, Compression, Compressor, Decoder, decompressor};
pub use hash::{MeasureHandle, MeasureReader, MeasureWriter, Measured};
pub use progress::{Counters, Progress};
pub use tap::TapReader;

/// Copies `r` into `w` with a large buffer (std's copy uses 8 KiB, which costs on a 1 GB dump).
/// Stops with an `Interrupted` error when Ctrl-C or SIGTERM arrives.
pub fn copy_large(r: &mut dyn std::io::Read, w: &mut dyn std::io::Write) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        crate::interrupt::check().map_err(crate::Error::into_io)?;
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
}
