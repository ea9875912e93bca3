#!/usr/bin/env python3
"""Checks moefold's TensorBoard event files with TensorBoard itself (no TensorFlow, no torch).

1. Unless --run-dir names a finished run, runs `moefold train` (under mpirun with --ranks N > 1)
   on configs/tiny_moe.yaml with logging.tensorboard=true into --work, checkpointing every 2
   steps; then (unless --no-resume) deletes the last checkpoint and resumes, so the run redoes its
   last 2 steps as a preempted job would.
2. Every record of every RUN_DIR/tb/events.out.tfevents.* file passes TensorBoard's own masked
   CRC32C checks (tensorboard.compat.tensorflow_stub), read independently of moefold's reader.
3. TensorBoard's EventAccumulator loads RUN_DIR/tb: file version 2, and for each line of
   metrics.jsonl the scalars at that step equal the line's numbers at f32, under the tags the
   mapping below gives (written here from the rules in core/train/tensorboard.h, so a change on
   one side shows); no tag is missing or extra; a redone step appears once, with the later
   value (TensorBoard drops the first attempt at the resumed run's SessionLog START).

Exit 0 on success, 1 on a mismatch, 77 (ctest's skip) when the tensorboard package is missing.
Usage:
  tensorboard_check.py --moefold build/bin/moefold --work build/tensorboard_check [--ranks 2]
                       [--set train.device=cuda ...]
  tensorboard_check.py --run-dir RUN_DIR
"""
import argparse
import glob
import json
import os
import shutil
import struct
import subprocess
import sys

try:
    import numpy as np
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
except ImportError as e:  # pragma: no cover - the environment decides
    print(f"SKIP: {e} (tools/setup.sh installs tensorboard into build/pyref)")
    sys.exit(77)

TAGS = {
    "loss": "loss/total",
    "lm_loss": "loss/lm",
    "weighted_lm_loss": "loss/weighted_lm",
    "aux_loss": "loss/aux",
    "z_loss": "loss/z",
    "grad_norm": "grad_norm",
    "lr": "lr",
    "mfu": "mfu",
    "peak_tflops": "throughput/peak_tflops",
    "tokens": "throughput/tokens",
    "tokens_per_s": "throughput/tokens_per_s",
    "tokens_per_s_per_device": "throughput/tokens_per_s_per_device",
    "model_tflops_per_s": "throughput/model_tflops_per_s",
    "step_time_s": "time/step_s",
    "data_s": "time/data_s",
    "model_s": "time/model_s",
    "forward_s": "time/forward_s",
    "backward_s": "time/backward_s",
    "update_s": "time/update_s",
    "rank_step_time_s": "ranks/step_time_s",
    "rank_device_peak_bytes": "ranks/device_peak_bytes",
    "host_peak_bytes": "memory/host_peak_bytes",
    "device_peak_bytes": "memory/device_peak_bytes",
    "dispatch_bytes": "comm/dispatch_bytes",
    "grad_bytes_sent": "comm/grad_bytes_sent",
    "grad_bytes_uncompressed": "comm/grad_bytes_uncompressed",
    "expert_load_max_over_mean": "experts/load_max_over_mean",
    "tokens_dropped": "experts/tokens_dropped",
    "reweight_normaliser": "reweight/normaliser",
    "reweight_max_ratio": "reweight/max_ratio",
    "checkpoint_stall_s": "checkpoint/stall_s",
    "skipped": "skipped",
}


def is_number(v):
    return isinstance(v, (int, float))  # bool is an int: skipped → 0/1


def expected_scalars(line):
    """{tag: value} of one metrics.jsonl line, by the rules of core/train/tensorboard.h."""
    out = {}
    for key, value in line.items():
        if key == "step":
            continue
        tag = TAGS.get(key, key)
        if is_number(value):
            out[tag] = float(value)
        elif isinstance(value, dict):
            for member, v in value.items():
                if not is_number(v):
                    continue
                if key == "comm_s":
                    out[f"comm/{member}_s"] = float(v)
                elif key == "comm_exposed_s":
                    out[f"comm/{member}_exposed_s"] = float(v)
                else:
                    out[f"{tag}/{member}"] = float(v)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                if is_number(v):
                    out[f"{tag}/{i}"] = float(v)
    return out


