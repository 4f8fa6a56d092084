#!/usr/bin/env bash
# Download into .whl/ (repo root; ignored by git) the wheels a GPU machine with torch + transformers but no
# transformer_lens needs to run atlas: transformer-lens and those of its dependencies (and atlas's) that
# such a machine lacks, for CPython 3.12 on x86-64 Linux, each with --no-deps. Pins are the versions of
# this project's .venv. Run here (it needs a package index), then carry .whl/ to the GPU machine, where
# benchmarks/gpu_attribution.sh installs only the ones whose module is missing.
#
# Left out on purpose (transformer_lens 4.3.0 declares them; none is imported on atlas's code path):
#   datasets (+ pyarrow 55 MB, dill, multiprocess, xxhash, fsspec): transformer_lens imports three names
#     from it at import time; gpu_attribution.sh supplies benchmarks/gpu_stubs/datasets if it is missing.
#   wandb (20 MB, never imported), transformers-stream-generator (sdist only, never imported).
# Assumed present on the GPU machine: accelerate einops jaxtyping numpy safetensors tokenizers torch
#   transformers tqdm rich typer pyyaml requests huggingface-hub sentencepiece click psutil pandas.
#
# Usage: bash benchmarks/fetch_gpu_wheels.sh        (PIP=... to choose the pip; default .venv/bin/pip)
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=${PIP:-.venv/bin/pip}
DEST=.whl
LIMIT_MB=40
WHEELS=(
  transformer-lens==4.3.0
  beartype==0.23.1
  fancy-einsum==0.0.3
  typeguard==4.6.1
  protobuf==7.36.2
  packaging==26.4
  typing-extensions==4.16.0
  pydantic==2.14.4
  pydantic-core==2.50.5
  typing-inspection==0.4.5
  annotated-types==0.8.0
  pydantic-settings==2.16.3
  python-dotenv==1.2.4
  gguf==0.19.0
)
mkdir -p "$DEST"
for wheel in "${WHEELS[@]}"; do
  "$PIP" download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$DEST" "$wheel"
done

echo "transformer-lens Requires-Dist:"
unzip -p "$DEST"/transformer_lens-4.3.0-*.whl '*/METADATA' | grep ^Requires-Dist | sed 's/^/  /'
echo "downloaded to $DEST:"
ls -l "$DEST"/*.whl | awk '{printf "  %8.2f MB  %s\n", $5 / 1e6, $NF}'
total=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
awk -v t="$total" -v l="$LIMIT_MB" 'BEGIN { printf "total: %.2f MB (limit %d MB)\n", t / 1e6, l }'
if [ "$total" -gt $((LIMIT_MB * 1000000)) ]; then
  echo "over the $LIMIT_MB MB limit" >&2
  exit 1
fi
