//! The same behaviour from both backends: every test runs on SQLite and, when
//! `MOLTBOT_TEST_POSTGRES` names a server (`scripts/services.sh start postgres`), on
//! PostgreSQL in a fresh schema of its own. The claim tests run many claimers at once and
//! check that no row is handed out twice.

use moltbot_core::{Inbound, Role};
use moltbot_store::{
    CronJob, CronPayload, CronRunStatus, CronTarget, CronTrigger, NewCronRun, NewMessage,
    NewOutbox, PairingRequest, PgOptions, Store, StoreError,
};
use std::collections::HashSet;

struct Backend {
    name: &'static str,
    store: Store,
    _dir: Option<tempfile::TempDir>,
}

/// SQLite always; PostgreSQL when the test server is configured.
async fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let mut out = vec![Backend {
        name: "sqlite",
        store: Store::open(&dir.path().join("t.db")).unwrap(),
        _dir: Some(dir),
    }];
    match std::env::var("MOLTBOT_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => out.push(Backend {
            name: "postgres",
            store: postgres(&url).await,
            _dir: None,
        }),
        _ => eprintln!("MOLTBOT_TEST_POSTGRES unset: PostgreSQL half skipped"),
    }
    out
}

async fn postgres(url: &str) -> Store {
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    Store::connect_postgres(&PgOptions::new(url).schema(schema))
        .await
        .expect("connect to MOLTBOT_TEST_POSTGRES")
}

fn user(text: &str) -> Vec<NewMessage> {
    vec![NewMessage::new(Role::User, text)]
}

#[tokio::test]
async fn sessions_messages_and_turn_ids() {
    for b in backends().await {
        let s = &b.store;
        let n = b.name;
        s.append(
            "s1",
            Some("ann"),
            "http",
            vec![
                NewMessage::new(Role::User, "hello"),
                NewMessage::new(Role::Assistant, "hi there"),
            ],
        )
        .await
        .unwrap();
        for i in 0..5 {
            s.append("s2", None, "ws", user(&format!("m{i}")))
                .await
                .unwrap();
        }
        let msgs = s.recent_messages("s1", 10).await.unwrap();
        assert_eq!(msgs.len(), 2, "{n}");
        assert_eq!(
            (msgs[0].role, msgs[1].content.as_str()),
            (Role::User, "hi there"),
            "{n}"
        );
        let last: Vec<String> = s
            .recent_messages("s2", 3)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.content)
            .collect();
        assert_eq!(last, ["m2", "m3", "m4"], "{n}");
        let s1 = s.session("s1").await.unwrap().unwrap();
        assert_eq!(
            (s1.message_count, s1.user.as_deref(), s1.title.as_deref()),
            (2, Some("ann"), Some("hello")),
            "{n}"
        );
        let (rows, total) = s.list_sessions(1, 0).await.unwrap();
        assert_eq!(
            (rows.len(), total, rows[0].id.as_str()),
            (1, 2, "s2"),
            "{n}: newest first"
        );
        assert!(s.session("nope").await.unwrap().is_none(), "{n}");

        // A turn id stores each side once, however often it is delivered.
        for _ in 0..2 {
            s.append_turn("s3", None, "http", Some("t1"), user("q"))
                .await
                .unwrap();
        }
        let rec = s.turn_record("t1").await.unwrap();
        assert!(rec.user_stored && rec.reply.is_none(), "{n}");
        let mut reply = NewMessage::new(Role::Assistant, "a");
        reply.model = Some("m".into());
        reply.prompt_tokens = Some(7);
        reply.completion_tokens = Some(2);
        for _ in 0..2 {
            s.append_turn("s3", None, "http", Some("t1"), vec![reply.clone()])
                .await
                .unwrap();
        }
        let got = s.turn_record("t1").await.unwrap().reply.unwrap();
        assert_eq!(
            (
                got.content.as_str(),
                got.model.as_deref(),
                got.prompt_tokens,
                got.completion_tokens
            ),
            ("a", Some("m"), Some(7), Some(2)),
            "{n}"
        );
        assert_eq!(
            s.session("s3").await.unwrap().unwrap().message_count,
            2,
            "{n}"
        );

        assert!(s.delete_session("s2").await.unwrap(), "{n}");
        assert!(!s.delete_session("s2").await.unwrap(), "{n}");
        assert!(s.recent_messages("s2", 10).await.unwrap().is_empty(), "{n}");
        s.ping().await.unwrap();
    }
}

