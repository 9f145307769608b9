//! Time-based one-time passwords (RFC 6238, HMAC-SHA-1, 6 digits, 30 s steps: what every
//! authenticator app supports), the enrolment QR code and recovery codes.
//!
//! HOTP is computed here with `hmac` + `sha1` rather than through `totp-rs`, whose
//! constructor signature changes with its `otpauth` feature (so another crate enabling it
//! would break this one) and which copies the secret into a struct it does not zeroize.

use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::{Rng, RngCore};
use sha1::Sha1;
use subtle::ConstantTimeEq;

/// Seconds per step.
pub const PERIOD: u64 = 30;
/// Digits per code.
pub const DIGITS: usize = 6;
/// Length of a new secret: 160 bits, the HMAC-SHA-1 block output RFC 4226 recommends.
const SECRET_LEN: usize = 20;
/// How many recovery codes an enrolment gets.
const RECOVERY_CODES: usize = 10;
/// Characters per recovery code (5 bits each: 50 bits).
const RECOVERY_CODE_CHARS: usize = 10;
/// Crockford's base32 alphabet: digits and lowercase letters without i, l, o and u, so
/// that nothing in a code can be misread (the look-alikes are mapped back on input).
const RECOVERY_ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// 20 random bytes.
pub fn generate_secret() -> Vec<u8> {
    let mut secret = vec![0u8; SECRET_LEN];
    OsRng.fill_bytes(&mut secret);
    secret
}

/// `otpauth://totp/Issuer:account?secret=BASE32&issuer=Issuer&algorithm=SHA1&digits=6&period=30`,
/// issuer and account percent-encoded (a `:` inside either is encoded too, so the label
/// stays unambiguous).
pub fn otpauth_uri(secret: &[u8], issuer: &str, account: &str) -> String {
    let issuer = percent_encode(issuer);
    format!(
        "otpauth://totp/{issuer}:{account}?secret={secret}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={PERIOD}",
        account = percent_encode(account),
        secret = base32(secret),
    )
}

/// An SVG document showing `data` as a QR code, with a `<title>` for screen readers. The
/// XML declaration is left out so that the document can also be inlined into HTML.
pub fn qr_svg(data: &str) -> Result<String, String> {
    use qrcode::render::svg;
    let code = qrcode::QrCode::with_error_correction_level(data.as_bytes(), qrcode::EcLevel::M)
        .map_err(|e| format!("cannot encode a QR code: {e}"))?;
    let rendered = code
        .render::<svg::Color<'_>>()
        .min_dimensions(200, 200)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .build();
    let start = rendered
        .find("<svg")
        .ok_or_else(|| "unexpected SVG output".to_owned())?;
    let svg = &rendered[start..];
    let open_end = svg
        .find('>')
        .ok_or_else(|| "unexpected SVG output".to_owned())?;
    let (open, rest) = svg.split_at(open_end);
    let open = open.trim_end_matches('/');
    Ok(format!(
        r#"{open} role="img"><title>QR code to add this account to an authenticator app</title>{}"#,
        &rest[1..]
    ))
}

/// The step (unix time / 30) of the code if it matches the step of `unix_time` or one
/// either side; constant-time comparison; input that is not six digits (spaces aside, as
/// apps show "123 456") → None. The caller rejects a step not after the last one used.
pub fn verify_code(secret: &[u8], code: &str, unix_time: u64) -> Option<i64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let current = i64::try_from(unix_time / PERIOD).ok()?;
    let mut found = None;
    // The current step first, then the previous one (a code typed just before the change).
    for step in [current, current - 1, current + 1] {
        if step < 0 {
            continue;
        }
        let matches: bool = code_at(secret, step)
            .as_bytes()
            .ct_eq(code.as_bytes())
            .into();
        if matches && found.is_none() {
            found = Some(step);
        }
    }
    found
}

/// The six-digit code of `step`.
pub fn code_at(secret: &[u8], step: i64) -> String {
    hotp(secret, u64::try_from(step).unwrap_or(0), DIGITS)
}

/// RFC 4226 HOTP with dynamic truncation.
fn hotp(secret: &[u8], counter: u64, digits: usize) -> String {
    // HMAC accepts keys of any length, so this never fails; an empty result matches nothing.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(&counter.to_be_bytes());
    let hash = mac.finalize().into_bytes();
    let offset = usize::from(hash[hash.len() - 1] & 0x0f);
    let binary = u32::from_be_bytes([
        hash[offset] & 0x7f,
        hash[offset + 1],
        hash[offset + 2],
        hash[offset + 3],
    ]);
    let modulus = 10u64.pow(u32::try_from(digits).unwrap_or(6));
    format!("{:0digits$}", u64::from(binary) % modulus)
}

/// Ten recovery codes like "k3f9q-7xw2m".
pub fn generate_recovery_codes() -> Vec<String> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let chars: String = (0..RECOVERY_CODE_CHARS)
                .map(|_| char::from(RECOVERY_ALPHABET[OsRng.gen_range(0..RECOVERY_ALPHABET.len())]))
                .collect();
            let (a, b) = chars.split_at(RECOVERY_CODE_CHARS / 2);
            format!("{a}-{b}")
        })
        .collect()
}

/// Normalises user input (trim, lowercase, remove spaces and dashes, read the look-alikes
/// o → 0 and i, l → 1, then put the dash back in the middle) so the hash lookup matches.
/// Input of the wrong length comes back without a dash and matches no code.
pub fn normalize_recovery_code(input: &str) -> String {
    let chars: String = input
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            'o' => '0',
            'i' | 'l' => '1',
            other => other,
        })
        .collect();
    if chars.chars().count() == RECOVERY_CODE_CHARS && chars.is_ascii() {
        let (a, b) = chars.split_at(RECOVERY_CODE_CHARS / 2);
        format!("{a}-{b}")
    } else {
        chars
    }
}

