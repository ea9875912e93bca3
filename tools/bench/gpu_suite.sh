#!/usr/bin/env bash
# The GPU suite in one device call of at most SUITE_BUDGET_S seconds (540): a preflight that
# stops the run within seconds when the machine cannot run the binaries, then the checks by value,
# each under its own `timeout` and each writing to $OUT as soon as it ends (a hang loses itself):
#   a. op parity tests: attention, GEMM, grouped GEMM, MoE, router (+ the profiler on cuda:0)
#   b. step_bench mixtral_mini --profile     c. step_bench finegrained_mini --profile
#   d. the PyTorch reference (tools/bench/hf_reference.py) for mixtral_mini
#   e. every other GPU test (multi-rank ones under mpirun on the one GPU: DP, and TP2, CP2, EP2,
#      TP2+ETP2×EP2, PP2 in bf16), the quick-start bf16 training run, mixtral_mini on EP 2 (two
#      ranks sharing the GPU), op_bench (whatever time is left)
# A step whose cap would overrun the budget is skipped, and said so. On the GPU machine a skipped
# gtest counts as a failure (tests that run only without a GPU, *WithoutGpu*, excepted).
#
#   bash tools/bench/make_gpu_bundle.sh          # here: gpu-bundle/ (the device call carries it)
#   bash tools/bench/gpu_suite.sh                # there; exit 0 all passed, 1 a step failed or
#                                                # was skipped, 2 the preflight failed
#   bash tools/bench/gpu_suite.sh --dry-run      # anywhere (or SUITE_DRY_RUN=1): the plan with
#                                                # caps, and which steps a worst case would skip
# $OUT (default gpu-suite-out/) receives 8 files at most: summary.txt (device, preflight, one line
# per step: status, seconds, gtest counts), tests.log (all test output), bench.jsonl (every JSON
# line of step_bench, the reference and op_bench, in order), profile.txt (step_bench's stderr: the
# op profile tables), bench.log (the reference's and op_bench's stderr), train.log and
# train_metrics.jsonl (the quick-start run). The last thing printed is the summary table.
# Environment: BUNDLE (gpu-bundle) or BUILD_DIR (build-cuda, then build) for the binaries;
# MB_MIXTRAL, MB_FINEGRAINED (2), HF_MICRO_BATCH (MB_MIXTRAL) micro-batches; SUITE_ONLY / SUITE_SKIP
# (extended regexes over step names) to run a part; SUITE_CAP_SCALE (1) multiplies every cap, to
# see the timeout logic work on a small machine; SUITE_DRY_FRACTION (1) is the share of its cap a
# step is assumed to take in a dry run (1: the worst case; 0.3 a typical run).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
repo=$PWD
t_start=$SECONDS

dry_run=${SUITE_DRY_RUN:-0}
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry_run=1 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "gpu_suite: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done
budget=${SUITE_BUDGET_S:-540}
cap_scale=${SUITE_CAP_SCALE:-1}
dry_fraction=${SUITE_DRY_FRACTION:-1}
mb_mixtral=${MB_MIXTRAL:-2}
mb_finegrained=${MB_FINEGRAINED:-2}
hf_micro_batch=${HF_MICRO_BATCH:-$mb_mixtral}
only=${SUITE_ONLY:-}
skip=${SUITE_SKIP:-}

out=${OUT:-gpu-suite-out}
mkdir -p "$out"
out=$(cd "$out" && pwd)
summary=$out/summary.txt tests_log=$out/tests.log bench_jsonl=$out/bench.jsonl
profile_txt=$out/profile.txt bench_log=$out/bench.log train_log=$out/train.log
train_metrics=$out/train_metrics.jsonl
: > "$summary"
: > "$tests_log"
: > "$bench_jsonl"
: > "$profile_txt"
: > "$bench_log"
# Scratch outside $OUT: only 8 files come back from there.
work=$(mktemp -d /tmp/gpu-suite.XXXXXX)
trap 'rm -rf "$work"' EXIT

export GTEST_COLOR=no  # the summary greps gtest's lines (mpirun hands ranks a pty)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export PYTHONUNBUFFERED=1
# The built-in corpus from this checkout (the binaries were built elsewhere).
export MOEFOLD_CORPUS="$repo/core/data/corpus/kjv.txt"

