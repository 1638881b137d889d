//! Chunking: offsets, headings, sentence boundaries (Latin and CJK), sizes, overlap.

use moltbot_knowledge::{chunk_text, ChunkOptions};
use proptest::prelude::*;

fn opts(target: usize, overlap: usize) -> ChunkOptions {
    ChunkOptions {
        target_chars: target,
        overlap_chars: overlap,
    }
}

#[test]
fn headings_start_chunks_and_are_kept_as_a_path() {
    let text = "Intro line.\n\n# Guide\n\nFirst part.\n\n## Install\n\nRun the installer. Then restart.\n\n```sh\n# not a heading\necho hi\n```\n\n## Usage\n\nStart it.\n\n# Other\nBody.\n";
    let chunks = chunk_text(text, &opts(200, 0));
    let got: Vec<(String, Vec<String>)> = chunks
        .iter()
        .map(|c| (c.text.clone(), c.heading.clone()))
        .collect();
    assert_eq!(got[0], ("Intro line.".to_string(), vec![]));
    assert_eq!(
        got[1],
        ("First part.".to_string(), vec!["Guide".to_string()])
    );
    assert!(got[2].0.starts_with("Run the installer. Then restart."));
    assert!(
        got[2].0.contains("# not a heading"),
        "fenced code stays in the chunk"
    );
    assert_eq!(got[2].1, vec!["Guide".to_string(), "Install".to_string()]);
    assert_eq!(
        got[3],
        (
            "Start it.".to_string(),
            vec!["Guide".to_string(), "Usage".to_string()]
        )
    );
    assert_eq!(got[4], ("Body.".to_string(), vec!["Other".to_string()]));
    for c in &chunks {
        assert_eq!(&text[c.start..c.end], c.text);
    }
}

#[test]
fn cjk_sentences_split_at_full_stops() {
    let text = "第一句话在这里。第二句话也在这里！第三句话呢？第四句。";
    let chunks = chunk_text(text, &opts(16, 0));
    assert!(chunks.len() >= 3, "{chunks:?}");
    for c in &chunks {
        assert_eq!(&text[c.start..c.end], c.text);
        assert!(c.text.ends_with(['。', '！', '？']), "{:?}", c.text);
    }
}

#[test]
fn overlap_repeats_whole_sentences() {
    let text = "Alpha one is here. Beta two is here. Gamma three is here. Delta four is here. Epsilon five.";
    let chunks = chunk_text(text, &opts(60, 25));
    assert!(chunks.len() >= 2, "{chunks:?}");
    for w in chunks.windows(2) {
        assert!(w[1].start < w[0].end, "consecutive chunks overlap: {w:?}");
        assert!(w[1].start > w[0].start, "and always advance");
    }
}

#[test]
fn long_runs_without_spaces_are_cut() {
    let text = "字".repeat(100);
    let chunks = chunk_text(&text, &opts(30, 0));
    assert_eq!(chunks.len(), 4);
    assert!(chunks.iter().all(|c| c.text.chars().count() <= 30));
}

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,8}",
        Just("。".to_string()),
        Just(". ".to_string()),
        Just("！".to_string()),
        Just("\n\n".to_string()),
        Just("\n# Title\n".to_string()),
        Just("\n## Sub heading\n".to_string()),
        Just("学习".to_string()),
        Just("é".to_string()),
        Just(" ".to_string()),
        Just("```\n".to_string()),
    ]
}

proptest! {
    /// Offsets always slice back to the chunk text, chunks stay near the target size, and
    /// every non-space character of a section body lands in some chunk.
    #[test]
    fn offsets_round_trip(parts in proptest::collection::vec(word(), 0..200), target in 16usize..120, overlap in 0usize..40) {
        let text: String = parts.concat();
        let chunks = chunk_text(&text, &opts(target, overlap));
        let mut covered = vec![false; text.len()];
        for c in &chunks {
            prop_assert_eq!(&text[c.start..c.end], c.text.as_str());
            prop_assert!(!c.text.trim().is_empty());
            prop_assert!(c.text.chars().count() <= target.max(16), "chunk of {} chars", c.text.chars().count());
            covered[c.start..c.end].iter_mut().for_each(|x| *x = true);
        }
        for w in chunks.windows(2) {
            prop_assert!(w[1].start > w[0].start);
        }
        // Letters outside heading lines are all covered.
        let mut pos = 0;
        for line in text.split_inclusive('\n') {
            let is_heading = line.trim_start().starts_with('#');
            if !is_heading {
                for (i, ch) in line.char_indices() {
                    if ch.is_alphabetic() {
                        prop_assert!(covered[pos + i], "byte {} ({:?}) not in any chunk", pos + i, ch);
                    }
                }
            }
            pos += line.len();
        }
    }
}
