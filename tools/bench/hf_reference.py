#!/usr/bin/env python3
"""The PyTorch baseline a user would pick instead of moefold: Hugging Face MixtralForCausalLM.

Builds the model of a moefold benchmark config (default configs/bench/mixtral_mini.yaml) with
bf16 parameters, SDPA attention, the router's auxiliary loss and fused AdamW, trains it on random
token batches (fixed seed) with gradient accumulation over micro-batches, and times whole optimizer
steps (forward + backward of every micro-batch, gradient clipping, the update) between device
synchronisations. Prints one JSON line in step_bench's format, so the two compare line by line:

  {"bench": "hf_reference", "model": "mixtral_mini", "tokens_per_s": ..., "mfu": ..., ...}

FLOPs per token are moefold's analytic count (core/train/flops.cc): pass step_bench's figure with
--flops-per-token (the suite does), else the same formula is evaluated here.

  python3 tools/bench/hf_reference.py --micro-batch 2 --flops-per-token 5.9e9
  python3 tools/bench/hf_reference.py --device cpu --tiny          (a 2-layer smoke run)

Exit status: 0 with a measurement; 2 when the setup is unusable (no GPU, a package missing, a bad
config); 3 when the run failed (out of memory at every micro-batch tried, or an error in a step).
A failed run still prints a JSON line with an "error" field. Nothing here asserts a time.
HF_REFERENCE_OOM_ABOVE=N makes every micro-batch above N fail as out of memory, to check the
--auto-micro-batch fallback on a machine without a GPU.
"""

import argparse
import gc
import json
import math
import os
import statistics
import sys
import time

# Dense bf16 peak of an H100/H200 SXM, as step_bench assumes for MFU.
DEFAULT_PEAK_TFLOPS = 989.0

# configs/bench/mixtral_mini.yaml's model and batch, for machines without PyYAML.
MIXTRAL_MINI = {
    "name": "mixtral_mini",
    "model": {
        "vocab_size": 32000, "hidden_size": 2048, "num_layers": 16, "num_heads": 16,
        "num_kv_heads": 4, "ffn_hidden_size": 2816, "rope_theta": 1000000, "norm_eps": 1.0e-5,
        "tie_embeddings": False, "init_std": 0.02,
        "moe": {"num_experts": 8, "top_k": 2, "expert_ffn_hidden_size": 2816,
                "aux_loss_coeff": 1.0e-2, "first_dense_layers": 0, "layer_freq": 1},
    },
    "train": {"global_batch_size": 8, "seq_len": 4096, "seed": 1234},
    "optimizer": {"lr": 3.0e-4, "weight_decay": 0.1, "grad_clip": 1.0},
}

# A miniature of the same architecture for CPU checks (--tiny).
TINY_MODEL = {
    "vocab_size": 256, "hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2,
    "ffn_hidden_size": 128, "rope_theta": 1000000, "norm_eps": 1.0e-5, "tie_embeddings": False,
    "init_std": 0.02,
    "moe": {"num_experts": 4, "top_k": 2, "expert_ffn_hidden_size": 128, "aux_loss_coeff": 1.0e-2,
            "first_dense_layers": 0, "layer_freq": 1},
}


class SetupError(Exception):
    """The run cannot start here (exit 2)."""


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=None,
                   help="moefold YAML config (default: configs/bench/mixtral_mini.yaml)")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--tiny", action="store_true",
                   help="2-layer miniature (vocab 256, hidden 64, 4 experts), seq 64, batch 4")
    p.add_argument("--micro-batch", type=int, default=None,
                   help="sequences per forward/backward (default: 1 with --tiny, else 2)")
    p.add_argument("--global-batch", type=int, default=None, help="default: the config's (8)")
    p.add_argument("--seq-len", type=int, default=None, help="default: the config's (4096)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--peak-tflops", type=float, default=None,
                   help=f"device peak for MFU (default {DEFAULT_PEAK_TFLOPS:g} on a GPU, none on "
                        "the CPU)")
    p.add_argument("--flops-per-token", type=float, default=None,
                   help="training FLOPs per token (step_bench's flops_per_token); default: "
                        "moefold's formula evaluated here")
    p.add_argument("--compile", action="store_true", help="wrap the model in torch.compile")
    p.add_argument("--auto-micro-batch", action="store_true",
                   help="on out-of-memory, halve the micro-batch and start again")
    p.add_argument("--seed", type=int, default=None, help="default: the config's train.seed")
    args = p.parse_args(argv)
    for name in ("warmup", "steps"):
        if getattr(args, name) < (0 if name == "warmup" else 1):
            p.error(f"--{name} is too small")
    return args


