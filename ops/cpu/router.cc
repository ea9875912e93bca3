// CPU reference of the MoE router math (Megatron-Core conventions): the logits GEMM, score
// functions, top-k selection (optionally group-limited), the weights' backward, softmax, aux loss
// and z-loss. Invariant: selection is deterministic — ties go to the lower expert (or group) id.
#include "ops/router.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ops/cpu/bf16_emulation.h"
#include "ops/cpu/check.h"
#include "ops/gemm.h"

namespace moefold::ops {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

double Sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// Stable softmax of n values into out (f64).
void SoftmaxRow(const float* x, int64_t n, double* out) {
  double max_x = kNegInf;
  for (int64_t i = 0; i < n; ++i) max_x = std::max(max_x, static_cast<double>(x[i]));
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += out[i] = std::exp(x[i] - max_x);
  for (int64_t i = 0; i < n; ++i) out[i] /= sum;
}

double LogSumExpRow(const float* x, int64_t n) {
  double max_x = kNegInf;
  for (int64_t i = 0; i < n; ++i) max_x = std::max(max_x, static_cast<double>(x[i]));
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(x[i] - max_x);
  return max_x + std::log(sum);
}

// The k largest of scores[0..n), best first. The strict '>' scan in increasing index order makes
// the lower index win a tie. Entries already taken are skipped via `taken`. O(k·n): n is small (E).
void TopKRow(const double* scores, int64_t n, int k, int32_t* out) {
  std::vector<bool> taken(n, false);
  for (int j = 0; j < k; ++j) {
    int64_t best = -1;
    for (int64_t e = 0; e < n; ++e) {
      if (!taken[e] && (best < 0 || scores[e] > scores[best])) best = e;
    }
    taken[best] = true;
    out[j] = static_cast<int32_t>(best);
  }
}

// Group-limited routing: a group's score is the sum of its top-(k/group_topk) expert scores; the
// best group_topk groups are kept and every expert outside them is masked to −inf.
void MaskToBestGroups(const TopKOptions& o, int64_t num_experts, double* scores) {
  const int64_t per_group = num_experts / o.num_groups;
  const int top_in_group = o.k / o.group_topk;
  std::vector<double> group_scores(o.num_groups);
  std::vector<int32_t> top(top_in_group);
  for (int g = 0; g < o.num_groups; ++g) {
    const double* s = scores + g * per_group;
    TopKRow(s, per_group, top_in_group, top.data());
    double sum = 0;
    for (int32_t e : top) sum += s[e];
    group_scores[g] = sum;
  }
  std::vector<int32_t> kept(o.group_topk);
  TopKRow(group_scores.data(), o.num_groups, o.group_topk, kept.data());
  std::vector<bool> keep(o.num_groups, false);
  for (int32_t g : kept) keep[g] = true;
  for (int64_t e = 0; e < num_experts; ++e) {
    if (!keep[e / per_group]) scores[e] = kNegInf;
  }
}

void CheckOptions(const TopKOptions& o, int64_t num_experts, const char* op) {
  MF_CHECK(o.k >= 1 && o.k <= num_experts)
      << op << ": k = " << o.k << " must be in [1, E=" << num_experts << "]";
  if (o.num_groups > 0) {
    MF_CHECK(num_experts % o.num_groups == 0)
        << op << ": E=" << num_experts << " is not divisible by num_groups=" << o.num_groups;
    MF_CHECK(o.group_topk >= 1 && o.group_topk <= o.num_groups && o.k >= o.group_topk)
        << op << ": group_topk=" << o.group_topk
        << " must be in [1, min(num_groups=" << o.num_groups << ", k=" << o.k << ")]";
    MF_CHECK(o.k <= o.group_topk * (num_experts / o.num_groups))
        << op << ": k=" << o.k << " exceeds the experts in the " << o.group_topk << " kept groups";
  }
}

void CheckLogits(const Tensor& logits, const char* op) {
  internal::CheckF32(logits, op, "logits");
  internal::CheckRank(logits, 2, op, "logits");
}

// The k weights' normalisation: with u the selected scores and c the scaling factor,
//   w = c·u / Σu (normalised) or w = c·u. Returns h = ∂L/∂u given g = ∂L/∂w.
void NormalizationBackward(const std::vector<double>& u, const float* g, bool normalized, double c,
                           std::vector<double>* h) {
  const size_t k = u.size();
  if (!normalized) {
    for (size_t j = 0; j < k; ++j) (*h)[j] = c * g[j];
    return;
  }
  double sum_u = 0, sum_gu = 0;
  for (size_t j = 0; j < k; ++j) {
    sum_u += u[j];
    sum_gu += g[j] * u[j];
  }
  for (size_t j = 0; j < k; ++j) (*h)[j] = c / sum_u * (g[j] - sum_gu / sum_u);
}

}  // namespace

