//! Turning token bytes into the text a client sees: UTF-8 sequences split across tokens are
//! joined, and text that may start a stop string is held back until it is known not to.

/// Turns token bytes into text chunks: joins UTF-8 sequences split across tokens and holds
/// back text that may be the start of a stop string.
pub(super) struct TextAssembler {
    utf8: Utf8Joiner,
    stop: Vec<String>,
    /// Decoded text not sent yet because it may begin a stop string.
    held: String,
    stopped: bool,
}

impl TextAssembler {
    pub(super) fn new(stop: Vec<String>) -> Self {
        Self {
            utf8: Utf8Joiner::default(),
            stop,
            held: String::new(),
            stopped: false,
        }
    }

    /// Add one token's bytes. Returns the text that is safe to send, and whether a stop
    /// string was found (the text before it is included; the stop string itself is not).
    pub(super) fn push(&mut self, bytes: &[u8]) -> (String, bool) {
        let text = self.utf8.push(bytes);
        self.take_safe(&text)
    }

    fn take_safe(&mut self, text: &str) -> (String, bool) {
        self.held.push_str(text);
        if self.stop.is_empty() {
            return (std::mem::take(&mut self.held), false);
        }
        if let Some(at) = self
            .stop
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            self.held.truncate(at);
            self.stopped = true;
            return (std::mem::take(&mut self.held), true);
        }
        let keep_from = self.partial_stop_start();
        let safe = self.held[..keep_from].to_string();
        self.held.drain(..keep_from);
        (safe, false)
    }

    /// The earliest position from which the held text is the beginning of a stop string.
    fn partial_stop_start(&self) -> usize {
        self.held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.held[i..];
                self.stop.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.held.len())
    }

    /// What is left at the end of generation: bytes of an unfinished UTF-8 sequence (shown as
    /// U+FFFD) and text held back for a stop string that never completed. Nothing after a
    /// stop string.
    pub(super) fn finish(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        let tail = self.utf8.finish();
        let (mut out, stopped) = self.take_safe(&tail);
        if !stopped {
            out.push_str(&std::mem::take(&mut self.held));
        }
        out
    }
}

/// Collects bytes and releases them as text only once they form whole UTF-8 characters.
#[derive(Default)]
struct Utf8Joiner {
    pending: Vec<u8>,
}

impl Utf8Joiner {
    pub(super) fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // `valid` bytes were just checked to be UTF-8.
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        // Bytes that can never become valid: replace them and go on.
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                        // An incomplete character at the end: wait for the next token.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                    }
                }
            }
        }
    }

    pub(super) fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_tokens_is_joined() {
        let mut j = Utf8Joiner::default();
        let e_acute = "é".as_bytes(); // 2 bytes
        let crab = "🦀".as_bytes(); // 4 bytes
        assert_eq!(j.push(b"caf"), "caf");
        assert_eq!(j.push(&e_acute[..1]), "");
        assert_eq!(j.push(&e_acute[1..]), "é");
        assert_eq!(j.push(&crab[..1]), "");
        assert_eq!(j.push(&crab[1..3]), "");
        let mut tail = crab[3..].to_vec();
        tail.extend_from_slice(b"!");
        assert_eq!(j.push(&tail), "🦀!");
        assert_eq!(j.finish(), "");
    }

    #[test]
    fn invalid_bytes_become_one_replacement_each() {
        let mut j = Utf8Joiner::default();
        assert_eq!(j.push(b"a\xffb"), "a\u{fffd}b");
        // A dangling lead byte at the very end is reported when generation ends.
        assert_eq!(j.push(b"c\xe2\x82"), "c");
        assert_eq!(j.finish(), "\u{fffd}");
    }

    fn run(stop: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut t = TextAssembler::new(stop.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            let (s, stopped) = t.push(p.as_bytes());
            out.push_str(&s);
            if stopped {
                return (out, true);
            }
        }
        out.push_str(&t.finish());
        (out, false)
    }

    #[test]
    fn stop_string_split_across_tokens_is_caught() {
        assert_eq!(
            run(&["\nUser:"], &["Hi", " there", "\nUs", "er", ":", " more"]),
            ("Hi there".to_string(), true)
        );
        // Earliest of several stop strings wins.
        assert_eq!(run(&["b", "a"], &["xxab"]), ("xx".to_string(), true));
    }

    #[test]
    fn near_miss_of_a_stop_string_is_released() {
        assert_eq!(
            run(&["END"], &["the E", "N", "d of it"]),
            ("the ENd of it".to_string(), false)
        );
        // Held text is flushed at the end if the stop never completed.
        assert_eq!(run(&["END"], &["so E", "N"]), ("so EN".to_string(), false));
    }

    #[test]
    fn stop_check_respects_char_boundaries() {
        assert_eq!(run(&["éé"], &["aé", "b"]), ("aéb".to_string(), false));
        assert_eq!(run(&["éé"], &["aé", "é!"]), ("a".to_string(), true));
    }
}
