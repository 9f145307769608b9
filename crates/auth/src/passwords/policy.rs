//! The per-tenant password policy: length, strength estimate (zxcvbn, whose dictionaries are
//! compiled into the crate) and no personal data. Password history needs the stored hashes
//! and is checked through [`super::PasswordHasher::matches_any`].

use domain::auth::{PasswordPolicy, MAX_PASSWORD_LENGTH};

/// Fragments of personal data shorter than this are not refused (a two-letter username
/// would otherwise forbid half the dictionary); zxcvbn still penalises them.
const MIN_FRAGMENT_CHARS: usize = 4;

/// Policy check. `user_inputs` are the user's email, its local part, username and name words.
/// Returns every violation as (code, message): codes `too_short`, `too_long`, `too_weak`
/// (message includes zxcvbn's feedback warning/suggestion if any), `contains_user_data`.
pub fn check_policy(
    policy: &PasswordPolicy,
    password: &str,
    user_inputs: &[&str],
) -> Vec<(&'static str, String)> {
    let mut violations = Vec::new();
    let length = password.chars().count();
    let min_length = usize::try_from(policy.min_length).unwrap_or(usize::MAX);
    let max_length =
        usize::try_from(policy.max_length.min(MAX_PASSWORD_LENGTH)).unwrap_or(usize::MAX);
    if length < min_length {
        violations.push((
            "too_short",
            format!("must be at least {min_length} characters long"),
        ));
    }
    if length > max_length {
        violations.push((
            "too_long",
            format!("must be at most {max_length} characters long"),
        ));
    }
    if policy.min_strength > 0 {
        let inputs: Vec<&str> = user_inputs
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect();
        let estimate = zxcvbn::zxcvbn(password, &inputs);
        let score = u8::from(estimate.score());
        if score < policy.min_strength {
            let mut message = format!(
                "is too easy to guess (strength {score} of 4, at least {} required).",
                policy.min_strength
            );
            if let Some(feedback) = estimate.feedback() {
                if let Some(warning) = feedback.warning() {
                    message.push_str(&format!(" {warning}"));
                }
                for suggestion in feedback.suggestions() {
                    message.push_str(&format!(" {suggestion}"));
                }
            }
            violations.push(("too_weak", message));
        }
    }
    if contains_user_data(password, user_inputs) {
        violations.push((
            "contains_user_data",
            "must not contain your name, username or email address".to_owned(),
        ));
    }
    violations
}