namespace {

// x (T, H) f32 or bf16 and w (E, H) f32 on the CPU; returns x as f32 (itself or a widened copy).
Tensor CheckRouterInputs(const Tensor& x, const Tensor& w, const char* op) {
  internal::CheckCpu(x, op, "x");
  MF_CHECK(x.dtype() == DType::kF32 || x.dtype() == DType::kBF16)
      << op << ": x must be f32 or bf16, got " << x.DebugString();
  internal::CheckRank(x, 2, op, "x");
  internal::CheckF32(w, op, "w");
  internal::CheckRank(w, 2, op, "w");
  MF_CHECK_EQ(w.dim(1), x.dim(1)) << op << ": w " << w.DebugString() << " vs x " << x.DebugString();
  return x.dtype() == DType::kF32 ? x : x.To(DType::kF32);
}

}  // namespace

// The f32 GEMM of the CPU (sgemm) on the widened rows: the numbers of an f32 Linear on an f32 copy.
void RouterLogitsForward(const Tensor& x, const Tensor& w, Tensor* logits, Stream& stream) {
  constexpr const char* kOp = "RouterLogitsForward";
  MF_RETURN_IF_GPU(x, kOp, cuda::RouterLogitsForward(x, w, logits, stream));
  const Tensor x_f32 = CheckRouterInputs(x, w, kOp);
  internal::CheckF32Out(logits, {x.dim(0), w.dim(0)}, kOp, "logits");
  Gemm(x_f32, false, w, true, 1.0f, 0.0f, logits, stream);
}

// d_x: the product in f32, then one add into the (widened) d_x and one rounding back.
void RouterLogitsBackward(const Tensor& x, const Tensor& w, const Tensor& d_logits, Tensor* d_x,
                          Tensor* d_w, Stream& stream) {
  constexpr const char* kOp = "RouterLogitsBackward";
  MF_RETURN_IF_GPU(x, kOp, cuda::RouterLogitsBackward(x, w, d_logits, d_x, d_w, stream));
  const Tensor x_f32 = CheckRouterInputs(x, w, kOp);
  const int64_t tokens = x.dim(0), hidden = x.dim(1), experts = w.dim(0);
  internal::CheckF32(d_logits, kOp, "d_logits");
  internal::CheckShape(d_logits, {tokens, experts}, kOp, "d_logits");
  if (d_x != nullptr) {
    internal::CheckCpu(*d_x, kOp, "d_x");
    internal::CheckDType(*d_x, x.dtype(), kOp, "d_x");
    internal::CheckShape(*d_x, x.shape(), kOp, "d_x");
    Tensor product = Tensor::Empty({tokens, hidden}, DType::kF32);
    Gemm(d_logits, false, w, false, 1.0f, 0.0f, &product, stream);
    internal::Bf16Emulation emu(kOp);
    Tensor* acc = emu.Out(d_x);
    float* out = acc->data<float>();
    const float* add = product.data<float>();
    for (int64_t i = 0; i < tokens * hidden; ++i) out[i] += add[i];
    emu.RoundBack();
  }
  if (d_w != nullptr) {
    internal::CheckF32Out(d_w, w.shape(), kOp, "d_w");
    Gemm(d_logits, true, x_f32, false, 1.0f, 1.0f, d_w, stream);
  }
}

