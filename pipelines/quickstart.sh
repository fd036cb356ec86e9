#!/usr/bin/env bash
# Set everything up in ./.venv and run the main job on the bundled sample, offline:
#   bash pipelines/quickstart.sh
# Steps: create the venv, install torch (CPU) and the project with its test,
# trainer (NeMo 2.7.3) and lm-evaluation-harness extras (about 5 minutes and 3 GB
# the first time), then
# sample text -> jpcorpus normalize -> jpcorpus binarize (built-in Qwen2.5
# tokenizer, no network) -> jpcorpus inspect-idx --verify -> trainer run --dry-run
# (builds the NeMo LoRA run on those shards and prints its plan; trains nothing).
# Outputs go to out/sample/. Set PYTHON to choose the interpreter (3.10+), and
# EXTRAS=dev to skip NeMo (the trainer's tests then skip themselves).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-dev,train,eval-harness}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch first, pinned: a bare "torch" requirement elsewhere would pull a multi-GB CUDA build.
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]"

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
JP="$VENV/bin/jpcorpus"
mkdir -p out/sample
"$JP" normalize data/sample/ja_sample.jsonl -o out/sample/clean.jsonl --report out/sample/normalize_report.json
"$JP" binarize out/sample/clean.jsonl -o out/sample/ja --tokenizer qwen2.5 --valid-fraction 0.1 --workers 2
"$JP" inspect-idx out/sample/ja_train out/sample/ja_valid --verify --decode 1
case ",$EXTRAS," in
  *,train,*)
    "$VENV/bin/trainer" run configs/qwen25_05b_ja_lora.yaml model.base=null model.from_scratch=true \
      "data.train=[out/sample/ja_train]" "data.valid=[out/sample/ja_valid]" run_dir=out/sample/run --dry-run ;;
esac
echo "quickstart: OK (shards in out/sample/)"
