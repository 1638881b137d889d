use super::f32_encoder;
use moltbot_core::Encoder;
use moltbot_understand::{render_reply, Dataset, IntentModel, ModelConfig, Understanding};
use std::sync::{Arc, OnceLock};

/// Paraphrases that are not in the built-in pack, with the intent they mean.
const HELD_OUT: &[(&str, &str)] = &[
    ("could you tell me the current time?", "ask_time"),
    ("现在是几点钟", "ask_time"),
    ("what date is it today?", "ask_date"),
    ("thank you very much!", "thanks"),
    ("remind me at 7pm to water the plants", "set_reminder"),
    ("hello, good afternoon", "greeting"),
    ("see you, bye bye", "goodbye"),
    (
        "what does the employee handbook say about sick leave",
        "ask_documents",
    ),
    (
        "please remember that my passport number ends in 552",
        "remember",
    ),
    ("谢谢你", "thanks"),
];

/// Requests the pack knows nothing about.
const OUT_OF_DOMAIN: &[&str] = &[
    "explain quantum entanglement in simple terms",
    "write a short poem about the sea at night",
    "what is the capital of mongolia",
    "how do I fix a segfault in my C program",
    "summarise the causes of the first world war",
    "translate 'good luck' into german",
];

/// The encoder and a model trained on the built-in pack, shared by the tests.
pub type Trained = (Arc<dyn Encoder>, Arc<IntentModel>);

pub fn builtin_model() -> Option<Trained> {
    static MODEL: OnceLock<Option<Trained>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let enc: Arc<dyn Encoder> = f32_encoder()?;
            let data = Dataset::builtin().expect("built-in pack parses");
            let (model, report) =
                IntentModel::train(&data, Some(&enc), ModelConfig::default()).expect("train");
            assert!(report.fine >= 16 && report.coarse >= 7, "{report:?}");
            Some((enc, Arc::new(model)))
        })
        .clone()
}

#[test]
fn the_builtin_pack_recognises_paraphrases_in_english_and_chinese() {
    let Some((enc, model)) = builtin_model() else {
        return;
    };
    let mut wrong = Vec::new();
    for (text, want) in HELD_OUT {
        let p = model.predict(text, Some(enc.as_ref())).expect("predict");
        if p.fine != *want {
            wrong.push(format!(
                "{text:?} -> {} ({:.2}), want {want}",
                p.fine, p.confidence
            ));
        }
    }
    assert!(wrong.len() <= 1, "misclassified: {wrong:#?}");
    let p = model
        .predict("remind me at 7pm to water the plants", Some(enc.as_ref()))
        .expect("predict");
    assert_eq!(p.coarse, "schedule", "the coarse head names the group");
}

#[test]
fn surprise_separates_out_of_domain_requests() {
    let Some((enc, model)) = builtin_model() else {
        return;
    };
    let score = |t: &str| model.predict(t, Some(enc.as_ref())).expect("predict");
    let inside: Vec<f32> = HELD_OUT.iter().map(|(t, _)| score(t).surprise).collect();
    let outside: Vec<f32> = OUT_OF_DOMAIN.iter().map(|t| score(t).surprise).collect();
    let auroc = moltbot_understand::eval::auroc(&inside, &outside);
    assert!(auroc >= 0.9, "AUROC {auroc}: in {inside:?} out {outside:?}");
    for s in inside.iter().chain(&outside) {
        assert!(
            (0.0..=1.0).contains(s),
            "calibrated surprise in [0, 1], got {s}"
        );
    }
}

#[test]
fn a_saved_model_loads_and_answers_identically() {
    let Some((enc, model)) = builtin_model() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sub").join("model.safetensors");
    model.save(&path).expect("save");
    let loaded = IntentModel::load(&path).expect("load");
    for (text, _) in HELD_OUT {
        let a = model.predict(text, Some(enc.as_ref())).expect("a");
        let b = loaded.predict(text, Some(enc.as_ref())).expect("b");
        assert_eq!(a, b, "{text}");
    }
    assert_eq!(
        loaded.intent("ask_time").and_then(|s| s.reply.clone()),
        Some("It is {time}.".into())
    );

    std::fs::write(dir.path().join("junk.safetensors"), b"not a model").expect("write");
    let err = IntentModel::load(&dir.path().join("junk.safetensors")).expect_err("junk");
    assert_eq!(err.kind(), "intents_format", "{err}");
}

