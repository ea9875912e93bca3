#!/usr/bin/env bash
# Packs the GPU parity tests, op_bench, step_bench, the moefold binary and the shared libraries they need that a bare CUDA machine
# may lack (abseil, OpenBLAS, ...; not glibc, libstdc++ or the CUDA libraries, which the GPU
# machine's toolkit provides) into one folder, for gpu_suite.sh to run where nothing is installed.
#   bash tools/bench/make_gpu_bundle.sh [BUILD_DIR=build-cuda] [BUNDLE=gpu-bundle]
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build-cuda}
bundle=${2:-gpu-bundle}
targets=(core_cuda_runtime_test core_caching_allocator_test op_bench step_bench moefold
         parallel_host_staged_communicator_mpi_test parallel_nccl_communicator_mpi_test)
for f in elementwise gemm grouped_gemm embedding norm rope attention router moe loss adamw; do
  targets+=("ops_cuda_${f}_test")
done
# GPU tests of later layers, when this tree has them (the test names contain "cuda").
while read -r t; do targets+=("$t"); done < <(
  cmake --build "$build" --target help 2>/dev/null | grep -oE '[a-z_]+_cuda_[a-z_]+_test' |
    grep -v '^ops_cuda_\|^core_cuda_' | sort -u)
cmake --build "$build" -j "${JOBS:-2}" --target "${targets[@]}"
rm -rf "$bundle"
mkdir -p "$bundle/bin" "$bundle/lib" "$bundle/lib-mpi"
for t in "${targets[@]}"; do
  path=$(find "$build" -type f -name "$t" -perm -u+x | head -n 1)
  [ -n "$path" ] || { echo "make_gpu_bundle: $t not built" >&2; exit 1; }
  cp "$path" "$bundle/bin/"
  strip --strip-unneeded "$bundle/bin/$t" 2>/dev/null || true
done
# Libraries resolved outside the CUDA toolkit and the C/C++ runtime.
ldd "$bundle"/bin/* | awk '/=> \// {print $3}' | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*|libstdc++.so*|libgcc_s.so*) ;;
    libcuda.so*|libcudart.so*|libcublas.so*|libcublasLt.so*|libnccl.so*) ;;
    # Open MPI apart: gpu_suite.sh uses them only where the machine has no MPI of its own (the
    # library must match the machine's mpirun and its plugins).
    libmpi*|libopen-pal*|libopen-rte*|libpmix*|libhwloc*|libevent*) cp -L "$lib" "$bundle/lib-mpi/" ;;
    *) cp -L "$lib" "$bundle/lib/" ;;
  esac
done
git rev-parse HEAD > "$bundle/COMMIT" 2>/dev/null || true
# Compressed, it travels well inside the device tool's 64 MiB (OpenBLAS alone is 35 MB raw);
# gpu_suite.sh unpacks it on first use.
tar czf "$bundle/payload.tgz" -C "$bundle" bin lib lib-mpi
rm -rf "$bundle/bin" "$bundle/lib" "$bundle/lib-mpi"
du -sh "$bundle"
