#!/usr/bin/env python3
"""Refits a cluster description's compute efficiencies from op_bench output measured on a GPU.

    build/bin/op_bench > op.jsonl          # on the GPU (tools/bench/gpu_suite.sh runs it)
    tools/bench/fit_cluster.py op.jsonl --cluster configs/clusters/h100_sxm_ib400.yaml

Prints the `efficiency:` entries to paste into the cluster file (docs/SIMULATOR.md §1):
  gemm       from the dense bf16 GEMM lines ("gemm_bf16_*", shape MxNxK, "tflops"): the fraction
             of the bf16 peak against min(M, N, K), one point per distinct smallest dimension (the
             best measured there), made non-decreasing so a larger GEMM is never predicted slower;
  attention  from "attention_fwd_bwd" (op_bench counts 3.5 x the forward FLOPs, as the
             simulator's forward + 2.5 x forward backward does): tflops / bf16 peak;
  memory     from every line with "gbps" (elementwise passes): the median over HBM bandwidth.
The collective curves are not refitted here: op_bench times no collective (the communicator's
own timings in a run's profile are the source for those).
Only the standard library; nothing here asserts a time.
"""
import argparse
import json
import statistics
import sys


def cluster_numbers(path):
    """bf16 peak and HBM GB/s read from a cluster YAML (flat `bf16:` and `gbps:` under hbm)."""
    peak = hbm = None
    section = None
    with open(path) as f:
        for raw in f:
            line = raw.split("#", 1)[0].rstrip()
            if not line.strip():
                continue
            if not line.startswith(" "):
                section = line.split(":", 1)[0].strip()
                continue
            key, _, value = line.strip().partition(":")
            if section == "peak_tflops" and key == "bf16":
                peak = float(value)
            if section == "hbm" and key == "gbps":
                hbm = float(value)
    if peak is None or hbm is None:
        sys.exit(f"{path}: no peak_tflops.bf16 or hbm.gbps found")
    return peak, hbm


def fit(lines, peak, hbm):
    gemm = {}
    attention = None
    bandwidths = []
    for n, text in enumerate(lines, 1):
        text = text.strip()
        if not text.startswith("{"):
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            sys.exit(f"line {n}: not JSON ({e})")
        name = row.get("bench", "")
        if name.startswith("gemm_bf16_") and "tflops" in row:
            dims = [int(d) for d in str(row["shape"]).split("x")]
            if len(dims) != 3:
                sys.exit(f"line {n}: {name} shape {row['shape']!r} is not MxNxK")
            smallest = min(dims)
            gemm[smallest] = max(gemm.get(smallest, 0.0), row["tflops"] / peak)
        elif name == "attention_fwd_bwd" and "tflops" in row:
            attention = max(attention or 0.0, row["tflops"] / peak)
        elif "gbps" in row:
            bandwidths.append(row["gbps"] / hbm)
    points, best = [], 0.0
    for x in sorted(gemm):
        best = max(best, min(1.0, gemm[x]))
        points.append([x, round(best, 3)])
    return points, attention, (statistics.median(bandwidths) if bandwidths else None)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("op_bench_jsonl")
    parser.add_argument("--cluster", required=True, help="the cluster YAML whose peaks to use")
    args = parser.parse_args()
    peak, hbm = cluster_numbers(args.cluster)
    with open(args.op_bench_jsonl) as f:
        points, attention, memory = fit(f.readlines(), peak, hbm)
    if not points:
        sys.exit(f"{args.op_bench_jsonl}: no gemm_bf16_* lines with tflops")
    print("efficiency:")
    print("  gemm: " + json.dumps(points))
    if attention is not None:
        print(f"  attention: {min(1.0, attention):.3f}")
    if memory is not None:
        print(f"  memory: {min(1.0, memory):.3f}")


if __name__ == "__main__":
    main()
