"""Build a small Chinese intent dev set from CrossWOZ user turns (the convlab package).

convlab ships CrossWOZ's user-side NLG templates: user utterances keyed by their dialogue
acts. We keep utterances with exactly one act, label them `domain/domain-act-slot` (coarse = the
domain, fine = the act and slot), keep intents with at least 30 utterances (at most 80
each), and split 70/30 into train/test TSVs with a fixed seed.

Usage: python3 crosswoz.py OUT_DIR   (downloads convlab==3.0.1 with pip if needed)
"""
import glob, json, os, random, subprocess, sys, tarfile

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
member = "convlab-3.0.1/convlab/nlg/template/crosswoz/auto_user_template_nlg.json"
src = os.path.join(out, "auto_user_template_nlg.json")
if not os.path.exists(src):
    if not glob.glob(os.path.join(out, "convlab-3.0.1.tar.gz")):
        subprocess.check_call([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                               "--disable-pip-version-check", "--no-binary", ":all:",
                               "convlab==3.0.1", "-d", out])
    with tarfile.open(glob.glob(os.path.join(out, "convlab-3.0.1.tar.gz"))[0]) as t:
        with t.extractfile(member) as f, open(src, "wb") as g:
            g.write(f.read())
data = json.load(open(src, encoding="utf-8"))
rng = random.Random(13)
rows = {"train": [], "test": []}
kept = 0
for acts, utts in sorted(data.items()):
    if not acts or "*" in acts:
        continue
    parts = acts.split("+")
    if len(parts) != 3:
        continue
    kind, domain, slot = parts
    utts = sorted({u.strip().replace("\t", " ").replace("\n", " ") for u in utts if u.strip()})
    if len(utts) < 30:
        continue
    rng.shuffle(utts)
    utts = utts[:80]
    # General acts (greet, thank, bye) are "General+thank+none".
    # A fine intent belongs to one group, so the domain is part of the fine label too.
    label = f"General/{domain}" if kind == "General" else f"{domain}/{domain}-{kind}-{slot}"
    cut = int(len(utts) * 0.7)
    rows["train"] += [(u, label) for u in utts[:cut]]
    rows["test"] += [(u, label) for u in utts[cut:]]
    kept += 1
for split, items in rows.items():
    with open(os.path.join(out, f"{split}.tsv"), "w", encoding="utf-8") as f:
        f.write("text\tlabel\n")
        for u, l in items:
            f.write(f"{u}\t{l}\n")
print(f"{kept} intents, {len(rows['train'])} train / {len(rows['test'])} test utterances in {out}",
      file=sys.stderr)