fn inbound(id: &str, chat: &str) -> Inbound {
    Inbound {
        channel: "telegram".into(),
        external_id: id.into(),
        chat_id: chat.into(),
        sender_id: "u1".into(),
        sender_name: Some("Ann".into()),
        text: format!("text {id}"),
        is_group: chat.starts_with('-'),
        mentioned: true,
        reply_to: None,
        thread: Some("t".into()),
    }
}

fn out(chat: &str, text: &str, key: Option<&str>) -> NewOutbox {
    NewOutbox {
        channel: "telegram".into(),
        chat_id: chat.into(),
        text: text.into(),
        reply_to: None,
        thread: None,
        dedupe_key: key.map(str::to_string),
    }
}

#[tokio::test]
async fn inbox_outbox_and_cursors() {
    for b in backends().await {
        let s = &b.store;
        let n = b.name;
        let cursor = Some(("offset".to_string(), "10".to_string()));
        let fresh = s
            .inbox_accept(
                "telegram",
                vec![inbound("1", "c1"), inbound("2", "-g")],
                cursor,
            )
            .await
            .unwrap();
        assert_eq!(fresh.len(), 2, "{n}");
        assert!(
            fresh[1].message.is_group && fresh[1].message.mentioned,
            "{n}"
        );
        // Redelivered: nothing new.
        let again = s
            .inbox_accept(
                "telegram",
                vec![inbound("2", "-g"), inbound("3", "c1")],
                None,
            )
            .await
            .unwrap();
        assert_eq!(again.len(), 1, "{n}");
        assert_eq!(
            s.cursor_get("telegram", "offset").await.unwrap().as_deref(),
            Some("10"),
            "{n}"
        );
        s.cursor_set("telegram", "offset", "11").await.unwrap();
        assert_eq!(
            s.cursor_get("telegram", "offset").await.unwrap().as_deref(),
            Some("11"),
            "{n}"
        );
        let pending = s.inbox_pending(10).await.unwrap();
        assert_eq!(pending.len(), 3, "{n}");
        assert_eq!(
            pending[0].message,
            inbound("1", "c1"),
            "{n}: stored as received"
        );

        // Finishing a message queues its replies atomically; a re-run turn's key is kept once.
        let ids = s
            .inbox_finish(
                pending[0].id,
                "done",
                vec![
                    out("c1", "part 1", Some("k1")),
                    out("c1", "part 2", Some("k2")),
                ],
            )
            .await
            .unwrap();
        let again = s
            .outbox_enqueue(vec![out("c1", "part 1 again", Some("k1"))])
            .await
            .unwrap();
        assert_eq!(again, ids[..1], "{n}: the existing row is reported");
        assert_eq!(
            s.inbox_status(pending[0].id).await.unwrap().as_deref(),
            Some("done"),
            "{n}"
        );
        s.outbox_enqueue(vec![out("c2", "other chat", None)])
            .await
            .unwrap();

        // Only each chat's head is due; a retried head holds back the rest of its chat.
        let now = FAR;
        let due: Vec<String> = s
            .outbox_due(now, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.text)
            .collect();
        assert_eq!(due, ["part 1", "other chat"], "{n}");
        s.outbox_attempt_failed(ids[0], Some(now + 5_000), "429")
            .await
            .unwrap();
        let due = s.outbox_due(now, 10).await.unwrap();
        assert_eq!(due.len(), 1, "{n}: part 2 waits behind part 1");
        assert_eq!(
            s.outbox_next_due().await.unwrap(),
            Some(due[0].next_attempt_at),
            "{n}"
        );
        let row = s.outbox_get(ids[0]).await.unwrap().unwrap();
        assert_eq!(
            (row.attempts, row.last_error.as_deref()),
            (1, Some("429")),
            "{n}"
        );
        s.outbox_sent(ids[0], "p-1").await.unwrap();
        let row = s.outbox_get(ids[0]).await.unwrap().unwrap();
        assert_eq!(
            (row.status.as_str(), row.platform_id.as_deref()),
            ("sent", Some("p-1")),
            "{n}"
        );
        s.outbox_attempt_failed(ids[1], None, "gone").await.unwrap();
        let counts = s.outbox_counts().await.unwrap();
        assert_eq!(counts, [("telegram".to_string(), 1, 1)], "{n}");
        assert_eq!(s.outbox_recent(10).await.unwrap().len(), 3, "{n}");
        // Pruning keeps pending and failed rows.
        let pruned = s.channels_prune(i64::MAX).await.unwrap();
        assert_eq!(pruned, 2, "{n}: one done inbox row, one sent outbox row");
        assert_eq!(s.outbox_recent(10).await.unwrap().len(), 2, "{n}");
    }
}

