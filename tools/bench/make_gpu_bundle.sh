#!/usr/bin/env bash
# Packs what tools/bench/gpu_suite.sh runs on a bare GPU machine into one folder: the GPU tests,
# op_bench, step_bench and the moefold binary (stripped), and the shared libraries they need that
# such a machine lacks (abseil, OpenBLAS and its Fortran runtime, yaml-cpp of another soname, ...),
# compressed; the configs travel with the repository. Not packed: glibc, libstdc++, the CUDA
# libraries (toolkit or Python wheels there). Packed apart: Open MPI (lib-mpi/, used there only
# without an mpirun of its own) and libraries the GPU machine has under the same soname
# (lib-fallback/: protobuf; used there only when missing). Writes COMMIT (commit, build, arch).
#   bash tools/bench/make_gpu_bundle.sh [BUILD_DIR] [BUNDLE]     (defaults: build-cuda or build,
#                                                                 gpu-bundle)
# The device call then carries the bundle (it is git-ignored): the repository and the bundle
# together must stay under 64 MiB, which this script checks.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-${BUILD_DIR:-}}
if [ -z "$build" ]; then
  build="build-cuda"
  [ -d "$build" ] || build=build
fi
bundle=${2:-${BUNDLE:-gpu-bundle}}
[ -f "$build/CMakeCache.txt" ] || { echo "make_gpu_bundle: $build is not a configured build" >&2; exit 1; }
# CMake sets the CUDA compiler and architectures as plain variables: read the compile commands.
if ! grep -q 'MOEFOLD_HAVE_CUDA=1' "$build/compile_commands.json" 2> /dev/null; then
  echo "make_gpu_bundle: $build has no CUDA backend (configure where nvcc is found)" >&2
  exit 1
fi
arch=$(grep -oE 'code=\[?[a-z_0-9,]*sm_[0-9]+a?' "$build/compile_commands.json" |
         grep -oE 'sm_[0-9]+a?' | sort -u | xargs)
case "$arch" in
  *sm_90*) ;;
  *) echo "make_gpu_bundle: warning: CUDA code for '$arch', none for sm_90 (H100/H200)" >&2 ;;
esac

# What gpu_suite.sh runs; the GPU tests of later layers too, when this tree has them.
targets=(core_cuda_runtime_test core_caching_allocator_test core_profiler_test op_bench
         step_bench moefold parallel_host_staged_communicator_mpi_test hf_fixture)
available=$(cmake --build "$build" --target help 2>/dev/null)
# Every op's GPU parity test the tree has (FP8, fused producers, permute-quantise included).
while read -r t; do targets+=("$t"); done < <(
  grep -oE 'ops_cuda_[a-z0-9_]+_test' <<< "$available" | sort -u)
grep -q 'op_bench_fused' <<< "$available" && targets+=(op_bench_fused)
grep -q 'parallel_nccl_communicator_mpi_test' <<< "$available" &&
  targets+=(parallel_nccl_communicator_mpi_test)
while read -r t; do targets+=("$t"); done < <(
  grep -oE '[a-z_]+_cuda_[a-z_]+_test' <<< "$available" | grep -v '^ops_cuda_\|^core_cuda_' | sort -u)
cmake --build "$build" -j "${JOBS:-2}" --target "${targets[@]}"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib" "$stage/lib-mpi" "$stage/lib-fallback"
for t in "${targets[@]}"; do
  path=$(find "$build" -type f -name "$t" -perm -u+x | head -n 1)
  [ -n "$path" ] || { echo "make_gpu_bundle: $t not built" >&2; exit 1; }
  cp "$path" "$stage/bin/"
  strip --strip-unneeded "$stage/bin/$t" 2> /dev/null || true
done

# The C/C++ runtime, the CUDA libraries and the kernel's helpers are on every GPU machine.
system='^(linux-vdso|ld-linux|libc\.|libm\.|libdl\.|libpthread\.|librt\.|libutil\.|libstdc\+\+|libgcc_s|libcuda\.|libcudart|libcublas|libcudnn|libnccl|libnvidia|libnvrtc|libz\.|libudev|libcap|libnuma|libsystemd|liblzma|libzstd|libgcrypt|libgpg-error|liblz4)'
# Open MPI and what it pulls in: must match the machine's mpirun, so used only without one.
mpi='^(libmpi|libopen-rte|libopen-pal|libpmix|libhwloc|libevent|libfabric|libucp|libucs|libuct|libucm|libibverbs|librdmacm|libpsm|libmunge|libefa)'
# Sonames the GPU machine (Ubuntu 24.04) ships: the machine's copy wins where present.
machine_has='^(libprotobuf\.so\.32|libprotobuf-lite\.so\.32|libyaml-cpp\.so\.0\.8)$'
ldd "$stage"/bin/* | awk '/=> \// {print $1, $3}' | sort -u | while read -r name path; do
  if [[ $name =~ $system ]]; then continue; fi
  if [[ $name =~ $mpi ]]; then dest=lib-mpi
  elif [[ $name =~ $machine_has ]]; then dest=lib-fallback
  else dest=lib
  fi
  [ -e "$stage/$dest/$name" ] || cp -L "$path" "$stage/$dest/$name"
done
if missing=$(ldd "$stage"/bin/* | grep 'not found' | sort -u) && [ -n "$missing" ]; then
  echo "make_gpu_bundle: unresolved here already:" >&2
  echo "$missing" >&2
  exit 1
fi

rm -rf "$bundle"
mkdir -p "$bundle"
{
  echo "$(git rev-parse HEAD)$(git diff --quiet HEAD 2> /dev/null || echo -dirty)"
  echo "branch: $(git rev-parse --abbrev-ref HEAD)"
  echo "build: $build, CUDA architectures $arch, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} > "$bundle/COMMIT"
# gzip: every machine can unpack it, in seconds; gpu_suite.sh does on first use.
tar czf "$bundle/payload.tgz" -C "$stage" bin lib lib-mpi lib-fallback

bundle_bytes=$(du -sb "$bundle" | cut -f1)
repo_bytes=$(git ls-files -z | xargs -0 du -cb 2> /dev/null | awk 'END {print $1}')
total=$((bundle_bytes + repo_bytes))
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "make_gpu_bundle: ${#targets[@]} programs, $(ls "$stage/lib" | wc -l) + $(ls "$stage/lib-fallback" | wc -l) fallback + $(ls "$stage/lib-mpi" | wc -l) MPI libraries"
echo "make_gpu_bundle: $bundle $(mib "$bundle_bytes") + repository $(mib "$repo_bytes") = $(mib "$total") of 64 MiB"
if [ "$total" -gt $((64 * 1048576)) ]; then
  echo "make_gpu_bundle: too large for the device call (64 MiB): bundle fewer tests" >&2
  exit 1
fi
