//! Portcullis authentication mechanisms: password hashing on a bounded pool and the
//! password policy (`passwords`), signing keys and access tokens (`keys`), TOTP (`totp`),
//! mail (`mailer`), guessing defences (`ratelimit`) and secrets (`secrets`). The sign-in
//! flows that tie them to the store and to the rules are `services::signin`; no HTTP here.
pub mod config;
pub mod error;
pub mod keys;
pub mod mailer;
pub mod passwords;
pub mod ratelimit;
pub mod secrets;

pub mod totp;
