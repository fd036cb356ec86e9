#!/usr/bin/env bash
# Raw Japanese JSON Lines -> clean text -> train/valid Megatron shards, with reports.
#   bash pipelines/corpus_to_shards.sh ../shared/corpus/aozora_bench_100mb.jsonl.gz out/aozora
# Arguments: INPUT (JSONL, .gz/.zst, globs allowed) and an output directory.
# Environment: WORKERS (default 2), PROFILE (default: the shipped default profile),
# TOKENIZER (default qwen2.5), VALID_FRACTION (default 0.005).
set -euo pipefail
if [ $# -ne 2 ]; then
  sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
INPUT=$1
OUT=$2
WORKERS=${WORKERS:-2}
TOKENIZER=${TOKENIZER:-qwen2.5}
VALID_FRACTION=${VALID_FRACTION:-0.005}
PROFILE_ARGS=()
[ -n "${PROFILE:-}" ] && PROFILE_ARGS=(--profile "$PROFILE")

mkdir -p "$OUT"
jpcorpus normalize "$INPUT" -o "$OUT/clean.jsonl.zst" --workers "$WORKERS" "${PROFILE_ARGS[@]}" \
  --rejects "$OUT/rejects.jsonl.zst" --report "$OUT/normalize_report.json"
jpcorpus binarize "$OUT/clean.jsonl.zst" -o "$OUT/ja" --tokenizer "$TOKENIZER" \
  --valid-fraction "$VALID_FRACTION" --workers "$WORKERS"
jpcorpus inspect-idx "$OUT/ja_train" "$OUT/ja_valid" --verify
echo "shards: $OUT/ja_train and $OUT/ja_valid (pass these prefixes to the trainer config)"