# Python (the reference) runs with the machine's library path, not the bundle's.
machine_ld_library_path=${LD_LIBRARY_PATH:-}

say() { echo "$*" | tee -a "$summary"; }
elapsed() { echo $((SECONDS - t_start)); }

# ---------------------------------------------------------------------------------------------
# Binaries: the bundle's bin/ (unpacked on first use), else a build tree.
bundle=${BUNDLE:-gpu-bundle}
bindir=""
from_bundle=0
if [ -f "$bundle/payload.tgz" ] && [ ! -d "$bundle/bin" ]; then
  # Unpacked into scratch: an unpacked bundle left in the checkout would travel with the next call.
  mkdir -p "$work/bundle"
  cp "$bundle/COMMIT" "$work/bundle/" 2>/dev/null
  tar xzf "$bundle/payload.tgz" -C "$work/bundle" ||
    { say "preflight: FAILED unpacking $bundle/payload.tgz"; exit 2; }
  bundle=$work/bundle
fi
declare -A bin_path=()
if [ -d "$bundle/bin" ]; then
  from_bundle=1
  bindir=$(cd "$bundle/bin" && pwd)
  for f in "$bindir"/*; do [ -f "$f" ] && bin_path[$(basename "$f")]=$f; done
else
  build=${BUILD_DIR:-}
  if [ -z "$build" ]; then
    build="build-cuda"
    [ -d "$build" ] || build=build
  fi
  if [ -d "$build" ]; then
    bindir=$(cd "$build" && pwd)
    while IFS= read -r f; do bin_path[$(basename "$f")]=$f; done < <(
      find "$build/tests" "$build/tools" "$build/bin" "$build/launch" -type f -perm -u+x \
        \( -name '*_test' -o -name op_bench -o -name step_bench -o -name moefold \
           -o -name hf_fixture \) 2>/dev/null)
  fi
fi
have() { [ -n "${bin_path[$1]:-}" ]; }

# The parity tests of step a, in order; every other bundled *cuda*_test runs in step e.
parity_tests=(ops_cuda_attention_test ops_cuda_gemm_test ops_cuda_grouped_gemm_test
              ops_cuda_moe_test ops_cuda_router_test)
# Launched by mpirun: two ranks sharing the one GPU (host-staged), or NCCL on one rank.
declare -A mpi_ranks=([parallel_host_staged_communicator_mpi_test]=2 [train_cuda_dp_mpi_test]=2
                      [train_cuda_model_parallel_mpi_test]=4
                      [parallel_nccl_communicator_mpi_test]=1)
other_tests=()
for name in $(printf '%s\n' "${!bin_path[@]}" | sort); do
  case " ${parity_tests[*]} " in *" $name "*) continue ;; esac
  case "$name" in
    *cuda*_test|parallel_host_staged_communicator_mpi_test|parallel_nccl_communicator_mpi_test|\
core_caching_allocator_test) other_tests+=("$name") ;;
  esac
done
[ -z "${bin_path[parallel_nccl_communicator_mpi_test]:-}" ] && other_tests+=(parallel_nccl_communicator_mpi_test)
[ -z "${bin_path[parallel_host_staged_communicator_mpi_test]:-}" ] && other_tests+=(parallel_host_staged_communicator_mpi_test)

# ---------------------------------------------------------------------------------------------
# Preflight (≤ 15 s): the GPU, the library path, every binary's libraries, versions.
preflight() {
  local t0=$SECONDS problems=() notes=()
  {
    local commit
    if [ "$from_bundle" = 1 ] && [ -f "$bundle/COMMIT" ]; then
      commit="$(head -n1 "$bundle/COMMIT") (bundle; checkout $(git rev-parse --short HEAD 2>/dev/null))"
    else
      commit="$(git rev-parse HEAD 2>/dev/null) (checkout)"
    fi
    echo "== gpu_suite $(date -u +%Y-%m-%dT%H:%M:%SZ)  commit $commit"
    echo "binaries: ${bindir:-none} (${#bin_path[@]})"
  } | tee -a "$summary"

  # The GPU.
  if ! command -v nvidia-smi > /dev/null; then
    problems+=("no GPU: nvidia-smi is not on PATH")
  else
    local gpus
    gpus=$(timeout 10 nvidia-smi --query-gpu=index,name,driver_version,memory.total,memory.used,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw --format=csv 2>&1)
    if [ $? -ne 0 ] || ! echo "$gpus" | grep -q '^[0-9]'; then
      problems+=("no GPU: nvidia-smi found none ($(echo "$gpus" | head -n2 | tr '\n' ' '))")
    fi
    echo "$gpus" | tee -a "$summary"
    echo "driver: $(timeout 5 nvidia-smi 2>/dev/null | grep -o 'CUDA Version: [0-9.]*' | head -n1)" | tee -a "$summary"
  fi

  # Libraries: the bundle's first, then the CUDA toolkit, then every library folder of the
  # Python wheels (site-packages/nvidia/*/lib: cuDNN, which is dlopen'ed at run time, and NCCL
  # live only there on the GPU machine).
  local path="" dir
  [ "$from_bundle" = 1 ] && [ -d "$bundle/lib" ] && path=$(cd "$bundle/lib" && pwd)
  for dir in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -d "$dir" ] && path="$path:$dir"
  done
  local wheels
  wheels=$(python3 -c 'import glob, site, sys
dirs = site.getsitepackages() + [site.getusersitepackages()] + sys.path
print("\n".join(sorted({d for p in dirs for d in glob.glob(p + "/nvidia/*/lib")})))' 2>/dev/null)
  for dir in $wheels; do path="$path:$dir"; done
  export LD_LIBRARY_PATH="${path#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  # Libraries the GPU machine usually has under the same soname (protobuf; Open MPI, which must
  # match the machine's mpirun and its plugins): the bundle's copy only of those it lacks, all of
  # Open MPI's where there is no mpirun.
  local have_sonames
  have_sonames=$(ldconfig -p 2>/dev/null | awk 'NR > 1 {print $1}')
  mkdir -p "$work/lib-missing"
  for f in "$bundle"/lib-fallback/* "$bundle"/lib-mpi/*; do
    [ -e "$f" ] && [ "$from_bundle" = 1 ] || continue
    if ! grep -qxF "$(basename "$f")" <<< "$have_sonames" ||
       { [[ $f == */lib-mpi/* ]] && ! command -v mpirun > /dev/null; }; then
      ln -sf "$(cd "$(dirname "$f")" && pwd)/$(basename "$f")" "$work/lib-missing/"
      notes+=("the machine lacks $(basename "$f"): the bundle's copy is used")
    fi
  done
  export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$work/lib-missing"
  if command -v mpirun > /dev/null; then
    echo "mpi: $(mpirun --version 2>&1 | head -n1)" | tee -a "$summary"
  else
    notes+=("no mpirun: the multi-rank tests are skipped")
  fi
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >> "$summary"

  # Every binary the suite runs: present, and no library "not found".
  local name missing=() needs_cudnn=0
  for name in "${parity_tests[@]}" core_profiler_test step_bench op_bench moefold "${other_tests[@]}"; do
    if ! have "$name"; then
      missing+=("$name")
      continue
    fi
    local lost
    lost=$(ldd "${bin_path[$name]}" 2>&1 | awk '/not found/ {print $1}' | sort -u | tr '\n' ' ')
    [ -n "$lost" ] && problems+=("$name: not found: $lost")
    grep -qa 'libcudnn' "${bin_path[$name]}" && needs_cudnn=1
  done
  [ ${#missing[@]} -gt 0 ] && problems+=("binaries missing: ${missing[*]}")
  # cuDNN is opened with dlopen, so ldd cannot see it: look where the loader will.
  local cudnn=""
  for dir in ${LD_LIBRARY_PATH//:/ }; do
    cudnn=$(ls "$dir"/libcudnn.so.[0-9]* 2>/dev/null | head -n1)
    [ -n "$cudnn" ] && break
  done
  [ -z "$cudnn" ] && cudnn=$(ldconfig -p 2>/dev/null | awk '/libcudnn\.so\.[0-9]/ {print $NF; exit}')
  if [ -z "$cudnn" ]; then
    if [ "$needs_cudnn" = 1 ]; then
      problems+=("cuDNN: libcudnn.so.N not on LD_LIBRARY_PATH or in ldconfig (a binary dlopens it)")
    else
      notes+=("cuDNN: not found (no binary names it)")
    fi
  fi

  # Versions: the libraries the step benchmark resolves, the wheels' metadata, the Python stack.
  {
    local probe=${bin_path[step_bench]:-${bin_path[ops_cuda_gemm_test]:-}}
    if [ -n "$probe" ]; then
      ldd "$probe" 2>/dev/null | awk '/(libcudart|libcublas|libcublasLt|libnccl|libmpi)\.so/ {print $1, $3}' |
        while read -r lib file; do echo "lib: $lib -> $(readlink -f "$file" 2>/dev/null || echo "$file")"; done
    fi
    [ -n "$cudnn" ] && echo "lib: cudnn -> $(readlink -f "$cudnn")"
    command -v nvcc > /dev/null && echo "nvcc: $(nvcc --version | grep -o 'release [0-9.]*')"
    python3 -c 'import importlib.metadata as m
for p in ("nvidia-cuda-runtime", "nvidia-cublas", "nvidia-cudnn-cu13", "nvidia-nccl-cu13", "torch", "transformers"):
    try: print("pkg:", p, m.version(p))
    except Exception: print("pkg:", p, "absent")' 2>/dev/null || echo "pkg: python3 absent"
    for n in "${notes[@]}"; do echo "note: $n"; done
  } | tee -a "$summary"

  echo "preflight: $((SECONDS - t0)) s" | tee -a "$summary"
  if [ ${#problems[@]} -gt 0 ]; then
    say "preflight: FAILED"
    local p
    for p in "${problems[@]}"; do say "  - $p"; done
    return 1
  fi
  say "preflight: ok"
}

# ---------------------------------------------------------------------------------------------
# Steps. Each line of the summary: name, status, seconds, detail.
status=0
rows=()
rc=-
record() {  # name status seconds detail (and the global rc of the step's command, or -)
  local line
  line=$(printf '%-44s %-7s rc %-3s %4s s  %s' "$1" "$2" "$rc" "$3" "$4")
  rows+=("$line")
  echo "$line" >> "$summary"
  echo "$line"
  case "$2" in PASS|DRY) ;; *) status=1 ;; esac
}
sim_elapsed=0  # dry run: every step assumed to take dry_fraction of its cap (1: the worst case)
now() { if [ "$dry_run" = 1 ]; then echo $((sim_elapsed)); else elapsed; fi; }
scaled() { awk -v c="$1" -v s="$cap_scale" 'BEGIN { v = int(c * s + 0.999); print (v < 1 ? 1 : v) }'; }
selected() {
  [ -n "$only" ] && ! [[ "$1" =~ $only ]] && return 1
  [ -n "$skip" ] && [[ "$1" =~ $skip ]] && return 1
  return 0
}

# gate NAME CAP: 0 when the step should run now; else records why not. Sets `cap` (scaled).
gate() {
  local name=$1
  rc=-
  cap=$(scaled "$2")
  selected "$name" || return 1
  local t
  t=$(now)
  if [ $((t + cap)) -gt "$budget" ]; then
    record "$name" SKIP - "budget: ${t} s spent, cap ${cap} s > $((budget - t)) s left"
    return 1
  fi
  if [ "$dry_run" = 1 ]; then
    record "$name" DRY "$cap" "at ${t} s: ${*:3}"
    sim_elapsed=$((sim_elapsed + $(awk -v c="$cap" -v f="$dry_fraction" 'BEGIN { print int(c * f) }')))
    return 1
  fi
  return 0
}

# Runs a command under timeout; sets rc and secs. Output: stdout to $1, stderr to $2.
timed() {
  local stdout=$1 stderr=$2
  shift 2
  local t0=$SECONDS
  timeout -k 5 "$cap" "$@" > "$stdout" 2> "$stderr"
  rc=$?
  secs=$((SECONDS - t0))
}

rc_status() {  # rc -> PASS / TIMEOUT / FAIL
  case "$1" in 0) echo PASS ;; 124|137) echo TIMEOUT ;; *) echo FAIL ;; esac
}

# gtest_step NAME CAP: one test binary (under mpirun when it is a multi-rank test).
gtest_step() {
  local name=$1 ranks=${mpi_ranks[$1]:-}
  local launch=()
  if [ -n "$ranks" ]; then
    launch=(mpirun --allow-run-as-root --oversubscribe -np "$ranks")
  fi
  gate "$name" "$2" "${launch[*]}${launch[*]:+ }$name$(have "$name" || echo ' [binary missing]')" || return 0
  if ! have "$name"; then
    record "$name" FAIL 0 "binary missing"
    return 0
  fi
  if [ -n "$ranks" ] && ! command -v mpirun > /dev/null; then
    record "$name" SKIP 0 "no mpirun on this machine"
    return 0
  fi
  local log=$work/$name.log
  timed "$log" "$log.err" "${launch[@]}" "${bin_path[$name]}"
  cat "$log.err" >> "$log"
  { echo "=== $name (rc $rc, $secs s)"; cat "$log"; } >> "$tests_log"
  local passed failed skipped total st
  total=$(grep -m1 -oE '^\[==========\] [0-9]+ tests? from' "$log" | grep -oE '[0-9]+' | head -n1)
  passed=$(grep -m1 -oE '^\[  PASSED  \] [0-9]+' "$log" | grep -oE '[0-9]+$')
  failed=$(grep -m1 -oE '^\[  FAILED  \] [0-9]+ tests?,' "$log" | grep -oE '[0-9]+')
  # Skips at run time ("(N ms)"), less the tests that run only where there is no GPU.
  skipped=$(grep -E '^\[  SKIPPED \] [^ ]+ \([0-9]+ ms\)' "$log" | grep -vc 'WithoutGpu')
  st=$(rc_status "$rc")
  if [ "$st" = PASS ] && [ "${skipped:-0}" -gt 0 ]; then st=FAIL; fi
  if [ "$st" = PASS ] && [ -z "$passed" ]; then st=FAIL; fi
  local detail="${passed:-0}/${total:-?} passed, ${failed:-0} failed, ${skipped:-0} skipped"
  [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && detail="$detail; killed at the ${cap} s cap"
  [ "$st" = FAIL ] && [ -n "$(grep -m1 -E '^\[  FAILED  \] [A-Za-z]' "$log")" ] &&
    detail="$detail; first: $(grep -m1 -E '^\[  FAILED  \] [A-Za-z]' "$log" | cut -c14- | cut -c1-60)"
  record "$name" "$st" "$secs" "$detail"
}

# JSON lines of a benchmark's stdout into bench.jsonl; the rest to its log.
collect_json() {  # stdout-file stderr-file stderr-dest title
  grep -E '^\{' "$1" >> "$bench_jsonl"
  { echo "=== $4 (rc $rc, $secs s)"; grep -vE '^\{' "$1"; cat "$2"; } >> "$3"
}
json_count() { grep -cE "\"bench\": \"$2\"" "$1"; }

step_bench_step() {  # NAME CONFIG MICRO_BATCHES CAP
  local name=$1 config=$2 mbs=$3
  local args=(--config "$config" --micro-batches "$mbs" --routing balanced,real --warmup 1
              --steps 3)
  # --profile (the op profile) where this step_bench has it; the figures are worth having anyway.
  if have step_bench && "${bin_path[step_bench]}" --help 2>&1 | grep -q -- '--profile'; then
    args+=(--profile)
  elif ! have step_bench; then
    args+=(--profile)
  fi
  gate "$name" "$4" "step_bench ${args[*]}" || return 0
  have step_bench || { record "$name" FAIL 0 "binary missing"; return 0; }
  local o=$work/$name.out
  timed "$o" "$o.err" "${bin_path[step_bench]}" "${args[@]}"
  collect_json "$o" "$o.err" "$profile_txt" "step_bench $config mb $mbs"
  local lines errors st
  lines=$(json_count "$o" train_step)
  errors=$(grep -cE '"error":' "$o")
  st=$(rc_status "$rc")
  [ "$st" = PASS ] && [ "$errors" -gt 0 ] && st=FAIL
  local detail="$lines train_step lines, $errors with an error"
  [[ " ${args[*]} " == *" --profile "* ]] || detail="$detail; no --profile in this step_bench"
  [ "$st" = TIMEOUT ] && detail="$detail; killed at the ${cap} s cap"
  [ "$st" = FAIL ] && [ "$lines" = 0 ] && detail="$detail; $(grep -m1 -v '^$' "$o.err" | cut -c1-70)"
  record "$name" "$st" "$secs" "$detail"
}

hf_reference_step() {  # NAME CAP
  local name=$1
  # FLOPs per token exactly as step_bench counts them (its JSON line), so the MFUs compare.
  local fpt
  fpt=$(grep -E '"bench": "train_step"' "$bench_jsonl" | grep '"config": "mixtral_mini"' |
          grep -oE '"flops_per_token": [0-9.e+]+' | head -n1 | awk '{print $2}')
  local args=(--config configs/bench/mixtral_mini.yaml --micro-batch "$hf_micro_batch"
              --auto-micro-batch --warmup 1 --steps 3)
  [ -n "$fpt" ] && args+=(--flops-per-token "$fpt")
  gate "$name" "$2" "python3 tools/bench/hf_reference.py ${args[*]}" || return 0
  local o=$work/$name.out
  timed "$o" "$o.err" env LD_LIBRARY_PATH="$machine_ld_library_path" \
    python3 tools/bench/hf_reference.py "${args[@]}"
  collect_json "$o" "$o.err" "$bench_log" "hf_reference"
  local st
  st=$(rc_status "$rc")
  [ "$st" = TIMEOUT ] && { record "$name" "$st" "$secs" "killed at the ${cap} s cap"; return 0; }
  record "$name" "$st" "$secs" "$(grep -oE '"(tokens_per_s|mfu|micro_batch|error)": ("[^"]*"|[0-9.e+-]+|null)' "$o" |
    tr '\n' ' ' | cut -c1-110)"
}

# transformers loads moefold's Hugging Face export (Mixtral, Qwen2-MoE, GLM-4-MoE; f32 and bf16):
# logits within 1e-4 in f32 on the CPU, per-token losses within 3e-2 in bf16 on the GPU.
hf_logits_step() {  # NAME CAP
  local name=$1
  gate "$name" "$2" "python3 tools/python/hf_logits_check.py --fixture hf_fixture" || return 0
  have hf_fixture || { record "$name" FAIL 0 "hf_fixture missing"; return 0; }
  local o=$work/$name.out
  timed "$o" "$o.err" env LD_LIBRARY_PATH="$machine_ld_library_path" \
    python3 tools/python/hf_logits_check.py --fixture "${bin_path[hf_fixture]}" --work /tmp/hf_logits
  { echo "=== $name (rc $rc, $secs s)"; cat "$o" "$o.err"; } >> "$tests_log"
  local st
  st=$(rc_status "$rc")
  [ "$rc" = 77 ] && st=FAIL  # torch missing: the point of running it here
  record "$name" "$st" "$secs" "$(grep -v '^$' "$o" | tail -n1 | cut -c1-100)"
}

# TensorBoard's own reader loads the event files of a short GPU run (and a resumed one): the
# scalars equal metrics.jsonl's.
tensorboard_step() {  # NAME CAP
  local name=$1
  gate "$name" "$2" "python3 tools/python/tensorboard_check.py --set train.device=cuda" || return 0
  have moefold || { record "$name" FAIL 0 "binary missing"; return 0; }
  local o=$work/$name.out
  timed "$o" "$o.err" env LD_LIBRARY_PATH="$machine_ld_library_path" \
    python3 tools/python/tensorboard_check.py --moefold "${bin_path[moefold]}" \
    --work /tmp/moefold-tb-check --set train.device=cuda
  { echo "=== $name (rc $rc, $secs s)"; cat "$o" "$o.err"; } >> "$tests_log"
  local st
  st=$(rc_status "$rc")
  [ "$rc" = 77 ] && st=FAIL  # the tensorboard package is on the GPU machine
  record "$name" "$st" "$secs" "$(grep -v '^$' "$o" | tail -n1 | cut -c1-100)"
}

train_step() {  # NAME CAP
  local name=$1
  local args=(train --config configs/tiny_moe.yaml --set train.device=cuda
              --set precision.compute_dtype=bf16 --set data.cache_dir=/tmp/moefold-data
              --run-dir /tmp/moefold-run-tiny)
  gate "$name" "$2" "moefold ${args[*]}" || return 0
  have moefold || { record "$name" FAIL 0 "binary missing"; return 0; }
  rm -rf /tmp/moefold-run-tiny
  timed "$train_log" "$work/train.err" "${bin_path[moefold]}" "${args[@]}"
  cat "$work/train.err" >> "$train_log"
  cp /tmp/moefold-run-tiny/metrics.jsonl "$train_metrics" 2>/dev/null
  local losses=""
  [ -f "$train_metrics" ] && losses=$(grep -oE '"loss": [0-9.e+-]+' "$train_metrics" |
    sed -n '1p;$p' | awk '{print $2}' | tr '\n' ' ')
  local detail="loss first/last: ${losses:-none}"
  [ "$rc" != 0 ] && detail="$detail; $(grep -v '^$' "$work/train.err" | tail -n1 | cut -c1-70)"
  record "$name" "$(rc_status "$rc")" "$secs" "$detail"
}

# mixtral_mini with its experts over EP 2: two ranks sharing the GPU (host-staged MPI) run a few
# steps; its log goes to train.log after the quick start's.
ep_train_step() {  # NAME CAP
  local name=$1
  local args=(train --config configs/bench/mixtral_mini.yaml --set parallel.ep=2
              --set train.steps=3 --set optimizer.warmup_steps=1 --set logging.progress=never
              --set data.cache_dir=/tmp/moefold-data --run-dir /tmp/moefold-run-ep2)
  gate "$name" "$2" "mpirun -np 2 moefold ${args[*]}" || return 0
  have moefold || { record "$name" FAIL 0 "binary missing"; return 0; }
  command -v mpirun > /dev/null || { record "$name" SKIP 0 "no mpirun on this machine"; return 0; }
  local log=$work/ep2.log
  timed "$log" "$log.err" mpirun --allow-run-as-root --oversubscribe -np 2 "${bin_path[moefold]}" \
    "${args[@]}"
  { echo "=== $name (rc $rc, $secs s)"; cat "$log" "$log.err"; } >> "$train_log"
  local detail
  detail=$(grep -m1 -E 'tokens .* in ' "$log" | sed 's/^ *//' | cut -c1-70)
  [ "$rc" != 0 ] && detail="$(grep -v '^$' "$log.err" | tail -n1 | cut -c1-70)"
  record "$name" "$(rc_status "$rc")" "$secs" "${detail:-no summary}"
}

