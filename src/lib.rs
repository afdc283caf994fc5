/*!
OffsiteDB: encrypted, streaming PostgreSQL backups into a bucket you own, verified by restoring.

Every decision lives in this library; the `offsitedb` binary only parses arguments and prints.
Modules by concern (DESIGN.md section 9):

- [`crypto`]: master keys and the sealed object format
- [`storage`]: one streaming object-store interface, S3-compatible and local-folder drivers
- [`dump`]: the pg_dump archive inspector (rows and digests per table, data offsets)
- [`pipeline`]: streaming stages (hash and count, compress, progress) that report what they saw
- [`postgres`]: connection strings, server inspection, client binaries
- [`process`]: the one way we run child processes
- [`harden`]: no core dumps of a process that holds keys and passwords
- [`cluster`]: throwaway PostgreSQL clusters
- [`catalog`]: snapshot ids, manifests, the repository and its listing
- [`ops`]: one file per operation (backup, restore, decrypt, keygen, demo)
- [`config`]: the TOML file, environment interpolation, and precedence of flags
- [`wal`]: the WAL archive (file names, LSNs, timelines, WAL objects) for point-in-time recovery
- `fuzzing`: one entry point per parser of outside bytes, for the fuzz targets in `fuzz/`
*/

pub mod alerts;
pub mod catalog;
pub mod cluster;
pub mod config;
pub mod crypto;
pub mod daemon;
pub mod dump;
pub mod error;
pub mod exit;
#[doc(hidden)]
pub mod fuzzing;
pub mod harden;
pub mod interrupt;
pub mod lock;
pub mod ops;
pub mod pipeline;
pub mod postgres;
pub mod process;
pub mod report;
pub mod retention;
pub mod schedule;
pub mod state;
pub mod storage;
pub mod units;
pub mod wal;
pub mod web;

pub use error::{Error, ErrorKind, Result};

/// The version string recorded in manifests.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