void RouterTopKForward(const Tensor& logits, const Tensor& expert_bias, const TopKOptions& options,
                       Tensor* ids, Tensor* weights, Stream& stream) {
  MF_RETURN_IF_GPU(logits, "RouterTopKForward",
                   cuda::RouterTopKForward(logits, expert_bias, options, ids, weights, stream));
  constexpr const char* kOp = "RouterTopKForward";
  CheckLogits(logits, kOp);
  const int64_t tokens = logits.dim(0), experts = logits.dim(1);
  const int k = options.k;
  CheckOptions(options, experts, kOp);
  const bool has_bias = expert_bias.defined();
  if (has_bias) {
    MF_CHECK(options.score == ScoreFunction::kSigmoid)
        << kOp << ": expert_bias is only supported with the sigmoid score function";
    internal::CheckF32(expert_bias, kOp, "expert_bias");
    internal::CheckShape(expert_bias, {experts}, kOp, "expert_bias");
  }
  MF_CHECK(ids != nullptr) << kOp << ": output ids is null";
  internal::CheckI32(*ids, kOp, "ids");
  internal::CheckShape(*ids, {tokens, k}, kOp, "ids");
  internal::CheckF32Out(weights, {tokens, k}, kOp, "weights");

  std::vector<double> probs(experts), select(experts);
  for (int64_t t = 0; t < tokens; ++t) {
    const float* l = logits.data<float>() + t * experts;
    int32_t* id = ids->data<int32_t>() + t * k;
    float* w = weights->data<float>() + t * k;
    // probs: the per-expert score whose selected entries become the weights (before normalising).
    switch (options.score) {
      case ScoreFunction::kSoftmaxPost:
        for (int64_t e = 0; e < experts; ++e) select[e] = l[e];
        break;
      case ScoreFunction::kSoftmaxPre:
        SoftmaxRow(l, experts, probs.data());
        select = probs;
        break;
      case ScoreFunction::kSigmoid:
        for (int64_t e = 0; e < experts; ++e) {
          probs[e] = Sigmoid(l[e]);
          select[e] = probs[e] + (has_bias ? expert_bias.data<float>()[e] : 0.0f);
        }
        break;
    }
    if (options.num_groups > 0) MaskToBestGroups(options, experts, select.data());
    TopKRow(select.data(), experts, k, id);

    std::vector<double> u(k);
    bool normalize = options.normalize;
    if (options.score == ScoreFunction::kSoftmaxPost) {
      double max_l = kNegInf;  // softmax over the k chosen logits
      for (int j = 0; j < k; ++j) max_l = std::max(max_l, static_cast<double>(l[id[j]]));
      for (int j = 0; j < k; ++j) u[j] = std::exp(l[id[j]] - max_l);
      normalize = true;
    } else {
      for (int j = 0; j < k; ++j) u[j] = probs[id[j]];
      if (options.score == ScoreFunction::kSigmoid) normalize = normalize && k > 1;
    }
    double sum_u = 0;
    for (int j = 0; j < k; ++j) sum_u += u[j];
    for (int j = 0; j < k; ++j) {
      w[j] = static_cast<float>(options.scaling_factor * (normalize ? u[j] / sum_u : u[j]));
    }
  }
}

