#!/usr/bin/env bash
# bash pipelines/gpu_wheelhouse.sh [OUT_DIR]
#
# Wheels that `trainer run` needs on an air-gapped GPU machine whose image already
# has torch, transformers, numpy, pyarrow, peft, tensorboard ... (Python 3.12,
# x86-64): NeMo 2.7.3, megatron-core 0.15.3 and what `nemo.collections.llm` imports.
# ~90 wheels, ~30 MB after trimming; install there with
#   pip install --no-index --no-deps --target /tmp/site OUT_DIR/*.whl && export PYTHONPATH=/tmp/site
# The list was found by importing the trainer on a CPU venv and subtracting what the
# GPU image ships; optional packages that NeMo imports behind try/except were left
# out (boto3, zarr, multi-storage-client, wandb). lightning 2.4.0 replaces the
# image's 2.6 (NeMo's exp_manager imports NeptuneLogger, removed in 2.6).
set -euo pipefail
OUT=${1:-.whl}
mkdir -p "$OUT"
PLAT="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_34_x86_64
      --platform manylinux_2_31_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_26_x86_64"
# WHEELS=pipelines/gpu_eval_wheels.txt: the evaluation wheels instead (bench/eval.py, trainer eval --tasks).
PKGS=$(grep -v '^#' "${WHEELS:-$(dirname "$0")/gpu_wheels.txt}")
# shellcheck disable=SC2086
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLAT -d "$OUT" $PKGS
# Source-only on the registry: build pure-Python wheels here.
python3 -m pip wheel -q --no-deps -w "$OUT" antlr4-python3-runtime==4.9.3 wget==3.2
# pulp ships 20 MB of CBC solver binaries that modelopt never calls at import: drop them.
python3 - "$OUT" <<'PY'
import pathlib, sys, zipfile
for whl in pathlib.Path(sys.argv[1]).glob("pulp-*.whl"):
    tmp = whl.with_suffix(".tmp")
    with zipfile.ZipFile(whl) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            if "/solverdir/" not in item.filename:
                dst.writestr(item, src.read(item.filename))
    tmp.replace(whl)
PY
du -sh "$OUT"
