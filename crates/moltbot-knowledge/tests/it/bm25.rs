//! BM25 keyword index: exact keywords, CJK, source filter, deletes, reopen.

use moltbot_knowledge::bm25::analyze;
use moltbot_knowledge::KeywordIndex;

fn sample(idx: &KeywordIndex) {
    let docs = [
        (
            1,
            "a.md",
            "The gateway listens on port 18789 and speaks WebSocket.",
        ),
        (
            2,
            "a.md",
            "Error ERR_4711 means the disk quota was exceeded.",
        ),
        (
            3,
            "b.md",
            "Cron jobs are persisted and fire once per schedule.",
        ),
        (
            4,
            "zh.md",
            "机器学习是人工智能的一个分支，研究计算机如何从数据中学习。",
        ),
        (5, "zh.md", "今天天气很好，我们去公园散步吧。"),
        (6, "zh.md", "深度学习使用多层神经网络。"),
    ];
    for (id, src, text) in docs {
        idx.add(id, src, text).expect("add");
    }
    idx.commit().expect("commit");
}

#[test]
fn finds_exact_keywords_and_respects_sources() {
    let dir = tempfile::tempdir().expect("tempdir");
    let idx = KeywordIndex::open(dir.path()).expect("open");
    sample(&idx);
    assert_eq!(idx.len(), 6);
    let hits = idx.search("what is ERR_4711?", 3, None).expect("search");
    assert_eq!(hits[0].0, 2);
    let hits = idx.search("18789", 3, None).expect("search");
    assert_eq!(hits.first().map(|h| h.0), Some(1));
    // Stemming: "persisting" finds "persisted".
    let hits = idx.search("persisting cron", 3, None).expect("search");
    assert_eq!(hits[0].0, 3);
    // Source filter.
    let only_b = vec!["b.md".to_string()];
    let hits = idx
        .search("gateway cron", 5, Some(&only_b))
        .expect("search");
    assert!(hits.iter().all(|h| h.0 == 3), "{hits:?}");
    // Query syntax characters are plain text, never a parse error.
    assert!(idx.search("AND OR \"( [ :", 3, None).is_ok());
    assert!(idx.search("", 3, None).expect("empty").is_empty());
}

#[test]
fn chinese_queries_find_chinese_chunks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let idx = KeywordIndex::open(dir.path()).expect("open");
    sample(&idx);
    let hits = idx.search("机器学习", 3, None).expect("search");
    assert_eq!(hits[0].0, 4, "{hits:?}");
    let hits = idx.search("什么是深度学习", 3, None).expect("search");
    assert_eq!(hits[0].0, 6, "{hits:?}");
    let hits = idx.search("公园", 3, None).expect("search");
    assert_eq!(hits[0].0, 5, "{hits:?}");
    // Unigrams and bigrams for CJK runs, words elsewhere.
    assert_eq!(analyze("AI机器"), vec!["ai", "机", "器", "机器"]);
}

#[test]
fn deletes_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let idx = KeywordIndex::open(dir.path()).expect("open");
        sample(&idx);
        idx.remove_source("zh.md");
        idx.remove(1);
        idx.commit().expect("commit");
        assert_eq!(idx.len(), 2);
    }
    let idx = KeywordIndex::open(dir.path()).expect("reopen");
    assert_eq!(idx.len(), 2);
    assert!(idx.search("机器学习", 3, None).expect("search").is_empty());
    assert_eq!(idx.search("quota", 3, None).expect("search")[0].0, 2);
}