#[test]
fn a_model_without_encoder_still_classifies() {
    let data = Dataset::builtin().expect("pack");
    let (model, _) = IntentModel::train(&data, None, ModelConfig::default()).expect("train");
    assert_eq!(model.encoder_name(), None);
    let right = HELD_OUT
        .iter()
        .filter(|(t, want)| model.predict(t, None).expect("predict").fine == *want)
        .count();
    assert!(right >= 7, "sparse features alone got {right}/10");
}

#[test]
fn long_text_gating_finds_the_request_that_truncation_misses() {
    let Some((enc, model)) = builtin_model() else {
        return;
    };
    let filler = "I spent most of the weekend sorting old photos from the trip to the coast. \
                  The weather was mixed, with sun in the morning and clouds later on. \
                  We walked along the harbour and looked at the boats for a while. ";
    let text = format!("{}{}Anyway, what time is it right now?", filler, filler);
    let windows = moltbot_understand::model::sentence_windows(&text, 64);
    assert!(windows.len() >= 2, "the text spans several windows");
    let gated = model
        .predict_long(&text, Some(enc.as_ref()), 64)
        .expect("long");
    let truncated = model
        .predict(&windows[0], Some(enc.as_ref()))
        .expect("first window");
    assert_eq!(gated.fine, "ask_time", "{gated:?}");
    // Seven sentence units: with a shortlist, the sparse features alone must rank the
    // request among the units the encoder sees, even on a shortlist of one; the full list
    // (the default) agrees, and so does the model with a shortlist set.
    let mut listed = (*model).clone();
    listed.set_long_shortlist(1);
    let p = listed
        .predict_long(&text, Some(enc.as_ref()), 64)
        .expect("long, shortlist set");
    assert_eq!(p.fine, "ask_time", "{p:?}");
    for shortlist in [1, 0] {
        let p = model
            .predict_units(&text, Some(enc.as_ref()), 64, shortlist)
            .expect("units");
        assert_eq!(p.fine, "ask_time", "shortlist {shortlist}: {p:?}");
    }
    assert_ne!(
        truncated.fine, "ask_time",
        "the first window alone has no request"
    );
}

#[test]
fn retraining_swaps_the_model_and_encoder_mismatch_is_refused() {
    let Some((enc, model)) = builtin_model() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.safetensors");
    let u = Understanding::new(Some(enc.clone()), (*model).clone(), Some(path.clone()));
    let before = u.model();
    let mut data = Dataset::builtin().expect("pack");
    data.add_intents_file(
        std::path::Path::new("extra.yaml"),
        "intents:\n  - coarse: home\n    fine: lights_on\n    examples: [turn on the lights, lights on please, switch the lamp on, make it brighter in here]\n",
    )
    .expect("extra");
    u.retrain(&data, ModelConfig::default()).expect("retrain");
    assert!(path.is_file(), "the retrained model is saved");
    assert_eq!(
        u.understand("could you switch on the lights")
            .expect("u")
            .prediction
            .fine,
        "lights_on"
    );
    assert!(
        before.fine_labels().iter().all(|f| f != "lights_on"),
        "old Arc unchanged"
    );

    let (sparse_only, _) = IntentModel::train(&data, None, ModelConfig::default()).expect("train");
    let no_encoder = Understanding::new(None, sparse_only, None);
    let err = no_encoder
        .replace((*model).clone())
        .expect_err("needs the encoder");
    assert_eq!(err.kind(), "intents_encoder_mismatch");
}

#[test]
fn replies_follow_the_language_and_fill_the_clock() {
    let data = Dataset::builtin().expect("pack");
    let spec = &data.intents["ask_time"];
    let now: jiff::Zoned = "2026-11-28T09:05:00[UTC]".parse().expect("time");
    assert_eq!(
        render_reply(spec, "what time is it", &now).as_deref(),
        Some("It is 09:05.")
    );
    assert_eq!(
        render_reply(spec, "现在几点", &now).as_deref(),
        Some("现在是 09:05。")
    );
    let date = &data.intents["ask_date"];
    assert_eq!(
        render_reply(date, "what day is it", &now).as_deref(),
        Some("Today is Saturday, 2026-11-28.")
    );
    assert_eq!(
        render_reply(date, "今天星期几", &now).as_deref(),
        Some("今天是 2026-11-28，星期六。")
    );
    assert_eq!(
        render_reply(&data.intents["remember"], "remember x", &now),
        None
    );
}
