#!/usr/bin/env python3
"""transformers runs moefold's export: its logits on a fixed batch match moefold's forward.

For each family (Mixtral, Qwen2-MoE, GLM-4-MoE) and export dtype (f32, bf16):
  * `hf_fixture export` writes the tiny export and `hf_fixture logits` runs moefold's forward on
    the same fixed batch from that directory (moefold's import, f32 on the CPU);
  * AutoModelForCausalLM.from_pretrained loads the directory in float32 (CPU): its logits must
    match to 1e-4 (same weights, f32 math on both sides);
  * on a GPU, the same model in bfloat16: per-token cross-entropy losses within 3e-2 (relative)
    of moefold's, the bf16 tolerance.
Needs torch, transformers and safetensors (the GPU machine has them); without torch the moefold
half still runs and the script exits 77. A family the installed transformers lacks is reported
and skipped; Mixtral must run.
Usage (from the repository root):
  python3 tools/python/hf_logits_check.py --fixture build/tests/hf/hf_fixture --work /tmp/hf_logits
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np

FAMILIES = ("mixtral", "qwen2_moe", "glm4_moe")


def moefold_logits(fixture, family, directory, out):
    subprocess.run([fixture, "logits", family, directory, out], check=True)
    with open(out) as f:
        result = json.load(f)
    return np.array(result["tokens"], dtype=np.int64), np.array(result["logits"], dtype=np.float64)


def token_losses(logits, tokens, vocab):
    """Cross entropy of each position's next token ((t + 1) % V, as hf_fixture's targets)."""
    targets = (tokens + 1) % vocab
    shifted = logits - logits.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(shifted).sum(axis=-1))
    picked = np.take_along_axis(shifted, targets[..., None], axis=-1)[..., 0]
    return lse - picked


def load(torch, transformers, directory, dtype, device):
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=dtype)
    except TypeError:  # transformers < 4.56 names it torch_dtype
        model = transformers.AutoModelForCausalLM.from_pretrained(directory, torch_dtype=dtype)
    return model.to(device).eval()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixture", default="build/tests/hf/hf_fixture", help="the hf_fixture binary")
    parser.add_argument("--work", default="/tmp/hf_logits", help="a scratch directory (emptied first)")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    subprocess.run([args.fixture, "export", args.work], check=True)
    ours = {}
    for family in FAMILIES:
        for variant in ("f32", "bf16"):
            d = os.path.join(args.work, f"{family}_{variant}")
            ours[(family, variant)] = moefold_logits(args.fixture, family, d, d + ".logits.json")
    try:
        import torch
        import transformers
    except ImportError as e:
        print(f"SKIP: {e}; moefold's side ran ({len(ours)} exports, logits in {args.work})")
        return 77
    failures, ran = [], []
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for (family, variant), (tokens, logits) in ours.items():
        d = os.path.join(args.work, f"{family}_{variant}")
        try:
            model = load(torch, transformers, d, torch.float32, "cpu")
        except (ValueError, KeyError, ImportError) as e:
            if family == "mixtral":
                failures.append(f"{d}: transformers cannot load it: {e}")
            else:
                print(f"skip {family}: this transformers cannot load it ({e})")
            continue
        with torch.no_grad():
            theirs = model(torch.tensor(tokens)).logits.double().numpy()
        diff = np.abs(theirs - logits).max()
        tol = 1e-4 + 1e-4 * np.abs(logits).max()
        line = f"{family} {variant}: f32 logits max |diff| {diff:.3g} (tol {tol:.3g})"
        if not diff <= tol:
            failures.append(line)
        if device == "cuda":
            model16 = load(torch, transformers, d, torch.bfloat16, device)
            with torch.no_grad():
                theirs16 = model16(torch.tensor(tokens, device=device)).logits.double().cpu().numpy()
            vocab = logits.shape[-1]
            ours_loss = token_losses(logits, tokens, vocab)
            rel = np.abs(token_losses(theirs16, tokens, vocab) - ours_loss).max() / np.abs(ours_loss).mean()
            line += f"; bf16 on {device}: per-token loss max rel diff {rel:.3g} (tol 3e-2)"
            if not rel <= 3e-2:
                failures.append(line)
        ran.append(line)
        print(line)
    for f in failures:
        print("FAIL:", f)
    if failures or not ran:
        return 1
    print(f"hf_logits_check: {len(ran)} exports match moefold's forward")
    return 0


if __name__ == "__main__":
    sys.exit(main())
