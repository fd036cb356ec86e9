#!/usr/bin/env bash
# bash pipelines/ray_corpus_to_shards.sh --input 'crawl/*.parquet' --out /shared/out/crawl --address auto
#
# normalize -> binarize -> inspect-idx --verify on a Ray cluster (--engine ray), for
# corpora too big for one machine. Run it on a node of the cluster (the head, or
# any node with `ray start --address` done); every node needs the same jpcorpus
# installed ('jpcorpus[ray]') and must see --out and --work-dir (a shared
# filesystem). Writes OUT.clean.jsonl.zst (+ .rejects.jsonl.zst, .report.json)
# and OUT_train / OUT_valid shards; a rerun after an interruption reuses the
# finished partitions. docs/scale.md shows how to start a cluster on Slurm
# (pipelines/slurm_ray.sbatch) and on Kubernetes (pipelines/kuberay/).
#
# Options (defaults in brackets):
#   --input GLOB        input files, globs, folders or fsspec URLs; repeat for several (required)
#   --out PREFIX        output prefix (required)
#   --address ADDR      Ray cluster: auto, HOST:PORT, or local (start Ray here) [auto]
#   --workers N         tasks in flight / 2; 0 = twice the cluster's CPUs [0]
#   --profile NAME      normalize profile: default, web or a file [web]
#   --text-key KEY      text field or Parquet column [text]
#   --tokenizer SPEC    [qwen2.5]
#   --valid-fraction F  [0.005]
#   --max-shard-size S  e.g. 2GB [none: one .bin per split]
#   --work-dir DIR      shared scratch for partitions [OUT.work]
#   --partition-size S  input per task [jpcorpus's default]
#   --dedup-task-size S  memory of one deduplication task, e.g. 64MB on nodes with < 4 GB a core [512MB]
#   --dry-run           print the commands, run nothing
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "error: $*" >&2; echo "see: bash $0 --help" >&2; exit 2; }

INPUTS=() OUT="" ADDRESS=auto WORKERS=0 PROFILE=web TEXT_KEY=text TOKENIZER=qwen2.5
VALID=0.005 SHARD="" WORK="" PARTITION="" DEDUP_TASK="" DRY=0
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dry-run) DRY=1; shift; continue ;;
    --input|--out|--address|--workers|--profile|--text-key|--tokenizer|--valid-fraction|--max-shard-size|--work-dir|--partition-size|--dedup-task-size)
      [ $# -ge 2 ] || die "$1 needs a value" ;;
    *) die "unknown argument: $1" ;;
  esac
  case "$1" in
    --input) INPUTS+=("$2") ;;
    --out) OUT=$2 ;;
    --address) ADDRESS=$2 ;;
    --workers) WORKERS=$2 ;;
    --profile) PROFILE=$2 ;;
    --text-key) TEXT_KEY=$2 ;;
    --tokenizer) TOKENIZER=$2 ;;
    --valid-fraction) VALID=$2 ;;
    --max-shard-size) SHARD=$2 ;;
    --work-dir) WORK=$2 ;;
    --partition-size) PARTITION=$2 ;;
    --dedup-task-size) DEDUP_TASK=$2 ;;
  esac
  shift 2
done
[ ${#INPUTS[@]} -gt 0 ] || die "--input is required"
[ -n "$OUT" ] || die "--out is required"
[[ "$WORKERS" =~ ^[0-9]+$ ]] || die "--workers must be a whole number, got $WORKERS"
WORK=${WORK:-$OUT.work}

JP=("${PYTHON:-python3}" -m jpcorpus.cli)
ENGINE=(--engine ray --workers "$WORKERS")
[ "$ADDRESS" = local ] || ENGINE+=(--ray-address "$ADDRESS")
[ -z "$PARTITION" ] || ENGINE+=(--partition-size "$PARTITION")
SHARDS=()
[ -z "$SHARD" ] || SHARDS=(--max-shard-size "$SHARD")
DEDUP=()
[ -z "$DEDUP_TASK" ] || DEDUP=(--dedup-task-size "$DEDUP_TASK")

NORMALIZE=("${JP[@]}" normalize "${INPUTS[@]}" -o "$OUT.clean.jsonl.zst" --profile "$PROFILE" --text-key "$TEXT_KEY"
           --skip-bad --rejects "$OUT.rejects.jsonl.zst" --report "$OUT.report.json" "${DEDUP[@]}" "${ENGINE[@]}" --work-dir "$WORK/normalize")
BINARIZE=("${JP[@]}" binarize "$OUT.clean.jsonl.zst" -o "$OUT" --tokenizer "$TOKENIZER" --valid-fraction "$VALID"
          "${SHARDS[@]}" "${ENGINE[@]}" --work-dir "$WORK/binarize")

run() { printf '+'; printf ' %q' "$@"; printf '\n'; [ "$DRY" = 1 ] || "$@"; }
run "${NORMALIZE[@]}"
run "${BINARIZE[@]}"
PREFIXES=()
for idx in "$OUT"_*.idx "$OUT".idx; do [ -e "$idx" ] && PREFIXES+=("${idx%.idx}"); done
[ "$DRY" = 1 ] && PREFIXES=("${OUT}_train" "${OUT}_valid")
run "${JP[@]}" inspect-idx "${PREFIXES[@]}" --verify
[ "$DRY" = 1 ] || rmdir "$WORK" 2>/dev/null || true  # each step removed its own part once finished
[ "$DRY" = 1 ] || echo "ray_corpus_to_shards: OK (${PREFIXES[*]})"
