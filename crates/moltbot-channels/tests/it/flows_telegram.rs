//! Telegram end to end through the hub: fake Telegram (long polling) → store → engine on a
//! fake OpenAI server → outbox → fake Telegram.

use crate::harness::Harness;
use moltbot_core::config::{ChannelsConfig, DmPolicy, GroupPolicy};
use moltbot_core::Secret;
use moltbot_fakes::telegram::FakeTelegram;
use std::time::Duration;

const TOKEN: &str = "123456:TEST-telegram-token";
const WAIT: Duration = Duration::from_secs(15);

fn config(tg: &FakeTelegram, policy: DmPolicy) -> ChannelsConfig {
    let mut cfg = ChannelsConfig::default();
    cfg.telegram.enabled = true;
    cfg.telegram.bot_token = Some(Secret::new(TOKEN));
    cfg.telegram.api_base = tg.base_url();
    cfg.telegram.poll_timeout_secs = 1;
    cfg.telegram.dm_policy = policy;
    cfg.telegram.groups = GroupPolicy::Mention;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_flow_from_unknown_sender_to_approved_chat() {
    let tg = FakeTelegram::start(TOKEN).await;
    let h = Harness::start(config(&tg, DmPolicy::Pairing), None).await;

    tg.push_message(500, 500, "hello bot");
    let sent = tg.wait_sent(1, WAIT).await;
    let code = h.pairing_code("telegram", "500").await;
    assert!(sent[0].text.contains(&code), "{:?}", sent[0].text);
    assert!(sent[0].text.contains("moltbot pairing approve telegram"));
    assert_eq!(
        h.model.requests(),
        0,
        "nothing reaches the model before approval"
    );

    // Writing again soon gets no second code (rate limit) and still no model call.
    tg.push_message(500, 500, "are you there?");
    h.until(10, "second message processed", || async {
        h.store.inbox_pending(10).await.unwrap().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(tg.sent().len(), 1);
    assert_eq!(h.model.requests(), 0);

    h.approve("telegram", "500").await;
    tg.push_message(500, 500, "now?");
    let sent = tg.wait_sent(2, WAIT).await;
    assert_eq!(sent[1].text, "echo: now?");
    assert_eq!(h.model.requests(), 1);
    // "typing…" was shown while the model answered.
    assert!(tg
        .chat_actions()
        .iter()
        .any(|a| a.chat_id == "500" && a.action == "typing"));
    // Each sender has their own session.
    let rows = h.store.recent_messages("telegram:500", 10).await.unwrap();
    assert_eq!(rows.len(), 2, "only the approved turn is in the session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_replies_are_split_and_markup_rejection_falls_back_to_plain_text() {
    let tg = FakeTelegram::start(TOKEN).await;
    let para = "Sentence with symbols like 1.5 + 2 = 3.5! ".repeat(40);
    let long = [para.as_str(); 6].join("\n\n");
    let h = Harness::start(config(&tg, DmPolicy::Open), Some(&long)).await;

    tg.push_message(7, 7, "tell me a lot");
    let sent = tg.wait_sent(3, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent_all = tg.sent();
    assert!(sent_all.len() >= 3, "{} pieces", sent_all.len());
    for m in &sent_all {
        assert!(m.text.chars().count() <= 4096);
    }
    // The fake validated the MarkdownV2 escaping of every piece: all were accepted.
    assert!(sent
        .iter()
        .all(|m| m.parse_mode.as_deref() == Some("MarkdownV2")));
    let words = |s: &str| s.split_whitespace().count();
    assert_eq!(
        sent_all
            .iter()
            .map(|m| words(&m.text.replace('\\', "")))
            .sum::<usize>(),
        words(&long)
    );
    // Only the first piece quotes the user's message.
    assert!(sent_all[0].reply_to.is_some());
    assert!(sent_all[1].reply_to.is_none());

    // The platform rejects the markup: the same reply arrives as plain text.
    tg.reject_markdown(true);
    let before = tg.sent().len();
    tg.push_message(7, 7, "again");
    h.until(10, "plain-text fallback delivered", || async {
        tg.sent().len() > before
    })
    .await;
    let last = tg.sent()[before].clone();
    assert_eq!(last.parse_mode, None);
    assert!(last
        .text
        .starts_with("Sentence with symbols like 1.5 + 2 = 3.5!"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_sends_are_retried_after_retry_after() {
    let tg = FakeTelegram::start(TOKEN).await;
    let h = Harness::start(config(&tg, DmPolicy::Open), None).await;
    tg.rate_limit_next_sends(2, 1);
    tg.push_message(9, 9, "hi");
    let sent = tg.wait_sent(1, WAIT).await;
    assert_eq!(sent[0].text, "echo: hi");
    h.until(10, "outbox row marked sent", || async {
        h.store.outbox_recent(1).await.unwrap()[0].status == "sent"
    })
    .await;
    let rows = h.store.outbox_recent(1).await.unwrap();
    assert_eq!(rows[0].attempts, 3, "two 429s, then delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mid_conversation_loses_and_repeats_nothing() {
    let tg = FakeTelegram::start(TOKEN).await;
    let mut h = Harness::start(config(&tg, DmPolicy::Open), None).await;
    tg.push_message(11, 11, "one");
    tg.wait_sent(1, WAIT).await;

    h.stop().await;
    // Messages arrive while the gateway is down.
    tg.push_message(11, 11, "two");
    tg.push_message(11, 11, "three");
    h.restart().await;
    let sent = tg.wait_sent(3, WAIT).await;
    let texts: Vec<&str> = sent.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, vec!["echo: one", "echo: two", "echo: three"]);

    // A second restart re-delivers nothing.
    h.restart().await;
    tg.push_message(11, 11, "four");
    let sent = tg.wait_sent(4, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(tg.sent().len(), 4, "{sent:?}");
    let history = h.store.recent_messages("telegram:11", 100).await.unwrap();
    assert_eq!(history.len(), 8, "four turns, each stored once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_answer_only_when_mentioned() {
    let tg = FakeTelegram::start(TOKEN).await;
    let h = Harness::start(config(&tg, DmPolicy::Open), None).await;
    tg.push_group_message(-100, 21, "just chatting");
    tg.push_group_message(-100, 21, "@moltbot_test_bot what time is it");
    let sent = tg.wait_sent(1, WAIT).await;
    assert_eq!(sent[0].chat_id, "-100");
    assert_eq!(sent[0].text, "echo: what time is it");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(tg.sent().len(), 1);
    assert_eq!(h.model.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_that_could_not_be_sent_survives_a_restart_and_goes_out_once() {
    let tg = FakeTelegram::start(TOKEN).await;
    let mut h = Harness::start(config(&tg, DmPolicy::Open), None).await;
    // Telegram is down (502) for the first attempts.
    tg.fail_next_sends(
        3,
        502,
        serde_json::json!({"ok": false, "error_code": 502, "description": "Bad Gateway"}),
    );
    tg.push_message(31, 31, "are you up?");
    h.until(10, "first attempts failed", || async {
        h.store
            .outbox_recent(1)
            .await
            .unwrap()
            .first()
            .is_some_and(|r| r.attempts >= 1 && r.status == "pending")
    })
    .await;
    assert!(tg.sent().is_empty());
    h.restart().await;
    let sent = tg.wait_sent(1, Duration::from_secs(30)).await;
    assert_eq!(sent[0].text, "echo: are you up?");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(tg.sent().len(), 1);
    assert_eq!(
        h.model.requests(),
        1,
        "the turn ran once; only the send was retried"
    );
}
