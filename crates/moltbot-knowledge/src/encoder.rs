//! [`HashingEncoder`]: a dependency-free lexical sentence encoder.
//!
//! It is the fallback when no neural encoder is configured (and the encoder of this crate's
//! tests): words, word bigrams and character 3-grams are hashed into `dim` buckets with a
//! random sign (the "hashing trick"), weighted, and the vector is L2-normalised. Texts that
//! share words, word pairs or word pieces get a high cosine; it knows nothing about
//! synonyms, so a neural encoder such as MiniLM should be preferred where available.

use moltbot_core::encoder::{EncodeError, Encoder};

use crate::distance::normalize;

/// Hashed n-gram encoder. Deterministic across runs and platforms.
#[derive(Debug, Clone)]
pub struct HashingEncoder {
    dim: usize,
    name: String,
}

impl HashingEncoder {
    /// An encoder producing vectors of length `dim` (at least 1; 256–1024 work well).
    pub fn new(dim: usize) -> Self {
        let dim = dim.max(1);
        Self {
            dim,
            name: format!("hashing-ngram-v1/{dim}"),
        }
    }

    fn add(&self, v: &mut [f32], feature: &[u8], salt: u64, weight: f32) {
        let h = fnv1a(feature, salt);
        let bucket = (h % self.dim as u64) as usize;
        let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
        v[bucket] += sign * weight;
    }

    /// Encodes one text.
    pub fn encode_one(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0.0f32; self.dim];
        let words = words(text);
        for (i, w) in words.iter().enumerate() {
            self.add(&mut v, w.as_bytes(), 1, 1.0);
            if let Some(next) = words.get(i + 1) {
                let pair = format!("{w} {next}");
                self.add(&mut v, pair.as_bytes(), 2, 0.7);
            }
            let marked: Vec<char> = std::iter::once('<')
                .chain(w.chars())
                .chain(std::iter::once('>'))
                .collect();
            if marked.len() > 4 {
                for tri in marked.windows(3) {
                    let s: String = tri.iter().collect();
                    self.add(&mut v, s.as_bytes(), 3, 0.4);
                }
            }
        }
        normalize(&mut v);
        v
    }
}

impl Default for HashingEncoder {
    fn default() -> Self {
        Self::new(384)
    }
}

impl Encoder for HashingEncoder {
    fn name(&self) -> &str {
        &self.name
    }

    fn dim(&self) -> usize {
        self.dim
    }

    /// No model window: any length is encoded in one pass.
    fn max_tokens(&self) -> usize {
        usize::MAX
    }

    fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EncodeError> {
        Ok(texts.iter().map(|t| self.encode_one(t)).collect())
    }
}

/// Lower-cased words: runs of letters and digits; each CJK ideograph, kana or hangul
/// syllable counts as its own word (those scripts do not separate words with spaces).
pub(crate) fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        if is_cjk(c) {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            out.push(c.to_string());
        } else if c.is_alphanumeric() {
            cur.extend(c.to_lowercase());
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// CJK ideographs, kana, hangul and their common extension blocks.
pub(crate) fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30ff      // hiragana, katakana
        | 0x3400..=0x4dbf    // CJK extension A
        | 0x4e00..=0x9fff    // CJK unified ideographs
        | 0xac00..=0xd7af    // hangul syllables
        | 0xf900..=0xfaff    // compatibility ideographs
        | 0x20000..=0x2ebef  // extensions B–F
    )
}

fn fnv1a(bytes: &[u8], salt: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV's high bits mix poorly; finish with a multiply-xorshift.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}
