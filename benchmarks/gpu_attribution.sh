#!/usr/bin/env bash
# EAP-IG on a GPU machine that has torch + transformers but not transformer_lens: the randomly initialized
# GPT-2-medium-shaped model (24 layers, 16 heads, d 1024; byte tokenizer), 32 facts from the bundled
# corpus, CUDA and CPU in one run on the same batches (bench_attribution.py --compare-cpu; the
# transformer_lens comparison is skipped). Prints bench_attribution.py's table: the EAP / EAP-IG rows are
# the device's, "EAP-IG on cpu" the CPU's, plus the speed-up and the CPU-vs-device score agreement.
#
# First, on a machine with a package index: bash benchmarks/fetch_gpu_wheels.sh (fills .whl/). On the GPU
# machine, from the repo root (with .whl/ carried along):
#     bash benchmarks/gpu_attribution.sh [more bench_attribution.py options, e.g. --skip-floor]
# Wheels whose module is missing are installed with --no-deps into $ATLAS_GPU_SITE (default
# $TMPDIR/atlas-gpu-site), never into the system; `datasets` is replaced by benchmarks/gpu_stubs if it
# cannot be imported. PYTHON (default python3) and DEVICE (default cuda) can be overridden.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
SITE=${ATLAS_GPU_SITE:-${TMPDIR:-/tmp}/atlas-gpu-site}

export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
# distribution (wheel file prefix) : module that shows it is present
PACKAGES=(
  transformer_lens:transformer_lens beartype:beartype fancy_einsum:fancy_einsum typeguard:typeguard
  protobuf:google.protobuf packaging:packaging typing_extensions:typing_extensions pydantic:pydantic
  pydantic_core:pydantic_core typing_inspection:typing_inspection annotated_types:annotated_types
  pydantic_settings:pydantic_settings python_dotenv:dotenv gguf:gguf
)
missing=()
for entry in "${PACKAGES[@]}"; do
  dist=${entry%%:*} module=${entry#*:}
  if ! "$PY" -c "import $module" 2>/dev/null; then
    wheel=$(ls .whl/"$dist"-[0-9]*.whl 2>/dev/null | head -1 || true)
    if [ -z "$wheel" ]; then
      echo "module $module is missing and .whl/ has no $dist wheel: run benchmarks/fetch_gpu_wheels.sh" >&2
      exit 1
    fi
    missing+=("$wheel")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[gpu] installing into $SITE: ${missing[*]}" >&2
  if "$PY" -m pip --version >/dev/null 2>&1; then
    "$PY" -m pip install --quiet --no-index --no-deps --target "$SITE" "${missing[@]}"
  else  # no pip: a wheel is a zip of site-packages content
    "$PY" -c "import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]" \
      "$SITE" "${missing[@]}"
  fi
fi
if ! "$PY" -c "import datasets.arrow_dataset, datasets.iterable_dataset, datasets.load" 2>/dev/null; then
  echo "[gpu] datasets not importable: using the stub in benchmarks/gpu_stubs" >&2
  export PYTHONPATH="$PYTHONPATH:$PWD/benchmarks/gpu_stubs"
fi
"$PY" -c "import torch, transformers, transformer_lens; print('[gpu] torch', torch.__version__, \
'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__)" >&2
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >&2 2>/dev/null || true

compare=()
[ "$DEVICE" != cpu ] && compare=(--compare-cpu)
exec "$PY" benchmarks/bench_attribution.py --model random-gpt2-medium --device "$DEVICE" "${compare[@]}" \
  --corpus atlas/data/corpus --facts 32 --skip-tl "$@"