/// RFC 4648 base32, upper case, without padding (as authenticator apps expect it).
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity((bytes.len() * 8).div_ceil(5));
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    for &byte in bytes {
        buffer = ((buffer << 8) | u32::from(byte)) & 0xfff;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for byte in s.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_SECRET: &[u8] = b"12345678901234567890";
    /// RFC 6238 appendix B, SHA-1.
    const RFC_VECTORS: [(u64, &str); 5] = [
        (59, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
    ];

    #[test]
    fn rfc6238_test_vectors() {
        for (time, expected) in RFC_VECTORS {
            assert_eq!(hotp(RFC_SECRET, time / PERIOD, 8), expected, "t = {time}");
            let step = i64::try_from(time / PERIOD).unwrap();
            assert_eq!(code_at(RFC_SECRET, step), expected[2..], "t = {time}");
            assert_eq!(verify_code(RFC_SECRET, &expected[2..], time), Some(step));
        }
    }

    #[test]
    fn rfc4226_test_vectors() {
        let expected = ["755224", "287082", "359152", "969429", "338314"];
        for (counter, code) in expected.iter().enumerate() {
            assert_eq!(hotp(RFC_SECRET, counter as u64, 6), *code);
        }
    }

    #[test]
    fn one_step_either_side_is_accepted() {
        let secret = generate_secret();
        let time = 1_700_000_000u64;
        let step = i64::try_from(time / PERIOD).unwrap();
        for delta in [-1i64, 0, 1] {
            let code = code_at(&secret, step + delta);
            assert_eq!(verify_code(&secret, &code, time), Some(step + delta));
        }
        for delta in [-2i64, 2] {
            let code = code_at(&secret, step + delta);
            // A far code could collide with a near one by chance (1e-6); rule that out.
            let near: Vec<String> = (-1..=1).map(|d| code_at(&secret, step + d)).collect();
            if !near.contains(&code) {
                assert_eq!(verify_code(&secret, &code, time), None);
            }
        }
        assert_eq!(
            verify_code(&secret, &code_at(&other_secret(&secret), step), time),
            None
        );
    }

    fn other_secret(secret: &[u8]) -> Vec<u8> {
        secret.iter().map(|b| b ^ 0xff).collect()
    }

    #[test]
    fn malformed_codes_are_refused() {
        let time = 59;
        assert_eq!(verify_code(RFC_SECRET, "287 082", time), Some(1));
        for bad in [
            "",
            "28708",
            "2870820",
            "28708a",
            "94287082",
            "-28708",
            "２８７０８２",
        ] {
            assert_eq!(verify_code(RFC_SECRET, bad, time), None, "{bad:?}");
        }
        // Time zero has no previous step.
        assert_eq!(verify_code(RFC_SECRET, &code_at(RFC_SECRET, 0), 0), Some(0));
    }

    #[test]
    fn secrets_are_random_and_twenty_bytes() {
        let (a, b) = (generate_secret(), generate_secret());
        assert_eq!(a.len(), 20);
        assert_ne!(a, b);
    }

    #[test]
    fn base32_matches_rfc4648() {
        let vectors = [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ];
        for (input, expected) in vectors {
            assert_eq!(base32(input.as_bytes()), expected);
        }
        assert_eq!(base32(RFC_SECRET), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
    }

    #[test]
    fn otpauth_uri_is_encoded() {
        let uri = otpauth_uri(RFC_SECRET, "Acme Corp: EU", "jo+test@example.com");
        assert_eq!(
            uri,
            "otpauth://totp/Acme%20Corp%3A%20EU:jo%2Btest%40example.com\
             ?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Acme%20Corp%3A%20EU\
             &algorithm=SHA1&digits=6&period=30"
        );
    }

    #[test]
    fn qr_code_is_an_svg_document() {
        let svg = qr_svg(&otpauth_uri(&generate_secret(), "Acme", "jo@example.com")).unwrap();
        assert!(svg.starts_with("<?xml") || svg.starts_with("<svg"));
        assert!(svg.starts_with(r#"<svg xmlns="http://www.w3.org/2000/svg""#));
        assert!(svg.contains(r#" role="img"><title>"#));
        assert!(svg.contains("<path"));
        assert!(svg.trim_end().ends_with("</svg>"));
        // Far too much data for any QR version.
        assert!(qr_svg(&"x".repeat(5000)).is_err());
    }

    #[test]
    fn recovery_codes_have_the_documented_shape() {
        let codes = generate_recovery_codes();
        assert_eq!(codes.len(), 10);
        let unique: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(unique.len(), 10);
        for code in &codes {
            assert_eq!(code.len(), 11);
            assert_eq!(&code[5..6], "-");
            assert!(code
                .bytes()
                .filter(|b| *b != b'-')
                .all(|b| RECOVERY_ALPHABET.contains(&b)));
            assert_eq!(normalize_recovery_code(code), *code);
        }
    }

    #[test]
    fn recovery_code_input_is_normalised() {
        assert_eq!(normalize_recovery_code(" K3F9Q-7XW2M \n"), "k3f9q-7xw2m");
        assert_eq!(normalize_recovery_code("k3f9q7xw2m"), "k3f9q-7xw2m");
        assert_eq!(normalize_recovery_code("k3f 9q7 xw2m"), "k3f9q-7xw2m");
        assert_eq!(normalize_recovery_code("kOf9q-lxwIm"), "k0f9q-1xw1m");
        assert_eq!(normalize_recovery_code("abc12"), "abc12");
        assert_eq!(normalize_recovery_code("k3f9q-7xw2m-x"), "k3f9q7xw2mx");
    }
}
