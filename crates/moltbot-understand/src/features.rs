//! Sparse char + word n-gram features (TF-IDF), the "char-level + word-level joint
//! encoding" half of understanding; the dense half is the sentence embedding.
//!
//! The vocabulary is the set of n-grams seen in at least `min_df` training texts, stored as
//! 64-bit hashes: a gram never seen in training has no weight in a linear model, so keeping
//! only seen grams loses nothing and keeps the model small. Each block (chars, words) is
//! TF-IDF weighted with sublinear term frequency and L2-normalised on its own, then scaled by
//! its block weight, so short and long texts land on the same scale.

use crate::text::{char_ngrams, fnv1a, normalize, runs, words};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Hash seeds keep the two gram families apart ("ab" the word vs "ab" the character gram).
const CHAR_SEED: u64 = 0x6368_6172;
const WORD_SEED: u64 = 0x776f_7264;

/// What n-grams to extract and how to weigh them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeatureConfig {
    pub char_min: usize,
    pub char_max: usize,
    pub word_min: usize,
    pub word_max: usize,
    /// A gram must occur in at least this many training texts to enter the vocabulary.
    pub min_df: u32,
    pub char_weight: f32,
    pub word_weight: f32,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        Self {
            char_min: 1,
            char_max: 5,
            word_min: 1,
            word_max: 2,
            min_df: 1,
            char_weight: 1.0,
            word_weight: 1.0,
        }
    }
}

/// A sparse vector: sorted, distinct indices and their values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseVec {
    pub idx: Vec<u32>,
    pub val: Vec<f32>,
}

impl SparseVec {
    pub fn nnz(&self) -> usize {
        self.idx.len()
    }
}

/// The fitted vocabulary and IDF weights.
#[derive(Debug, Clone)]
pub struct Featurizer {
    config: FeatureConfig,
    index: HashMap<u64, u32>,
    hashes: Vec<u64>,
    idf: Vec<f32>,
    /// Indices below this are character grams, the rest word grams.
    n_char: u32,
}

impl Featurizer {
    /// Learn the vocabulary and IDF from the training texts.
    pub fn fit(config: FeatureConfig, texts: &[&str]) -> Self {
        let mut df_char: HashMap<u64, u32> = HashMap::new();
        let mut df_word: HashMap<u64, u32> = HashMap::new();
        let mut seen = Vec::new();
        for text in texts {
            for (family, df) in [(CHAR_SEED, &mut df_char), (WORD_SEED, &mut df_word)] {
                seen.clear();
                grams(&config, text, family, |h| seen.push(h));
                seen.sort_unstable();
                seen.dedup();
                for h in &seen {
                    *df.entry(*h).or_default() += 1;
                }
            }
        }
        let n = texts.len() as f32;
        let mut hashes = Vec::new();
        let mut idf = Vec::new();
        let mut n_char = 0;
        for (i, df) in [df_char, df_word].into_iter().enumerate() {
            let mut kept: Vec<(u64, u32)> = df
                .into_iter()
                .filter(|(_, d)| *d >= config.min_df)
                .collect();
            // Sorted so the same data always gives the same model.
            kept.sort_unstable();
            for (h, d) in kept {
                hashes.push(h);
                // Smoothed IDF, as if one extra document held every gram.
                idf.push(((1.0 + n) / (1.0 + d as f32)).ln() + 1.0);
            }
            if i == 0 {
                n_char = hashes.len() as u32;
            }
        }
        Self::from_parts(config, hashes, idf, n_char)
    }

    /// Rebuild from saved parts.
    pub fn from_parts(config: FeatureConfig, hashes: Vec<u64>, idf: Vec<f32>, n_char: u32) -> Self {
        let index = hashes
            .iter()
            .enumerate()
            .map(|(i, h)| (*h, i as u32))
            .collect();
        Self {
            config,
            index,
            hashes,
            idf,
            n_char,
        }
    }

    pub fn config(&self) -> &FeatureConfig {
        &self.config
    }

    /// Number of features (the vocabulary size).
    pub fn dim(&self) -> usize {
        self.hashes.len()
    }

    pub fn hashes(&self) -> &[u64] {
        &self.hashes
    }

