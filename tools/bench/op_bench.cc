// Op-level GPU benchmark: JSON lines with the median of N event-timed runs after warm-up for the
// dense bf16 GEMM, the expert grouped GEMM (forward, d_x, d_w; every backend, balanced and skewed
// counts) at the dense GEMM's total FLOPs with the ratio of rates in each line, causal attention
// forward+backward at S 4096 / head dim 128 on cuDNN (when it loads) and on the flash kernels
// ("backend" in the line), and every op the model calls at the mixtral_mini shapes (H 2048, 16/4
// heads, 8 experts top-2, F_e 2816, V 32000, S 4096), with the bytes an ideal pass moves ("gbps").
// With --fp8-recipe (delayed, current — both per-tensor scales — or blockwise; "all" = both kinds,
// the default) the FP8 GEMM at the same dense shapes, with its quantisation, and its rate against
// the bf16 GEMM ("vs_bf16").
//   op_bench [--reps N] [--only SUBSTRING] [--fp8-recipe none|delayed|current|blockwise|all]
//   (needs a GPU; nothing here asserts a time)
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/cuda_runtime.h"
#include "core/tensor.h"
#include "launch/args.h"
#include "ops/activation.h"
#include "ops/adamw.h"
#include "ops/attention.h"
#include "ops/elementwise.h"
#include "ops/embedding.h"
#include "ops/fp8.h"
#include "ops/fp8_gemm.h"
#include "ops/gemm.h"
#include "ops/grouped_gemm.h"
#include "ops/loss.h"
#include "ops/moe.h"
#include "ops/norm.h"
#include "ops/reduce.h"
#include "ops/rope.h"
#include "ops/router.h"
#include "tools/bench/bench_util.h"

namespace moefold::bench {
namespace {

constexpr DType kBf16 = DType::kBF16;
constexpr DType kF32 = DType::kF32;

struct Options {
  int reps = 20;
  std::string only;
  std::string fp8_recipe = "all";
};

// mixtral_mini (configs/bench/mixtral_mini.yaml) at micro-batch 1.
struct Model {
  int64_t tokens = 4096, hidden = 2048, heads = 16, kv_heads = 4, head_dim = 128;
  int64_t experts = 8, top_k = 2, expert_ffn = 2816, vocab = 32000;
};

class Runner {
 public:
  explicit Runner(Options options) : options_(std::move(options)) {}

  bool Wants(const std::string& name) const {
    return options_.only.empty() || name.find(options_.only) != std::string::npos;
  }

  // Times fn and prints its line; flops and bytes (0 = not reported) give TFLOP/s and GB/s;
  // `backend`, when given, names the implementation that ran; `extra` adds fields that depend on
  // the median (ms).
  double Run(const std::string& name, const std::string& shape, double flops, double bytes,
             const std::function<void()>& fn, const std::string& backend = "",
             const std::function<void(JsonLine&, double ms)>& extra = nullptr) {
    if (!Wants(name)) return 0.0;
    const double ms = MedianMs(fn, stream(), 3, options_.reps);
    JsonLine line = BenchLine(name);
    if (!backend.empty()) line.Add("backend", backend);
    line.Add("shape", shape).Add("median_ms", ms).Add("reps", options_.reps);
    if (flops > 0) line.Add("tflops", flops / (ms * 1e-3) / 1e12);
    if (bytes > 0) line.Add("gbps", bytes / (ms * 1e-3) / 1e9);
    if (extra) extra(line, ms);
    line.Print();
    return ms;
  }

  Stream& stream() const { return DefaultStream(Device::Cuda(0)); }