fn pairing(sender: &str, code: &str, at: i64) -> PairingRequest {
    PairingRequest {
        channel: "telegram".into(),
        sender_id: sender.into(),
        sender_name: Some(format!("name {sender}")),
        chat_id: format!("chat-{sender}"),
        code: code.into(),
        created_at: at,
        expires_at: at + 3_600_000,
        last_sent_at: at,
    }
}

#[tokio::test]
async fn pairing_and_allowed_senders() {
    for b in backends().await {
        let s = &b.store;
        let n = b.name;
        let t = 1_000;
        assert!(
            s.pairing_put(pairing("a", "AAAA1111", t), 2).await.unwrap(),
            "{n}"
        );
        assert!(
            s.pairing_put(pairing("b", "BBBB2222", t), 2).await.unwrap(),
            "{n}"
        );
        assert!(
            !s.pairing_put(pairing("c", "CCCC3333", t), 2).await.unwrap(),
            "{n}: full"
        );
        // Replacing one's own request is always allowed.
        assert!(
            s.pairing_put(pairing("a", "AAAA9999", t + 1), 2)
                .await
                .unwrap(),
            "{n}"
        );
        s.pairing_touch("telegram", "a", t + 50).await.unwrap();
        let a = s.pairing_get("telegram", "a").await.unwrap().unwrap();
        assert_eq!(
            (a.code.as_str(), a.last_sent_at),
            ("AAAA9999", t + 50),
            "{n}"
        );
        assert_eq!(s.pairing_list(t).await.unwrap().len(), 2, "{n}");
        assert!(
            s.pairing_approve("telegram", "aaaa1111", t)
                .await
                .unwrap()
                .is_none(),
            "{n}: old code"
        );
        let ok = s
            .pairing_approve("telegram", " aaaa9999 ", t)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ok.sender_id, "a", "{n}");
        assert!(
            s.pairing_get("telegram", "a").await.unwrap().is_none(),
            "{n}"
        );
        assert!(s.allowed_contains("telegram", "a").await.unwrap(), "{n}");
        // An expired request cannot be approved.
        assert!(
            s.pairing_approve("telegram", "BBBB2222", t + 3_600_001)
                .await
                .unwrap()
                .is_none(),
            "{n}"
        );
        s.allowed_add("telegram", "b", "cli").await.unwrap();
        assert!(
            s.pairing_get("telegram", "b").await.unwrap().is_none(),
            "{n}: allowing drops the request"
        );
        let list = s.allowed_list().await.unwrap();
        assert_eq!(
            list.iter()
                .map(|a| (a.sender_id.as_str(), a.via.as_str()))
                .collect::<Vec<_>>(),
            [("a", "pairing"), ("b", "cli")],
            "{n}"
        );
        assert!(s.allowed_remove("telegram", "a").await.unwrap(), "{n}");
        assert!(!s.allowed_remove("telegram", "a").await.unwrap(), "{n}");
    }
}

fn job(id: &str, next: Option<i64>, created: i64) -> CronJob {
    CronJob {
        id: id.into(),
        name: format!("job {id}"),
        schedule_kind: "every".into(),
        schedule_expr: "10m".into(),
        tz: "UTC".into(),
        payload: CronPayload::Tool {
            name: "web_fetch".into(),
            args: r#"{"url":"http://127.0.0.1/"}"#.into(),
        },
        target: CronTarget::Session { id: "s".into() },
        enabled: true,
        run_now: false,
        next_run_ms: next,
        last_run_ms: None,
        last_status: None,
        misfire: Some(moltbot_core::config::MisfirePolicy::Skip),
        owner: Some("cli".into()),
        created_ms: created,
    }
}

fn run(job_id: &str, at: i64) -> NewCronRun {
    NewCronRun {
        job_id: job_id.into(),
        scheduled_ms: at,
        started_ms: at,
        finished_ms: at + 5,
        status: CronRunStatus::Ok,
        trigger: CronTrigger::Scheduled,
        output: Some("x".repeat(3_000)),
    }
}

