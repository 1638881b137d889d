//! The knowledge store end to end: folders of mixed files, updates, removal, reopen,
//! hybrid ranking and concurrent searches.

use std::path::Path;
use std::sync::Arc;

use moltbot_knowledge::{
    AddStatus, HashingEncoder, Knowledge, KnowledgeOptions, SearchMode, SearchOptions,
};

use crate::extract::write_pdf;

fn encoder() -> Arc<HashingEncoder> {
    Arc::new(HashingEncoder::new(256))
}

fn opts(mode: SearchMode) -> SearchOptions {
    SearchOptions {
        sources: None,
        mode,
    }
}

fn write_corpus(root: &Path) {
    std::fs::create_dir_all(root.join("sub")).expect("mkdir");
    std::fs::write(
        root.join("notes.txt"),
        "The office coffee machine is descaled every Friday. Ask Dana for the key.",
    )
    .expect("write");
    std::fs::write(
        root.join("guide.md"),
        "# Gateway\n\nThe gateway listens on port 18789.\n\n## Restart\n\nUse systemctl --user restart moltbot to restart it.\n",
    )
    .expect("write");
    std::fs::write(
        root.join("sub/page.html"),
        "<html><body><h1>Billing</h1><p>Invoices are sent on the first day of each month.</p><script>tracking()</script></body></html>",
    )
    .expect("write");
    write_pdf(
        &root.join("sub/policy.pdf"),
        &[
            "Travel policy",
            "Economy class is required for flights under six hours.",
        ],
    );
    std::fs::write(
        root.join("sub/readme.zh.md"),
        "# 部署\n\n网关默认监听端口一八七八九。重启服务需要管理员权限。\n",
    )
    .expect("write");
}

