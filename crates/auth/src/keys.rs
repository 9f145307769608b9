//! Key material: the master key that seals secrets at rest, the token-signing keys it
//! protects, the access tokens they sign and the JWKS that publishes their public halves.
//!
//! A signing key's private part is stored only as AES-256-GCM ciphertext under the master
//! key, bound to its `kid` so that a ciphertext cannot be moved to another record. Rotation
//! adds a new key and retires the old one; a retired key stays published (and accepted)
//! until every token it signed has expired.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use chrono::TimeDelta;
use domain::auth::SigningKeyRecord;
use domain::Timestamp;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::rngs::OsRng;
use rand::RngCore;
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Length of an AES-GCM nonce.
const NONCE_LEN: usize = 12;
/// How long a retired key stays published beyond the lifetime of the tokens it signed, to
/// cover clock skew between nodes and caches of the JWKS.
const RETIRED_KEY_GRACE: TimeDelta = TimeDelta::minutes(5);
/// Tolerated clock skew when checking `exp`.
const LEEWAY_SECONDS: u64 = 30;
/// The JWT `typ` of an access token (RFC 9068), which keeps other JWTs signed by the same
/// keys (e.g. ID tokens) from being accepted as access tokens.
const ACCESS_TOKEN_TYP: &str = "at+jwt";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("invalid master key: {0}")]
    InvalidMasterKey(String),
    #[error("decryption failed (wrong master key or corrupted data)")]
    Decrypt,
    #[error("key file: {0}")]
    Io(String),
    #[error("key material: {0}")]
    Crypto(String),
}

/// 32-byte AES-256-GCM key; Debug prints nothing secret.
pub struct MasterKey(SecretBox<[u8; 32]>);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl Clone for MasterKey {
    fn clone(&self) -> Self {
        Self(SecretBox::new(Box::new(*self.0.expose_secret())))
    }
}

/// Accepts padded and unpadded input alike: a key pasted from elsewhere may be either.
const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const LENIENT_STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
const LENIENT_URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);

impl MasterKey {
    pub fn generate() -> Self {
        let mut bytes = Box::new([0u8; 32]);
        OsRng.fill_bytes(bytes.as_mut());
        Self(SecretBox::new(bytes))
    }

    /// Standard or url-safe base64 of 32 bytes, padded or not.
    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        let s = s.trim();
        let decoded = Zeroizing::new(
            LENIENT_STANDARD
                .decode(s)
                .or_else(|_| LENIENT_URL_SAFE.decode(s))
                .map_err(|_| KeyError::InvalidMasterKey("not valid base64".into()))?,
        );
        let bytes: [u8; 32] = decoded.as_slice().try_into().map_err(|_| {
            KeyError::InvalidMasterKey(format!(
                "expected 32 bytes, found {} (generate one with `openssl rand -base64 32`)",
                decoded.len()
            ))
        })?;
        Ok(Self(SecretBox::new(Box::new(bytes))))
    }

    /// A 32-byte key for another use, derived so that it never equals this one
    /// (HMAC-SHA-256 of `label` under the master key).
    pub fn derive(&self, label: &str) -> [u8; 32] {
        crate::secrets::hmac_sha256(self.0.expose_secret(), label.as_bytes())
    }

    pub fn to_base64(&self) -> SecretString {
        SecretString::from(STANDARD.encode(self.0.expose_secret()))
    }

    /// Reads the key file, or creates it (mode 0600 on unix, parent dirs created) with a
    /// fresh key.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        match Self::read_file(path) {
            Ok(key) => return Ok(key),
            Err(KeyFileError::Missing) => {}
            Err(KeyFileError::Other(e)) => return Err(e),
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| KeyError::Io(format!("creating {}: {e}", parent.display())))?;
        }
        let key = Self::generate();
        let mut options = std::fs::OpenOptions::new();
        // `create_new`: if another process created the file first, its key wins and is read.
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = match options.open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Self::read_file(path).map_err(KeyFileError::into_key_error);
            }
            Err(e) => return Err(KeyError::Io(format!("creating {}: {e}", path.display()))),
        };
        let mut encoded = key.to_base64().expose_secret().to_owned();
        encoded.push('\n');
        let encoded = Zeroizing::new(encoded);
        file.write_all(encoded.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| KeyError::Io(format!("writing {}: {e}", path.display())))?;
        tracing::info!(path = %path.display(), "generated a new master key");
        Ok(key)
    }

    fn read_file(path: &Path) -> Result<Self, KeyFileError> {
        let contents = match std::fs::read_to_string(path) {
            Ok(contents) => Zeroizing::new(contents),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyFileError::Missing)
            }
            Err(e) => {
                return Err(KeyFileError::Other(KeyError::Io(format!(
                    "reading {}: {e}",
                    path.display()
                ))))
            }
        };
        #[cfg(unix)]
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    "the master key file is readable by other users; restrict it to mode 0600"
                );
            }
        }
        Self::from_base64(&contents).map_err(|e| match e {
            KeyError::InvalidMasterKey(why) => KeyFileError::Other(KeyError::InvalidMasterKey(
                format!("{}: {why}", path.display()),
            )),
            other => KeyFileError::Other(other),
        })
    }

    /// nonce (12 random bytes) || ciphertext+tag; `aad` binds the ciphertext to its use
    /// (e.g. the kid).
    pub fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let sealed = self.cipher().encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        );
        match sealed {
            Ok(ciphertext) => {
                let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&ciphertext);
                out
            }
            // AES-GCM only refuses plaintexts beyond 64 GiB. An empty result fails closed:
            // it never decrypts.
            Err(_) => {
                tracing::error!(len = plaintext.len(), "AES-GCM refused to encrypt");
                Vec::new()
            }
        }
    }

    pub fn decrypt(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, KeyError> {
        if sealed.len() < NONCE_LEN {
            return Err(KeyError::Decrypt);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        self.cipher()
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| KeyError::Decrypt)
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(self.0.expose_secret()))
    }
}