def check_crcs(path):
    """Walks the TFRecords of `path` with TensorBoard's CRC function; returns the record count."""
    with open(path, "rb") as f:
        data = f.read()
    offset, records = 0, 0
    while offset < len(data):
        header = data[offset:offset + 12]
        if len(header) < 12:
            raise ValueError(f"{path}: truncated header at byte {offset}")
        (length,) = struct.unpack("<Q", header[:8])
        (length_crc,) = struct.unpack("<I", header[8:])
        if masked_crc32c(header[:8]) != length_crc:
            raise ValueError(f"{path}: record {records}: the length's CRC does not match")
        body = data[offset + 12:offset + 12 + length]
        footer = data[offset + 12 + length:offset + 16 + length]
        if len(body) != length or len(footer) != 4:
            raise ValueError(f"{path}: record {records} truncated")
        if masked_crc32c(body) != struct.unpack("<I", footer)[0]:
            raise ValueError(f"{path}: record {records}: the data's CRC does not match")
        offset += 16 + length
        records += 1
    return records


def run_training(args):
    run_dir = os.path.join(args.work, "run")
    checkpoints = os.path.join(args.work, "checkpoints")
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    cmd = [args.moefold, "train", "--config", "configs/tiny_moe.yaml", "--run-dir", run_dir,
           "--set", f"train.steps={args.steps}", "--set", "optimizer.warmup_steps=1",
           "--set", "logging.tensorboard=true",
           "--set", f"checkpoint.dir={checkpoints}", "--set", "checkpoint.every=2",
           "--set", f"data.cache_dir={os.path.join(args.work, 'data')}"]
    for override in args.set:
        cmd += ["--set", override]
    if args.ranks > 1:
        cmd = [args.mpiexec, "--allow-run-as-root", "--oversubscribe", "-np", str(args.ranks)] + cmd
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    if not args.no_resume:
        last = sorted(glob.glob(os.path.join(checkpoints, "step-*")))[-1]
        print(f"+ rm -r {last}  # the resume redoes the steps after the one before", flush=True)
        shutil.rmtree(last)
        print("+", " ".join(cmd + ["--resume"]), flush=True)
        subprocess.run(cmd + ["--resume"], check=True)
    return run_dir


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", help="check this finished run instead of training one")
    p.add_argument("--moefold", default="build/bin/moefold")
    p.add_argument("--work", default="build/tensorboard_check")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--ranks", type=int, default=1)
    p.add_argument("--mpiexec", default="mpirun")
    p.add_argument("--no-resume", action="store_true", help="one run, no resumed second part")
    p.add_argument("--set", action="append", default=[], help="extra config override (repeatable)")
    args = p.parse_args()
    run_dir = args.run_dir or run_training(args)

    files = sorted(glob.glob(os.path.join(run_dir, "tb", "events.out.tfevents.*")))
    if not files:
        print(f"FAIL: no event file under {run_dir}/tb")
        return 1
    for path in files:
        print(f"ok: {path}: {check_crcs(path)} records pass TensorBoard's CRC32C checks")

    acc = event_accumulator.EventAccumulator(
        os.path.join(run_dir, "tb"), size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    failures = []
    if acc.file_version != 2.0:
        failures.append(f"file version {acc.file_version}, expected 2")
    seen = {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        lines, redone = {}, 0
        for text in f:
            line = json.loads(text)
            redone += line["step"] in lines
            lines[line["step"]] = line  # a resumed run repeats steps: the later line counts
    for tag in seen:
        count = len(acc.Scalars(tag))
        if count != len(seen[tag]):
            failures.append(f"{tag}: {count} values for {len(seen[tag])} steps (a redone step "
                            "was not dropped)")
    expected_tags = set()
    for step, line in sorted(lines.items()):
        for tag, value in expected_scalars(line).items():
            expected_tags.add(tag)
            got = seen.get(tag, {}).get(step)
            want = float(np.float32(value))
            if got is None:
                failures.append(f"step {step}: no scalar {tag}")
            elif got != want and not (np.isnan(got) and np.isnan(want)):
                failures.append(f"step {step}: {tag} = {got!r}, metrics.jsonl says {want!r}")
    extra = set(seen) - expected_tags
    if extra:
        failures.append(f"tags not in metrics.jsonl: {sorted(extra)}")
    for failure in failures[:20]:
        print("FAIL:", failure)
    if failures:
        return 1
    print(f"ok: EventAccumulator sees {len(seen)} tags over {len(lines)} steps ({redone} of them "
          f"redone after a resume), equal to metrics.jsonl at f32 (e.g. {sorted(seen)[:4]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
