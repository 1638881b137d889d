//! Decoding settings of one request, validated, and the llama.cpp sampler chain built from
//! them.

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use moltbot_core::{ChatRequest, ModelError};

/// Completion length when the request does not say.
pub const DEFAULT_MAX_TOKENS: u32 = 256;
/// Sampling temperature when the request does not say (0 would mean greedy).
const DEFAULT_TEMPERATURE: f32 = 0.7;
/// Nucleus mass when the request does not say.
const DEFAULT_TOP_P: f32 = 0.95;
/// Top-k when the request does not say: llama.cpp's own default, it cuts the long tail of
/// junk tokens that small models otherwise pick now and then.
const DEFAULT_TOP_K: u32 = 40;
/// A floor relative to the best token's probability, as llama.cpp's default.
const SAMPLE_MIN_P: f32 = 0.05;
/// Repetition penalty over the last tokens generated when the request does not say: small
/// models (SmolLM2-135M) otherwise fall into loops, greedy decoding most of all.
const DEFAULT_REPEAT_PENALTY: f32 = 1.15;
/// Tokens the repetition penalty looks back over.
pub const REPEAT_LAST_N: usize = 64;
/// The widest beam search.
pub const MAX_BEAM_WIDTH: u32 = 8;

/// Sampling settings of one request, validated.
#[derive(Debug, Clone)]
pub(super) struct Sampling {
    pub max_tokens: u32,
    /// 0 means greedy.
    pub temperature: f32,
    pub top_p: f32,
    /// 0 means off.
    pub top_k: u32,
    pub repeat_penalty: f32,
    pub seed: u32,
    pub stop: Vec<String>,
    /// `Some(0)`: pick the width from the budget and the load; `Some(w)`, w ≥ 2: beam search
    /// with `w` beams; `None` or `Some(1)`: no beam search.
    pub beam_width: Option<u32>,
    /// A grammar the answer must follow (a tool call's arguments); set by the caller after
    /// validation. Beam search is off while it is set.
    pub grammar: Option<String>,
}