enum KeyFileError {
    Missing,
    Other(KeyError),
}

impl KeyFileError {
    fn into_key_error(self) -> KeyError {
        match self {
            KeyFileError::Missing => KeyError::Io("the key file vanished while opening".into()),
            KeyFileError::Other(e) => e,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlgorithm {
    EdDSA,
    ES256,
}

impl SigningAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlgorithm::EdDSA => "EdDSA",
            SigningAlgorithm::ES256 => "ES256",
        }
    }

    fn jwt(self) -> Algorithm {
        match self {
            SigningAlgorithm::EdDSA => Algorithm::EdDSA,
            SigningAlgorithm::ES256 => Algorithm::ES256,
        }
    }
}

impl fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SigningAlgorithm {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("EdDSA") {
            Ok(SigningAlgorithm::EdDSA)
        } else if s.eq_ignore_ascii_case("ES256") {
            Ok(SigningAlgorithm::ES256)
        } else {
            Err(KeyError::Crypto(format!(
                "unsupported signing algorithm {s:?} (expected EdDSA or ES256)"
            )))
        }
    }
}

/// The public half of a signing key, as its JWK coordinates (canonical base64url).
#[derive(Debug, Clone, PartialEq, Eq)]
enum PublicKey {
    Ed25519 { x: String },
    P256 { x: String, y: String },
}

impl PublicKey {
    fn ed25519(key: &ed25519_dalek::VerifyingKey) -> Self {
        PublicKey::Ed25519 {
            x: URL_SAFE_NO_PAD.encode(key.as_bytes()),
        }
    }

    fn p256(key: &p256::PublicKey) -> Result<Self, KeyError> {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let point = key.to_encoded_point(false);
        match (point.x(), point.y()) {
            (Some(x), Some(y)) => Ok(PublicKey::P256 {
                x: URL_SAFE_NO_PAD.encode(x),
                y: URL_SAFE_NO_PAD.encode(y),
            }),
            _ => Err(KeyError::Crypto("P-256 public key at infinity".into())),
        }
    }

    fn algorithm(&self) -> SigningAlgorithm {
        match self {
            PublicKey::Ed25519 { .. } => SigningAlgorithm::EdDSA,
            PublicKey::P256 { .. } => SigningAlgorithm::ES256,
        }
    }

    /// Reads and checks the coordinates of a stored JWK for `alg`.
    fn from_jwk(alg: SigningAlgorithm, jwk: &Value) -> Result<Self, KeyError> {
        let field = |name: &str| -> Result<Vec<u8>, KeyError> {
            let value = jwk
                .get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| KeyError::Crypto(format!("public JWK lacks {name:?}")))?;
            URL_SAFE_NO_PAD
                .decode(value)
                .map_err(|_| KeyError::Crypto(format!("public JWK {name:?} is not base64url")))
        };
        let member = |name: &str| jwk.get(name).and_then(Value::as_str).unwrap_or_default();
        match alg {
            SigningAlgorithm::EdDSA => {
                if member("kty") != "OKP" || member("crv") != "Ed25519" {
                    return Err(KeyError::Crypto("public JWK is not an Ed25519 key".into()));
                }
                let x: [u8; 32] = field("x")?
                    .as_slice()
                    .try_into()
                    .map_err(|_| KeyError::Crypto("Ed25519 public key is not 32 bytes".into()))?;
                let key = ed25519_dalek::VerifyingKey::from_bytes(&x)
                    .map_err(|_| KeyError::Crypto("invalid Ed25519 public key".into()))?;
                Ok(Self::ed25519(&key))
            }
            SigningAlgorithm::ES256 => {
                if member("kty") != "EC" || member("crv") != "P-256" {
                    return Err(KeyError::Crypto("public JWK is not a P-256 key".into()));
                }
                let (x, y) = (field("x")?, field("y")?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(KeyError::Crypto(
                        "P-256 coordinates are not 32 bytes".into(),
                    ));
                }
                let mut sec1 = Vec::with_capacity(65);
                sec1.push(0x04);
                sec1.extend_from_slice(&x);
                sec1.extend_from_slice(&y);
                let key = p256::PublicKey::from_sec1_bytes(&sec1)
                    .map_err(|_| KeyError::Crypto("P-256 point is not on the curve".into()))?;
                Self::p256(&key)
            }
        }
    }

    /// The RFC 7638 thumbprint input: required members only, sorted, no whitespace. The
    /// coordinates are base64url, so they need no JSON escaping.
    fn thumbprint_input(&self) -> String {
        match self {
            PublicKey::Ed25519 { x } => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#),
            PublicKey::P256 { x, y } => {
                format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#)
            }
        }
    }

    /// url-safe base64 of the first 16 bytes of the SHA-256 JWK thumbprint.
    fn kid(&self) -> String {
        let digest = Sha256::digest(self.thumbprint_input().as_bytes());
        URL_SAFE_NO_PAD.encode(&digest[..16])
    }

    fn to_jwk(&self, kid: &str) -> Value {
        let alg = self.algorithm().as_str();
        match self {
            PublicKey::Ed25519 { x } => json!({
                "kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": alg, "use": "sig",
            }),
            PublicKey::P256 { x, y } => json!({
                "kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": alg, "use": "sig",
            }),
        }
    }

    fn decoding_key(&self) -> Result<DecodingKey, KeyError> {
        match self {
            PublicKey::Ed25519 { x } => DecodingKey::from_ed_components(x),
            PublicKey::P256 { x, y } => DecodingKey::from_ec_components(x, y),
        }
        .map_err(|e| KeyError::Crypto(format!("public key: {e}")))
    }
}

