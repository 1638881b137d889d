"""Print the JSON lines of a benchmark run as a markdown table."""
import json
import sys

cols = ["dataset", "n", "library", "ef", "recall_at_10", "qps", "p50_ms", "p99_ms", "build_s", "memory_mb"]
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
rows.sort(key=lambda r: (r["dataset"], r["library"], r["ef"]))
print("| " + " | ".join(cols) + " |")
print("|" + "---|" * len(cols))
for r in rows:
    print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
extra = [r for r in rows if "load_s" in r]
seen = set()
for r in extra:
    if r["dataset"] in seen:
        continue
    seen.add(r["dataset"])
    print(f"\nmoltbot-hnsw {r['dataset']}: index {r['index_mb']} MB in memory, file {r['file_mb']} MB, "
          f"save {r['save_s']} s, reload {r['load_s']} s")
