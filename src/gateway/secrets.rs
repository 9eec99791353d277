//! Scrubbing secrets out of text that came from outside. Providers sometimes echo the key they
//! were sent in an error ("Incorrect API key provided: sk-…"); that text is kept in breaker
//! state, written to logs and returned to clients, so every upstream error message passes
//! through [`scrub`] first: the configured keys themselves, and anything shaped like a key.

/// What a removed secret is replaced with.
const REDACTED: &str = "[redacted]";

/// Prefixes of the API keys and tokens that providers and code hosts hand out.
const KEY_PREFIXES: &[&str] = &[
    "sk-",
    "sk_",
    "pk-",
    "rk-",
    "AIza",
    "xai-",
    "gsk_",
    "hf_",
    "ghp_",
    "gho_",
    "github_pat_",
    "glpat-",
    "r8_",
    "nvapi-",
    "fw_",
    "pplx-",
    "csk-",
    "ya29.",
];

/// `text` without `keys` (each at least 8 characters) and without words shaped like keys: a
/// known key prefix followed by 12 or more key characters, or a run of 32 or more key
/// characters that mixes letters and digits.
pub fn scrub(text: &str, keys: &[String]) -> String {
    let mut out = text.to_string();
    for key in keys.iter().filter(|k| k.len() >= 8) {
        if out.contains(key.as_str()) {
            out = out.replace(key.as_str(), REDACTED);
        }
    }
    if !out.bytes().any(|b| b.is_ascii_alphanumeric()) {
        return out;
    }
    let mut result = String::with_capacity(out.len());
    let mut word_start: Option<usize> = None;
    // A sentence's full stop is not part of the key before it.
    let flush = |result: &mut String, word: &str| {
        let key = word.trim_end_matches('.');
        if looks_like_key(key) {
            result.push_str(REDACTED);
            result.push_str(&word[key.len()..]);
        } else {
            result.push_str(word);
        }
    };
    for (i, c) in out.char_indices() {
        if is_key_char(c) {
            word_start.get_or_insert(i);
            continue;
        }
        if let Some(start) = word_start.take() {
            flush(&mut result, &out[start..i]);
        }
        result.push(c);
    }
    if let Some(start) = word_start {
        flush(&mut result, &out[start..]);
    }
    result
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

fn looks_like_key(word: &str) -> bool {
    if let Some(prefix) = KEY_PREFIXES.iter().find(|p| word.starts_with(**p)) {
        return word.len() >= prefix.len() + 12;
    }
    word.len() >= 32
        && word.bytes().any(|b| b.is_ascii_digit())
        && word.bytes().any(|b| b.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_keys_and_key_shaped_words_are_removed_and_prose_is_kept() {
        let keys = vec!["my-own-secret-key-1".to_string(), "short".to_string()];
        let text = "Incorrect API key provided: sk-proj-abcdefghijklmnop1234. \
                    You passed my-own-secret-key-1 and AIzaSyA1234567890abcdefghijklmnopqrs; \
                    see https://platform.example.com/account/api-keys. short is fine.";
        let out = scrub(text, &keys);
        for secret in [
            "sk-proj-abcdefghijklmnop1234",
            "my-own-secret-key-1",
            "AIzaSyA1234567890abcdefghijklmnopqrs",
        ] {
            assert!(!out.contains(secret), "{out}");
        }
        assert!(
            out.contains("Incorrect API key provided: [redacted]."),
            "{out}"
        );
        assert!(
            out.contains("https://platform.example.com/account/api-keys"),
            "{out}"
        );
        assert!(out.contains("short is fine"), "{out}");
        assert_eq!(
            scrub("model gpt-4o-mini-2024-07-18 not found", &[]),
            "model gpt-4o-mini-2024-07-18 not found"
        );
        assert_eq!(
            scrub("a 1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a token", &[]),
            "a [redacted] token"
        );
    }
}