#[tokio::test]
async fn cron_jobs_and_runs() {
    for b in backends().await {
        let s = &b.store;
        let n = b.name;
        assert!(s.cron_add(job("j1", Some(100), 1), 2).await.unwrap(), "{n}");
        assert!(s.cron_add(job("j2", Some(50), 1), 2).await.unwrap(), "{n}");
        assert!(
            !s.cron_add(job("j3", Some(50), 1), 2).await.unwrap(),
            "{n}: at the limit"
        );
        assert_eq!(
            s.cron_get("j1").await.unwrap().unwrap(),
            job("j1", Some(100), 1),
            "{n}"
        );
        let ids: Vec<String> = s
            .cron_list()
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(
            ids,
            ["j1", "j2"],
            "{n}: insertion order on equal creation times"
        );
        assert_eq!(s.cron_count().await.unwrap(), 2, "{n}");
        let due: Vec<String> = s
            .cron_due(100, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(due, ["j2", "j1"], "{n}: earliest first");
        assert_eq!(s.cron_next_due().await.unwrap(), Some(50), "{n}");
        assert!(s.cron_set_enabled("j2", false, None).await.unwrap(), "{n}");
        assert!(s.cron_run_now("j2").await.unwrap(), "{n}");
        assert_eq!(
            s.cron_next_due().await.unwrap(),
            Some(0),
            "{n}: a manual run waits"
        );
        let due = s.cron_due(0, 10).await.unwrap();
        assert_eq!(
            (due.len(), due[0].id.as_str()),
            (1, "j2"),
            "{n}: paused but asked to run"
        );
        s.cron_clear_run_now("j2").await.unwrap();
        assert!(s.cron_set_next_run("j1", None).await.unwrap(), "{n}");
        let j1 = s.cron_get("j1").await.unwrap().unwrap();
        assert!(
            !j1.enabled && j1.next_run_ms.is_none(),
            "{n}: a spent one-shot"
        );
        assert_eq!(s.cron_next_due().await.unwrap(), None, "{n}");

        for at in 0..5 {
            s.cron_record_run(run("j1", at * 10), 3)
                .await
                .unwrap()
                .unwrap();
        }
        let runs = s.cron_runs("j1", 10).await.unwrap();
        assert_eq!(
            runs.iter().map(|r| r.scheduled_ms).collect::<Vec<_>>(),
            [40, 30, 20],
            "{n}: the newest 3 kept"
        );
        assert!(
            runs[0].output.as_ref().unwrap().chars().count() <= 2_001,
            "{n}"
        );
        let j1 = s.cron_get("j1").await.unwrap().unwrap();
        assert_eq!(
            (j1.last_run_ms, j1.last_status),
            (Some(40), Some(CronRunStatus::Ok)),
            "{n}"
        );
        assert!(
            s.cron_record_run(run("gone", 1), 3)
                .await
                .unwrap()
                .is_none(),
            "{n}"
        );
        assert!(s.cron_remove("j1").await.unwrap(), "{n}");
        assert!(s.cron_runs("j1", 10).await.unwrap().is_empty(), "{n}");
        assert!(!s.cron_remove("j1").await.unwrap(), "{n}");
    }
}

/// Year 2096 in ms: later than any row's real-clock timestamp.
const FAR: i64 = 4_000_000_000_000;

/// Claims from several handles at once (PostgreSQL: several pool connections racing;
/// SQLite: the writer serialising them): every due row is handed to exactly one claimer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_hand_out_each_row_once() {
    for b in backends().await {
        let s = &b.store;
        let n = b.name;
        let now = 10_000;
        // 60 chats with one due message each, 40 cron jobs due.
        let items: Vec<NewOutbox> = (0..60).map(|i| out(&format!("c{i}"), "x", None)).collect();
        s.outbox_enqueue(items).await.unwrap();
        for i in 0..40 {
            s.cron_add(job(&format!("j{i:02}"), Some(now - 1), i), 100)
                .await
                .unwrap();
        }
        let claims = (0..8).map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut outbox = Vec::new();
                let mut cron = Vec::new();
                for _ in 0..10 {
                    // Outbox rows are stamped with the real clock; claim from far ahead.
                    outbox.extend(s.outbox_claim(FAR, 60_000, 4).await.unwrap());
                    cron.extend(s.cron_claim_due(now, 60_000, 3).await.unwrap());
                }
                (outbox, cron)
            })
        });
        let mut outbox_ids = Vec::new();
        let mut cron_ids = Vec::new();
        for r in futures::future::join_all(claims).await {
            let (o, c) = r.unwrap();
            outbox_ids.extend(o.into_iter().map(|r| r.id));
            cron_ids.extend(c.into_iter().map(|j| j.id));
        }
        let unique: HashSet<_> = outbox_ids.iter().collect();
        assert_eq!(
            (outbox_ids.len(), unique.len()),
            (60, 60),
            "{n}: outbox rows claimed once"
        );
        let unique: HashSet<_> = cron_ids.iter().collect();
        assert_eq!(
            (cron_ids.len(), unique.len()),
            (40, 40),
            "{n}: cron jobs claimed once"
        );

        // A claim runs out: after the lease another claimer gets the job; a released job
        // is claimable at once.
        assert!(
            s.cron_claim_due(now + 59_000, 60_000, 100)
                .await
                .unwrap()
                .is_empty(),
            "{n}"
        );
        assert_eq!(
            s.cron_claim_due(now + 60_000, 60_000, 100)
                .await
                .unwrap()
                .len(),
            40,
            "{n}"
        );
        s.cron_release("j00").await.unwrap();
        let again = s.cron_claim_due(now + 60_001, 60_000, 100).await.unwrap();
        assert_eq!(again.len(), 1, "{n}");
        assert_eq!(again[0].id, "j00", "{n}");
        // An outbox claim moves the row's next attempt: not due for others meanwhile.
        let later = FAR + 60_000;
        assert!(
            s.outbox_due(later - 1, 100).await.unwrap().is_empty(),
            "{n}"
        );
        assert_eq!(s.outbox_due(later, 100).await.unwrap().len(), 60, "{n}");
    }
}

