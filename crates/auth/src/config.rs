//! Settings of the authentication services, with safe defaults.

use chrono::TimeDelta;
use domain::auth::LockoutPolicy;

use crate::keys::SigningAlgorithm;
use crate::passwords::Argon2Params;

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub argon2: Argon2Params,
    /// Password-hashing workers; 0 means one per core.
    pub hash_threads: usize,
    /// Hashing jobs that may wait beyond the workers before sign-ins are refused with 503.
    pub hash_queue: usize,
    /// Base URL of this server as users reach it: the prefix of token issuers and of links
    /// in emails.
    pub public_url: String,
    pub signing_algorithm: SigningAlgorithm,
    pub access_token_ttl: TimeDelta,
    /// Longest life of a session, whatever its activity.
    pub session_ttl: TimeDelta,
    pub mfa_challenge_ttl: TimeDelta,
    /// Magic links and password resets.
    pub link_ttl: TimeDelta,
    pub email_verification_ttl: TimeDelta,
    pub invitation_ttl: TimeDelta,
    pub lockout: LockoutPolicy,
    /// Requests per minute one IP address may make to the sign-in endpoints; 0 disables.
    pub ip_requests_per_minute: u32,
    /// Failed sign-ins from one IP address within the lockout window after which its
    /// sign-ins are refused with 429 until the window passes; 0 disables.
    pub ip_failure_limit: u32,
    /// Emails (magic link, reset, verification) one address may receive per hour.
    pub emails_per_address_per_hour: u32,
    /// Whether browser-session cookies carry `Secure` (turn off only for plain-HTTP
    /// development).
    pub secure_cookies: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            argon2: Argon2Params::default(),
            hash_threads: 0,
            hash_queue: 64,
            public_url: "http://localhost:8080".to_owned(),
            signing_algorithm: SigningAlgorithm::EdDSA,
            access_token_ttl: TimeDelta::minutes(10),
            session_ttl: TimeDelta::days(30),
            mfa_challenge_ttl: TimeDelta::minutes(5),
            link_ttl: TimeDelta::minutes(15),
            email_verification_ttl: TimeDelta::hours(24),
            invitation_ttl: TimeDelta::days(7),
            lockout: LockoutPolicy::default(),
            ip_requests_per_minute: 120,
            ip_failure_limit: 50,
            emails_per_address_per_hour: 5,
            secure_cookies: true,
        }
    }
}
