#!/usr/bin/env python3
"""Checks moefold's Hugging Face export against the Python ecosystem, without torch.

1. `hf_fixture export` writes tiny Mixtral, Qwen2-MoE and GLM-4-MoE exports (f32, bf16, sharded).
2. transformers' AutoConfig loads each config.json as the family's config class; the tensor names
   and shapes that the family's modeling file builds from that config (written out below from
   modeling_mixtral.py, modeling_qwen2_moe.py, modeling_glm4_moe.py and the legacy per-expert
   checkpoint layout their conversion mappings read) equal the files' tensors.
3. Python's safetensors (numpy API) reads every file; the bf16 export is the f32 export rounded to
   nearest even, bit for bit.
4. Python's safetensors writes a file that `hf_fixture read` (moefold's reader) reads back equal.
5. A numpy forward of each family, written from its modeling file (rotate-half RoPE, GQA, the
   family's routing, shared experts), run on the f32 export, gives moefold's logits (hf_fixture
   logits) to 1e-4: the weights mean the same model on both sides.

Exit 0 on success, 1 on a mismatch, 77 (ctest's skip) when safetensors/transformers are missing.
Usage: hf_reference_check.py --fixture build/tests/hf/hf_fixture --work build/hf_reference
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys

try:
    import numpy as np
    from safetensors import safe_open
    from safetensors.numpy import save_file
    from transformers import AutoConfig
except ImportError as e:  # pragma: no cover - the environment decides
    print(f"SKIP: {e} (tools/setup.sh creates build/pyref with safetensors, numpy, transformers)")
    sys.exit(77)

FAMILIES = {
    "mixtral": "MixtralConfig",
    "qwen2_moe": "Qwen2MoeConfig",
    "glm4_moe": "Glm4MoeConfig",
}


def head_dim(cfg):
    return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads


def mlp(prefix, ffn, hidden):
    return {
        f"{prefix}.gate_proj.weight": (ffn, hidden),
        f"{prefix}.up_proj.weight": (ffn, hidden),
        f"{prefix}.down_proj.weight": (hidden, ffn),
    }


def expected_tensors(cfg):
    """Names and shapes a checkpoint of cfg holds, as the family's modeling file builds them."""
    h, d = cfg.hidden_size, head_dim(cfg)
    out = {"model.embed_tokens.weight": (cfg.vocab_size, h), "model.norm.weight": (h,)}
    if not cfg.tie_word_embeddings:
        out["lm_head.weight"] = (cfg.vocab_size, h)
    for l in range(cfg.num_hidden_layers):
        p = f"model.layers.{l}"
        out[f"{p}.input_layernorm.weight"] = (h,)
        out[f"{p}.post_attention_layernorm.weight"] = (h,)
        out[f"{p}.self_attn.q_proj.weight"] = (cfg.num_attention_heads * d, h)
        out[f"{p}.self_attn.k_proj.weight"] = (cfg.num_key_value_heads * d, h)
        out[f"{p}.self_attn.v_proj.weight"] = (cfg.num_key_value_heads * d, h)
        out[f"{p}.self_attn.o_proj.weight"] = (h, cfg.num_attention_heads * d)
        if cfg.model_type == "mixtral":
            # MixtralSparseMoeBlock: gate (E, H); experts stored per expert as w1/w3 (gate/up), w2.
            out[f"{p}.block_sparse_moe.gate.weight"] = (cfg.num_local_experts, h)
            for e in range(cfg.num_local_experts):
                f = cfg.intermediate_size
                out[f"{p}.block_sparse_moe.experts.{e}.w1.weight"] = (f, h)
                out[f"{p}.block_sparse_moe.experts.{e}.w3.weight"] = (f, h)
                out[f"{p}.block_sparse_moe.experts.{e}.w2.weight"] = (h, f)
        elif cfg.model_type == "qwen2_moe":
            # Qwen2MoeDecoderLayer: sparse unless in mlp_only_layers, when (l+1) % step == 0.
            sparse = l not in cfg.mlp_only_layers and cfg.num_experts > 0 and (l + 1) % cfg.decoder_sparse_step == 0
            if not sparse:
                out.update(mlp(f"{p}.mlp", cfg.intermediate_size, h))
                continue
            out[f"{p}.mlp.gate.weight"] = (cfg.num_experts, h)
            for e in range(cfg.num_experts):
                out.update(mlp(f"{p}.mlp.experts.{e}", cfg.moe_intermediate_size, h))
            out.update(mlp(f"{p}.mlp.shared_expert", cfg.shared_expert_intermediate_size, h))
            out[f"{p}.mlp.shared_expert_gate.weight"] = (1, h)
        elif cfg.model_type == "glm4_moe":
            # Glm4MoeDecoderLayer: dense below first_k_dense_replace; Glm4MoeMoE has a router with an
            # e_score_correction_bias buffer and n_shared_experts × moe_intermediate_size shared MLP.
            if l < cfg.first_k_dense_replace:
                out.update(mlp(f"{p}.mlp", cfg.intermediate_size, h))
                continue
            out[f"{p}.mlp.gate.weight"] = (cfg.n_routed_experts, h)
            out[f"{p}.mlp.gate.e_score_correction_bias"] = (cfg.n_routed_experts,)
            for e in range(cfg.n_routed_experts):
                out.update(mlp(f"{p}.mlp.experts.{e}", cfg.moe_intermediate_size, h))
            out.update(mlp(f"{p}.mlp.shared_experts", cfg.moe_intermediate_size * cfg.n_shared_experts, h))
        else:
            raise ValueError(cfg.model_type)
    return out