#[test]
fn folder_add_search_update_remove_and_reopen() {
    let docs = tempfile::tempdir().expect("tempdir");
    let store = tempfile::tempdir().expect("tempdir");
    write_corpus(docs.path());

    let kb = Knowledge::open(store.path(), encoder()).expect("open");
    let mut seen = Vec::new();
    let report = kb
        .add_path(docs.path(), &mut |p| {
            seen.push((p.done, p.total, p.outcome.clone()))
        })
        .expect("add");
    assert_eq!(report.added.len(), 5, "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(seen.len(), 5);
    assert_eq!(seen[4].0, 5);
    let list = kb.list().expect("list");
    assert_eq!(list.len(), 5);
    assert!(list
        .iter()
        .all(|s| s.chunks >= 1 && s.bytes > 0 && s.added_at > 0));

    for (query, file, mode) in [
        (
            "which port does the gateway listen on",
            "guide.md",
            SearchMode::Hybrid,
        ),
        ("when are invoices sent", "page.html", SearchMode::Hybrid),
        ("flights economy class", "policy.pdf", SearchMode::Keyword),
        ("coffee machine descaled", "notes.txt", SearchMode::Vector),
        ("网关端口", "readme.zh.md", SearchMode::Hybrid),
    ] {
        let hits = kb.search(query, 3, &opts(mode)).expect("search");
        assert!(hits[0].source.ends_with(file), "{query}: {hits:#?}");
    }
    let hits = kb
        .search("restart moltbot", 1, &opts(SearchMode::Hybrid))
        .expect("search");
    assert_eq!(hits[0].heading, "Gateway > Restart");
    assert!(hits[0].vector_rank.is_some() && hits[0].keyword_rank.is_some());
    assert!(!hits[0].text.contains("tracking"));

    // Unchanged files are skipped; a changed file replaces its chunks.
    let report = kb.add_path(docs.path(), &mut |_| {}).expect("re-add");
    assert_eq!(report.unchanged.len(), 5, "{report:?}");
    std::fs::write(
        docs.path().join("notes.txt"),
        "The coffee machine moved to the third floor kitchen.",
    )
    .expect("write");
    let report = kb.add_path(docs.path(), &mut |_| {}).expect("update");
    assert_eq!(report.updated.len(), 1, "{report:?}");
    let hits = kb
        .search("descaled every Friday", 5, &opts(SearchMode::Keyword))
        .expect("search");
    assert!(hits.iter().all(|h| !h.text.contains("Friday")), "{hits:#?}");

    // Source filter.
    let guide = list
        .iter()
        .find(|s| s.source.ends_with("guide.md"))
        .expect("guide")
        .source
        .clone();
    let filtered = SearchOptions {
        sources: Some(vec![guide.clone()]),
        mode: SearchMode::Hybrid,
    };
    let hits = kb
        .search("invoices coffee port", 10, &filtered)
        .expect("search");
    assert!(
        !hits.is_empty() && hits.iter().all(|h| h.source == guide),
        "{hits:#?}"
    );

    // Remove, then reopen: the state survives.
    let removed = kb.remove_source(&guide).expect("remove");
    assert!(removed >= 2);
    assert_eq!(kb.remove_source("no such source").expect("remove"), 0);
    let chunks = kb.chunk_count();
    drop(kb);
    let kb = Knowledge::open(store.path(), encoder()).expect("reopen");
    assert_eq!(kb.chunk_count(), chunks);
    assert_eq!(kb.list().expect("list").len(), 4);
    let hits = kb
        .search("gateway port 18789", 5, &opts(SearchMode::Hybrid))
        .expect("search");
    assert!(hits.iter().all(|h| !h.source.ends_with("guide.md")));
    let hits = kb
        .search("invoices first day", 1, &opts(SearchMode::Hybrid))
        .expect("search");
    assert!(hits[0].source.ends_with("page.html"));
}

#[test]
fn text_sources_offsets_and_encoder_mismatch() {
    let store = tempfile::tempdir().expect("tempdir");
    let kb = Knowledge::open(store.path(), encoder()).expect("open");
    let text = "# FAQ\n\nHow do I reset my password? Use the link on the login page.\n\n# Support\n\nCall us.";
    let (status, n) = kb.add_text("faq", text).expect("add");
    assert_eq!((status, n), (AddStatus::Added, 2));
    assert_eq!(
        kb.add_text("faq", text).expect("again").0,
        AddStatus::Unchanged
    );
    let hit = &kb
        .search("reset password", 1, &opts(SearchMode::Hybrid))
        .expect("search")[0];
    assert_eq!(&text[hit.start..hit.end], hit.text);
    assert_eq!(hit.heading, "FAQ");
    let e = kb.add_text("", "x").expect_err("empty source");
    assert_eq!(e.kind(), "knowledge_invalid_argument");
    let e = kb
        .search("x", 0, &SearchOptions::default())
        .expect_err("k = 0");
    assert!(e.to_string().contains("`k`"), "{e}");
    drop(kb);
    let e =
        Knowledge::open(store.path(), Arc::new(HashingEncoder::new(128))).expect_err("mismatch");
    assert_eq!(e.kind(), "knowledge_encoder_mismatch");
    assert!(e.to_string().contains("hashing-ngram-v1/256"), "{e}");
}

/// The hashing encoder under another name, as one encoder's weights at two precisions are
/// named (`…/f32`, `…/int8`).
struct Named(&'static str, HashingEncoder);

impl moltbot_core::Encoder for Named {
    fn name(&self) -> &str {
        self.0
    }
    fn dim(&self) -> usize {
        self.1.dim()
    }
    fn max_tokens(&self) -> usize {
        self.1.max_tokens()
    }
    fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, moltbot_core::EncodeError> {
        self.1.encode(texts)
    }
}

#[test]
fn a_store_built_at_one_precision_opens_at_another_but_not_with_other_weights() {
    let store = tempfile::tempdir().expect("tempdir");
    let at = |name: &'static str| Arc::new(Named(name, HashingEncoder::new(256)));
    let kb = Knowledge::open(store.path(), at("mini/f32")).expect("open");
    kb.add_text(
        "faq",
        "# Reset\n\nUse the link on the login page to reset a password.",
    )
    .expect("add");
    drop(kb);
    let kb = Knowledge::open(store.path(), at("mini/int8")).expect("same weights, int8");
    let hits = kb
        .search("reset password", 1, &opts(SearchMode::Vector))
        .expect("search");
    assert_eq!(hits[0].source, "faq");
    drop(kb);
    let e = Knowledge::open(store.path(), at("other/int8")).expect_err("other weights");
    assert_eq!(e.kind(), "knowledge_encoder_mismatch");
    assert!(e.to_string().contains("mini/f32/256"), "{e}");
}

#[test]
fn damaged_vector_file_is_rebuilt_on_open() {
    let store = tempfile::tempdir().expect("tempdir");
    {
        let kb = Knowledge::open(store.path(), encoder()).expect("open");
        kb.add_text("a", "Solar panels convert sunlight into electricity.")
            .expect("add");
        kb.add_text("b", "Wind turbines spin in strong coastal winds.")
            .expect("add");
    }
    std::fs::write(store.path().join("vectors.hnsw"), b"garbage").expect("write");
    let kb = Knowledge::open(store.path(), encoder()).expect("reopen");
    assert_eq!(kb.chunk_count(), 2);
    let hits = kb
        .search("sunlight electricity", 1, &opts(SearchMode::Vector))
        .expect("search");
    assert_eq!(hits[0].source, "a");
}

/// A small constructed set where each single ranking misses something the other finds:
/// the vector side tolerates typos and word forms (character n-grams), the keyword side
/// weights a rare exact term above many common words. Fusion must do at least as well as
/// either on mean reciprocal rank.
#[test]
fn hybrid_is_at_least_as_good_as_each_mode() {
    let store = tempfile::tempdir().expect("tempdir");
    let kb =
        Knowledge::open_with(store.path(), encoder(), KnowledgeOptions::default()).expect("open");
    let docs = [
        ("configuration", "Configuration files live in the home folder and are reloaded on change."),
        ("schedule", "Scheduled jobs run at the configured times and deliver to a channel."),
        ("quota", "The error code QX9 means the storage quota of the account is exhausted."),
        ("storage", "Storage of the account and the files of the account are kept on the disk of the account server."),
        ("telegram", "The Telegram adapter polls for updates and sends replies with the bot token."),
        ("backup", "Backups of the database are written every night and kept for thirty days."),
        ("memory", "Conversation memory keeps the last 128 turns and summarises older ones."),
        ("browser", "The browser tool drives Chromium over the DevTools protocol."),
    ];
    for (src, text) in docs {
        kb.add_text(src, text).expect("add");
    }
    let queries = [
        ("configuraton fles reloded", "configuration"), // typos: vector wins
        ("schedulling jobs delivered", "schedule"),     // word forms
        ("account storage QX9", "quota"),               // rare exact code: keyword wins
        ("telegram bot token", "telegram"),
        ("nightly database backups", "backup"),
        ("how many turns does memory keep", "memory"),
        ("chromium devtools", "browser"),
    ];
    let mrr = |mode| {
        let mut total = 0.0;
        for (q, want) in queries {
            let hits = kb.search(q, 8, &opts(mode)).expect("search");
            if let Some(pos) = hits.iter().position(|h| h.source == want) {
                total += 1.0 / (pos + 1) as f64;
            }
        }
        total / queries.len() as f64
    };
    let (h, v, k) = (
        mrr(SearchMode::Hybrid),
        mrr(SearchMode::Vector),
        mrr(SearchMode::Keyword),
    );
    assert!(
        h >= v && h >= k,
        "hybrid {h:.3} vector {v:.3} keyword {k:.3}"
    );
    assert!(h > 0.9, "hybrid {h:.3}");
}

#[test]
fn concurrent_searches_while_adding() {
    let store = tempfile::tempdir().expect("tempdir");
    let kb = Arc::new(Knowledge::open(store.path(), encoder()).expect("open"));
    for i in 0..20 {
        kb.add_text(
            &format!("doc{i}"),
            &format!("Document number {i} talks about topic {}.", i % 5),
        )
        .expect("add");
    }
    let searchers: Vec<_> = (0..3)
        .map(|t| {
            let kb = kb.clone();
            std::thread::spawn(move || {
                for i in 0..30 {
                    let hits = kb
                        .search(
                            &format!("topic {}", (i + t) % 5),
                            3,
                            &SearchOptions::default(),
                        )
                        .expect("search");
                    assert!(!hits.is_empty());
                }
            })
        })
        .collect();
    for i in 20..30 {
        kb.add_text(
            &format!("doc{i}"),
            &format!("Late document {i} about topic {}.", i % 5),
        )
        .expect("add");
    }
    for s in searchers {
        s.join().expect("thread");
    }
    assert_eq!(kb.list().expect("list").len(), 30);
}
