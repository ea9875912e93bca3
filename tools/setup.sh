#!/usr/bin/env bash
# Installs every Debian package moefold needs (idempotent: apt runs only when something is missing)
# and builds the project into build/ (CUDA code included when nvcc is found under /usr/local/cuda).
#   bash tools/setup.sh            # install + configure + build
#   BUILD_DIR=build-x bash tools/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake ninja-build pkg-config
  libopenmpi-dev openmpi-bin            # MPI launcher and communicator backend
  libprotobuf-dev protobuf-compiler     # config schema
  libabsl-dev                           # Status/StatusOr, strings
  libyaml-cpp-dev                       # YAML experiment files
  nlohmann-json3-dev                    # JSON lines (metrics, profiles, benchmarks)
  libxxhash-dev                         # checkpoint checksums (XXH3)
  python3-venv                          # the Python reference environment of the tests (below)
  libopenblas-dev                       # CPU GEMM reference
  libgtest-dev libgmock-dev             # tests
  libxml2-dev                           # tests/report: the report page parsed as XML
  libbenchmark-dev                      # tools/bench
  libpcre2-dev                          # data: Hugging Face BPE pre-tokenizer patterns
  libzstd-dev                           # data: prep-data reads .jsonl.zst
  libsentencepiece-dev                  # data: SentencePiece tokenizers
  libicu-dev                            # data: NFC normalization (Qwen2's tokenizer.json)
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

build_dir=${BUILD_DIR:-build}
if [ ! -f "$build_dir/build.ninja" ]; then
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release ${CMAKE_ARGS:-}
fi
cmake --build "$build_dir" -j "$(nproc)"

# The sanitizer build (AddressSanitizer + UndefinedBehaviorSanitizer, CPU only, -O1): the unit and
# fuzz tests and one 2-rank equivalence case (cmake/moefold.cmake selects them), which the main
# build's ctest runs as the test sanitizer_tests. MOEFOLD_SANITIZERS=0 skips it.
sanitize_dir=build-sanitize
if [ "${MOEFOLD_SANITIZERS:-1}" != 0 ]; then
  if [ ! -f "$sanitize_dir/build.ninja" ]; then
    cmake -S . -B "$sanitize_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      "-DCMAKE_CXX_FLAGS_RELEASE=-O1 -g1" -DMOEFOLD_CUDA=OFF -DMOEFOLD_SANITIZE=address,undefined \
      ${CMAKE_ARGS:-}
  fi
  cmake --build "$sanitize_dir" -j "$(nproc)" --target moefold_sanitizer_tests
fi

# Optional: the Python reference environment of the tests (hf_python_reference_test: Python's
# safetensors and transformers' configs against our export; train_tensorboard_python_test:
# TensorBoard reads our event files; each is skipped when this is absent).
# MOEFOLD_PYREF=0 skips this step.
pyref="$build_dir/pyref"
if [ "${MOEFOLD_PYREF:-1}" != 0 ] && [ ! -x "$pyref/bin/python" ]; then
  if python3 -m venv "$pyref" 2>/dev/null &&
     "$pyref/bin/pip" install -q --timeout 30 safetensors numpy transformers tensorboard; then
    echo "setup: Python reference environment in $pyref"
  else
    echo "setup: PyPI unreachable or venv failed; skipping $pyref (hf_python_reference_test will skip)"
    rm -rf "$pyref"
  fi
fi
# An environment made before tensorboard joined the list gets it now (no torch, about a minute).
if [ "${MOEFOLD_PYREF:-1}" != 0 ] && [ -x "$pyref/bin/python" ] &&
   ! "$pyref/bin/python" -c "import tensorboard" 2>/dev/null; then
  "$pyref/bin/pip" install -q --timeout 30 tensorboard ||
    echo "setup: could not install tensorboard into $pyref (train_tensorboard_python_test will skip)"
fi
