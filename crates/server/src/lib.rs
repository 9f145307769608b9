//! The `portcullis` binary's library half: configuration, wiring, CLI commands and the
//! data generator, so that the test kit can start the very same server in-process.

pub mod app;
pub mod cli;
pub mod config;
pub mod keys;
pub mod seed;
pub mod seed_authz;
pub mod telemetry;