def load_config(path):
    """The moefold config as a dict: read with PyYAML, or the built-in copy of mixtral_mini."""
    default = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "configs",
                           "bench", "mixtral_mini.yaml")
    path = path or default
    try:
        import yaml  # noqa: PLC0415 (optional: the GPU machine has it, a bare venv may not)
    except ImportError:
        if os.path.abspath(path) == os.path.abspath(default):
            return MIXTRAL_MINI
        raise SetupError(f"reading {path} needs PyYAML (pip install pyyaml)")
    try:
        with open(path, encoding="utf-8") as f:
            config = yaml.safe_load(f)
    except OSError as e:
        raise SetupError(f"cannot read config {path}: {e}")
    for section in ("model", "train"):
        if section not in config:
            raise SetupError(f"{path}: no '{section}' section")
    return config


def flops_per_token(m, seq_len):
    """moefold's TrainingFlopsPerToken (core/train/flops.cc), term by term.

    6·[h·V + Σ_layers (h·(h_q + 2·h_kv) + h_q·h + MoE or dense MLP)] + 6·L·S·h_q, with an MoE
    layer k·3·h·F_e + h·E (no shared experts in these configs) and a dense one 3·h·F.
    """
    h = m["hidden_size"]
    head_dim = h // m["num_heads"]
    hq = m["num_heads"] * head_dim
    hkv = m["num_kv_heads"] * head_dim
    moe = m["moe"]
    first_dense = moe.get("first_dense_layers", 0)
    freq = moe.get("layer_freq", 1)
    macs = h * m["vocab_size"]
    for layer in range(m["num_layers"]):
        macs += h * (hq + 2 * hkv) + hq * h
        is_moe = layer >= first_dense and (layer - first_dense) % freq == 0
        if is_moe:
            macs += moe["top_k"] * 3 * h * moe["expert_ffn_hidden_size"] + h * moe["num_experts"]
        else:
            macs += 3 * h * m["ffn_hidden_size"]
    return 6.0 * macs + 6.0 * m["num_layers"] * seq_len * hq


def check_supported(m):
    moe = m.get("moe", {})
    if moe.get("first_dense_layers", 0) != 0 or moe.get("layer_freq", 1) != 1:
        raise SetupError("Mixtral has an MoE MLP in every layer: the config has dense layers")
    if moe.get("num_shared_experts", 0):
        raise SetupError("Mixtral has no shared experts: the config has some")
    if m["hidden_size"] % m["num_heads"]:
        raise SetupError("hidden_size is not a multiple of num_heads")


def mixtral_config(transformers, m, seq_len):
    """A MixtralConfig equal to the moefold model `m` (transformers 4.x and 5.x)."""
    moe = m["moe"]
    config = transformers.MixtralConfig(
        vocab_size=m["vocab_size"],
        hidden_size=m["hidden_size"],
        intermediate_size=moe["expert_ffn_hidden_size"],
        num_hidden_layers=m["num_layers"],
        num_attention_heads=m["num_heads"],
        num_key_value_heads=m["num_kv_heads"],
        head_dim=m["hidden_size"] // m["num_heads"],
        max_position_embeddings=max(seq_len, 4096),
        rms_norm_eps=m["norm_eps"],
        tie_word_embeddings=bool(m.get("tie_embeddings", False)),
        initializer_range=m.get("init_std", 0.02),
        num_local_experts=moe["num_experts"],
        num_experts_per_tok=moe["top_k"],
        output_router_logits=True,
        router_aux_loss_coef=moe.get("aux_loss_coeff", 0.01),
        router_jitter_noise=0.0,
        sliding_window=None,
        attention_dropout=0.0,
        use_cache=False,
        attn_implementation="sdpa",
    )
    # transformers 5 keeps RoPE settings in rope_parameters, 4.x in rope_theta.
    theta = float(m["rope_theta"])
    rope = getattr(config, "rope_parameters", None)
    if isinstance(rope, dict):
        rope = dict(rope)
        rope["rope_theta"] = theta
        rope.setdefault("rope_type", "default")
        config.rope_parameters = rope
    else:
        config.rope_theta = theta
    return config