/// Creates a key pair of `alg`, returning its PKCS#8 DER and public half.
fn new_key_pair(alg: SigningAlgorithm) -> Result<(Zeroizing<Vec<u8>>, PublicKey), KeyError> {
    match alg {
        SigningAlgorithm::EdDSA => {
            use ed25519_dalek::pkcs8::EncodePrivateKey;
            let key = ed25519_dalek::SigningKey::generate(&mut OsRng);
            let der = key
                .to_pkcs8_der()
                .map_err(|e| KeyError::Crypto(format!("encoding Ed25519 key: {e}")))?;
            Ok((
                Zeroizing::new(der.as_bytes().to_vec()),
                PublicKey::ed25519(&key.verifying_key()),
            ))
        }
        SigningAlgorithm::ES256 => {
            use p256::pkcs8::EncodePrivateKey;
            let key = p256::SecretKey::random(&mut OsRng);
            let der = key
                .to_pkcs8_der()
                .map_err(|e| KeyError::Crypto(format!("encoding P-256 key: {e}")))?;
            Ok((
                Zeroizing::new(der.as_bytes().to_vec()),
                PublicKey::p256(&key.public_key())?,
            ))
        }
    }
}

/// The public half of a PKCS#8 private key of `alg`.
fn public_of(alg: SigningAlgorithm, der: &[u8]) -> Result<PublicKey, KeyError> {
    match alg {
        SigningAlgorithm::EdDSA => {
            use ed25519_dalek::pkcs8::DecodePrivateKey;
            let key = ed25519_dalek::SigningKey::from_pkcs8_der(der)
                .map_err(|e| KeyError::Crypto(format!("decoding Ed25519 key: {e}")))?;
            Ok(PublicKey::ed25519(&key.verifying_key()))
        }
        SigningAlgorithm::ES256 => {
            use p256::pkcs8::DecodePrivateKey;
            let key = p256::SecretKey::from_pkcs8_der(der)
                .map_err(|e| KeyError::Crypto(format!("decoding P-256 key: {e}")))?;
            PublicKey::p256(&key.public_key())
        }
    }
}