def files_of(directory):
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        return sorted(set(weight_map.values())), weight_map
    return ["model.safetensors"], None


def raw_tensors(path):
    """name -> (dtype, shape, raw bytes), parsed by hand (numpy has no bfloat16)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        out[name] = (e["dtype"], tuple(e["shape"]), data[b:end])
    return out


def check_dir(directory, family, errors):
    cfg = AutoConfig.from_pretrained(directory)
    if type(cfg).__name__ != FAMILIES[family]:
        errors.append(f"{directory}: AutoConfig gave {type(cfg).__name__}, expected {FAMILIES[family]}")
        return
    expected = expected_tensors(cfg)
    files, weight_map = files_of(directory)
    found = {}
    for file in files:
        path = os.path.join(directory, file)
        with safe_open(path, framework="numpy") as f:
            if f.metadata().get("format") != "pt":
                errors.append(f"{path}: metadata format {f.metadata()} is not pt")
            for name in f.keys():
                found[name] = path
        for name, (dtype, shape, raw) in raw_tensors(path).items():
            if name in expected and tuple(expected[name]) != shape:
                errors.append(f"{path}: {name} has shape {shape}, {FAMILIES[family]} builds {expected[name]}")
            if dtype not in ("F32", "BF16"):
                errors.append(f"{path}: {name} has dtype {dtype}")
        if weight_map is not None:
            for name, mapped in weight_map.items():
                if mapped == file and name not in found:
                    errors.append(f"{directory}: index maps {name} to {file}, which lacks it")
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing:
        errors.append(f"{directory}: missing {missing[:5]} ({len(missing)} in all)")
    if extra:
        errors.append(f"{directory}: unexpected {extra[:5]} ({len(extra)} in all)")
    # f32 tensors load through the numpy API with their shapes.
    if family != "mixtral" or "sharded" not in directory:
        with safe_open(os.path.join(directory, files[0]), framework="numpy") as f:
            for name in list(f.keys())[:3]:
                if f.get_slice(name).get_dtype() == "F32" and tuple(f.get_tensor(name).shape) != tuple(expected[name]):
                    errors.append(f"{directory}: numpy shape of {name}")


def rne_bf16(f32_bytes):
    bits = np.frombuffer(f32_bytes, dtype="<u4").astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype("<u2").tobytes()


def check_bf16(work, family, errors):
    f32 = raw_tensors(os.path.join(work, f"{family}_f32", "model.safetensors"))
    bf16 = raw_tensors(os.path.join(work, f"{family}_bf16", "model.safetensors"))
    for name, (dtype, shape, raw) in f32.items():
        b_dtype, b_shape, b_raw = bf16[name]
        if b_dtype != "BF16" or b_shape != shape or b_raw != rne_bf16(raw):
            errors.append(f"{family}_bf16: {name} is not the f32 export rounded to nearest even")


def check_python_written_file(fixture, work, errors):
    arrays = {
        "a.f32": np.arange(12, dtype=np.float32).reshape(3, 4) * 0.25 - 1.0,
        "b.f16": np.linspace(-2, 2, 5).astype(np.float16),
        "c.i32": np.array([[1, -2], [3, 4]], dtype=np.int32),
        "scalar": np.array(7.5, dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }
    path = os.path.join(work, "python_written.safetensors")
    save_file(arrays, path, metadata={"format": "pt"})
    result = subprocess.run([fixture, "read", path], capture_output=True, text=True)
    if result.returncode != 0:
        errors.append(f"moefold cannot read {path}: {result.stderr.strip()}")
        return
    read = json.loads(result.stdout)
    names = {"a.f32": "F32", "b.f16": "F16", "c.i32": "I32", "scalar": "F32", "empty": "F32"}
    for name, array in arrays.items():
        got = read.get(name)
        if got is None:
            errors.append(f"moefold did not read {name} of {path}")
            continue
        if got["dtype"] != names[name] or tuple(got["shape"]) != array.shape:
            errors.append(f"{path}: {name} read as {got['dtype']} {got['shape']}, wrote {names[name]} {array.shape}")
        elif not np.array_equal(np.array(got["values"], dtype=np.float64), array.astype(np.float64).reshape(-1)):
            errors.append(f"{path}: {name} values differ")


def load_all(directory):
    files, _ = files_of(directory)
    out = {}
    for file in files:
        with safe_open(os.path.join(directory, file), framework="numpy") as f:
            for name in f.keys():
                out[name] = f.get_tensor(name).astype(np.float64)
    return out


def reference_logits(directory, tokens):
    """The family's forward in numpy f64, module by module as its modeling file writes it."""
    cfg = AutoConfig.from_pretrained(directory)
    w = load_all(directory)
    eps, d = cfg.rms_norm_eps, head_dim(cfg)
    theta = cfg.rope_parameters["rope_theta"]
    nh, nkv = cfg.num_attention_heads, cfg.num_key_value_heads

    def norm(x, weight):
        return weight * (x / np.sqrt((x * x).mean(-1, keepdims=True) + eps))

    def silu(x):
        return x / (1.0 + np.exp(-x))

    def mlp(x, p):
        return (silu(x @ w[p + ".gate_proj.weight"].T) * (x @ w[p + ".up_proj.weight"].T)) @ w[p + ".down_proj.weight"].T

    def rope(x):  # (B, S, N, D): rotate_half with cos/sin of cat(freqs, freqs)
        s = x.shape[1]
        inv = 1.0 / theta ** (np.arange(0, d, 2, dtype=np.float64) / d)
        freqs = np.arange(s)[:, None] * inv[None, :]
        emb = np.concatenate([freqs, freqs], -1)[None, :, None, :]
        rot = np.concatenate([-x[..., d // 2:], x[..., : d // 2]], -1)
        return x * np.cos(emb) + rot * np.sin(emb)

    x = w["model.embed_tokens.weight"][tokens]
    b, s, h = x.shape
    causal = np.triu(np.full((s, s), -np.inf), 1)
    for l in range(cfg.num_hidden_layers):
        p = f"model.layers.{l}"
        y = norm(x, w[p + ".input_layernorm.weight"])
        q = rope((y @ w[p + ".self_attn.q_proj.weight"].T).reshape(b, s, nh, d))
        k = rope((y @ w[p + ".self_attn.k_proj.weight"].T).reshape(b, s, nkv, d))
        v = (y @ w[p + ".self_attn.v_proj.weight"].T).reshape(b, s, nkv, d)
        k, v = np.repeat(k, nh // nkv, axis=2), np.repeat(v, nh // nkv, axis=2)
        scores = np.einsum("bqnd,bknd->bnqk", q, k) / np.sqrt(d) + causal
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        att = np.einsum("bnqk,bknd->bqnd", probs, v).reshape(b, s, nh * d)
        x = x + att @ w[p + ".self_attn.o_proj.weight"].T
        y = norm(x, w[p + ".post_attention_layernorm.weight"]).reshape(b * s, h)
        gate = p + (".block_sparse_moe" if cfg.model_type == "mixtral" else ".mlp") + ".gate.weight"
        if gate not in w:
            x = x + mlp(y, p + ".mlp").reshape(b, s, h)
            continue
        logits = y @ w[gate].T
        k_top = cfg.num_experts_per_tok
        if cfg.model_type == "glm4_moe":
            scores = 1.0 / (1.0 + np.exp(-logits))
            choice = scores + w[p + ".mlp.gate.e_score_correction_bias"][None, :]
            assert cfg.n_group == 1, "the fixture's GLM model has no groups"
            idx = np.argsort(-choice, axis=-1, kind="stable")[:, :k_top]
            weights = np.take_along_axis(scores, idx, -1)
            if cfg.norm_topk_prob:
                weights /= weights.sum(-1, keepdims=True) + 1e-20
            weights *= cfg.routed_scaling_factor
        else:
            probs = np.exp(logits - logits.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            idx = np.argsort(-probs, axis=-1, kind="stable")[:, :k_top]
            weights = np.take_along_axis(probs, idx, -1)
            if cfg.model_type == "mixtral" or cfg.norm_topk_prob:
                weights /= weights.sum(-1, keepdims=True)
        out = np.zeros_like(y)
        for t in range(b * s):
            for j in range(k_top):
                e = idx[t, j]
                if cfg.model_type == "mixtral":
                    q_ = f"{p}.block_sparse_moe.experts.{e}."
                    ex = (silu(y[t] @ w[q_ + "w1.weight"].T) * (y[t] @ w[q_ + "w3.weight"].T)) @ w[q_ + "w2.weight"].T
                else:
                    ex = mlp(y[t][None, :], f"{p}.mlp.experts.{e}")[0]
                out[t] += weights[t, j] * ex
        if cfg.model_type == "qwen2_moe":
            shared_gate = 1.0 / (1.0 + np.exp(-(y @ w[p + ".mlp.shared_expert_gate.weight"].T)))
            out += shared_gate * mlp(y, p + ".mlp.shared_expert")
        elif cfg.model_type == "glm4_moe":
            out += mlp(y, p + ".mlp.shared_experts")
        x = x + out.reshape(b, s, h)
    x = norm(x, w["model.norm.weight"])
    head = w["model.embed_tokens.weight"] if cfg.tie_word_embeddings else w["lm_head.weight"]
    return x @ head.T


def check_logits(fixture, work, family, errors):
    directory = os.path.join(work, f"{family}_f32")
    out = directory + ".logits.json"
    subprocess.run([fixture, "logits", family, directory, out], check=True)
    with open(out) as f:
        result = json.load(f)
    ours = np.array(result["logits"], dtype=np.float64)
    theirs = reference_logits(directory, np.array(result["tokens"]))
    diff = np.abs(ours - theirs).max()
    if not diff <= 1e-4:
        errors.append(f"{directory}: moefold's logits differ from the {family} definition by {diff:.3g}")
    else:
        print(f"{family}: moefold's logits = the numpy {family} forward (max |diff| {diff:.2g})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixture", required=True, help="the hf_fixture binary")
    parser.add_argument("--work", required=True, help="a scratch directory (emptied first)")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    subprocess.run([args.fixture, "export", args.work], check=True)
    errors = []
    for family in FAMILIES:
        for variant in ("f32", "bf16"):
            check_dir(os.path.join(args.work, f"{family}_{variant}"), family, errors)
        check_bf16(args.work, family, errors)
    check_dir(os.path.join(args.work, "mixtral_sharded"), "mixtral", errors)
    check_python_written_file(args.fixture, args.work, errors)
    for family in FAMILIES:
        check_logits(args.fixture, args.work, family, errors)
    for e in errors:
        print("FAIL:", e)
    if errors:
        return 1
    print(f"hf_reference_check: {len(FAMILIES)} families (f32, bf16, sharded) match transformers' "
          "definitions; Python safetensors and moefold read each other's files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