op_bench_step() {  # NAME MIN_CAP MAX_CAP: takes the time that is left, within [MIN, MAX]
  local name=$1 left=$((budget - $(now)))
  local want=$3
  [ "$left" -lt "$want" ] && want=$left
  [ "$want" -lt "$2" ] && want=$2  # below the minimum: gate skips it
  gate "$name" "$want" "op_bench ${OP_BENCH_ARGS:-}" || return 0
  have op_bench || { record "$name" FAIL 0 "binary missing"; return 0; }
  local o=$work/$name.out
  # shellcheck disable=SC2086  # OP_BENCH_ARGS is a list of flags
  timed "$o" "$o.err" "${bin_path[op_bench]}" ${OP_BENCH_ARGS:-}
  collect_json "$o" "$o.err" "$bench_log" "op_bench"
  local detail
  detail="$(grep -cE '^\{' "$o") JSON lines"
  [ "$rc" != 0 ] && detail="$detail; $(grep -m1 -v '^$' "$o.err" | cut -c1-70)"
  record "$name" "$(rc_status "$rc")" "$secs" "$detail"
}

# The benchmark figures side by side: moefold's steps and the PyTorch reference.
bench_table() {
  [ -s "$bench_jsonl" ] && python3 - "$bench_jsonl" << 'PY' 2>/dev/null
import json, sys
rows = []
for line in open(sys.argv[1]):
    try:
        j = json.loads(line)
    except ValueError:
        continue
    if j.get("bench") == "train_step" and "error" not in j:
        rows.append((j.get("config"), j.get("routing"), j.get("micro_batch"), j.get("tokens_per_s"),
                     j.get("mfu"), j.get("step_s_median"), j.get("peak_memory_bytes")))
    elif j.get("bench") == "hf_reference" and "error" not in j:
        rows.append(("hf:" + str(j.get("model")), "torch", j.get("micro_batch"),
                     j.get("tokens_per_s"), j.get("mfu"), j.get("step_s_median"),
                     j.get("peak_memory_bytes")))
    elif j.get("bench") in ("train_step", "hf_reference"):
        where = j.get("config") or j.get("model") or ""
        print(f"error: {j['bench']} {where} routing {j.get('routing', '-')} mb {j.get('micro_batch', '-')}: "
              f"{str(j.get('error'))[:90]}")
if rows:
    print(f"{'model':<22} {'routing':<9} {'mb':>3} {'tokens/s':>10} {'MFU':>6} {'step s':>7} {'peak GB':>8}")
    def f(v, fmt):  # fmt is ">W..." : a missing figure is a right-aligned "-"
        return format(v, fmt) if isinstance(v, (int, float)) else format("-", fmt.split(".")[0].rstrip("fd"))
    for c, r, mb, tps, mfu, s, mem in rows:
        print(f"{str(c):<22} {str(r):<9} {f(mb, '>3')} {f(tps, '>10.0f')} "
              f"{f(mfu * 100 if isinstance(mfu, float) else None, '>5.1f')}% {f(s, '>7.3f')} "
              f"{f(mem / 2**30 if isinstance(mem, (int, float)) else None, '>8.1f')}")
PY
}

