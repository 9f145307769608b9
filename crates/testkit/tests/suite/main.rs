//! The integration suite: one test binary (each links the whole server once), a module per
//! capability. Every case runs on SQLite and on PostgreSQL (`PORTCULLIS_TEST_DATABASE_URL`;
//! skipped without it, except under CI, where a missing database is a failure).
//!
//! - `api_*`: the real server over HTTP (`spawn_app`).
//! - `*_contract`: the storage and service contracts, through `Rig` (the services' rules
//!   over each store) and the store's reads.
//! - `authz_property`: random graphs, mutations and policies; cached, fresh and model
//!   decisions agree.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod api_auth;
mod api_authz;
mod api_contract;
mod api_platform;
mod api_users;
mod auth_store_contract;
mod authz_property;
mod authz_store_contract;
mod events_contract;
mod security;
mod store_contract;
