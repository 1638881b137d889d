use super::{dot, encoder_dir, f32_encoder};
use moltbot_core::Encoder;
use moltbot_understand::{MiniLm, Precision};

#[test]
fn similar_sentences_are_closer_than_unrelated_ones() {
    let Some(enc) = f32_encoder() else { return };
    let v = enc
        .encode(&[
            "how do I cancel my card",
            "I want to cancel my credit card",
            "what is the weather in Paris tomorrow",
        ])
        .expect("encode");
    assert_eq!(v.len(), 3);
    assert_eq!(v[0].len(), 384);
    for x in &v {
        assert!((dot(x, x) - 1.0).abs() < 1e-4, "unit length");
    }
    let close = dot(&v[0], &v[1]);
    let far = dot(&v[0], &v[2]);
    assert!(close > 0.7 && far < 0.3, "close {close}, far {far}");
}

#[test]
fn batching_and_padding_do_not_change_vectors() {
    let Some(enc) = f32_encoder() else { return };
    let texts = [
        "hi",
        "please book me a table for four at an italian place near the station tonight",
        "what's my balance",
    ];
    let batched = enc.encode(&texts).expect("batch");
    for (t, b) in texts.iter().zip(&batched) {
        let single = enc.encode(&[t]).expect("single").remove(0);
        let cos = dot(&single, b);
        assert!(cos > 0.9999, "{t}: cos {cos}");
    }
}

#[test]
fn long_inputs_are_windowed_not_truncated() {
    let Some(enc) = f32_encoder() else { return };
    // ~600 tokens: past the 256-token window; the tail must still count.
    let filler = "The quarterly report was discussed at length during the meeting. ".repeat(40);
    let with_tail = format!("{filler} Also, my credit card was stolen and I need to block it.");
    let v = enc
        .encode(&[&filler, &with_tail, "my credit card was stolen, block it"])
        .expect("encode long");
    assert!((dot(&v[1], &v[1]) - 1.0).abs() < 1e-4);
    assert!(
        dot(&v[1], &v[2]) > dot(&v[0], &v[2]),
        "the tail past the first window moved the vector towards it"
    );
}

#[test]
fn int8_vectors_stay_close_to_f32() {
    let (Some(dir), Some(f32_enc)) = (encoder_dir(), f32_encoder()) else {
        return;
    };
    let int8 = MiniLm::load(&dir, Precision::Int8).expect("int8");
    assert!(int8.name().ends_with("/int8"));
    let texts = [
        "transfer 100 dollars to savings",
        "明天北京天气怎么样",
        "set an alarm for 7",
    ];
    let a = f32_enc.encode(&texts).expect("f32");
    let b = int8.encode(&texts).expect("int8");
    for (x, y) in a.iter().zip(&b) {
        assert!(dot(x, y) > 0.99, "cos {}", dot(x, y));
    }
}

#[test]
fn a_missing_folder_is_a_load_error_naming_the_file() {
    let err = MiniLm::load(std::path::Path::new("/nonexistent/encoder"), Precision::F32)
        .expect_err("missing");
    assert_eq!(err.kind(), "encoder_load");
    assert!(
        err.to_string().contains("/nonexistent/encoder/config.json"),
        "{err}"
    );
}