# The last lines printed: the steps, then the figures (the device tool shows the tail of stdout).
final_table() {
  echo
  echo "== gpu_suite: $(elapsed) s of $budget s$([ "$dry_run" = 1 ] && echo "; dry run: ${sim_elapsed} s assumed")"
  printf '%s\n' "${rows[@]}"
  bench_table
  echo "status: $([ $status = 0 ] && echo ok || echo FAILED)  (out: $out)"
}

# ---------------------------------------------------------------------------------------------
if ! preflight; then
  status=1
  if [ "$dry_run" = 1 ]; then
    say "(dry run: going on to show the plan)"
  else
    exit 2
  fi
fi
[ "$dry_run" = 1 ] && say "== plan (dry run; budget $budget s, caps x$cap_scale; each step assumed to take x$dry_fraction of its cap)"

# a. Op parity of the step's heaviest ops, then the profiler the benchmarks rely on.
for t in "${parity_tests[@]}"; do gtest_step "$t" 60; done
gtest_step core_profiler_test 30
# b, c. Whole steps with the op profile.
step_bench_step "step_bench mixtral_mini" configs/bench/mixtral_mini.yaml "$mb_mixtral" 150
step_bench_step "step_bench finegrained_mini" configs/bench/finegrained_mini.yaml "$mb_finegrained" 150
# d. What a user would run instead.
hf_reference_step "hf_reference mixtral_mini" 150
# e. The rest of the GPU tests, the quick-start run, then op_bench with the time left.
# The whole training step against the CPU first, the multi-rank tests last.
rank_of() {
  case "$1" in
    train_cuda_trainer_test) echo 0 ;; ops_*) echo 1 ;; core_*) echo 2 ;; *mpi_test) echo 4 ;; *) echo 3 ;;
  esac
}
mapfile -t other_tests < <(for t in "${other_tests[@]}"; do echo "$(rank_of "$t") $t"; done |
                             sort -k1,1n -k2,2 | cut -d' ' -f2)
for t in "${other_tests[@]}"; do
  case "$t" in
    train_*) gtest_step "$t" 90 ;; parallel_*) gtest_step "$t" 60 ;; *) gtest_step "$t" 45 ;;
  esac
done
train_step "moefold train tiny_moe cuda bf16" 120
ep_train_step "moefold train mixtral_mini ep2 (2 ranks, 1 GPU)" 150
hf_logits_step "hf_logits_check (export → transformers)" 90
tensorboard_step "tensorboard_check (GPU run's event files)" 60
op_bench_step "op_bench" 60 300

bench_table >> "$summary"
echo "status: $([ $status = 0 ] && echo ok || echo FAILED) after $(elapsed) s" >> "$summary"
final_table
exit $status
