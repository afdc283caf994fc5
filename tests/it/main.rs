//! Integration tests: one binary (one link), real PostgreSQL clusters and a real S3 server.

mod cli;
mod common;
mod config;
mod daemon;
mod deploy;
mod directory;
mod drill;
mod dump;
mod email;
mod failures;
mod foundation;
mod jobs;
mod proxy;
mod roundtrip;
mod secrets;
mod setup;
mod spool;
mod storage;
