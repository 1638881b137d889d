//! Repetition loops: the same unit (a word, a phrase, a sentence, a line, or several of
//! them) written again and again, the way a small model gets stuck.
//!
//! For every period `p` up to [`MAX_PERIOD`] folded characters the detector keeps how many
//! characters in a row have equalled the one `p` before them. A run of `r` such characters
//! means the last `r + p` characters are `(r + p) / p` copies of one unit. That is one
//! comparison per period per character, so the check keeps up with any stream, and a loop
//! is seen as soon as it has enough copies, wherever it sits in the reply.

/// Longest unit recognised, in folded characters (a long sentence or two short ones).
pub(crate) const MAX_PERIOD: usize = 320;

/// A stretch that has been periodic for this many characters is held back (not streamed)
/// until it either breaks off or becomes a loop, so a loop can be cut after its first copy.
/// One character: any start-over is held from its first character, so the guard needs no
/// fixed tail for loops. In ordinary prose the longest chance run over all periods is
/// usually a few characters (a repeated " the "; 3.2 on average, at most 11, in the guard's
/// prose test), which is all that is held.
const HOLD_RUN: usize = 1;

/// A confirmed loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LoopHit {
    /// Length of the repeated unit, in folded characters.
    pub period: usize,
    /// Folded index where the second copy begins: everything from here on repeats.
    pub region_start: usize,
}

#[derive(Debug)]
pub(crate) struct LoopDetector {
    /// `runs[p - 1]`: characters in a row equal to the one `p` before them.
    runs: Vec<usize>,
    /// Folded index from which a periodic stretch in progress begins, if any.
    hold_from: Option<usize>,
}

impl LoopDetector {
    pub(crate) fn new() -> Self {
        Self {
            runs: vec![0; MAX_PERIOD],
            hold_from: None,
        }
    }

    /// Update after `chars` grew by its last character. `floor(p, region_start)` returns the
    /// least number of copies the caller wants for a unit in that place (more inside code or
    /// table rows); it is asked only about candidates that pass the ordinary thresholds.
    pub(crate) fn step(
        &mut self,
        chars: &[char],
        mut floor: impl FnMut(usize, usize) -> usize,
    ) -> Option<LoopHit> {
        let i = chars.len().checked_sub(1)?;
        let c = chars[i];
        let mut hit = None;
        let mut hold_from: Option<usize> = None;
        for p in 1..=MAX_PERIOD.min(i) {
            let run = &mut self.runs[p - 1];
            *run = if chars[i - p] == c { *run + 1 } else { 0 };
            let run = *run;
            if run >= HOLD_RUN {
                let start = i + 1 - run;
                hold_from = Some(hold_from.map_or(start, |h| h.min(start)));
            }
            // Fewer than three copies is never a loop; skip the unit inspection.
            if hit.is_some() || run + 1 < 2 * p {
                continue;
            }
            let unit = &chars[i + 1 - p..=i];
            // A last copy that lacks only its closing gap ("the the the the") is whole.
            let copies = (run + p + usize::from(unit[0] == ' ')) / p;
            let (need, min_len) = needed(unit);
            if copies >= need && run + p >= min_len {
                let region_start = i + 1 - run;
                if copies >= need.max(floor(p, region_start)) {
                    hit = Some(LoopHit {
                        period: p,
                        region_start,
                    });
                }
            }
        }
        self.hold_from = hold_from;
        hit
    }

    /// Folded index from which text should be held back because it may turn out to be the
    /// repeated part of a loop.
    pub(crate) fn hold_from(&self) -> Option<usize> {
        self.hold_from
    }
}

/// Copies and total length (folded characters) a unit needs before it counts as a loop.
/// - No letters at all ("0, 0, 0", "1 1 1"): 20 copies over 40 characters; number runs are
///   common in data and code.
/// - One or two characters ("hahaha", "aaaa"): 8 copies over 30 characters.
/// - A word or two ("the the the the", "very very good"): 4 copies; two or three are normal
///   emphasis.
/// - Three words or more, or longer than 12 characters (a sentence): 3 copies.
fn needed(unit: &[char]) -> (usize, usize) {
    let letters = unit.iter().filter(|c| c.is_alphabetic()).count();
    if letters == 0 {
        return (20, 40);
    }
    if unit.len() <= 2 {
        return (8, 30);
    }
    let words = unit
        .iter()
        .filter(|&&c| c == ' ')
        .count()
        .max(usize::from(unit.last() != Some(&' ')));
    if words >= 3 || unit.len() > 12 {
        (3, 0)
    } else {
        (4, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::text::Folded;

    /// The first loop in `text`, as (unit, folded index of the second copy).
    fn first_loop(text: &str) -> Option<(String, usize)> {
        let mut folded = Folded::default();
        let mut d = LoopDetector::new();
        for (at, c) in text.char_indices() {
            if folded.push(c, at) == 0 {
                continue;
            }
            if let Some(hit) = d.step(folded.chars(), |_, _| 0) {
                let unit = &folded.chars()[hit.region_start - hit.period..hit.region_start];
                return Some((unit.iter().collect(), hit.region_start));
            }
        }
        None
    }

    #[test]
    fn sentence_loops_are_found_at_the_third_copy() {
        let (unit, _) = first_loop("The answer is 3. The answer is 3. The answer is 3.").unwrap();
        assert_eq!(unit, "the answer is 3 ");
        assert!(first_loop("The answer is 3. The answer is 3.").is_none());
    }

    #[test]
    fn word_loops_need_four_copies() {
        assert!(first_loop("the the the the").is_some());
        assert!(first_loop("This is very very good.").is_none());
        assert!(first_loop("No, no, no. That is wrong.").is_none());
    }

    #[test]
    fn lists_and_numbers_are_not_loops() {
        assert!(first_loop("1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12").is_none());
        assert!(first_loop("[[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]]").is_none());
        assert!(first_loop("- apples\n- pears\n- plums\n- apples and pears").is_none());
    }

    #[test]
    fn partial_sentence_and_cjk_loops() {
        assert!(first_loop(
            "you can run it and then you can run it and then you can run it and then"
        )
        .is_some());
        assert!(first_loop("我不知道。我不知道。我不知道。我不知道。").is_some());
        assert!(first_loop("hahahahahahahahahahahahahahahahaha").is_some());
    }

    #[test]
    fn two_sentence_cycles_are_one_unit() {
        let text = "It works. Try again. It works. Try again. It works. Try again.";
        let (unit, _) = first_loop(text).unwrap();
        assert_eq!(unit, "it works try again ");
    }
}