 private:
  Options options_;
};

std::string Dims(std::initializer_list<int64_t> dims) { return absl::StrJoin(dims, "x"); }

void BenchDenseGemm(Runner& r) {
  for (const auto& [m, n, k, label] :
       std::vector<std::tuple<int64_t, int64_t, int64_t, const char*>>{
           {8192, 8192, 8192, "square"},
           {4096, 3072, 2048, "qkv_proj"},
           {4096, 2048, 2048, "out_proj"},
           {4096, 32000, 2048, "lm_head"},
           {8192, 2816, 2048, "expert_up_as_dense"},
           {8192, 5632, 2048, "expert_gate_up_as_dense"}}) {
    const Tensor a = RandomGpu({m, k}, kBf16, 1.0f, 1);
    const Tensor w = RandomGpu({n, k}, kBf16, 1.0f, 2);
    Tensor c = Tensor::Empty({m, n}, kBf16, Device::Cuda(0));
    r.Run(absl::StrCat("gemm_bf16_", label), Dims({m, n, k}), 2.0 * m * n * k, 0,
          [&] { ops::Gemm(a, false, w, true, 1.0f, 0.0f, &c, r.stream()); });
  }
}

void CheckOk(const absl::Status& status) { MF_CHECK(status.ok()) << status; }

// The FP8 GEMM at the dense shapes: per-tensor scales (delayed and current scaling share the
// GEMM; current adds an amax pass) with cuBLASLt's fast accumulation as in the forward, and
// blockwise scales (1×128 tiles × 128×128 blocks); each with the cast of both operands included
// ("with_quant") and without, against the bf16 GEMM of the same shape.
void BenchFp8Gemm(Runner& r, const std::string& recipe) {
  if (recipe == "none") return;
  const bool per_tensor = recipe != "blockwise", blockwise = recipe == "blockwise" || recipe == "all";
  const Device gpu = Device::Cuda(0);
  for (const auto& [m, n, k, label] :
       std::vector<std::tuple<int64_t, int64_t, int64_t, const char*>>{
           {8192, 8192, 8192, "square"},
           {4096, 3072, 2048, "qkv_proj"},
           {4096, 2048, 2048, "out_proj"},
           {8192, 5632, 2048, "expert_gate_up_as_dense"}}) {
    const Tensor a = RandomGpu({m, k}, kBf16, 1.0f, 1);
    const Tensor w = RandomGpu({n, k}, kBf16, 1.0f, 2);
    Tensor c = Tensor::Empty({m, n}, kBf16, gpu);
    const double flops = 2.0 * m * n * k;
    const double bf16_ms = MedianMs([&] { ops::Gemm(a, false, w, true, 1.0f, 0.0f, &c, r.stream()); },
                                    r.stream(), 3, 5);
    auto vs = [&](JsonLine& line, double ms) { line.Add("vs_bf16", bf16_ms / ms); };
    Tensor qa = Tensor::Empty({m, k}, DType::kFp8E4M3, gpu), qw = Tensor::Empty({n, k}, DType::kFp8E4M3, gpu);
    if (per_tensor) {
      Tensor scale = Tensor::Empty({1}, kF32, gpu), amax = Tensor::Zeros({1}, kF32, gpu);
      scale.Fill(1.0f);
      ops::CastTransposeAmax(a, scale, &qa, nullptr, nullptr, r.stream());
      ops::CastTransposeAmax(w, scale, &qw, nullptr, nullptr, r.stream());
      r.Run(absl::StrCat("gemm_fp8_per_tensor_", label), Dims({m, n, k}), flops, 0, [&] {
        CheckOk(ops::Fp8Gemm(qa, scale, qw, scale, {.fast_accumulation = true}, 0.0f, &c,
                                 r.stream()));
      }, recipe, vs);
      r.Run(absl::StrCat("gemm_fp8_per_tensor_with_quant_", label), Dims({m, n, k}), flops, 0, [&] {
        ops::CastTransposeAmax(a, scale, &qa, nullptr, &amax, r.stream());
        ops::CastTransposeAmax(w, scale, &qw, nullptr, &amax, r.stream());
        CheckOk(ops::Fp8Gemm(qa, scale, qw, scale, {.fast_accumulation = true}, 0.0f, &c,
                                 r.stream()));
      }, recipe, vs);
    }
    if (blockwise) {
      Tensor sa = Tensor::Empty({m, k / 128}, kF32, gpu), sw = Tensor::Empty({n / 128, k / 128}, kF32, gpu);
      auto quant = [&] {
        CheckOk(ops::QuantizeBlockwise(a, ops::kFp8ActivationTile, {}, &qa, &sa, r.stream()));
        CheckOk(ops::QuantizeBlockwise(w, ops::kFp8WeightBlock, {}, &qw, &sw, r.stream()));
      };
      quant();
      r.Run(absl::StrCat("gemm_fp8_blockwise_", label), Dims({m, n, k}), flops, 0, [&] {
        CheckOk(ops::Fp8Gemm(qa, sa, qw, sw, {.block_k = 128}, 0.0f, &c, r.stream()));
      }, "blockwise", vs);
      r.Run(absl::StrCat("gemm_fp8_blockwise_with_quant_", label), Dims({m, n, k}), flops, 0, [&] {
        quant();
        CheckOk(ops::Fp8Gemm(qa, sa, qw, sw, {.block_k = 128}, 0.0f, &c, r.stream()));
      }, "blockwise", vs);
    }
  }
}

// Counts for `rows` pairs over `experts`: balanced, or skewed (expert e gets ∝ 1/(e+1)).
Tensor Counts(int64_t rows, int64_t experts, bool balanced) {
  std::vector<int32_t> n(experts);
  double total_weight = 0;
  for (int64_t e = 0; e < experts; ++e) total_weight += 1.0 / (e + 1);
  int64_t assigned = 0;
  for (int64_t e = 0; e < experts; ++e) {
    n[e] = static_cast<int32_t>(balanced ? rows / experts : rows * (1.0 / (e + 1)) / total_weight);
    assigned += n[e];
  }
  n[0] += static_cast<int32_t>(rows - assigned);
  return Tensor::FromVectorI32(n, {experts});
}

// One expert projection (x (rows, in) → (rows, out), w (E, out, in)) in each pass — forward,
// d_x and the f32-accumulated d_w — against one dense GEMM of the same FLOPs (one (out, in)
// weight over all rows), for balanced and skewed counts under every backend. Each grouped line
// carries ratio_of_dense_rate (dense time / grouped time at equal FLOPs). The batched backend runs
// only balanced counts (on others it is the loop).
void BenchGroupedGemm(Runner& r, const std::string& label, int64_t rows, int64_t experts,
                      int64_t out, int64_t in) {
  const Device gpu = Device::Cuda(0);
  const double flops = 2.0 * rows * out * in;
  const Tensor x = RandomGpu({rows, in}, kBf16, 1.0f, 3);
  const Tensor w = RandomGpu({experts, out, in}, kBf16, 1.0f, 4);
  const Tensor w_dense = RandomGpu({out, in}, kBf16, 1.0f, 5);
  const Tensor d_y = RandomGpu({rows, out}, kBf16, 1.0f, 6);
  Tensor y = Tensor::Empty({rows, out}, kBf16, gpu), d_x = Tensor::Empty({rows, in}, kBf16, gpu);
  Tensor d_w = Tensor::Zeros({experts, out, in}, kF32, gpu);
  Tensor d_w_dense = Tensor::Zeros({out, in}, kF32, gpu);
  const std::string dense_shape = Dims({rows, out, in});
  const std::string grouped_shape = Dims({experts, rows, out, in});
  struct Pass {
    const char* name;
    std::function<void()> dense;
    std::function<void(const Tensor& counts)> grouped;
  };
  const Pass passes[] = {
      {"fwd", [&] { ops::LinearForward(x, w_dense, &y, r.stream()); },
       [&](const Tensor& counts) { ops::GroupedLinearForward(x, w, counts, &y, r.stream()); }},
      {"dx", [&] { ops::LinearBackward(x, w_dense, d_y, &d_x, nullptr, r.stream()); },
       [&](const Tensor& counts) {
         ops::GroupedLinearBackward(x, w, counts, d_y, &d_x, nullptr, r.stream());
       }},
      {"dw", [&] { ops::LinearBackward(x, w_dense, d_y, nullptr, &d_w_dense, r.stream()); },
       [&](const Tensor& counts) {
         ops::GroupedLinearBackward(x, w, counts, d_y, nullptr, &d_w, r.stream());
       }},
  };
  const ops::GroupedGemmBackend saved = ops::GetGroupedGemmBackend();
  for (const Pass& pass : passes) {
    const std::string prefix = absl::StrCat("grouped_gemm_", label, "_", pass.name);
    const double dense_ms =
        r.Run(absl::StrCat(prefix, "_dense_reference"), dense_shape, flops, 0, pass.dense);
    for (bool balanced : {true, false}) {
      const Tensor counts = Counts(rows, experts, balanced);
      for (ops::GroupedGemmBackend backend :
           {ops::GroupedGemmBackend::kAuto, ops::GroupedGemmBackend::kLoop,
            ops::GroupedGemmBackend::kCublasGrouped, ops::GroupedGemmBackend::kBatched}) {
        if (backend == ops::GroupedGemmBackend::kBatched && !balanced) continue;
        ops::SetGroupedGemmBackend(backend);
        const char* name = ops::GroupedGemmBackendName(backend);
        r.Run(
            absl::StrCat(prefix, "_", name, balanced ? "_balanced" : "_skewed"), grouped_shape,
            flops, 0, [&] { pass.grouped(counts); }, name,
            [&](JsonLine& line, double ms) {
              line.Add("counts", balanced ? "balanced" : "skewed");
              if (dense_ms > 0) line.Add("ratio_of_dense_rate", dense_ms / ms);
            });
      }
    }
  }
  ops::SetGroupedGemmBackend(saved);
}

// Each GPU attention backend that can run the shape (cuDNN when it loads and builds its plans,
// the flash kernels), one line per direction and backend, then back to kAuto.
void BenchAttention(Runner& r, const Model& m) {
  if (!r.Wants("attention_fwd") && !r.Wants("attention_bwd") && !r.Wants("attention_fwd_bwd")) {
    return;
  }
  const int64_t b = 1, s = m.tokens, hq = m.heads, hkv = m.kv_heads, d = m.head_dim;
  const Tensor q = RandomGpu({b, s, hq, d}, kBf16, 1.0f, 6);
  const Tensor k = RandomGpu({b, s, hkv, d}, kBf16, 1.0f, 7);
  const Tensor v = RandomGpu({b, s, hkv, d}, kBf16, 1.0f, 8);
  const Tensor d_out = RandomGpu({b, s, hq, d}, kBf16, 1.0f, 9);
  const Device gpu = Device::Cuda(0);
  Tensor out = Tensor::Empty(q.shape(), kBf16, gpu), lse = Tensor::Empty({b, hq, s}, kF32, gpu);
  Tensor d_q = Tensor::Empty(q.shape(), kBf16, gpu), d_k = Tensor::Empty(k.shape(), kBf16, gpu);
  Tensor d_v = Tensor::Empty(v.shape(), kBf16, gpu);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  // Causal: half of the 2 forward matmuls (4·S²·D per head); backward is 2.5× the forward.
  const double fwd_flops = 2.0 * b * hq * s * s * d;
  const std::string shape = Dims({b, s, hq, hkv, d});
  const absl::StatusOr<std::string> version = ops::CudnnVersion();
  const absl::Status cudnn = ops::CudnnAttentionAvailable(b, s, hq, hkv, d, kBf16, gpu);
  BenchLine("attention_cudnn")
      .Add("version", version.ok() ? *version : "")
      .Add("available", cudnn.ok() ? "yes" : std::string(cudnn.message()))
      .Print();
  for (const auto& [backend, name] : {std::pair{ops::AttentionBackend::kCudnn, "cudnn"},
                                      std::pair{ops::AttentionBackend::kFlash, "flash"}}) {
    if (backend == ops::AttentionBackend::kCudnn && !cudnn.ok()) continue;
    ops::SetAttentionBackend(backend);
    r.Run(
        "attention_fwd", shape, fwd_flops, 0,
        [&] { ops::AttentionForward(q, k, v, scale, &out, &lse, r.stream()); }, name);
    ops::AttentionForward(q, k, v, scale, &out, &lse, r.stream());
    r.Run(
        "attention_bwd", shape, 2.5 * fwd_flops, 0,
        [&] {
          ops::AttentionBackward(q, k, v, out, lse, d_out, scale, &d_q, &d_k, &d_v, r.stream());
        },
        name);
    r.Run(
        "attention_fwd_bwd", shape, 3.5 * fwd_flops, 0,
        [&] {
          ops::AttentionForward(q, k, v, scale, &out, &lse, r.stream());
          ops::AttentionBackward(q, k, v, out, lse, d_out, scale, &d_q, &d_k, &d_v, r.stream());
        },
        name);
  }
  ops::SetAttentionBackend(ops::AttentionBackend::kAuto);
}

// Positions 0 .. t−1 on the GPU (one sequence).
Tensor Positions(int64_t t) {
  std::vector<int32_t> pos(t);
  for (int64_t i = 0; i < t; ++i) pos[i] = static_cast<int32_t>(i);
  return Tensor::FromVectorI32(pos, {t}).To(Device::Cuda(0));
}

// RMSNorm, its residual-fused form, both backwards (overwriting d_x; accumulating into the residual
// stream's gradient, as the decoder does), and the residual add. bf16 rows of T × H.
void BenchNorms(Runner& r, const Model& m) {
  const Device gpu = Device::Cuda(0);
  const int64_t t = m.tokens, h = m.hidden;
  const std::string th = Dims({t, h});
  const Tensor x = RandomGpu({t, h}, kBf16, 1.0f, 10), res = RandomGpu({t, h}, kBf16, 1.0f, 11);
  const Tensor w = RandomGpu({h}, kBf16, 1.0f, 12), d_y = RandomGpu({t, h}, kBf16, 1.0f, 13);
  Tensor y = Tensor::Empty({t, h}, kBf16, gpu), sum = Tensor::Empty({t, h}, kBf16, gpu);
  Tensor rstd = Tensor::Empty({t}, kF32, gpu), d_x = Tensor::Zeros({t, h}, kBf16, gpu);
  Tensor d_w = Tensor::Zeros({h}, kF32, gpu);
  const double row_bytes = 2.0 * t * h;
  r.Run("rmsnorm_fwd", th, 0, 2 * row_bytes,
        [&] { ops::RmsNormForward(x, w, 1e-5f, &y, &rstd, r.stream()); });
  r.Run("add_rmsnorm_fwd", th, 0, 4 * row_bytes,
        [&] { ops::AddRmsNormForward(x, res, w, 1e-5f, &sum, &y, &rstd, r.stream()); });
  r.Run("rmsnorm_bwd", th, 0, 3 * row_bytes,
        [&] { ops::RmsNormBackward(x, w, rstd, d_y, &d_x, &d_w, r.stream()); });
  // x and d_y read, d_x read and written.
  r.Run("rmsnorm_bwd_accumulate", th, 0, 4 * row_bytes,
        [&] { ops::RmsNormBackwardAccumulate(x, w, rstd, d_y, &d_x, &d_w, r.stream()); });
  r.Run("residual_add", th, 0, 3 * row_bytes, [&] { ops::Add(x, res, &sum, r.stream()); });
}

// The fused QKV projection split into q, k, v with RoPE on q and k, and its backward.
void BenchQkvRope(Runner& r, const Model& m) {
  const Device gpu = Device::Cuda(0);
  const int64_t t = m.tokens, groups = m.kv_heads, per_group = m.heads / m.kv_heads;
  const int64_t d = m.head_dim;
  const Tensor qkv = RandomGpu({t, groups * (per_group + 2) * d}, kBf16, 1.0f, 14);
  Tensor q = Tensor::Empty({t, m.heads, d}, kBf16, gpu);
  Tensor k = Tensor::Empty({t, groups, d}, kBf16, gpu), v = Tensor::Empty(k.shape(), kBf16, gpu);
  Tensor d_qkv = Tensor::Empty(qkv.shape(), kBf16, gpu);
  const Tensor positions = Positions(t);
  const Tensor table = ops::RopeTable(t, d, 10000.0f).To(gpu);
  // qkv read and q, k, v written in bf16; each token's position and f32 table row read once.
  const double bytes = 4.0 * qkv.numel() + t * (4.0 + 4.0 * d);
  const std::string shape = Dims({t, groups, per_group + 2, d});
  r.Run("qkv_rope_fwd", shape, 0, bytes,
        [&] { ops::QkvRopeForward(qkv, positions, table, &q, &k, &v, r.stream()); });
  r.Run("qkv_rope_bwd", shape, 0, bytes,
        [&] { ops::QkvRopeBackward(q, k, v, positions, table, &d_qkv, r.stream()); });
}

// The router's logits from the bf16 rows and the f32 weight, and their backward (d_x accumulated
// into the bf16 rows' gradient, d_w into the f32 weight gradient); top-k, the permutation, and
// the token permute and combine.
void BenchRouter(Runner& r, const Model& m) {
  const Device gpu = Device::Cuda(0);
  const int64_t t = m.tokens, h = m.hidden, e = m.experts, pairs = m.tokens * m.top_k;
  const Tensor x = RandomGpu({t, h}, kBf16, 1.0f, 19), w = RandomGpu({e, h}, kF32, 0.02f, 25);
  Tensor logits = Tensor::Empty({t, e}, kF32, gpu);
  const std::string teh = Dims({t, e, h});
  // x (bf16) and w read, logits written.
  r.Run("router_logits_fwd", teh, 2.0 * t * e * h, 2.0 * t * h + 4.0 * e * h + 4.0 * t * e,
        [&] { ops::RouterLogitsForward(x, w, &logits, r.stream()); });
  ops::RouterLogitsForward(x, w, &logits, r.stream());  // the top-k's input, whatever --only says
  const Tensor d_logits = RandomGpu({t, e}, kF32, 1.0f, 26);
  Tensor d_x = Tensor::Zeros({t, h}, kBf16, gpu), d_w = Tensor::Zeros({e, h}, kF32, gpu);
  // x, w and d_logits read; d_x (bf16) and d_w (f32) read and written.
  r.Run("router_logits_bwd", teh, 4.0 * t * e * h, 6.0 * t * h + 12.0 * e * h + 4.0 * t * e,
        [&] { ops::RouterLogitsBackward(x, w, d_logits, &d_x, &d_w, r.stream()); });

  ops::TopKOptions topk;
  topk.k = static_cast<int>(m.top_k);
  Tensor ids = Tensor::Empty({t, m.top_k}, DType::kI32, gpu);
  Tensor weights = Tensor::Empty({t, m.top_k}, kF32, gpu);
  r.Run("router_topk_fwd", Dims({t, e, m.top_k}), 0, 0,
        [&] { ops::RouterTopKForward(logits, Tensor(), topk, &ids, &weights, r.stream()); });
  ops::RouterTopKForward(logits, Tensor(), topk, &ids, &weights, r.stream());
  Tensor sorted = Tensor::Empty({pairs}, DType::kI32, gpu);
  Tensor counts = Tensor::Empty({e}, DType::kI32, gpu);
  r.Run("compute_permutation", Dims({t, m.top_k, e}), 0, 0,
        [&] { ops::ComputePermutation(ids, static_cast<int>(e), &sorted, &counts, r.stream()); });
  ops::ComputePermutation(ids, static_cast<int>(e), &sorted, &counts, r.stream());
  Tensor permuted = Tensor::Empty({pairs, h}, kBf16, gpu);
  Tensor combined = Tensor::Empty({t, h}, kBf16, gpu);
  const double row_bytes = 2.0 * pairs * h;
  r.Run("permute_tokens", Dims({pairs, h}), 0, 2 * row_bytes,
        [&] { ops::PermuteTokens(x, sorted, static_cast<int>(m.top_k), &permuted, r.stream()); });
  r.Run("unpermute_tokens", Dims({pairs, h}), 0, 1.5 * row_bytes,
        [&] { ops::UnpermuteTokens(permuted, sorted, weights, &combined, r.stream()); });
}

// SwiGLU over the routed rows of the fused gate/up projection (T·k, 2F).
void BenchSwiGlu(Runner& r, const Model& m) {
  const Device gpu = Device::Cuda(0);
  const int64_t pairs = m.tokens * m.top_k, f = m.expert_ffn;
  const Tensor gate_up = RandomGpu({pairs, 2 * f}, kBf16, 1.0f, 15);
  const Tensor d_out = RandomGpu({pairs, f}, kBf16, 1.0f, 17);
  Tensor out = Tensor::Empty({pairs, f}, kBf16, gpu);
  Tensor d_gate_up = Tensor::Empty(gate_up.shape(), kBf16, gpu);
  const double n = static_cast<double>(pairs) * f;
  // Forward: gate_up read, out written; backward: gate_up and d_out read, d_gate_up written.
  r.Run("swiglu_fwd", Dims({pairs, 2 * f}), 0, 6 * n,
        [&] { ops::SwiGluForward(gate_up, &out, r.stream()); });
  r.Run("swiglu_bwd", Dims({pairs, 2 * f}), 0, 10 * n,
        [&] { ops::SwiGluBackward(gate_up, d_out, &d_gate_up, r.stream()); });
}

// Fused cross entropy over the vocabulary, and the embedding.
void BenchLossAndEmbedding(Runner& r, const Model& m) {
  const Device gpu = Device::Cuda(0);
  const int64_t t = m.tokens, h = m.hidden;
  {
    const Tensor logits = RandomGpu({t, m.vocab}, kBf16, 2.0f, 20);
    std::vector<int32_t> tgt(t);
    for (int64_t i = 0; i < t; ++i) tgt[i] = static_cast<int32_t>((i * 7919) % m.vocab);
    const Tensor targets = Tensor::FromVectorI32(tgt, {t}).To(gpu);
    Tensor losses = Tensor::Empty({t}, kF32, gpu), lse = Tensor::Empty({t}, kF32, gpu);
    const Tensor d_losses = RandomGpu({t}, kF32, 1.0f, 21);
    const double bytes = 2.0 * t * m.vocab;
    r.Run("cross_entropy_fwd", Dims({t, m.vocab}), 0, bytes,
          [&] { ops::CrossEntropyForward(logits, targets, &losses, &lse, r.stream()); });
    ops::CrossEntropyForward(logits, targets, &losses, &lse, r.stream());
    Tensor d_logits = Tensor::Empty(logits.shape(), kBf16, gpu);
    r.Run("cross_entropy_bwd", Dims({t, m.vocab}), 0, 2 * bytes, [&] {
      ops::CrossEntropyBackward(logits, targets, lse, d_losses, &d_logits, r.stream());
    });
  }
  {
    const Tensor table = RandomGpu({m.vocab, h}, kBf16, 1.0f, 22);
    std::vector<int32_t> id(t);
    for (int64_t i = 0; i < t; ++i) id[i] = static_cast<int32_t>((i * 104729) % m.vocab);
    const Tensor ids = Tensor::FromVectorI32(id, {t}).To(gpu);
    Tensor out = Tensor::Empty({t, h}, kBf16, gpu);
    Tensor d_table = Tensor::Zeros({m.vocab, h}, kF32, gpu);
    r.Run("embedding_fwd", Dims({t, h}), 0, 4.0 * t * h,
          [&] { ops::EmbeddingForward(ids, table, &out, r.stream()); });
    r.Run("embedding_bwd", Dims({t, h}), 0, 10.0 * t * h,
          [&] { ops::EmbeddingBackward(ids, out, &d_table, r.stream()); });
  }
}

// The optimizer and the reductions over 256 Mi f32 parameters: the per-parameter AdamW step and
// the flat one the trainer runs (gradient scale, no-decay ranges, the bf16 compute copy).
void BenchOptimizer(Runner& r, const Model& m) {
  const Device gpu = Device::Cuda(0);
  const int64_t n = int64_t{1} << 28;
  const Tensor grad = RandomGpu({n}, kF32, 1e-3f, 23);
  Tensor p = RandomGpu({n}, kF32, 1.0f, 24), mom = Tensor::Zeros({n}, kF32, gpu);
  Tensor var = Tensor::Zeros({n}, kF32, gpu);
  const ops::AdamWOptions adam;
  // g, p, m, v read; p, m, v written.
  r.Run("adamw_step", Dims({n}), 0, 28.0 * n,
        [&] { ops::AdamWStep(adam, grad, &p, &mom, &var, r.stream()); });
  // A norm weight's worth of elements without decay every n / 64 elements, as the flat buffers
  // of a decoder hold them.
  std::vector<int64_t> bounds;
  for (int64_t b = 0; b < 64; ++b) {
    bounds.push_back(b * (n / 64));
    bounds.push_back(b * (n / 64) + m.hidden);
  }
  Tensor ranges_host = Tensor::Empty({64, 2}, DType::kI64);
  std::memcpy(ranges_host.raw_data(), bounds.data(), bounds.size() * sizeof(int64_t));
  const Tensor ranges = ranges_host.To(gpu);
  const Tensor scale = Tensor::FromVector({0.5f}, {1}).To(gpu);
  Tensor compute = Tensor::Empty({n}, kBf16, gpu);
  // As adamw_step, plus the bf16 compute copy written.
  r.Run("adamw_flat_step", Dims({n}), 0, 30.0 * n, [&] {
    ops::AdamWFlatStep(adam, grad, scale, ranges, &p, &mom, &var, &compute, r.stream());
  });
  r.Run("sum_of_squares", Dims({n}), 0, 4.0 * n,
        [&] { (void)ops::SumOfSquares(grad, r.stream()); });
  r.Run("amax", Dims({n}), 0, 4.0 * n, [&] { (void)ops::Amax(grad, r.stream()); });
}

Options ParseArgs(int argc, char** argv) {
  constexpr char kUsage[] =
      "usage: op_bench [--reps N] [--only SUBSTRING] "
      "[--fp8-recipe none|delayed|current|blockwise|all]\n";
  const std::vector<std::string> args(argv + 1, argv + argc);
  auto parsed = moefold::launch::ParseArgs(
      args,
      {.options = {"reps", "only", "fp8-recipe"}, .repeatable = {}, .flags = {"help"}, .max_positionals = 0,
       .program = "op_bench"},
      "");
  Options o;
  if (!parsed.ok() || parsed->Has("help") ||
      (parsed->Has("reps") && !(absl::SimpleAtoi(parsed->Get("reps"), &o.reps) && o.reps > 0))) {
    if (!parsed.ok()) {
      std::fprintf(stderr, "op_bench: %s\n", std::string(parsed.status().message()).c_str());
    }
    std::fputs(kUsage, stderr);
    std::exit(parsed.ok() && parsed->Has("help") ? 0 : 2);
  }
  o.only = parsed->Get("only", o.only);
  o.fp8_recipe = parsed->Get("fp8-recipe", o.fp8_recipe);
  for (const char* ok : {"none", "delayed", "current", "blockwise", "all"}) {
    if (o.fp8_recipe == ok) return o;
  }
  std::fprintf(stderr, "op_bench: --fp8-recipe %s is not one of none, delayed, current, "
                       "blockwise, all\n%s", o.fp8_recipe.c_str(), kUsage);
  std::exit(2);
}

}  // namespace
}  // namespace moefold::bench

