//! Text normalisation and the n-grams the sparse features are built from.
//!
//! Two views of a text:
//! - **words**: lower-cased runs of letters and digits. Scripts written without spaces
//!   (Chinese, Japanese, Thai…) have no words in that sense, so each of their characters is
//!   its own word and word bigrams become character bigrams there.
//! - **characters**: n-grams over each word padded with a space on both sides (what
//!   scikit-learn calls `char_wb`), so a gram never spans two words of a spaced script. A run
//!   of unspaced-script characters is one padded "word" here, so its character n-grams cover
//!   every position of the run.

/// A 64-bit FNV-1a hash. Hand-written because it is five lines and we need it stable across
/// versions and platforms (saved models store these hashes); `std`'s hasher promises neither.
pub fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Characters of scripts written without spaces between words.
pub fn is_unspaced_script(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF      // Hiragana, Katakana
        | 0x3400..=0x4DBF    // CJK extension A
        | 0x4E00..=0x9FFF    // CJK unified ideographs
        | 0xF900..=0xFAFF    // CJK compatibility ideographs
        | 0x0E00..=0x0E7F    // Thai
        | 0x0E80..=0x0EFF    // Lao
        | 0x1000..=0x109F    // Myanmar
        | 0x1780..=0x17FF    // Khmer
        | 0x20000..=0x2FFFF  // CJK extensions B and later
    )
}

/// A token of the word view, and whether it came from an unspaced script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub text: String,
    pub unspaced: bool,
}

/// Lower-case, and turn full-width ASCII forms (common in CJK input) into ASCII.
pub fn normalize(text: &str) -> String {
    text.chars()
        .map(|c| match c as u32 {
            0xFF01..=0xFF5E => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            0x3000 => ' ',
            _ => c,
        })
        .flat_map(char::to_lowercase)
        .collect()
}

/// Split normalised text into the runs the features see: alphanumeric runs of spaced
/// scripts, and runs of unspaced-script characters. Everything else separates runs.
pub fn runs(normalized: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut current_unspaced = false;
    for c in normalized.chars() {
        let unspaced = is_unspaced_script(c);
        let word_char = unspaced || c.is_alphanumeric() || c == '\'';
        if !word_char || (unspaced != current_unspaced && !current.is_empty()) {
            flush(&mut out, &mut current, current_unspaced);
        }
        if word_char {
            current_unspaced = unspaced;
            current.push(c);
        }
    }
    flush(&mut out, &mut current, current_unspaced);
    out
}

fn flush(out: &mut Vec<Token>, current: &mut String, unspaced: bool) {
    let word = current.trim_matches('\'');
    if !word.is_empty() {
        out.push(Token {
            text: word.to_string(),
            unspaced,
        });
    }
    current.clear();
}

/// The word view: spaced-script runs as they are, unspaced runs one character per word.
pub fn words(runs: &[Token]) -> Vec<String> {
    let mut out = Vec::with_capacity(runs.len());
    for run in runs {
        if run.unspaced {
            out.extend(run.text.chars().map(String::from));
        } else {
            out.push(run.text.clone());
        }
    }
    out
}

/// Call `f` with every character n-gram (`n` in `min..=max`) of every run padded by spaces.
pub fn char_ngrams(runs: &[Token], min: usize, max: usize, mut f: impl FnMut(&str)) {
    let mut padded = String::new();
    let mut bounds: Vec<usize> = Vec::new();
    for run in runs {
        padded.clear();
        padded.push(' ');
        padded.push_str(&run.text);
        padded.push(' ');
        bounds.clear();
        bounds.extend(padded.char_indices().map(|(i, _)| i));
        bounds.push(padded.len());
        let chars = bounds.len() - 1;
        for n in min..=max.min(chars) {
            for start in 0..=chars - n {
                let gram = &padded[bounds[start]..bounds[start + n]];
                // A lone padding space says nothing.
                if gram != " " {
                    f(gram);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaced_and_unspaced_scripts_split_into_runs() {
        let r = runs(&normalize("Book a flight to 北京明天 please!"));
        let texts: Vec<&str> = r.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(texts, ["book", "a", "flight", "to", "北京明天", "please"]);
        assert!(r[4].unspaced && !r[0].unspaced);
        assert_eq!(
            words(&r),
            ["book", "a", "flight", "to", "北", "京", "明", "天", "please"]
        );
    }

    #[test]
    fn full_width_forms_become_ascii() {
        assert_eq!(normalize("ＡＢＣ１２３"), "abc123");
    }

    #[test]
    fn char_ngrams_cover_every_position_of_a_chinese_run() {
        let r = runs("明天天气");
        let mut grams = Vec::new();
        char_ngrams(&r, 2, 2, |g| grams.push(g.to_string()));
        assert_eq!(grams, [" 明", "明天", "天天", "天气", "气 "]);
    }

    #[test]
    fn char_ngrams_stay_inside_words() {
        let r = runs("ab cd");
        let mut grams = Vec::new();
        char_ngrams(&r, 3, 3, |g| grams.push(g.to_string()));
        assert_eq!(grams, [" ab", "ab ", " cd", "cd "]);
    }

    #[test]
    fn fnv_is_stable() {
        // Saved models depend on these values never changing.
        assert_eq!(fnv1a(0, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(0, b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