// Per token, with g = d_weights and c = scaling_factor:
//   softmax-post: q = softmax(l_S), d_l[S_j] += c·q_j·(g_j − Σ_i q_i g_i)       (k logits only)
//   softmax-pre:  u = p[S] with p = softmax(l); h = ∂L/∂u; d_l[e] += p_e·(h_e·[e∈S] − Σ_j h_j u_j)
//   sigmoid:      u = σ(l_S); h = ∂L/∂u; d_l[S_j] += h_j·u_j·(1 − u_j)          (k logits only)
void RouterTopKBackward(const Tensor& logits, const Tensor& ids, const Tensor& weights,
                        const TopKOptions& options, const Tensor& d_weights, Tensor* d_logits,
                        Stream& stream) {
  MF_RETURN_IF_GPU(
      logits, "RouterTopKBackward",
      cuda::RouterTopKBackward(logits, ids, weights, options, d_weights, d_logits, stream));
  constexpr const char* kOp = "RouterTopKBackward";
  CheckLogits(logits, kOp);
  const int64_t tokens = logits.dim(0), experts = logits.dim(1);
  const int k = options.k;
  CheckOptions(options, experts, kOp);
  internal::CheckI32(ids, kOp, "ids");
  internal::CheckShape(ids, {tokens, k}, kOp, "ids");
  internal::CheckF32(weights, kOp, "weights");
  internal::CheckShape(weights, {tokens, k}, kOp, "weights");
  internal::CheckF32(d_weights, kOp, "d_weights");
  internal::CheckShape(d_weights, {tokens, k}, kOp, "d_weights");
  internal::CheckF32Out(d_logits, {tokens, experts}, kOp, "d_logits");
  const double c = options.scaling_factor;

  std::vector<double> probs(experts), u(k), h(k);
  for (int64_t t = 0; t < tokens; ++t) {
    const float* l = logits.data<float>() + t * experts;
    const int32_t* id = ids.data<int32_t>() + t * k;
    const float* g = d_weights.data<float>() + t * k;
    float* dl = d_logits->data<float>() + t * experts;
    for (int j = 0; j < k; ++j) {
      MF_CHECK(id[j] >= 0 && id[j] < experts) << kOp << ": expert id " << id[j] << " (token " << t
                                              << ") out of range [0, E=" << experts << ")";
    }
    switch (options.score) {
      case ScoreFunction::kSoftmaxPost: {
        std::vector<float> chosen(k);
        for (int j = 0; j < k; ++j) chosen[j] = l[id[j]];
        SoftmaxRow(chosen.data(), k, u.data());
        double gbar = 0;
        for (int j = 0; j < k; ++j) gbar += u[j] * g[j];
        for (int j = 0; j < k; ++j) dl[id[j]] += static_cast<float>(c * u[j] * (g[j] - gbar));
        break;
      }
      case ScoreFunction::kSoftmaxPre: {
        SoftmaxRow(l, experts, probs.data());
        for (int j = 0; j < k; ++j) u[j] = probs[id[j]];
        NormalizationBackward(u, g, options.normalize, c, &h);
        double hu = 0;
        for (int j = 0; j < k; ++j) hu += h[j] * u[j];
        for (int64_t e = 0; e < experts; ++e) dl[e] -= static_cast<float>(probs[e] * hu);
        for (int j = 0; j < k; ++j) dl[id[j]] += static_cast<float>(h[j] * u[j]);
        break;
      }
      case ScoreFunction::kSigmoid: {
        for (int j = 0; j < k; ++j) u[j] = Sigmoid(l[id[j]]);
        NormalizationBackward(u, g, options.normalize && k > 1, c, &h);
        for (int j = 0; j < k; ++j) dl[id[j]] += static_cast<float>(h[j] * u[j] * (1.0 - u[j]));
        break;
      }
    }
  }
}

void BalancedRouting(int64_t first_row, int num_experts, Tensor* ids, Tensor* weights,
                     Stream& stream) {
  constexpr const char* kOp = "BalancedRouting";
  MF_CHECK(ids != nullptr && weights != nullptr) << kOp << ": null output";
  MF_RETURN_IF_GPU(*ids, kOp, cuda::BalancedRouting(first_row, num_experts, ids, weights, stream));
  internal::CheckI32(*ids, kOp, "ids");
  internal::CheckRank(*ids, 2, kOp, "ids");
  const int64_t tokens = ids->dim(0), k = ids->dim(1);
  MF_CHECK(first_row >= 0 && k >= 1 && k <= num_experts)
      << kOp << ": first_row " << first_row << ", k " << k << ", E " << num_experts;
  internal::CheckF32Out(weights, {tokens, k}, kOp, "weights");
  for (int64_t r = 0; r < tokens; ++r) {
    for (int64_t j = 0; j < k; ++j) {
      ids->data<int32_t>()[r * k + j] = static_cast<int32_t>(((first_row + r) * k + j) % num_experts);
      weights->data<float>()[r * k + j] = 1.0f / static_cast<float>(k);
    }
  }
}

