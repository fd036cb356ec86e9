#!/usr/bin/env bash
# bash pipelines/peer_wheelhouse.sh [OUT_DIR]
#
# Wheels for the peer rows of bench/trainer_speed.py (liger-kernel 0.8.5, Unsloth
# 2026.10.9 + unsloth_zoo and what they import) on an air-gapped GPU machine whose image
# already has torch, transformers, peft, accelerate, triton (Python 3.12, x86-64).
# ~30 MiB (30 wheels) after trimming (Unsloth's wheel carries 25 MB of its "studio" web UI, bitsandbytes
# 43 MB of libraries for every CUDA and ROCm version; neither is imported for training).
# Install them there into their own directory, never beside NeMo's wheels
# (pipelines/gpu_wheelhouse.sh, lightning 2.4 and datasets 5 pinned; Unsloth wants datasets < 5):
#   pip install --no-index --no-deps --target /tmp/peers OUT_DIR/*.whl
# The bench gives each peer process PYTHONPATH=/tmp/peers itself (--peer-site).
set -euo pipefail
OUT=${1:-.whl-peers}
mkdir -p "$OUT"
PLAT="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_34_x86_64
      --platform manylinux_2_31_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_26_x86_64
      --platform any"
PKGS=$(grep -v '^#' "$(dirname "$0")/peer_wheels.txt")
# shellcheck disable=SC2086
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --abi cp312 --abi abi3 --abi none $PLAT -d "$OUT" $PKGS
python3 - "$OUT" <<'PY'
import pathlib, sys, zipfile

def keep(name: str, item: str) -> bool:
    if name.startswith("unsloth-"):  # the web UI; `import unsloth` never reaches it
        return not item.startswith("studio/")
    if name.startswith("bitsandbytes-"):  # the image's CUDA 13.0 library and the CPU one only
        lib = item.rsplit("/", 1)[-1]
        return not lib.startswith("libbitsandbytes_") or lib in ("libbitsandbytes_cuda130.so",
                                                                   "libbitsandbytes_cpu.so")
    return True

for whl in pathlib.Path(sys.argv[1]).glob("*.whl"):
    with zipfile.ZipFile(whl) as src:
        items = src.infolist()
        if all(keep(whl.name, i.filename) for i in items):
            continue
        tmp = whl.with_suffix(".tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
            for item in items:
                if keep(whl.name, item.filename):
                    dst.writestr(item, src.read(item.filename))
    tmp.replace(whl)
    print(f"trimmed {whl.name}: {whl.stat().st_size / 2**20:.1f} MiB")
PY
du -sh "$OUT"