def build_model(torch, transformers, config, device):
    """bf16 parameters made directly on `device` (no fp32 copy on the way)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = transformers.MixtralForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model = model.to(device=device, dtype=torch.bfloat16)
    model.train()
    return model


def make_optimizer(torch, model, opt, device):
    kwargs = dict(lr=opt.get("lr", 3e-4), betas=(0.9, 0.95), eps=1e-8,
                  weight_decay=opt.get("weight_decay", 0.1))
    try:
        return torch.optim.AdamW(model.parameters(), fused=True, **kwargs), "fused"
    except (RuntimeError, ValueError) as e:  # fused AdamW on a device or dtype without it
        if device == "cuda":
            raise
        print(f"hf_reference: fused AdamW unavailable on {device} ({e}); using foreach",
              file=sys.stderr)
        return torch.optim.AdamW(model.parameters(), foreach=True, **kwargs), "foreach"


def is_oom(torch, e):
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom is not None and isinstance(e, oom)) or "out of memory" in str(e).lower()


def run(torch, transformers, args, m, run_cfg, micro_batch):
    """Warm-up and timed steps at `micro_batch`; returns the JSON fields (raises on failure)."""
    device = args.device
    seq_len, global_batch = run_cfg["seq_len"], run_cfg["global_batch"]
    accum = global_batch // micro_batch
    oom_above = os.environ.get("HF_REFERENCE_OOM_ABOVE")
    if oom_above is not None and micro_batch > int(oom_above):
        raise torch.OutOfMemoryError(f"HF_REFERENCE_OOM_ABOVE={oom_above}: simulated out of memory")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    torch.manual_seed(run_cfg["seed"])
    config = mixtral_config(transformers, m, seq_len)
    model = build_model(torch, transformers, config, device)
    attn = getattr(model.config, "_attn_implementation", None)
    if attn != "sdpa":
        raise SetupError(f"attention implementation is {attn!r}, not 'sdpa'")
    params_total = sum(p.numel() for p in model.parameters())
    optimizer, adamw = make_optimizer(torch, model, run_cfg["optimizer"], device)
    step_model = torch.compile(model) if args.compile else model
    generator = torch.Generator(device="cpu").manual_seed(run_cfg["seed"])
    n_steps = args.warmup + args.steps
    tokens = torch.randint(0, m["vocab_size"], (n_steps, global_batch, seq_len),
                           generator=generator).to(device)
    grad_clip = run_cfg["optimizer"].get("grad_clip", 1.0)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    for step in range(n_steps):
        sync()
        start = time.perf_counter()
        total = 0.0
        for i in range(accum):
            ids = tokens[step, i * micro_batch:(i + 1) * micro_batch]
            out = step_model(input_ids=ids, labels=ids)  # loss includes the router's aux loss
            (out.loss / accum).backward()
            total += out.loss.detach()
        if grad_clip and grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        elapsed = time.perf_counter() - start
        loss = float(total) / accum
        if not math.isfinite(loss):
            raise RuntimeError(f"loss is {loss} at step {step}")
        losses.append(loss)
        if step >= args.warmup:
            times.append(elapsed)
        print(f"hf_reference: step {step} {'warm-up' if step < args.warmup else 'timed'} "
              f"{elapsed:.3f} s loss {loss:.4f}", file=sys.stderr, flush=True)
    step_s = statistics.median(times)
    result = {
        "step_s_median": step_s,
        "step_s_min": min(times),
        "step_s_max": max(times),
        "tokens_per_step": global_batch * seq_len,
        "tokens_per_s": global_batch * seq_len / step_s,
        "peak_memory_bytes": torch.cuda.max_memory_allocated() if device == "cuda" else None,
        "params_total": params_total,
        "attn_implementation": attn,
        "adamw": adamw,
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }
    experts = getattr(model.config, "_experts_implementation", None)
    if experts is not None:
        result["experts_implementation"] = experts
    return result


def free_memory(torch):
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def emit(line):
    print(json.dumps(line), flush=True)


def main(argv):
    args = parse_args(argv)
    line = {"bench": "hf_reference", "model": None, "device": args.device}
    try:
        try:
            import torch  # noqa: PLC0415
            import transformers  # noqa: PLC0415
        except ImportError as e:
            raise SetupError(f"{e.name or e} is not installed (pip install torch transformers)")
        line["torch"] = torch.__version__
        line["transformers"] = transformers.__version__
        config = load_config(args.config)
        m = TINY_MODEL if args.tiny else config["model"]
        check_supported(m)
        train = config.get("train", {})
        seq_len = args.seq_len or (64 if args.tiny else train.get("seq_len", 4096))
        global_batch = args.global_batch or (4 if args.tiny else train.get("global_batch_size", 8))
        micro_batch = args.micro_batch or (1 if args.tiny else 2)
        if micro_batch < 1 or global_batch % micro_batch:
            raise SetupError(f"global batch {global_batch} is not a multiple of micro-batch "
                             f"{micro_batch}")
        line["model"] = config.get("name", "model") + ("_tiny" if args.tiny else "")
        if args.device == "cuda":
            if not torch.cuda.is_available():
                raise SetupError("no GPU: torch.cuda.is_available() is False (torch "
                                 f"{torch.__version__}); use --device cpu --tiny for a CPU run")
            line["gpu"] = torch.cuda.get_device_name(0)
        peak = args.peak_tflops
        if peak is None and args.device == "cuda":
            peak = DEFAULT_PEAK_TFLOPS
        if args.flops_per_token:
            fpt, source = args.flops_per_token, "given"
        else:
            fpt, source = flops_per_token(m, seq_len), "formula"
        line.update({"dtype": "bf16", "seq_len": seq_len, "global_batch": global_batch,
                     "warmup_steps": args.warmup, "timed_steps": args.steps,
                     "compile": args.compile, "flops_per_token": fpt, "flops_source": source})
        run_cfg = {"seq_len": seq_len, "global_batch": global_batch,
                   "seed": args.seed if args.seed is not None else train.get("seed", 1234),
                   "optimizer": config.get("optimizer", {})}
    except SetupError as e:
        line["error"] = str(e)
        emit(line)
        print(f"hf_reference: {e}", file=sys.stderr)
        return 2

    tried = []
    while True:
        line["micro_batch"] = micro_batch
        line["grad_accum"] = global_batch // micro_batch
        failure = None
        try:
            result = run(torch, transformers, args, m, run_cfg, micro_batch)
        except SetupError as e:
            line["error"] = str(e)
            emit(line)
            print(f"hf_reference: {e}", file=sys.stderr)
            return 2
        except Exception as e:  # noqa: BLE001 (one JSON line whatever broke)
            # Only the facts leave this block: the exception's traceback holds the model's frame,
            # and its memory is freed once the block ends.
            failure = (is_oom(torch, e), f"{type(e).__name__}: {e}")
        if failure is None:
            break
        oom, message = failure
        tried.append(micro_batch)
        free_memory(torch)
        if oom and args.auto_micro_batch and micro_batch > 1:
            smaller = micro_batch // 2
            while global_batch % smaller:
                smaller -= 1
            print(f"hf_reference: out of memory at micro-batch {micro_batch}; trying {smaller}",
                  file=sys.stderr, flush=True)
            micro_batch = smaller
            continue
        if oom:
            message = (f"out of memory at micro-batch {micro_batch}"
                       + ("" if args.auto_micro_batch or micro_batch == 1
                          else " (try a smaller --micro-batch, or --auto-micro-batch)"))
        line["error"] = message
        if len(tried) > 1:
            line["micro_batches_tried"] = tried
        emit(line)
        print(f"hf_reference: {message}", file=sys.stderr)
        return 3
    line.update(result)
    if len(tried) > 0:
        line["micro_batches_tried"] = tried + [micro_batch]
    tflops = fpt * line["tokens_per_s"] / 1e12
    line["model_tflops"] = tflops
    line["peak_tflops"] = peak
    line["mfu"] = tflops / peak if peak else None
    emit(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