void SoftmaxForward(const Tensor& logits, Tensor* probs, Stream& stream) {
  MF_RETURN_IF_GPU(logits, "SoftmaxForward", cuda::SoftmaxForward(logits, probs, stream));
  CheckLogits(logits, "SoftmaxForward");
  internal::CheckF32Out(probs, logits.shape(), "SoftmaxForward", "probs");
  const int64_t rows = logits.dim(0), cols = logits.dim(1);
  std::vector<double> p(cols);
  for (int64_t t = 0; t < rows; ++t) {
    SoftmaxRow(logits.data<float>() + t * cols, cols, p.data());
    for (int64_t e = 0; e < cols; ++e)
      probs->data<float>()[t * cols + e] = static_cast<float>(p[e]);
  }
}

void SoftmaxBackward(const Tensor& probs, const Tensor& d_probs, Tensor* d_logits, Stream& stream) {
  MF_RETURN_IF_GPU(probs, "SoftmaxBackward",
                   cuda::SoftmaxBackward(probs, d_probs, d_logits, stream));
  internal::CheckF32(probs, "SoftmaxBackward", "probs");
  internal::CheckRank(probs, 2, "SoftmaxBackward", "probs");
  internal::CheckF32(d_probs, "SoftmaxBackward", "d_probs");
  internal::CheckShape(d_probs, probs.shape(), "SoftmaxBackward", "d_probs");
  internal::CheckF32Out(d_logits, probs.shape(), "SoftmaxBackward", "d_logits");
  const int64_t rows = probs.dim(0), cols = probs.dim(1);
  for (int64_t t = 0; t < rows; ++t) {
    const float* p = probs.data<float>() + t * cols;
    const float* g = d_probs.data<float>() + t * cols;
    double pg = 0;
    for (int64_t e = 0; e < cols; ++e) pg += static_cast<double>(p[e]) * g[e];
    float* dl = d_logits->data<float>() + t * cols;
    for (int64_t e = 0; e < cols; ++e) dl[e] += static_cast<float>(p[e] * (g[e] - pg));
  }
}

namespace {

// ∂loss/∂probs[t, i] = coeff·E·counts[i] / (total_tokens²·k), the same for every token.
std::vector<double> AuxLossCoefficients(const Tensor& probs, const Tensor& counts,
                                        int64_t total_tokens, int k, float coeff, const char* op) {
  internal::CheckF32(probs, op, "probs");
  internal::CheckRank(probs, 2, op, "probs");
  const int64_t experts = probs.dim(1);
  internal::CheckF32(counts, op, "counts");
  internal::CheckShape(counts, {experts}, op, "counts");
  MF_CHECK(total_tokens > 0 && k > 0)
      << op << ": total_tokens=" << total_tokens << " and k=" << k << " must be positive";
  const double t_tot = static_cast<double>(total_tokens);
  std::vector<double> a(experts);
  for (int64_t i = 0; i < experts; ++i) {
    a[i] = static_cast<double>(coeff) * experts * counts.data<float>()[i] / (t_tot * t_tot * k);
  }
  return a;
}

}  // namespace

