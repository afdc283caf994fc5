//! Integration tests: one binary (one link), real PostgreSQL clusters and a real S3 server.

mod cli;
mod common;
mod daemon;
mod deploy;
mod directory;
mod drill;
mod dump;
mod failures;
mod foundation;
mod jobs;
mod proxy;
mod roles;
mod roundtrip;
mod secrets;
mod setup;
mod storage;