/// A new key pair, private part sealed under the master key (aad = kid). kid: url-safe
/// base64 of the first 16 bytes of the RFC 7638 JWK thumbprint (SHA-256).
pub fn generate_signing_key(
    alg: SigningAlgorithm,
    master: &MasterKey,
    now: Timestamp,
) -> Result<SigningKeyRecord, KeyError> {
    let (der, public) = new_key_pair(alg)?;
    let kid = public.kid();
    Ok(SigningKeyRecord {
        private_key_ciphertext: master.encrypt(&der, kid.as_bytes()),
        public_jwk: public.to_jwk(&kid),
        algorithm: alg.as_str().to_owned(),
        kid,
        created_at: now,
        retired_at: None,
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub tid: String,
    pub sid: String,
    pub amr: Vec<String>,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("token invalid")]
    Invalid,
}

/// A key that verifies tokens.
#[derive(Clone)]
struct PublishedKey {
    kid: String,
    public: PublicKey,
    decoding: DecodingKey,
}

/// How the current key signs.
#[derive(Clone)]
enum Signer {
    Ed25519 {
        key: Box<ed25519_dalek::SigningKey>,
        /// The base64url JOSE header, the same for every token of this key.
        header: String,
    },
    Jose(EncodingKey),
}

/// The keys in use: the current signing key and every key still published.
#[derive(Clone)]
pub struct Keyring {
    current_kid: String,
    algorithm: SigningAlgorithm,
    signer: Signer,
    /// The current key first, then the others newest first.
    published: Vec<PublishedKey>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("current_kid", &self.current_kid)
            .field("algorithm", &self.algorithm)
            .field(
                "published",
                &self.published.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// From stored records (any order): current = newest with retired_at None (if none,
    /// newest overall); published = current + every key whose retired_at + token_ttl +
    /// 5 min grace > now (a key not retired at all stays published). Every key's sealed
    /// private half must open under `master` and match its public key: a key that does not
    /// is refused (the current one) or left out (the others), so a public key written
    /// straight into the database is never trusted.
    pub fn load(
        records: &[SigningKeyRecord],
        master: &MasterKey,
        token_ttl: TimeDelta,
        now: Timestamp,
    ) -> Result<Self, KeyError> {
        // Ties on created_at break on kid so that every node picks the same key.
        let newest = |a: &&SigningKeyRecord, b: &&SigningKeyRecord| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.kid.cmp(&b.kid))
        };
        let current = records
            .iter()
            .filter(|r| r.retired_at.is_none())
            .max_by(newest)
            .or_else(|| records.iter().max_by(newest))
            .ok_or_else(|| KeyError::Crypto("no signing key".into()))?;
        let algorithm: SigningAlgorithm = current.algorithm.parse()?;
        let current_public = checked_public(current)?;

        let der = Zeroizing::new(
            master
                .decrypt(&current.private_key_ciphertext, current.kid.as_bytes())
                .map_err(|_| {
                    KeyError::Crypto(format!(
                        "cannot decrypt signing key {} (wrong master key?)",
                        current.kid
                    ))
                })?,
        );
        if public_of(algorithm, &der)? != current_public {
            return Err(KeyError::Crypto(format!(
                "signing key {}: the private key does not match the published key",
                current.kid
            )));
        }
        let signer = match algorithm {
            SigningAlgorithm::EdDSA => {
                use ed25519_dalek::pkcs8::DecodePrivateKey;
                let key = ed25519_dalek::SigningKey::from_pkcs8_der(&der)
                    .map_err(|e| KeyError::Crypto(format!("signing key {}: {e}", current.kid)))?;
                let header = json!({"typ": ACCESS_TOKEN_TYP, "alg": "EdDSA", "kid": current.kid});
                Signer::Ed25519 {
                    key: Box::new(key),
                    header: URL_SAFE_NO_PAD.encode(header.to_string()),
                }
            }
            SigningAlgorithm::ES256 => Signer::Jose(EncodingKey::from_ec_der(&der)),
        };

        let mut others: Vec<&SigningKeyRecord> = records
            .iter()
            .filter(|r| r.kid != current.kid)
            .filter(|r| {
                r.retired_at
                    .is_none_or(|at| at + token_ttl + RETIRED_KEY_GRACE > now)
            })
            .collect();
        others.sort_by(|a, b| newest(b, a));
        let mut published = vec![PublishedKey {
            kid: current.kid.clone(),
            decoding: current_public.decoding_key()?,
            public: current_public,
        }];
        for record in others {
            if published.iter().any(|k| k.kid == record.kid) {
                continue;
            }
            // Only keys whose sealed private half opens under our master key and matches
            // are trusted: a public key written straight into the database is not ours.
            let public = match sealed_public(record, master) {
                Ok(public) => public,
                Err(e) => {
                    tracing::warn!(kid = %record.kid, error = %e, "ignoring a signing key that does not verify");
                    continue;
                }
            };
            published.push(PublishedKey {
                kid: record.kid.clone(),
                decoding: public.decoding_key()?,
                public,
            });
        }
        Ok(Self {
            current_kid: current.kid.clone(),
            algorithm,
            signer,
            published,
        })
    }

    /// The current key as jsonwebtoken's encoding key (tests sign foreign tokens with it).
    #[cfg(test)]
    fn test_encoding(&self) -> EncodingKey {
        match &self.signer {
            Signer::Ed25519 { key, .. } => {
                use ed25519_dalek::pkcs8::EncodePrivateKey;
                #[allow(clippy::unwrap_used)]
                let der = key.to_pkcs8_der().unwrap();
                EncodingKey::from_ed_der(der.as_bytes())
            }
            Signer::Jose(encoding) => encoding.clone(),
        }
    }

    pub fn current_kid(&self) -> &str {
        &self.current_kid
    }

    pub fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm
    }

    /// A compact JWT with header `kid`, `alg` and `typ: at+jwt`.
    pub fn sign(&self, claims: &AccessClaims) -> Result<String, KeyError> {
        match &self.signer {
            // Signed directly with the parsed key and a pre-encoded header: going through
            // jsonwebtoken re-derived the key pair from its seed for every token, which cost
            // as much as the signature itself (the token is the same compact JWS).
            Signer::Ed25519 { key, header } => {
                use ed25519_dalek::Signer as _;
                let payload = serde_json::to_vec(claims)
                    .map_err(|e| KeyError::Crypto(format!("encoding claims: {e}")))?;
                let mut token = String::with_capacity(header.len() + payload.len() * 4 / 3 + 100);
                token.push_str(header);
                token.push('.');
                URL_SAFE_NO_PAD.encode_string(payload, &mut token);
                let signature = key.sign(token.as_bytes());
                token.push('.');
                URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut token);
                Ok(token)
            }
            Signer::Jose(encoding) => {
                let header = Header {
                    typ: Some(ACCESS_TOKEN_TYP.to_owned()),
                    kid: Some(self.current_kid.clone()),
                    ..Header::new(self.algorithm.jwt())
                };
                jsonwebtoken::encode(&header, claims, encoding)
                    .map_err(|e| KeyError::Crypto(format!("signing a token: {e}")))
            }
        }
    }

    /// Verifies signature (by kid among published keys), exp (no leeway beyond 30 s),
    /// iss == expected_issuer, aud == expected_audience.
    pub fn verify(
        &self,
        token: &str,
        expected_issuer: &str,
        expected_audience: &str,
    ) -> Result<AccessClaims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        let typ_ok = header.typ.as_deref().is_some_and(|t| {
            t.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) || t.eq_ignore_ascii_case("application/at+jwt")
        });
        if !typ_ok {
            return Err(TokenError::Invalid);
        }
        let kid = header.kid.ok_or(TokenError::Invalid)?;
        let key = self
            .published
            .iter()
            .find(|k| k.kid == kid)
            .ok_or(TokenError::Invalid)?;
        let alg = key.public.algorithm().jwt();
        if header.alg != alg {
            return Err(TokenError::Invalid);
        }
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECONDS;
        validation.set_issuer(&[expected_issuer]);
        validation.set_audience(&[expected_audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        match jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &validation) {
            Ok(data) => Ok(data.claims),
            Err(e) if matches!(e.kind(), ErrorKind::ExpiredSignature) => Err(TokenError::Expired),
            Err(e) => {
                tracing::debug!(error = %e, kid, "access token rejected");
                Err(TokenError::Invalid)
            }
        }
    }

    /// `{"keys": [public JWKs with kid, alg, use "sig"]}`, the current key first.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .published
            .iter()
            .map(|k| k.public.to_jwk(&k.kid))
            .collect();
        json!({ "keys": keys })
    }
}

