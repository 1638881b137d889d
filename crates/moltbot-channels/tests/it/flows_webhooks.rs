//! WhatsApp and Slack end to end through the hub: the fake platform posts signed webhooks
//! to our routes on a real socket; replies reach the fake's send API.

use crate::harness::Harness;
use moltbot_core::config::{ChannelsConfig, DmPolicy};
use moltbot_core::Secret;
use moltbot_fakes::slack::FakeSlack;
use moltbot_fakes::whatsapp::FakeWhatsApp;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);
const WA_TOKEN: &str = "EAAG-test-access-token";
const WA_SECRET: &str = "wa-app-secret";
const SLACK_TOKEN: &str = "xoxb-test-token";
const SLACK_SECRET: &str = "slack-signing-secret";

fn whatsapp_config(wa: &FakeWhatsApp, policy: DmPolicy) -> ChannelsConfig {
    let mut cfg = ChannelsConfig::default();
    let w = &mut cfg.whatsapp;
    w.enabled = true;
    w.access_token = Some(Secret::new(WA_TOKEN));
    w.phone_number_id = wa.phone_number_id().to_string();
    w.verify_token = Some(Secret::new("verify-me"));
    w.app_secret = Some(Secret::new(WA_SECRET));
    w.api_base = wa.base_url();
    w.dm_policy = policy;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatsapp_pairing_signature_redelivery_and_retry() {
    let wa = FakeWhatsApp::start(WA_TOKEN, "1098765").await;
    let h = Harness::start(whatsapp_config(&wa, DmPolicy::Pairing), None).await;
    let hook = h.url("/channels/whatsapp/webhook");

    // A forged post is refused and nothing is stored.
    let resp = wa
        .deliver_raw(
            &hook,
            br#"{"object":"whatsapp_business_account","entry":[]}"#.to_vec(),
            Some("sha256=00".into()),
        )
        .await;
    assert_eq!(resp.status(), 401);

    // Unknown sender: a pairing code, no model call.
    let (_, resp) = wa
        .deliver_text(&hook, WA_SECRET, "4915100000001", "Anna", "hi")
        .await;
    assert_eq!(resp.status(), 200);
    let sent = wa.wait_sent(1, WAIT).await;
    assert_eq!(sent.len(), 1);
    let code = h.pairing_code("whatsapp", "4915100000001").await;
    assert!(sent[0].body.contains(&code));
    assert_eq!(h.model.requests(), 0);

    h.approve("whatsapp", "4915100000001").await;
    wa.rate_limit_next_sends(1);
    let (id, resp) = wa
        .deliver_text(&hook, WA_SECRET, "4915100000001", "Anna", "what's up")
        .await;
    assert_eq!(resp.status(), 200);
    // Meta delivers the same webhook again (no 200 seen in time): answered once.
    let resp = wa.redeliver(&hook, WA_SECRET).await;
    assert_eq!(resp.status(), 200);
    let sent = wa.wait_sent(2, WAIT).await;
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].body, "echo: what's up");
    assert_eq!(sent[1].context_message_id.as_deref(), Some(id.as_str()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(wa.sent().len(), 2, "no double reply");
    assert_eq!(h.model.requests(), 1);
    h.until(10, "outbox row marked sent", || async {
        h.store.outbox_recent(1).await.unwrap()[0].status == "sent"
    })
    .await;
    let rows = h.store.outbox_recent(1).await.unwrap();
    assert_eq!(rows[0].attempts, 2, "one 429, then delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_dm_and_mention_are_answered_in_thread_once() {
    let slack = FakeSlack::start(SLACK_TOKEN, "U0BOT").await;
    let mut cfg = ChannelsConfig::default();
    cfg.slack.enabled = true;
    cfg.slack.bot_token = Some(Secret::new(SLACK_TOKEN));
    cfg.slack.signing_secret = Some(Secret::new(SLACK_SECRET));
    cfg.slack.api_base = slack.base_url();
    cfg.slack.dm_policy = DmPolicy::Open;
    let h = Harness::start(cfg, None).await;
    let hook = h.url("/channels/slack/events");

    let started = std::time::Instant::now();
    let resp = slack
        .deliver_dm(&hook, SLACK_SECRET, "U1", "D1", "hello there")
        .await;
    assert_eq!(resp.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "acked within Slack's 3 s"
    );
    let sent = slack.wait_sent(1, WAIT).await;
    assert_eq!(sent[0].channel, "D1");
    assert_eq!(sent[0].text, "echo: hello there");

    // A channel message that mentions the bot arrives twice (message + app_mention) and is
    // retried by Slack: one answer, threaded under the message.
    let mut msg = slack.channel_event("U1", "C1", "<@U0BOT> status please");
    let mut mention = slack.mention_event("U1", "C1", "<@U0BOT> status please");
    mention.ts = msg.ts.clone();
    msg.event_id = "Ev1".into();
    mention.event_id = "Ev2".into();
    assert_eq!(
        slack
            .deliver_event(&hook, SLACK_SECRET, &msg)
            .await
            .status(),
        200
    );
    assert_eq!(
        slack
            .deliver_event(&hook, SLACK_SECRET, &mention)
            .await
            .status(),
        200
    );
    assert_eq!(
        slack
            .deliver_event_retry(&hook, SLACK_SECRET, &mention, 1)
            .await
            .status(),
        200
    );
    let sent = slack.wait_sent(2, WAIT).await;
    assert_eq!(sent[1].channel, "C1");
    assert_eq!(sent[1].text, "echo: status please");
    assert_eq!(sent[1].thread_ts.as_deref(), Some(msg.ts.as_str()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(slack.sent().len(), 2);
    assert_eq!(h.model.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_dm_pairing_and_reply_and_resume_after_restart() {
    use moltbot_fakes::discord::FakeDiscord;
    let dc = FakeDiscord::start("discord-bot-token").await;
    dc.set_heartbeat_interval(Duration::from_millis(500));
    let mut cfg = ChannelsConfig::default();
    cfg.discord.enabled = true;
    cfg.discord.bot_token = Some(Secret::new("discord-bot-token"));
    cfg.discord.api_base = dc.api_base();
    cfg.discord.gateway_url = Some(dc.gateway_url());
    let mut h = Harness::start(cfg, None).await;

    dc.push_dm("800100", "700100", "anna", "hello");
    let sent = dc.wait_sent(1, WAIT).await;
    let code = h.pairing_code("discord", "700100").await;
    assert!(sent[0].content.contains(&code));
    h.approve("discord", "700100").await;
    dc.push_dm("800100", "700100", "anna", "ping");
    let sent = dc.wait_sent(2, WAIT).await;
    assert_eq!(sent[1].content, "echo: ping");
    assert_eq!(sent[1].channel_id, "800100");

    // Down for a while: what arrives meanwhile is replayed on resume and answered once.
    h.stop().await;
    dc.push_dm("800100", "700100", "anna", "while you were away");
    h.restart().await;
    let sent = dc.wait_sent(3, WAIT).await;
    assert_eq!(sent[2].content, "echo: while you were away");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(dc.sent().len(), 3);
    assert!(
        dc.resume_count() >= 1,
        "the restart resumed the gateway session"
    );
}
