#!/usr/bin/env bash
# The GPU suite in one call: every GPU parity test (tests whose name has "cuda", the whole-step
# trainer tests among them), a quick-start training run on the GPU in bf16, the whole-step
# benchmark of configs/bench/*.yaml (balanced and real routing, the micro-batches in
# $MICRO_BATCHES, default 1,2) and the op benchmark, on a machine with a GPU. Output goes to $OUT
# (default gpu-suite-out/): tests.log, summary.txt, train_tiny.txt, train_tiny_metrics.jsonl,
# step_bench.jsonl, op_bench.jsonl, device.txt.
# Binaries come from $BUNDLE (default gpu-bundle/, made by
# make_gpu_bundle.sh, for a bare machine) or else from $BUILD_DIR (default build-cuda).
#   bash tools/bench/make_gpu_bundle.sh             # here, where the project builds
#   bash tools/bench/gpu_suite.sh                   # there (the device tool: carry gpu-bundle)
set -uo pipefail
cd "$(dirname "$0")/../.."
export GTEST_COLOR=no  # the summary greps gtest's lines (mpirun hands ranks a pty)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# The built-in corpus from this checkout (the binaries were built elsewhere).
export MOEFOLD_CORPUS="$PWD/core/data/corpus/kjv.txt"
out=${OUT:-gpu-suite-out}
mkdir -p "$out"
bundle=${BUNDLE:-gpu-bundle}
build=${BUILD_DIR:-build-cuda}
[ -f "$bundle/payload.tgz" ] && [ ! -d "$bundle/bin" ] && tar xzf "$bundle/payload.tgz" -C "$bundle"
if [ -d "$bundle/bin" ]; then
  bins=("$bundle"/bin/*)
  export LD_LIBRARY_PATH="$PWD/$bundle/lib:${LD_LIBRARY_PATH:-}"
  command -v mpirun > /dev/null || export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$PWD/$bundle/lib-mpi"
else
  mapfile -t bins < <(find "$build/tests" "$build/tools" "$build/bin" -type f -perm -u+x \
                        \( -name '*cuda*_test' -o -name 'core_caching_allocator_test' \
                           -o -name 'parallel_host_staged_communicator_mpi_test' \
                           -o -name 'parallel_nccl_communicator_mpi_test' \
                           -o -name op_bench -o -name step_bench -o -name moefold \) | sort)
fi
# cuBLAS from the toolkit, or from the Python wheels when the toolkit has no copy on the path.
for dir in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib; do
  [ -e "$dir/libcublasLt.so.13" ] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:$dir"
done
for dir in $(python3 -c 'import nvidia, os; print(" ".join(os.path.join(p, d, "lib") for p in nvidia.__path__ for d in ("cublas", "cuda_runtime")))' 2>/dev/null); do
  [ -d "$dir" ] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:$dir"
done
# cuDNN, which attention opens at run time (dlopen), and NVRTC, which cuDNN's runtime-compiled
# engines open, wherever the Python wheels put them when the loader does not know them (without
# them attention runs our kernels and the cuDNN parity tests fail).
for lib in libcudnn.so.9 libnvrtc.so.13; do
  ldconfig -p 2>/dev/null | grep -q "$lib " && continue
  for dir in $(python3 -c 'import glob, os, sys, nvidia; print(" ".join(sorted({os.path.dirname(f) for p in nvidia.__path__ for f in glob.glob(os.path.join(p, "**", sys.argv[1]), recursive=True)})))' "$lib" 2>/dev/null); do
    export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:$dir"
  done
done

{
  date -u +%Y-%m-%dT%H:%M:%SZ
  echo "commit: $(cat "$bundle/COMMIT" 2>/dev/null || git rev-parse HEAD 2>/dev/null)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
  echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
} > "$out/device.txt"

: > "$out/tests.log"
: > "$out/summary.txt"
status=0
for bin in "${bins[@]}"; do
  name=$(basename "$bin")
  case "$name" in op_bench|step_bench|moefold) continue ;; esac
  echo "=== $name" >> "$out/tests.log"
  launch=()
  # Multi-rank GPU tests: two ranks sharing the one GPU (host-staged MPI).
  case "$name" in
    parallel_host_staged_communicator_mpi_test|train_cuda_dp_mpi_test)
      launch=(mpirun --allow-run-as-root --oversubscribe -np 2) ;;
  esac
  timeout 300 "${launch[@]}" "$bin" >> "$out/tests.log" 2>&1
  rc=$?
  line=$(tac "$out/tests.log" | grep -m1 -E '^\[  (PASSED|FAILED) +\]' || echo "(no gtest summary)")
  skipped=$(awk -v n="=== $name" '$0 == n {on = 1; next} /^=== / {on = 0} on && /^\[  SKIPPED \] .*\(/ && !/WithoutGpu/' \
              "$out/tests.log" | wc -l)
  printf '%-34s rc=%-3s skipped=%-3s %s\n' "$name" "$rc" "$skipped" "$line" >> "$out/summary.txt"
  [ "$rc" -eq 0 ] || status=1
  [ "$skipped" -eq 0 ] || status=1  # on a GPU machine nothing may skip
done

# The quick-start model trained on the GPU in bf16 (its summary; the loss must fall).
train=""
for bin in "${bins[@]}"; do [ "$(basename "$bin")" = moefold ] && train=$bin; done
if [ -n "$train" ]; then
  # Data and run directory outside $OUT: only a few files come back from there.
  timeout 300 "$train" train --config configs/tiny_moe.yaml --set train.device=cuda \
    --set precision.compute_dtype=bf16 --set data.cache_dir=/tmp/moefold-data \
    --run-dir /tmp/moefold-run-tiny > "$out/train_tiny.txt" 2>&1
  rc=$?
  cp /tmp/moefold-run-tiny/metrics.jsonl "$out/train_tiny_metrics.jsonl" 2>/dev/null
  echo "moefold train tiny_moe cuda bf16 rc=$rc" >> "$out/summary.txt"
  [ "$rc" -eq 0 ] || status=1
else
  echo "moefold: not found" >> "$out/summary.txt"
  status=1
fi

step=""
for bin in "${bins[@]}"; do [ "$(basename "$bin")" = step_bench ] && step=$bin; done
: > "$out/step_bench.jsonl"
if [ -n "$step" ]; then
  for config in configs/bench/mixtral_mini.yaml configs/bench/finegrained_mini.yaml; do
    timeout "${STEP_TIMEOUT:-240}" "$step" --config "$config" --micro-batches "${MICRO_BATCHES:-1,2}" \
      --warmup 2 --steps "${STEPS:-5}" >> "$out/step_bench.jsonl" 2>> "$out/tests.log"
    rc=$?
    echo "step_bench $(basename "$config") rc=$rc" >> "$out/summary.txt"
    [ "$rc" -eq 0 ] || status=1
    # The experts through one cuBLAS grouped-batched call instead of a loop, for the default's sake.
    timeout "${STEP_TIMEOUT:-240}" "$step" --config "$config" --micro-batches 2 --routing balanced \
      --grouped-gemm cublas_grouped --warmup 2 --steps "${STEPS:-5}" \
      >> "$out/step_bench.jsonl" 2>> "$out/tests.log"
    echo "step_bench $(basename "$config") cublas_grouped rc=$?" >> "$out/summary.txt"
  done
else
  echo "step_bench: not found" >> "$out/summary.txt"
  status=1
fi
bench=""
for bin in "${bins[@]}"; do [ "$(basename "$bin")" = op_bench ] && bench=$bin; done
if [ -n "$bench" ]; then
  timeout 420 "$bench" ${BENCH_ARGS:-} > "$out/op_bench.jsonl" 2>> "$out/tests.log"
  echo "op_bench rc=$? lines=$(wc -l < "$out/op_bench.jsonl")" >> "$out/summary.txt"
else
  echo "op_bench: not found" >> "$out/summary.txt"
  status=1
fi
cat "$out/summary.txt"
grep -A7 'moefold summary' "$out/train_tiny.txt" 2>/dev/null
grep '"bench": "train_step_best"' "$out/step_bench.jsonl" 2>/dev/null
grep -E '"bench": "(gemm_bf16_square|grouped_gemm_.*_vs_dense|attention_fwd_bwd)"' \
  "$out/op_bench.jsonl" 2>/dev/null
exit $status