/// Whether `password` contains, ignoring case, an email local part (whole or one of its
/// dot/dash/underscore/plus-separated words), a username or a name word of at least
/// [`MIN_FRAGMENT_CHARS`] characters. Email domains are not personal (everyone at a company
/// shares one) and are ignored.
fn contains_user_data(password: &str, user_inputs: &[&str]) -> bool {
    let password = password.to_lowercase();
    let mut fragments: Vec<String> = Vec::new();
    for input in user_inputs {
        let input = input.trim().to_lowercase();
        let personal = match input.rsplit_once('@') {
            Some((local, _domain)) => local.to_owned(),
            None => input,
        };
        fragments.extend(
            personal
                .split(|c: char| c.is_whitespace() || matches!(c, '.' | '-' | '_' | '+'))
                .map(str::to_owned),
        );
        fragments.push(personal);
    }
    fragments
        .iter()
        .filter(|f| f.chars().count() >= MIN_FRAGMENT_CHARS)
        .any(|f| password.contains(f.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(policy: &PasswordPolicy, password: &str, inputs: &[&str]) -> Vec<&'static str> {
        check_policy(policy, password, inputs)
            .into_iter()
            .map(|(code, _)| code)
            .collect()
    }

    const ALICE: &[&str] = &[
        "alice.liddell@example.org",
        "alice.liddell",
        "wonderland",
        "Alice",
        "Liddell",
    ];

    #[test]
    fn strong_random_passphrase_passes() {
        let policy = PasswordPolicy::default();
        assert_eq!(
            check_policy(&policy, "quartz lantern osprey mandolin 7", ALICE),
            Vec::<(&str, String)>::new()
        );
    }

    #[test]
    fn too_short_counts_characters_not_bytes() {
        let policy = PasswordPolicy {
            min_strength: 0,
            ..PasswordPolicy::default()
        };
        // Eleven characters, twenty-two bytes.
        assert_eq!(codes(&policy, "ééééééééééé", &[]), ["too_short"]);
        assert!(codes(&policy, "éééééééééééé", &[]).is_empty());
        let messages = check_policy(&policy, "short", &[]);
        assert_eq!(messages[0].1, "must be at least 12 characters long");
    }

    #[test]
    fn too_long_follows_the_policy_and_the_hard_cap() {
        let policy = PasswordPolicy {
            max_length: 20,
            min_strength: 0,
            ..PasswordPolicy::default()
        };
        assert_eq!(codes(&policy, &"k".repeat(21), &[]), ["too_long"]);
        assert!(codes(&policy, &"k".repeat(20), &[]).is_empty());
        // A policy cannot raise the ceiling past 128.
        let loose = PasswordPolicy {
            max_length: 500,
            min_strength: 0,
            ..PasswordPolicy::default()
        };
        assert_eq!(codes(&loose, &"ü".repeat(129), &[]), ["too_long"]);
        assert!(codes(&loose, &"ü".repeat(128), &[]).is_empty());
    }

    #[test]
    fn common_password_is_too_weak_with_feedback() {
        let policy = PasswordPolicy::default();
        let violations = check_policy(&policy, "password123456", &[]);
        let weak = violations
            .iter()
            .find(|(code, _)| *code == "too_weak")
            .unwrap();
        assert!(weak.1.starts_with("is too easy to guess"), "{}", weak.1);
        // zxcvbn's own warning and suggestion are passed on.
        assert!(
            weak.1.contains("similar to a commonly used password"),
            "{}",
            weak.1
        );
        assert!(weak.1.contains("Add another word or two"), "{}", weak.1);
        // Strength 0 disables the estimate.
        let lax = PasswordPolicy {
            min_strength: 0,
            ..PasswordPolicy::default()
        };
        assert!(codes(&lax, "password123456", &[]).is_empty());
    }

    #[test]
    fn user_inputs_feed_the_estimate() {
        // Strong on its own (zxcvbn scores it 4), weak once zxcvbn knows the user's words.
        let policy = PasswordPolicy::default();
        let password = "mandelbrotvoxel";
        assert!(!codes(&policy, password, &[]).contains(&"too_weak"));
        let with_inputs = codes(&policy, password, &["mandelbrot", "voxel"]);
        assert!(with_inputs.contains(&"too_weak"), "{with_inputs:?}");
    }

    #[test]
    fn email_local_part_username_and_names_are_refused() {
        let policy = PasswordPolicy {
            min_strength: 0,
            ..PasswordPolicy::default()
        };
        for password in [
            "my-ALICE.LIDDELL-rocks-99",
            "xx Wonderland forever 1865",
            "liddell-is-my-surname",
            "call me aLiCe, please now",
        ] {
            assert_eq!(
                codes(&policy, password, ALICE),
                ["contains_user_data"],
                "{password}"
            );
        }
        // The domain is not personal, and short fragments are let through.
        assert!(codes(&policy, "example.org staff member 42", ALICE).is_empty());
        assert!(codes(&policy, "bo is fine in a long phrase", &["bo@x.io", "bo"]).is_empty());
        // Parts of the local part count on their own.
        assert_eq!(
            codes(
                &policy,
                "guess who: jsmith2024!",
                &["j.smith-jsmith2024@corp.io"]
            ),
            ["contains_user_data"]
        );
    }

    #[test]
    fn every_violation_is_reported() {
        let policy = PasswordPolicy::default();
        assert_eq!(
            codes(&policy, "alice", ALICE),
            ["too_short", "too_weak", "contains_user_data"]
        );
    }
}