impl Sampling {
    pub fn from_request(req: &ChatRequest) -> Result<Sampling, ModelError> {
        let max_tokens = req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
        if max_tokens == 0 {
            return Err(ModelError::InvalidRequest(
                "`max_tokens` must be at least 1, got 0".into(),
            ));
        }
        let temperature = req.temperature.unwrap_or(DEFAULT_TEMPERATURE);
        if !temperature.is_finite() || temperature < 0.0 {
            return Err(ModelError::InvalidRequest(format!(
                "`temperature` must be a number >= 0, got {temperature}"
            )));
        }
        let top_p = req.top_p.unwrap_or(DEFAULT_TOP_P);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ModelError::InvalidRequest(format!(
                "`top_p` must be above 0 and at most 1, got {top_p}"
            )));
        }
        let repeat_penalty = req.repetition_penalty.unwrap_or(DEFAULT_REPEAT_PENALTY);
        if !(repeat_penalty > 0.0 && repeat_penalty <= 2.0) {
            return Err(ModelError::InvalidRequest(format!(
                "`repetition_penalty` must be above 0 and at most 2, got {repeat_penalty}"
            )));
        }
        let beam_width = match req.beam_width {
            Some(w) if w > MAX_BEAM_WIDTH => {
                return Err(ModelError::InvalidRequest(format!(
                    "`beam_width` must be between 0 (automatic) and {MAX_BEAM_WIDTH}, got {w}"
                )))
            }
            Some(1) | None => None,
            w => w,
        };
        // llama.cpp seeds are 32-bit and u32::MAX asks it for a random seed.
        let seed = match req.seed {
            Some(s) => match (s ^ (s >> 32)) as u32 {
                u32::MAX => u32::MAX - 1,
                folded => folded,
            },
            None => u32::MAX,
        };
        Ok(Sampling {
            max_tokens,
            temperature,
            top_p,
            top_k: req.top_k.unwrap_or(DEFAULT_TOP_K),
            repeat_penalty,
            seed,
            stop: req.stop.iter().filter(|s| !s.is_empty()).cloned().collect(),
            beam_width,
            grammar: None,
        })
    }

    /// The beam width to use, given the tokens this request may generate and how many other
    /// requests are running or waiting (the "dynamic beam width": wide beams for short,
    /// bounded answers on an idle model, narrower ones as the budget grows or load rises).
    /// 1 means plain decoding.
    pub fn beam_width(&self, limit: usize, others: usize) -> usize {
        if self.grammar.is_some() {
            return 1;
        }
        let asked = match self.beam_width {
            None => return 1,
            Some(0) => match limit {
                0..=48 => 4,
                49..=160 => 2,
                _ => 1,
            },
            Some(w) => w as usize,
        };
        // Each other request halves an automatic width; an explicit one is kept.
        let w = if self.beam_width == Some(0) {
            asked >> others.min(8)
        } else {
            asked
        };
        w.clamp(1, MAX_BEAM_WIDTH as usize)
    }

    pub fn sampler(&self, model: &LlamaModel) -> LlamaSampler {
        let last_n = i32::try_from(REPEAT_LAST_N).unwrap_or(i32::MAX);
        let penalties =
            LlamaSampler::penalties(model.n_vocab(), last_n, self.repeat_penalty, 0.0, 0.0);
        // The grammar comes first: it removes every token that would break it, the rest
        // choose among what is left.
        let mut chain = Vec::new();
        if let Some(g) = &self.grammar {
            match LlamaSampler::grammar(model, g, "root") {
                Ok(s) => chain.push(s),
                Err(e) => {
                    tracing::warn!(cause = %e, "tool-call grammar rejected; decoding without it")
                }
            }
        }
        chain.push(penalties);
        if self.temperature == 0.0 {
            chain.push(LlamaSampler::greedy());
            return LlamaSampler::chain_simple(chain);
        }
        if self.top_k > 0 {
            chain.push(LlamaSampler::top_k(
                i32::try_from(self.top_k).unwrap_or(i32::MAX),
            ));
        }
        chain.extend([
            LlamaSampler::top_p(self.top_p, 1),
            LlamaSampler::min_p(SAMPLE_MIN_P, 1),
            LlamaSampler::temp(self.temperature),
            LlamaSampler::dist(self.seed),
        ]);
        LlamaSampler::chain_simple(chain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_is_validated_with_the_field_and_value() {
        let mut req = ChatRequest {
            max_tokens: Some(0),
            ..ChatRequest::default()
        };
        let err = Sampling::from_request(&req).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("`max_tokens`") && e.contains("got 0")));
        req.max_tokens = None;
        req.top_p = Some(1.5);
        let err = Sampling::from_request(&req).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("`top_p`") && e.contains("1.5")));
        req.top_p = None;
        req.temperature = Some(f32::NAN);
        assert!(Sampling::from_request(&req).is_err());
        req.temperature = Some(0.0);
        req.repetition_penalty = Some(3.0);
        let err = Sampling::from_request(&req).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("`repetition_penalty`") && e.contains('3')));
        req.repetition_penalty = None;
        req.beam_width = Some(9);
        let err = Sampling::from_request(&req).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("`beam_width`") && e.contains("got 9")));
        req.beam_width = None;
        req.stop = vec![String::new(), "x".into()];
        let s = Sampling::from_request(&req).ok();
        assert!(s.is_some_and(|s| s.max_tokens == DEFAULT_MAX_TOKENS && s.stop == ["x"]));
    }

    #[test]
    fn automatic_beam_width_follows_budget_and_load() {
        let req = |w: Option<u32>| {
            Sampling::from_request(&ChatRequest {
                beam_width: w,
                ..ChatRequest::default()
            })
            .expect("valid")
        };
        assert_eq!(req(None).beam_width(10, 0), 1);
        assert_eq!(req(Some(1)).beam_width(10, 0), 1);
        assert_eq!(
            req(Some(3)).beam_width(500, 5),
            3,
            "explicit widths are kept"
        );
        let auto = req(Some(0));
        assert_eq!(auto.beam_width(32, 0), 4);
        assert_eq!(auto.beam_width(32, 1), 2);
        assert_eq!(auto.beam_width(32, 3), 1);
        assert_eq!(auto.beam_width(100, 0), 2);
        assert_eq!(auto.beam_width(1000, 0), 1);
    }
}
