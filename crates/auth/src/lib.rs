//! Portcullis authentication services: password hashing on a bounded pool and the
//! password policy (`passwords`), signing keys and access tokens (`keys`), TOTP (`totp`),
//! mail (`mailer`), guessing defences (`ratelimit`), and the sign-in flows that tie them to
//! the store (`service`). No HTTP here: the `api` crate parses and renders.
pub mod config;
pub mod error;
pub mod keys;
pub mod mailer;
pub mod passwords;
pub mod ratelimit;
pub mod secrets;
pub mod service;
pub mod totp;
