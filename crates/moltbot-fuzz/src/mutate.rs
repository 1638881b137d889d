//! A small deterministic mutator for the bounded fuzz runs of the test suite (stable Rust,
//! no libFuzzer): byte flips, cuts, repeats, splices between seeds and inserted tokens that
//! parsers of JSON, TOML, YAML and binary headers trip on. libFuzzer (`scripts/fuzz.sh`)
//! does this better, with coverage feedback; this keeps every target exercised in CI.

/// SplitMix64: reproducible from a seed, and enough for picking mutations.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut x = self.0;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Fragments worth inserting: structure, extreme numbers, escapes, odd whitespace, and the
/// little-endian integers that binary headers read as lengths and counts.
const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"\\",
    b":",
    b",",
    b"null",
    b"true",
    b"-0",
    b"1e999",
    b"-9223372036854775809",
    b"18446744073709551616",
    b"\\u0000",
    b"\\ud800",
    b"\xf0\x9f\x92\xa9",
    b"\xff\xfe",
    b"\x00",
    b"\r\n",
    b"---\n",
    b"\t",
    b"=",
    b"[[",
    b"]]",
    b"'''",
    b"&anchor *anchor",
    b"!!binary",
    b"\xff\xff\xff\xff\xff\xff\xff\x7f",
    b"\xff\xff\xff\xff",
    b"\x00\x00\x00\x80",
    b"GGUF",
];

/// One mutant of `base` (a seed), possibly spliced with `other` (another seed), at most
/// `max_len` bytes long.
pub fn mutate(rng: &mut Rng, base: &[u8], other: &[u8], max_len: usize) -> Vec<u8> {
    let mut out = base.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let len = out.len();
        match rng.below(8) {
            // Flip a bit.
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            // Overwrite a byte with anything.
            1 if len > 0 => {
                let i = rng.below(len);
                out[i] = rng.next_u64() as u8;
            }
            // Cut a range out.
            2 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                out.drain(at..at + n);
            }
            // Truncate.
            3 if len > 0 => out.truncate(rng.below(len)),
            // Repeat a range (deep nesting, long strings).
            4 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(16));
                let piece = out[at..at + n].to_vec();
                let times = 1 + rng.below(200);
                for _ in 0..times {
                    out.splice(at..at, piece.iter().copied());
                }
            }
            // Splice the other seed's tail at a random point.
            5 if !other.is_empty() => {
                let at = rng.below(len + 1);
                let from = rng.below(other.len());
                out.truncate(at);
                out.extend_from_slice(&other[from..]);
            }
            // Insert a token.
            _ => {
                let at = rng.below(len + 1);
                let token = TOKENS[rng.below(TOKENS.len())];
                out.splice(at..at, token.iter().copied());
            }
        }
    }
    out.truncate(max_len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutants_are_reproducible_and_varied() {
        let seed = br#"{"session_id":"a","message":"hello"}"#;
        let run = |s| {
            let mut rng = Rng::new(s);
            (0..200)
                .map(|_| mutate(&mut rng, seed, b"[1,2]", 4096))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        let distinct: std::collections::HashSet<_> = run(7).into_iter().collect();
        assert!(
            distinct.len() > 150,
            "only {} distinct mutants",
            distinct.len()
        );
        assert!(run(7).iter().all(|m| m.len() <= 4096));
        assert!(run(7).iter().any(|m| m.as_slice() != seed));
    }
}