#[tokio::test]
async fn inbox_claims_keep_a_chat_with_one_owner() {
    for b in backends().await {
        let s = &b.store;
        let n = b.name;
        s.inbox_accept(
            "telegram",
            vec![inbound("1", "c1"), inbound("2", "c1"), inbound("3", "c2")],
            None,
        )
        .await
        .unwrap();
        let now = 5_000;
        let ids = |rows: Vec<moltbot_store::InboxRow>| {
            rows.into_iter()
                .map(|r| r.message.external_id)
                .collect::<Vec<_>>()
        };
        let a = ids(s.inbox_claim("A", now, 1_000, 2).await.unwrap());
        assert_eq!(a, ["1", "2"], "{n}");
        // B may not take message 3's chat-mate… it takes the other chat only.
        let bb = ids(s.inbox_claim("B", now, 1_000, 10).await.unwrap());
        assert_eq!(bb, ["3"], "{n}");
        // A again: its own claims are renewed, nothing of B's is taken.
        let a = ids(s.inbox_claim("A", now + 500, 1_000, 10).await.unwrap());
        assert_eq!(a, ["1", "2"], "{n}");
        // A dies: once its lease runs out B takes its messages over, in order.
        assert!(
            s.inbox_claim("B", now + 1_499, 1_000, 10)
                .await
                .unwrap()
                .len()
                == 1,
            "{n}"
        );
        let bb = ids(s.inbox_claim("B", now + 1_500, 1_000, 10).await.unwrap());
        assert_eq!(bb, ["1", "2", "3"], "{n}");
        // A finished row is never claimed again.
        let first = s.inbox_pending(1).await.unwrap().remove(0);
        s.inbox_finish(first.id, "done", vec![]).await.unwrap();
        let c = ids(s.inbox_claim("C", now + 10_000, 1_000, 10).await.unwrap());
        assert_eq!(c, ["2", "3"], "{n}");
    }
}

/// A database that cannot be reached fails fast with `Unavailable` (HTTP 503 upstream),
/// not after a long hang and not as a query error.
#[tokio::test]
async fn an_unreachable_postgres_is_unavailable() {
    // A port nothing listens on: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut opts = PgOptions::new(format!("postgres://moltbot@127.0.0.1:{port}/moltbot"));
    opts.acquire_timeout = std::time::Duration::from_millis(500);
    let err = match Store::connect_postgres(&opts).await {
        Err(e) => e,
        Ok(_) => panic!("connected to a closed port"),
    };
    assert!(
        matches!(err, StoreError::Unavailable(_)),
        "expected Unavailable, got {err:?}"
    );
    assert!(err.is_unavailable());
}