/// The public key of a stored record, checked against its algorithm and its kid (the kid
/// is the key's thumbprint, so a record whose JWK was altered is refused).
fn checked_public(record: &SigningKeyRecord) -> Result<PublicKey, KeyError> {
    let alg: SigningAlgorithm = record.algorithm.parse()?;
    let public = PublicKey::from_jwk(alg, &record.public_jwk)
        .map_err(|e| KeyError::Crypto(format!("signing key {}: {e}", record.kid)))?;
    if public.kid() != record.kid {
        return Err(KeyError::Crypto(format!(
            "signing key {}: the kid is not the thumbprint of its public key",
            record.kid
        )));
    }
    Ok(public)
}

/// The public key of a record, checked against its sealed private key.
fn sealed_public(record: &SigningKeyRecord, master: &MasterKey) -> Result<PublicKey, KeyError> {
    let public = checked_public(record)?;
    let alg: SigningAlgorithm = record.algorithm.parse()?;
    let der = Zeroizing::new(
        master
            .decrypt(&record.private_key_ciphertext, record.kid.as_bytes())
            .map_err(|_| KeyError::Crypto("the private key does not open".into()))?,
    );
    if public_of(alg, &der)? != public {
        return Err(KeyError::Crypto(
            "the private key does not match the published key".into(),
        ));
    }
    Ok(public)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISS: &str = "https://id.example.com/t/acme";
    const AUD: &str = "portcullis";

    fn now() -> Timestamp {
        domain::time::now()
    }

    fn claims(exp_in: i64) -> AccessClaims {
        let iat = chrono::Utc::now().timestamp();
        AccessClaims {
            iss: ISS.into(),
            sub: "0190f3a4-0000-7000-8000-000000000001".into(),
            aud: AUD.into(),
            tid: "0190f3a4-0000-7000-8000-000000000002".into(),
            sid: "0190f3a4-0000-7000-8000-000000000003".into(),
            amr: vec!["pwd".into(), "otp".into()],
            iat,
            exp: iat + exp_in,
            jti: "jti-1".into(),
        }
    }

    fn ring(alg: SigningAlgorithm) -> (Keyring, SigningKeyRecord, MasterKey) {
        let master = MasterKey::generate();
        let record = generate_signing_key(alg, &master, now()).unwrap();
        let ring = Keyring::load(
            std::slice::from_ref(&record),
            &master,
            TimeDelta::minutes(10),
            now(),
        )
        .unwrap();
        (ring, record, master)
    }

    /// Re-encodes a token's payload after changing it, keeping the original signature.
    fn tamper(token: &str, change: impl FnOnce(&mut Value)) -> String {
        let parts: Vec<&str> = token.split('.').collect();
        let mut payload: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        change(&mut payload);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap());
        format!("{}.{}.{}", parts[0], payload, parts[2])
    }

    #[test]
    fn sign_and_verify_round_trip_for_both_algorithms() {
        for alg in [SigningAlgorithm::EdDSA, SigningAlgorithm::ES256] {
            let (ring, record, _) = ring(alg);
            assert_eq!(ring.algorithm(), alg);
            assert_eq!(ring.current_kid(), record.kid);
            assert_eq!(record.algorithm, alg.as_str());
            assert_eq!(record.kid.len(), 22, "16 bytes of base64url");
            let c = claims(600);
            let token = ring.sign(&c).unwrap();
            let header = jsonwebtoken::decode_header(&token).unwrap();
            assert_eq!(header.kid.as_deref(), Some(record.kid.as_str()));
            assert_eq!(header.typ.as_deref(), Some("at+jwt"));
            assert_eq!(header.alg, alg.jwt());
            assert_eq!(ring.verify(&token, ISS, AUD), Ok(c));
        }
    }

    #[test]
    fn expired_tokens_are_reported_as_expired() {
        for alg in [SigningAlgorithm::EdDSA, SigningAlgorithm::ES256] {
            let (ring, _, _) = ring(alg);
            // Within the 30 s leeway the token still passes; beyond it, it does not.
            let token = ring.sign(&claims(-10)).unwrap();
            assert!(ring.verify(&token, ISS, AUD).is_ok());
            let token = ring.sign(&claims(-60)).unwrap();
            assert_eq!(ring.verify(&token, ISS, AUD), Err(TokenError::Expired));
        }
    }

    #[test]
    fn wrong_issuer_audience_or_tampering_is_invalid() {
        for alg in [SigningAlgorithm::EdDSA, SigningAlgorithm::ES256] {
            let (ring, _, _) = ring(alg);
            let token = ring.sign(&claims(600)).unwrap();
            assert_eq!(
                ring.verify(&token, "https://id.example.com/t/other", AUD),
                Err(TokenError::Invalid)
            );
            assert_eq!(
                ring.verify(&token, ISS, "someone-else"),
                Err(TokenError::Invalid)
            );
            let forged = tamper(&token, |p| p["sub"] = json!("admin"));
            assert_eq!(ring.verify(&forged, ISS, AUD), Err(TokenError::Invalid));
            // An expired token cannot be revived by editing `exp`.
            let expired = ring.sign(&claims(-3600)).unwrap();
            let revived = tamper(&expired, |p| {
                p["exp"] = json!(p["iat"].as_i64().unwrap() + 7200)
            });
            assert_eq!(ring.verify(&revived, ISS, AUD), Err(TokenError::Invalid));
            assert_eq!(ring.verify("not.a.jwt", ISS, AUD), Err(TokenError::Invalid));
            assert_eq!(ring.verify("", ISS, AUD), Err(TokenError::Invalid));
        }
    }

    #[test]
    fn tokens_of_unknown_keys_or_another_type_are_invalid() {
        let (ring_a, _, _) = ring(SigningAlgorithm::EdDSA);
        let (ring_b, _, _) = ring(SigningAlgorithm::EdDSA);
        let token = ring_b.sign(&claims(600)).unwrap();
        assert_eq!(ring_a.verify(&token, ISS, AUD), Err(TokenError::Invalid));

        // A JWT signed by the current key but without `typ: at+jwt` (e.g. an ID token).
        let header = Header {
            kid: Some(ring_a.current_kid().to_owned()),
            ..Header::new(Algorithm::EdDSA)
        };
        let other = jsonwebtoken::encode(&header, &claims(600), &ring_a.test_encoding()).unwrap();
        let mut typed = header.clone();
        typed.typ = Some("at+jwt".into());
        let control = jsonwebtoken::encode(&typed, &claims(600), &ring_a.test_encoding()).unwrap();
        assert!(ring_a.verify(&control, ISS, AUD).is_ok());
        assert_eq!(ring_a.verify(&other, ISS, AUD), Err(TokenError::Invalid));
    }

    #[test]
    fn a_planted_key_is_neither_published_nor_trusted() {
        let master = MasterKey::generate();
        let ttl = TimeDelta::minutes(10);
        let t0 = now();
        let ours = generate_signing_key(SigningAlgorithm::EdDSA, &master, t0).unwrap();
        // Someone with write access to the database adds a (retired) key of their own and
        // signs tokens with it.
        let attacker = MasterKey::generate();
        let mut planted = generate_signing_key(SigningAlgorithm::EdDSA, &attacker, t0).unwrap();
        let forged = Keyring::load(std::slice::from_ref(&planted), &attacker, ttl, t0)
            .unwrap()
            .sign(&claims(600))
            .unwrap();
        planted.retired_at = Some(t0);
        let ring = Keyring::load(&[ours.clone(), planted], &master, ttl, t0).unwrap();
        let kids: Vec<String> = ring.jwks()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(kids, vec![ours.kid.clone()]);
        assert_eq!(ring.verify(&forged, ISS, AUD), Err(TokenError::Invalid));
    }

    #[test]
    fn rotation_keeps_old_tokens_valid_until_they_expire() {
        let master = MasterKey::generate();
        let ttl = TimeDelta::minutes(10);
        let t0 = now();
        let mut old = generate_signing_key(SigningAlgorithm::EdDSA, &master, t0).unwrap();
        let before = Keyring::load(std::slice::from_ref(&old), &master, ttl, t0).unwrap();
        let old_token = before.sign(&claims(600)).unwrap();

        let t1 = t0 + TimeDelta::minutes(1);
        let new = generate_signing_key(SigningAlgorithm::ES256, &master, t1).unwrap();
        old.retired_at = Some(t1);
        let records = vec![old.clone(), new.clone()];

        let after = Keyring::load(&records, &master, ttl, t1).unwrap();
        assert_eq!(after.current_kid(), new.kid);
        assert_eq!(after.algorithm(), SigningAlgorithm::ES256);
        assert!(after.verify(&old_token, ISS, AUD).is_ok());
        let new_token = after.sign(&claims(600)).unwrap();
        assert!(after.verify(&new_token, ISS, AUD).is_ok());
        let kids = |r: &Keyring| -> Vec<String> {
            r.jwks()["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["kid"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(kids(&after), vec![new.kid.clone(), old.kid.clone()]);

        // Still published just before retired_at + ttl + grace…
        let almost = t1 + ttl + RETIRED_KEY_GRACE - TimeDelta::seconds(1);
        let later = Keyring::load(&records, &master, ttl, almost).unwrap();
        assert_eq!(kids(&later).len(), 2);
        // …and gone after it: its tokens are now unknown.
        let past = t1 + ttl + RETIRED_KEY_GRACE;
        let later = Keyring::load(&records, &master, ttl, past).unwrap();
        assert_eq!(kids(&later), vec![new.kid.clone()]);
        assert_eq!(later.verify(&old_token, ISS, AUD), Err(TokenError::Invalid));

        // With every key retired, the newest still signs.
        let mut all_retired = records.clone();
        all_retired[1].retired_at = Some(t1);
        let fallback = Keyring::load(&all_retired, &master, ttl, past).unwrap();
        assert_eq!(fallback.current_kid(), new.kid);
    }

    #[test]
    fn loading_refuses_a_wrong_master_key_or_an_altered_record() {
        let master = MasterKey::generate();
        let ttl = TimeDelta::minutes(10);
        let record = generate_signing_key(SigningAlgorithm::EdDSA, &master, now()).unwrap();
        let other = MasterKey::generate();
        assert!(Keyring::load(std::slice::from_ref(&record), &other, ttl, now()).is_err());
        assert!(Keyring::load(&[], &master, ttl, now()).is_err());

        // A public key swapped for another one no longer matches the kid.
        let stranger = generate_signing_key(SigningAlgorithm::EdDSA, &master, now()).unwrap();
        let mut swapped = record.clone();
        swapped.public_jwk = stranger.public_jwk.clone();
        assert!(Keyring::load(&[swapped], &master, ttl, now()).is_err());

        // A ciphertext moved to another kid does not decrypt (aad = kid).
        let mut moved = stranger.clone();
        moved.private_key_ciphertext = record.private_key_ciphertext.clone();
        assert!(Keyring::load(&[moved], &master, ttl, now()).is_err());
    }

    #[test]
    fn jwks_publishes_public_parts_only() {
        for alg in [SigningAlgorithm::EdDSA, SigningAlgorithm::ES256] {
            let (ring, record, _) = ring(alg);
            let jwks = ring.jwks();
            let keys = jwks["keys"].as_array().unwrap();
            assert_eq!(keys.len(), 1);
            let jwk = &keys[0];
            assert_eq!(jwk["kid"], json!(record.kid));
            assert_eq!(jwk["alg"], json!(alg.as_str()));
            assert_eq!(jwk["use"], json!("sig"));
            assert!(jwk.get("d").is_none());
            assert_eq!(jwk, &record.public_jwk);
            match alg {
                SigningAlgorithm::EdDSA => {
                    assert_eq!(
                        (jwk["kty"].clone(), jwk["crv"].clone()),
                        (json!("OKP"), json!("Ed25519"))
                    );
                }
                SigningAlgorithm::ES256 => {
                    assert_eq!(
                        (jwk["kty"].clone(), jwk["crv"].clone()),
                        (json!("EC"), json!("P-256"))
                    );
                    assert!(jwk["y"].is_string());
                }
            }
            // jsonwebtoken's own JWK parser accepts it.
            let parsed: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).unwrap();
            assert!(DecodingKey::from_jwk(&parsed).is_ok());
        }
    }

    #[test]
    fn kid_is_the_rfc7638_thumbprint() {
        // RFC 8037 appendix A.3: the thumbprint of the example Ed25519 key.
        let public = PublicKey::Ed25519 {
            x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into(),
        };
        let digest = Sha256::digest(public.thumbprint_input().as_bytes());
        assert_eq!(
            URL_SAFE_NO_PAD.encode(digest),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
        assert_eq!(public.kid(), URL_SAFE_NO_PAD.encode(&digest[..16]));
    }

    #[test]
    fn algorithm_names_parse_case_insensitively() {
        assert_eq!(
            "eddsa".parse::<SigningAlgorithm>().unwrap(),
            SigningAlgorithm::EdDSA
        );
        assert_eq!(
            "EdDSA".parse::<SigningAlgorithm>().unwrap(),
            SigningAlgorithm::EdDSA
        );
        assert_eq!(
            "es256".parse::<SigningAlgorithm>().unwrap(),
            SigningAlgorithm::ES256
        );
        assert!("RS256".parse::<SigningAlgorithm>().is_err());
        assert_eq!(SigningAlgorithm::ES256.to_string(), "ES256");
    }

    #[test]
    fn master_key_seals_and_opens() {
        let key = MasterKey::generate();
        let sealed = key.encrypt(b"secret", b"kid-1");
        assert_eq!(sealed.len(), NONCE_LEN + 6 + 16);
        assert_eq!(key.decrypt(&sealed, b"kid-1").unwrap(), b"secret");
        // Fresh nonce each time.
        assert_ne!(key.encrypt(b"secret", b"kid-1"), sealed);
        assert!(matches!(
            key.decrypt(&sealed, b"kid-2"),
            Err(KeyError::Decrypt)
        ));
        assert!(matches!(
            MasterKey::generate().decrypt(&sealed, b"kid-1"),
            Err(KeyError::Decrypt)
        ));
        let mut flipped = sealed.clone();
        flipped[NONCE_LEN] ^= 1;
        assert!(matches!(
            key.decrypt(&flipped, b"kid-1"),
            Err(KeyError::Decrypt)
        ));
        assert!(matches!(
            key.decrypt(&sealed[..5], b"kid-1"),
            Err(KeyError::Decrypt)
        ));
    }

    #[test]
    fn master_key_base64_forms() {
        let key = MasterKey::generate();
        let encoded = key.to_base64().expose_secret().to_owned();
        let again = MasterKey::from_base64(&encoded).unwrap();
        let sealed = key.encrypt(b"x", b"");
        assert_eq!(again.decrypt(&sealed, b"").unwrap(), b"x");

        let bytes: Vec<u8> = (0u8..32)
            .map(|i| i.wrapping_mul(37).wrapping_add(250))
            .collect();
        let forms = [
            STANDARD.encode(&bytes),
            base64::engine::general_purpose::URL_SAFE.encode(&bytes),
            URL_SAFE_NO_PAD.encode(&bytes),
            format!("  {}\n", STANDARD.encode(&bytes)),
        ];
        for form in forms {
            let key = MasterKey::from_base64(&form).unwrap();
            assert_eq!(key.to_base64().expose_secret(), STANDARD.encode(&bytes));
        }
        assert!(matches!(
            MasterKey::from_base64(&STANDARD.encode([0u8; 16])),
            Err(KeyError::InvalidMasterKey(_))
        ));
        assert!(MasterKey::from_base64("not base64!").is_err());
        assert_eq!(format!("{key:?}"), "MasterKey(..)");
    }

    #[test]
    fn load_or_create_creates_then_reads_the_same_key() {
        let dir = std::env::temp_dir().join(format!("portcullis-keys-{}", uuid::Uuid::now_v7()));
        let path = dir.join("nested").join("master.key");
        let created = MasterKey::load_or_create(&path).unwrap();
        let loaded = MasterKey::load_or_create(&path).unwrap();
        assert_eq!(
            created.to_base64().expose_secret(),
            loaded.to_base64().expose_secret()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "garbage").unwrap();
        assert!(matches!(
            MasterKey::load_or_create(&path),
            Err(KeyError::InvalidMasterKey(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[derive(Debug, Serialize, Deserialize)]
    struct Custom {
        tid: String,
        sid: String,
        amr: Vec<String>,
    }

    /// Our tokens verify with an independent JWT implementation, using only the JWKS.
    #[test]
    fn jwt_simple_verifies_our_tokens_from_the_jwks() {
        use jwt_simple::prelude::*;

        for alg in [SigningAlgorithm::EdDSA, SigningAlgorithm::ES256] {
            let (ring, record, _) = ring(alg);
            let c = claims(600);
            let token = ring.sign(&c).unwrap();
            let jwks = ring.jwks();
            let jwk = &jwks["keys"][0];
            let coord = |name: &str| URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap()).unwrap();
            let options = VerificationOptions {
                allowed_issuers: Some(HashSet::from([ISS.to_owned()])),
                allowed_audiences: Some(HashSet::from([AUD.to_owned()])),
                required_key_id: Some(record.kid.clone()),
                ..Default::default()
            };
            let verified: JWTClaims<Custom> = match alg {
                SigningAlgorithm::EdDSA => Ed25519PublicKey::from_bytes(&coord("x"))
                    .unwrap()
                    .verify_token::<Custom>(&token, Some(options))
                    .unwrap(),
                SigningAlgorithm::ES256 => {
                    let mut sec1 = vec![0x04];
                    sec1.extend(coord("x"));
                    sec1.extend(coord("y"));
                    ES256PublicKey::from_bytes(&sec1)
                        .unwrap()
                        .verify_token::<Custom>(&token, Some(options))
                        .unwrap()
                }
            };
            assert_eq!(verified.issuer.as_deref(), Some(ISS));
            assert_eq!(verified.subject.as_deref(), Some(c.sub.as_str()));
            assert_eq!(verified.jwt_id.as_deref(), Some(c.jti.as_str()));
            assert_eq!(verified.expires_at.map(|t| t.as_secs()), Some(c.exp as u64));
            assert_eq!(verified.issued_at.map(|t| t.as_secs()), Some(c.iat as u64));
            assert!(verified
                .audiences
                .unwrap()
                .contains(&HashSet::from([AUD.to_owned()])));
            assert_eq!(verified.custom.tid, c.tid);
            assert_eq!(verified.custom.sid, c.sid);
            assert_eq!(verified.custom.amr, c.amr);

            // And it rejects a tampered one.
            let forged = tamper(&token, |p| p["tid"] = json!("another-tenant"));
            let rejected = match alg {
                SigningAlgorithm::EdDSA => Ed25519PublicKey::from_bytes(&coord("x"))
                    .unwrap()
                    .verify_token::<Custom>(&forged, None)
                    .is_err(),
                SigningAlgorithm::ES256 => {
                    let mut sec1 = vec![0x04];
                    sec1.extend(coord("x"));
                    sec1.extend(coord("y"));
                    ES256PublicKey::from_bytes(&sec1)
                        .unwrap()
                        .verify_token::<Custom>(&forged, None)
                        .is_err()
                }
            };
            assert!(rejected);
        }
    }
}