void AuxLossForward(const Tensor& probs, const Tensor& counts, int64_t total_tokens, int k,
                    float coeff, Tensor* loss_sum, Stream& stream) {
  constexpr const char* kOp = "AuxLossForward";
  MF_RETURN_IF_GPU(probs, kOp,
                   cuda::AuxLossForward(probs, counts, total_tokens, k, coeff, loss_sum, stream));
  const std::vector<double> a = AuxLossCoefficients(probs, counts, total_tokens, k, coeff, kOp);
  internal::CheckF32Out(loss_sum, {1}, kOp, "loss_sum");
  const int64_t rows = probs.dim(0), experts = probs.dim(1);
  double loss = 0;
  for (int64_t t = 0; t < rows; ++t) {
    for (int64_t i = 0; i < experts; ++i) loss += a[i] * probs.data<float>()[t * experts + i];
  }
  loss_sum->data<float>()[0] += static_cast<float>(loss);
}

// Counts are a constant (selection is not differentiable); the gradient flows through the softmax:
// d_logits[t, e] += d_loss · p_e · (a_e − Σ_i p_i a_i).
void AuxLossBackward(const Tensor& probs, const Tensor& counts, int64_t total_tokens, int k,
                     float coeff, float d_loss, Tensor* d_logits, Stream& stream) {
  MF_RETURN_IF_GPU(
      probs, "AuxLossBackward",
      cuda::AuxLossBackward(probs, counts, total_tokens, k, coeff, d_loss, d_logits, stream));
  const std::vector<double> a =
      AuxLossCoefficients(probs, counts, total_tokens, k, coeff, "AuxLossBackward");
  internal::CheckF32Out(d_logits, probs.shape(), "AuxLossBackward", "d_logits");
  const int64_t rows = probs.dim(0), experts = probs.dim(1);
  for (int64_t t = 0; t < rows; ++t) {
    const float* p = probs.data<float>() + t * experts;
    double pa = 0;
    for (int64_t i = 0; i < experts; ++i) pa += p[i] * a[i];
    float* dl = d_logits->data<float>() + t * experts;
    for (int64_t e = 0; e < experts; ++e) dl[e] += static_cast<float>(d_loss * p[e] * (a[e] - pa));
  }
}

void ZLossForward(const Tensor& logits, float coeff, int64_t total_tokens, Tensor* loss_sum,
                  Stream& stream) {
  constexpr const char* kOp = "ZLossForward";
  MF_RETURN_IF_GPU(logits, kOp, cuda::ZLossForward(logits, coeff, total_tokens, loss_sum, stream));
  CheckLogits(logits, kOp);
  MF_CHECK_GT(total_tokens, 0) << kOp << ": total_tokens";
  internal::CheckF32Out(loss_sum, {1}, kOp, "loss_sum");
  const int64_t rows = logits.dim(0), experts = logits.dim(1);
  double sum = 0;
  for (int64_t t = 0; t < rows; ++t) {
    const double lse = LogSumExpRow(logits.data<float>() + t * experts, experts);
    sum += lse * lse;
  }
  loss_sum->data<float>()[0] += static_cast<float>(coeff * sum / total_tokens);
}

// ∂(lse²)/∂l_e = 2·lse·softmax(l)_e.
void ZLossBackward(const Tensor& logits, float coeff, int64_t total_tokens, float d_loss,
                   Tensor* d_logits, Stream& stream) {
  MF_RETURN_IF_GPU(logits, "ZLossBackward",
                   cuda::ZLossBackward(logits, coeff, total_tokens, d_loss, d_logits, stream));
  CheckLogits(logits, "ZLossBackward");
  MF_CHECK_GT(total_tokens, 0) << "ZLossBackward: total_tokens";
  internal::CheckF32Out(d_logits, logits.shape(), "ZLossBackward", "d_logits");
  const int64_t rows = logits.dim(0), experts = logits.dim(1);
  std::vector<double> p(experts);
  for (int64_t t = 0; t < rows; ++t) {
    const float* l = logits.data<float>() + t * experts;
    const double lse = LogSumExpRow(l, experts);
    SoftmaxRow(l, experts, p.data());
    const double scale = static_cast<double>(d_loss) * coeff * 2.0 * lse / total_tokens;
    float* dl = d_logits->data<float>() + t * experts;
    for (int64_t e = 0; e < experts; ++e) dl[e] += static_cast<float>(scale * p[e]);
  }
}

}  // namespace moefold::ops