    pub fn idf(&self) -> &[f32] {
        &self.idf
    }

    pub fn n_char(&self) -> u32 {
        self.n_char
    }

    /// The TF-IDF vector of `text`.
    pub fn transform(&self, text: &str) -> SparseVec {
        let mut ids = Vec::new();
        let mut out = SparseVec::default();
        for (family, weight) in [
            (CHAR_SEED, self.config.char_weight),
            (WORD_SEED, self.config.word_weight),
        ] {
            ids.clear();
            grams(&self.config, text, family, |h| {
                if let Some(&i) = self.index.get(&h) {
                    ids.push(i);
                }
            });
            ids.sort_unstable();
            let start = out.idx.len();
            let mut k = 0;
            while k < ids.len() {
                let id = ids[k];
                let mut tf = 0u32;
                while k < ids.len() && ids[k] == id {
                    tf += 1;
                    k += 1;
                }
                out.idx.push(id);
                out.val
                    .push((1.0 + (tf as f32).ln()) * self.idf[id as usize]);
            }
            let block = &mut out.val[start..];
            let norm = block.iter().map(|v| v * v).sum::<f32>().sqrt();
            if norm > 0.0 {
                let scale = weight / norm;
                block.iter_mut().for_each(|v| *v *= scale);
            }
        }
        out
    }
}

/// Call `f` with the hash of every gram of `text` in one family.
fn grams(config: &FeatureConfig, text: &str, family: u64, mut f: impl FnMut(u64)) {
    let normalized = normalize(text);
    let runs = runs(&normalized);
    if family == CHAR_SEED {
        char_ngrams(&runs, config.char_min, config.char_max, |g| {
            f(fnv1a(CHAR_SEED, g.as_bytes()))
        });
        return;
    }
    let words = words(&runs);
    let mut joined = String::new();
    for n in config.word_min..=config.word_max {
        for window in words.windows(n) {
            joined.clear();
            for (i, w) in window.iter().enumerate() {
                if i > 0 {
                    // A separator no word contains.
                    joined.push('\u{1}');
                }
                joined.push_str(w);
            }
            f(fnv1a(WORD_SEED, joined.as_bytes()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_unit_length_and_unknown_grams_ignored() {
        let f = Featurizer::fit(
            FeatureConfig::default(),
            &["book a flight", "cancel my flight", "what time is it"],
        );
        let v = f.transform("book a flight");
        let (chars, words): (Vec<_>, Vec<_>) = v
            .idx
            .iter()
            .zip(&v.val)
            .partition(|(i, _)| **i < f.n_char());
        let norm = |b: &[(&u32, &f32)]| b.iter().map(|(_, v)| **v * **v).sum::<f32>().sqrt();
        assert!((norm(&chars) - 1.0).abs() < 1e-5);
        assert!((norm(&words) - 1.0).abs() < 1e-5);
        assert!(v.idx.windows(2).all(|w| w[0] < w[1]), "sorted, distinct");
        assert_eq!(f.transform("zzzz qqqq").nnz(), 0);
    }

    #[test]
    fn rare_words_weigh_more_than_common_ones() {
        let f = Featurizer::fit(
            FeatureConfig {
                char_max: 0,
                char_min: 1,
                ..FeatureConfig::default()
            },
            &["the flight", "the hotel", "the car"],
        );
        let v = f.transform("the flight");
        let weight_of = |w: &str| {
            let h = fnv1a(WORD_SEED, w.as_bytes());
            let i = f
                .hashes()
                .iter()
                .position(|x| *x == h)
                .expect("in vocabulary");
            v.val[v
                .idx
                .iter()
                .position(|x| *x as usize == i)
                .expect("present")]
        };
        assert!(weight_of("flight") > weight_of("the"));
    }

    #[test]
    fn chinese_text_gets_char_and_word_features() {
        let f = Featurizer::fit(
            FeatureConfig::default(),
            &["明天北京天气怎么样", "订一张机票"],
        );
        let v = f.transform("北京天气");
        let words = v.idx.iter().filter(|i| **i >= f.n_char()).count();
        assert!(words >= 4, "单字 and bigrams as words, got {words}");
        assert!(v.nnz() > words);
    }
}