int main(int argc, char** argv) {
  using namespace moefold;
  using namespace moefold::bench;
  const Options options = ParseArgs(argc, argv);
  if (cuda::DeviceCount() == 0) {
    std::fprintf(stderr, "op_bench: no CUDA device\n");
    return 1;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return 1;
  BenchLine("device")
      .Add("name", prop.name)
      .Add("sms", prop.multiProcessorCount)
      .Add("memory_gib", prop.totalGlobalMem / double(1 << 30))
      .Add("cc", absl::StrCat(prop.major, ".", prop.minor))
      .Print();
  Runner runner(options);
  const Model model;
  BenchDenseGemm(runner);
  BenchFp8Gemm(runner, options.fp8_recipe);
  // mixtral_mini: 8 experts top-2 (8192 rows), F_e 2816; finegrained_mini: 64 experts top-8
  // (32768 rows), F_e 512. Gate and up fused into one (E, 2·F_e, H) weight, then down.
  BenchGroupedGemm(runner, "mixtral_gate_up", model.tokens * 2, 8, 2 * model.expert_ffn,
                   model.hidden);
  BenchGroupedGemm(runner, "mixtral_down", model.tokens * 2, 8, model.hidden, model.expert_ffn);
  BenchGroupedGemm(runner, "finegrained_gate_up", model.tokens * 8, 64, 2 * 512, model.hidden);
  BenchGroupedGemm(runner, "finegrained_down", model.tokens * 8, 64, model.hidden, 512);
  BenchAttention(runner, model);
  BenchNorms(runner, model);
  BenchQkvRope(runner, model);
  BenchRouter(runner, model);
  BenchSwiGlu(runner, model);
  BenchLossAndEmbedding(runner, model);
  BenchOptimizer(runner, model);
  Allocator& memory = AllocatorFor(Device::Cuda(0));
  BenchLine("memory").Add("peak_bytes", static_cast<double>(memory.peak_bytes())).Print();
  return 0;
}
