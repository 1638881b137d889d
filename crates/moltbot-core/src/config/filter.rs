//! `[model.filter]`: the response filter that checks every model reply before it reaches the
//! user (empty replies, repetition loops, a leaked system prompt, broken tool-call JSON,
//! blocked terms). The checks themselves live in `moltbot_models::filter`.

use super::{in_range, ConfigError};
use serde::{Deserialize, Serialize};

/// What the user sees when a reply is rejected and cannot be repaired.
pub const DEFAULT_FALLBACK_MESSAGE: &str =
    "Sorry, I could not produce a good answer to that. Please rephrase or try again.";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    /// Check model replies at all. Off: replies pass exactly as the provider sends them.
    pub enabled: bool,
    /// Words or phrases a reply must not contain: case-insensitive, whole words only
    /// ("kill" does not match "skill"), any whitespace between the words of a phrase.
    pub blocked_terms: Vec<String>,
    /// Regular expressions (Rust `regex` syntax) a reply must not match, case-insensitive.
    pub blocked_patterns: Vec<String>,
    /// Also block a small built-in list of phrases no assistant should say to a user
    /// (urging self-harm, death threats), in English, German and Chinese.
    pub builtin_terms: bool,
    /// Sent instead of a reply that is rejected (empty, unsafe, nothing left after repair).
    pub fallback_message: String,
    /// Shortest span of the system prompt, in characters after folding case, whitespace and
    /// punctuation, that counts as leaked when a reply repeats it word for word.
    pub min_leak_chars: usize,
}

impl Default for FilterConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            blocked_terms: Vec::new(),
            blocked_patterns: Vec::new(),
            builtin_terms: true,
            fallback_message: DEFAULT_FALLBACK_MESSAGE.to_string(),
            min_leak_chars: 40,
        }
    }
}

impl FilterConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (index, term) in self.blocked_terms.iter().enumerate() {
            if term.trim().is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "model.filter.blocked_terms[{index}] must not be blank, got {term:?}"
                )));
            }
        }
        for (index, pattern) in self.blocked_patterns.iter().enumerate() {
            match regex::RegexBuilder::new(pattern)
                .case_insensitive(true)
                .build()
            {
                Err(e) => {
                    return Err(ConfigError::Invalid(format!(
                        "model.filter.blocked_patterns[{index}] is not a valid regular \
                         expression: {pattern:?}\n{e}"
                    )))
                }
                Ok(re) if re.is_match("") => {
                    return Err(ConfigError::Invalid(format!(
                        "model.filter.blocked_patterns[{index}] matches the empty text, got \
                         {pattern:?}\nhint: it would block every reply"
                    )))
                }
                Ok(_) => {}
            }
        }
        if self.fallback_message.trim().is_empty() {
            return Err(ConfigError::Invalid(
                "model.filter.fallback_message must not be blank, got \"\"".into(),
            ));
        }
        in_range(
            "model.filter.min_leak_chars",
            self.min_leak_chars,
            16,
            10_000,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn load(toml: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("moltbot.toml");
        std::fs::write(&path, toml).map_err(|e| e.to_string())?;
        Config::load_with_env(Some(&path), &[]).map_err(|e| e.to_string())
    }

    #[test]
    fn bad_pattern_names_the_field_and_the_value() {
        let err = load("[model.filter]\nblocked_patterns = [\"ok\", \"(unclosed\"]\n").unwrap_err();
        assert!(err.contains("model.filter.blocked_patterns[1]"), "{err}");
        assert!(err.contains("(unclosed"), "{err}");
    }

    #[test]
    fn filter_keys_load_and_unknown_keys_are_errors() {
        let cfg = load(
            "[model.filter]\nenabled = false\nblocked_terms = [\"darn\"]\nmin_leak_chars = 60\n",
        )
        .unwrap();
        assert!(!cfg.model.filter.enabled);
        assert_eq!(cfg.model.filter.blocked_terms, ["darn"]);
        assert_eq!(cfg.model.filter.min_leak_chars, 60);
        let err = load("[model.filter]\nblocked_term = [\"x\"]\n").unwrap_err();
        assert!(err.contains("blocked_term"), "{err}");
    }

    #[test]
    fn blank_values_and_ranges_are_refused() {
        let err = load("[model.filter]\nblocked_terms = [\" \"]\n").unwrap_err();
        assert!(err.contains("model.filter.blocked_terms[0]"), "{err}");
        let err = load("[model.filter]\nfallback_message = \"\"\n").unwrap_err();
        assert!(err.contains("model.filter.fallback_message"), "{err}");
        let err = load("[model.filter]\nmin_leak_chars = 3\n").unwrap_err();
        assert!(err.contains("between 16 and 10000, got 3"), "{err}");
    }

    #[test]
    fn env_sets_lists() {
        let env = vec![(
            "MOLTBOT_MODEL__FILTER__BLOCKED_TERMS".to_string(),
            "[\"alpha\", \"beta gamma\"]".to_string(),
        )];
        let cfg = Config::load_with_env(None, &env).unwrap();
        assert_eq!(cfg.model.filter.blocked_terms, ["alpha", "beta gamma"]);
    }
}
