#!/usr/bin/env bash
# CI: a non-editable install of a built wheel into a fresh virtual environment outside the
# checkout, used from outside the checkout, as a user installs loyalkit:
#   1. build the wheel (pip wheel --no-deps) from a copy of the checkout's files;
#   2. python -m venv in a temporary folder; pip install torch==2.13.0 first, then the wheel with
#      its attack extra;
#   3. from a folder outside the checkout: `loyalkit --help`; evaluate.load of a metric module the
#      wheel ships; `loyalkit attack prepare-data` and a tiny `loyalkit attack run` (DeepWordBug on a
#      tiny BERT built here) through the managed TextAttack environment ($LOYALKIT_ATTACK_ENV, else
#      ~/.cache/loyalkit/attack-env, as `loyalkit attack setup` built it; it is reused, not built).
# Usage: tests/fresh_install_check.sh [PYTHON]   (PYTHON builds the wheel and the venv; default python3)
set -euo pipefail
PYTHON="${1:-python3}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/loyalkit-fresh-install.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
case "$WORK/" in "$REPO"/*) echo "temporary folder $WORK is inside the checkout" >&2; exit 1;; esac
start=$SECONDS
step() { echo "[fresh install $((SECONDS - start)) s] $*"; }

step "building the wheel"
# From a copy of the checkout's files (tracked, and new ones git does not ignore): building in place
# would leave build/ in the checkout, whose stale files setuptools would pack into later wheels.
mkdir "$WORK/src"
git -C "$REPO" ls-files -z --cached --others --exclude-standard \
    | (cd "$REPO" && xargs -0 -I{} sh -c 'test ! -e "$1" || printf "%s\0" "$1"' _ {}) \
    | tar -C "$REPO" --null -T - -cf - | tar -C "$WORK/src" -xf -
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$WORK/dist" "$WORK/src"
wheel="$(ls "$WORK"/dist/loyalkit-*.whl)"

step "fresh venv: torch==2.13.0 first, then $(basename "$wheel")[attack]"
"$PYTHON" -m venv "$WORK/venv"
BIN="$WORK/venv/bin"
# --no-compile: byte-compiling every installed module costs more than compiling the ones imported.
PIP=("$BIN/python" -m pip install --quiet --disable-pip-version-check --no-compile)
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" "$wheel[attack]"

mkdir "$WORK/user"
cd "$WORK/user"  # outside the checkout: only the install can answer
export HF_EVALUATE_OFFLINE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

step "loyalkit --help"
"$BIN/loyalkit" --help >/dev/null
"$BIN/loyalkit" attack --help | grep -q "prepare-data"

step "evaluate.load of a shipped metric module"
"$BIN/python" - "$WORK/venv" <<'EOF'
import math
import sys

import evaluate
import loyalkit
from loyalkit.metrics import module_path

venv = sys.argv[1]
assert loyalkit.__file__.startswith(venv), f"loyalkit imported from {loyalkit.__file__}, not {venv}"
path = module_path("label_loyalty")
assert str(path).startswith(venv), path
value = evaluate.load(str(path)).compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])
# 3 of the 4 student labels agree with the teacher's.
assert math.isclose(value["label_loyalty"], 0.75), value
print(f"  {path.name} from {path.parent}: label_loyalty {value['label_loyalty']}")
EOF

step "loyalkit attack prepare-data (stop words) and a tiny attack through the managed environment"
"$BIN/loyalkit" attack prepare-data --no-wordnet --target nltk_data --cache-dir textattack >/dev/null
"$BIN/python" - <<'EOF'
import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

words = "a the film movie was is good great fine bad awful dull plot acting".split()
with open("vocab.txt", "w") as f:
    f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
tokenizer = BertTokenizerFast(vocab_file="vocab.txt", vocab="vocab.txt", model_max_length=32)
assert tokenizer.convert_tokens_to_ids("film") != tokenizer.unk_token_id
torch.manual_seed(0)
config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                    num_attention_heads=2, intermediate_size=32, max_position_embeddings=32)
model = BertForSequenceClassification(config).eval()
model.save_pretrained("model")
tokenizer.save_pretrained("model")
rows = ["the film was good", "the plot was awful", "a great movie", "dull acting", "a fine film"]
with open("dev.tsv", "w") as f:
    f.write("sentence\tlabel\n" + "".join(f"{t}\t{i % 2}\n" for i, t in enumerate(rows)))
EOF
"$BIN/loyalkit" attack run --model model --data dev.tsv --recipe deepwordbug --examples 5 \
    --nltk-data nltk_data --cache-dir textattack --output attack.json | sed 's/^/  /'
"$BIN/python" - <<'EOF'
import json

result = json.load(open("attack.json"))
statuses = [e["status"] for e in result["examples"]]
# Every row went through TextAttack's search in the worker: none errored, each has an outcome.
assert len(statuses) == 5 and set(statuses) <= {"succeeded", "failed", "skipped"}, statuses
assert result["num_errors"] == 0 and result["num_attacked"] == 5, result
assert all(e["queries"] >= 1 for e in result["examples"]), result
EOF
step "passed"
