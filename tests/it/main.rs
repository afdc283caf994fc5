//! Integration tests: one binary (one link), real PostgreSQL clusters and a real S3 server.

mod cli;
mod clock_skew;
mod common;
mod config;
mod daemon;
mod deploy;
mod directory;
mod drill;
mod drill_awkward;
mod dump;
mod email;
mod failures;
mod foundation;
mod hostile;
mod hostile_archives;
mod jobs;
mod planted;
mod proxy;
mod roles;
mod roundtrip;
mod secrets;
mod setup;
mod spool;
mod storage;
