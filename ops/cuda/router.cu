// CUDA router math: one thread per token, in f64 like the CPU reference, so selection (ties to the
// lower id) and weights agree exactly with it; E and k are small, the work is T·E·k. Scalar losses
// are per-token values summed by one block in a fixed order (deterministic) and added to a device
// accumulator: nothing waits for the host. A bad expert id traps the kernel instead of waiting for
// a check.
#include <cfloat>
#include <cstdio>

#include "ops/cuda/common.cuh"
#include "ops/cuda/launchers.h"

namespace moefold::ops::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kMaxExperts = 1024;  // the `taken` bit set below
constexpr int kMaxGroups = 64;

struct RouterParams {
  int experts, k, score, num_groups, group_topk;
  bool normalize, has_bias;
  double scaling;
};

__device__ double Sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

// Softmax statistics of a row: max and Σ exp(l − max).
__device__ void RowSoftmaxStats(const float* l, int n, double* max_l, double* sum) {
  double m = -INFINITY;
  for (int e = 0; e < n; ++e) m = fmax(m, static_cast<double>(l[e]));
  double s = 0;
  for (int e = 0; e < n; ++e) s += exp(l[e] - m);
  *max_l = m;
  *sum = s;
}

// The selection score of expert e (before group masking).
__device__ double SelectScore(const float* l, const float* bias, const RouterParams& p, int e,
                              double max_l, double sum) {
  switch (p.score) {
    case static_cast<int>(ScoreFunction::kSoftmaxPost):
      return l[e];
    case static_cast<int>(ScoreFunction::kSoftmaxPre):
      return exp(l[e] - max_l) / sum;
    default:
      return Sigmoid(l[e]) + (p.has_bias ? bias[e] : 0.0f);
  }
}

__device__ bool Taken(const uint32_t* bits, int e) { return (bits[e / 32] >> (e % 32)) & 1u; }
__device__ void Take(uint32_t* bits, int e) { bits[e / 32] |= 1u << (e % 32); }

// The index of the best score among [begin, end) not yet taken (the CPU's strict '>' scan).
__device__ int BestUntaken(const float* l, const float* bias, const RouterParams& p, double max_l,
                           double sum, const uint64_t kept_groups, int per_group, int begin,
                           int end, const uint32_t* taken) {
  int best = -1;
  double best_score = 0;
  for (int e = begin; e < end; ++e) {
    if (Taken(taken, e)) continue;
    double score = SelectScore(l, bias, p, e, max_l, sum);
    if (p.num_groups > 0 && !((kept_groups >> (e / per_group)) & 1ull)) score = -INFINITY;
    if (best < 0 || score > best_score) {
      best = e;
      best_score = score;
    }
  }
  return best;
}

__global__ void TopKForwardKernel(const float* logits, const float* bias, RouterParams p,
                                  int64_t tokens, int32_t* ids, float* weights) {
  const int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (t >= tokens) return;
  const float* l = logits + t * p.experts;
  double max_l = 0, sum = 1;
  if (p.score == static_cast<int>(ScoreFunction::kSoftmaxPre))
    RowSoftmaxStats(l, p.experts, &max_l, &sum);
  uint32_t taken[kMaxExperts / 32];
  const int words = (p.experts + 31) / 32;
  uint64_t kept = ~0ull;
  const int per_group = p.num_groups > 0 ? p.experts / p.num_groups : p.experts;
  if (p.num_groups > 0) {
    // Group score: the sum of its top-(k/group_topk) scores; keep the best group_topk groups.
    double group_score[kMaxGroups];
    const int top_in_group = p.k / p.group_topk;
    for (int g = 0; g < p.num_groups; ++g) {
      for (int w = 0; w < words; ++w) taken[w] = 0;
      double s = 0;
      for (int j = 0; j < top_in_group; ++j) {
        const int e = BestUntaken(l, bias, p, max_l, sum, ~0ull, per_group, g * per_group,
                                  (g + 1) * per_group, taken);
        Take(taken, e);
        s += SelectScore(l, bias, p, e, max_l, sum);
      }
      group_score[g] = s;
    }
    uint64_t chosen = 0;
    for (int j = 0; j < p.group_topk; ++j) {
      int best = -1;
      for (int g = 0; g < p.num_groups; ++g) {
        if ((chosen >> g) & 1ull) continue;
        if (best < 0 || group_score[g] > group_score[best]) best = g;
      }
      chosen |= 1ull << best;
    }
    kept = chosen;
  }
  for (int w = 0; w < words; ++w) taken[w] = 0;
  int32_t* id = ids + t * p.k;
  for (int j = 0; j < p.k; ++j) {
    const int e = BestUntaken(l, bias, p, max_l, sum, kept, per_group, 0, p.experts, taken);
    Take(taken, e);
    id[j] = e;
  }
  // Weights from the chosen experts, exactly as the CPU reference.
  double u[8 * 32];  // k ≤ 256 (checked on the host)
  bool normalize = p.normalize;
  if (p.score == static_cast<int>(ScoreFunction::kSoftmaxPost)) {
    double m = -INFINITY;
    for (int j = 0; j < p.k; ++j) m = fmax(m, static_cast<double>(l[id[j]]));
    for (int j = 0; j < p.k; ++j) u[j] = exp(l[id[j]] - m);
    normalize = true;
  } else if (p.score == static_cast<int>(ScoreFunction::kSoftmaxPre)) {
    for (int j = 0; j < p.k; ++j) u[j] = exp(l[id[j]] - max_l) / sum;
  } else {
    for (int j = 0; j < p.k; ++j) u[j] = Sigmoid(l[id[j]]);
    normalize = normalize && p.k > 1;
  }
  double sum_u = 0;
  for (int j = 0; j < p.k; ++j) sum_u += u[j];
  for (int j = 0; j < p.k; ++j) {
    weights[t * p.k + j] = static_cast<float>(p.scaling * (normalize ? u[j] / sum_u : u[j]));
  }
}

// h = ∂L/∂u from g = ∂L/∂w through w = c·u/Σu (normalised) or w = c·u.
__device__ void NormalizationBackward(const double* u, const float* g, int k, bool normalized,
                                      double c, double* h) {
  if (!normalized) {
    for (int j = 0; j < k; ++j) h[j] = c * g[j];
    return;
  }
  double sum_u = 0, sum_gu = 0;
  for (int j = 0; j < k; ++j) {
    sum_u += u[j];
    sum_gu += g[j] * u[j];
  }
  for (int j = 0; j < k; ++j) h[j] = c / sum_u * (g[j] - sum_gu / sum_u);
}

__global__ void TopKBackwardKernel(const float* logits, const int32_t* ids, const float* d_weights,
                                   RouterParams p, int64_t tokens, float* d_logits) {
  const int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (t >= tokens) return;
  const float* l = logits + t * p.experts;
  const int32_t* id = ids + t * p.k;
  const float* g = d_weights + t * p.k;
  float* dl = d_logits + t * p.experts;
  // The CPU reference rejects an id outside [0, E); here it would write out of bounds.
  for (int j = 0; j < p.k; ++j) {
    if (id[j] < 0 || id[j] >= p.experts) {
      printf("moefold RouterTopKBackward: expert id %d (token %lld) outside [0, E=%d)\n", id[j],
             static_cast<long long>(t), p.experts);
      __trap();
    }
  }
  double u[256], h[256];
  const double c = p.scaling;
  if (p.score == static_cast<int>(ScoreFunction::kSoftmaxPost)) {
    double m = -INFINITY;
    for (int j = 0; j < p.k; ++j) m = fmax(m, static_cast<double>(l[id[j]]));
    double s = 0;
    for (int j = 0; j < p.k; ++j) s += u[j] = exp(l[id[j]] - m);
    double gbar = 0;
    for (int j = 0; j < p.k; ++j) gbar += (u[j] /= s) * g[j];
    for (int j = 0; j < p.k; ++j) dl[id[j]] += static_cast<float>(c * u[j] * (g[j] - gbar));
  } else if (p.score == static_cast<int>(ScoreFunction::kSoftmaxPre)) {
    double max_l, sum;
    RowSoftmaxStats(l, p.experts, &max_l, &sum);
    for (int j = 0; j < p.k; ++j) u[j] = exp(l[id[j]] - max_l) / sum;
    NormalizationBackward(u, g, p.k, p.normalize, c, h);
    double hu = 0;
    for (int j = 0; j < p.k; ++j) hu += h[j] * u[j];
    for (int e = 0; e < p.experts; ++e) dl[e] -= static_cast<float>(exp(l[e] - max_l) / sum * hu);
    for (int j = 0; j < p.k; ++j) dl[id[j]] += static_cast<float>(h[j] * u[j]);
  } else {
    for (int j = 0; j < p.k; ++j) u[j] = Sigmoid(l[id[j]]);
    NormalizationBackward(u, g, p.k, p.normalize && p.k > 1, c, h);
    for (int j = 0; j < p.k; ++j) dl[id[j]] += static_cast<float>(h[j] * u[j] * (1.0 - u[j]));
  }
}

__global__ void BalancedRoutingKernel(int64_t first_row, int experts, int64_t pairs, int k,
                                      int32_t* ids, float* weights) {
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i >= pairs) return;
  // Pair i is choice i % k of row i / k: expert ((first_row + i / k)·k + i % k) mod E.
  ids[i] = static_cast<int32_t>((first_row * k + i) % experts);
  weights[i] = 1.0f / static_cast<float>(k);
}

__global__ void SoftmaxForwardKernel(const float* logits, int64_t rows, int cols, float* probs) {
  const int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (t >= rows) return;
  double m, s;
  RowSoftmaxStats(logits + t * cols, cols, &m, &s);
  for (int e = 0; e < cols; ++e)
    probs[t * cols + e] = static_cast<float>(exp(logits[t * cols + e] - m) / s);
}

__global__ void SoftmaxBackwardKernel(const float* probs, const float* d_probs, int64_t rows,
                                      int cols, float* d_logits) {
  const int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (t >= rows) return;
  const float* p = probs + t * cols;
  const float* g = d_probs + t * cols;
  double pg = 0;
  for (int e = 0; e < cols; ++e) pg += static_cast<double>(p[e]) * g[e];
  for (int e = 0; e < cols; ++e) d_logits[t * cols + e] += static_cast<float>(p[e] * (g[e] - pg));
}

// a_i = coeff·E·counts[i] / (total²·k): ∂loss/∂probs[t, i].
__device__ double AuxCoefficient(const float* counts, int i, int experts, double total, int k,
                                 double coeff) {
  return coeff * experts * counts[i] / (total * total * k);
}

__global__ void AuxLossRows(const float* probs, const float* counts, int64_t rows, int experts,
                            double total, int k, double coeff, double* row_loss) {
  const int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (t >= rows) return;
  double loss = 0;
  for (int i = 0; i < experts; ++i) {
    loss += AuxCoefficient(counts, i, experts, total, k, coeff) * probs[t * experts + i];
  }
  row_loss[t] = loss;
}

__global__ void AuxLossBackwardKernel(const float* probs, const float* counts, int64_t rows,
                                      int experts, double total, int k, double coeff, double d_loss,
                                      float* d_logits) {
  const int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (t >= rows) return;
  const float* p = probs + t * experts;
  double pa = 0;
  for (int i = 0; i < experts; ++i)
    pa += p[i] * AuxCoefficient(counts, i, experts, total, k, coeff);
  for (int e = 0; e < experts; ++e) {
    const double a = AuxCoefficient(counts, e, experts, total, k, coeff);
    d_logits[t * experts + e] += static_cast<float>(d_loss * p[e] * (a - pa));
  }
}

__global__ void ZLossRows(const float* logits, int64_t rows, int experts, double* row_loss) {
  const int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (t >= rows) return;
  double m, s;
  RowSoftmaxStats(logits + t * experts, experts, &m, &s);
  const double lse = m + log(s);
  row_loss[t] = lse * lse;
}

__global__ void ZLossBackwardKernel(const float* logits, int64_t rows, int experts, double scale,
                                    float* d_logits) {
  const int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (t >= rows) return;
  const float* l = logits + t * experts;
  double m, s;
  RowSoftmaxStats(l, experts, &m, &s);
  const double lse = m + log(s);
  for (int e = 0; e < experts; ++e) {
    d_logits[t * experts + e] += static_cast<float>(scale * 2.0 * lse * exp(l[e] - m) / s);
  }
}

// *out += f32(mul · Σ values / div), the sum in a fixed order (the CPU reference's expression).
__global__ void AccumulateSum(const double* values, int64_t n, double mul, double div, float* out) {
  double sum = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) sum += values[i];
  sum = BlockSum(sum);
  if (threadIdx.x == 0) *out += static_cast<float>(mul * sum / div);
}

// loss_sum += f32(mul · Σ_rows v / div) with the per-row values v written by `launch` into a
// scratch vector: two kernels on the stream, no wait.
template <typename Launch>
void AccumulateRows(int64_t rows, double mul, double div, Tensor* loss_sum, Stream& stream,
                    Launch launch) {
  if (rows == 0) return;
  Tensor scratch = Scratch({rows}, DType::kI64, stream);  // f64 storage
  double* values = static_cast<double*>(scratch.raw_data());
  launch(values);
  MF_CUDA_CHECK_LAUNCH();
  AccumulateSum<<<1, 256, 0, Native(stream)>>>(values, rows, mul, div, loss_sum->data<float>());
  MF_CUDA_CHECK_LAUNCH();
}

unsigned Blocks(int64_t rows) { return static_cast<unsigned>((rows + kThreads - 1) / kThreads); }

void CheckF32(const Tensor& t, const Device& dev, const char* op, const char* name) {
  CheckOn(t, dev, op, name);
  CheckDType(t, DType::kF32, op, name);
}

void CheckLogits(const Tensor& logits, const Stream& stream, const char* op) {
  CheckStream(stream, logits.device(), op);
  CheckF32(logits, logits.device(), op, "logits");
  CheckRank(logits, 2, op, "logits");
  MF_CHECK_LE(logits.dim(1), kMaxExperts) << op << ": at most " << kMaxExperts << " experts";
}

RouterParams Params(const TopKOptions& o, int64_t experts, bool has_bias, const char* op) {
  MF_CHECK(o.k >= 1 && o.k <= experts && o.k <= 256)
      << op << ": k = " << o.k << " must be in [1, min(E=" << experts << ", 256)]";
  if (o.num_groups > 0) {
    MF_CHECK(experts % o.num_groups == 0 && o.num_groups <= kMaxGroups)
        << op << ": E=" << experts << " must split into num_groups=" << o.num_groups << " ≤ "
        << kMaxGroups << " groups";
    MF_CHECK(o.group_topk >= 1 && o.group_topk <= o.num_groups && o.k >= o.group_topk)
        << op << ": group_topk=" << o.group_topk << " must be in [1, min(num_groups, k)]";
    MF_CHECK(o.k <= o.group_topk * (experts / o.num_groups))
        << op << ": k=" << o.k << " exceeds the experts in the " << o.group_topk << " kept groups";
  }
  return RouterParams{static_cast<int>(experts),
                      o.k,
                      static_cast<int>(o.score),
                      o.num_groups,
                      o.group_topk,
                      o.normalize,
                      has_bias,
                      o.scaling_factor};
}

}  // namespace

void RouterTopKForward(const Tensor& logits, const Tensor& expert_bias, const TopKOptions& options,
                       Tensor* ids, Tensor* weights, Stream& stream) {
  constexpr const char* kOp = "RouterTopKForward";
  CheckLogits(logits, stream, kOp);
  const Device dev = logits.device();
  const int64_t tokens = logits.dim(0), experts = logits.dim(1);
  const bool has_bias = expert_bias.defined();
  if (has_bias) {
    MF_CHECK(options.score == ScoreFunction::kSigmoid)
        << kOp << ": expert_bias is only supported with the sigmoid score function";
    CheckF32(expert_bias, dev, kOp, "expert_bias");
    CheckShape(expert_bias, {experts}, kOp, "expert_bias");
  }
  const RouterParams p = Params(options, experts, has_bias, kOp);
  CheckOut(ids, dev, DType::kI32, {tokens, options.k}, kOp, "ids");
  CheckOut(weights, dev, DType::kF32, {tokens, options.k}, kOp, "weights");
  if (tokens == 0) return;
  TopKForwardKernel<<<Blocks(tokens), kThreads, 0, Native(stream)>>>(
      logits.data<float>(), has_bias ? expert_bias.data<float>() : nullptr, p, tokens,
      ids->data<int32_t>(), weights->data<float>());
  MF_CUDA_CHECK_LAUNCH();
}

void RouterTopKBackward(const Tensor& logits, const Tensor& ids, const Tensor& weights,
                        const TopKOptions& options, const Tensor& d_weights, Tensor* d_logits,
                        Stream& stream) {
  constexpr const char* kOp = "RouterTopKBackward";
  CheckLogits(logits, stream, kOp);
  const Device dev = logits.device();
  const int64_t tokens = logits.dim(0), experts = logits.dim(1);
  const RouterParams p = Params(options, experts, false, kOp);
  CheckIn(ids, dev, DType::kI32, {tokens, options.k}, kOp, "ids");
  CheckF32(weights, dev, kOp, "weights");
  CheckShape(weights, {tokens, options.k}, kOp, "weights");
  CheckF32(d_weights, dev, kOp, "d_weights");
  CheckShape(d_weights, {tokens, options.k}, kOp, "d_weights");
  CheckOut(d_logits, dev, DType::kF32, {tokens, experts}, kOp, "d_logits");
  if (tokens == 0) return;
  TopKBackwardKernel<<<Blocks(tokens), kThreads, 0, Native(stream)>>>(
      logits.data<float>(), ids.data<int32_t>(), d_weights.data<float>(), p, tokens,
      d_logits->data<float>());
  MF_CUDA_CHECK_LAUNCH();
}

void BalancedRouting(int64_t first_row, int num_experts, Tensor* ids, Tensor* weights,
                     Stream& stream) {
  constexpr const char* kOp = "BalancedRouting";
  const Device dev = ids->device();
  CheckStream(stream, dev, kOp);
  CheckRank(*ids, 2, kOp, "ids");
  const int64_t tokens = ids->dim(0), k = ids->dim(1);
  MF_CHECK(first_row >= 0 && k >= 1 && k <= num_experts)
      << kOp << ": first_row " << first_row << ", k " << k << ", E " << num_experts;
  CheckOut(ids, dev, DType::kI32, {tokens, k}, kOp, "ids");
  CheckOut(weights, dev, DType::kF32, {tokens, k}, kOp, "weights");
  const int64_t pairs = tokens * k;
  if (pairs == 0) return;
  BalancedRoutingKernel<<<Blocks(pairs), kThreads, 0, Native(stream)>>>(
      first_row, num_experts, pairs, static_cast<int>(k), ids->data<int32_t>(),
      weights->data<float>());
  MF_CUDA_CHECK_LAUNCH();
}

void SoftmaxForward(const Tensor& logits, Tensor* probs, Stream& stream) {
  constexpr const char* kOp = "SoftmaxForward";
  CheckLogits(logits, stream, kOp);
  CheckOut(probs, logits.device(), DType::kF32, logits.shape(), kOp, "probs");
  const int64_t rows = logits.dim(0);
  if (rows == 0) return;
  SoftmaxForwardKernel<<<Blocks(rows), kThreads, 0, Native(stream)>>>(
      logits.data<float>(), rows, static_cast<int>(logits.dim(1)), probs->data<float>());
  MF_CUDA_CHECK_LAUNCH();
}

void SoftmaxBackward(const Tensor& probs, const Tensor& d_probs, Tensor* d_logits, Stream& stream) {
  constexpr const char* kOp = "SoftmaxBackward";
  CheckLogits(probs, stream, kOp);
  CheckF32(d_probs, probs.device(), kOp, "d_probs");
  CheckShape(d_probs, probs.shape(), kOp, "d_probs");
  CheckOut(d_logits, probs.device(), DType::kF32, probs.shape(), kOp, "d_logits");
  const int64_t rows = probs.dim(0);
  if (rows == 0) return;
  SoftmaxBackwardKernel<<<Blocks(rows), kThreads, 0, Native(stream)>>>(
      probs.data<float>(), d_probs.data<float>(), rows, static_cast<int>(probs.dim(1)),
      d_logits->data<float>());
  MF_CUDA_CHECK_LAUNCH();
}

namespace {

void CheckAux(const Tensor& probs, const Tensor& counts, int64_t total_tokens, int k,
              const Stream& stream, const char* op) {
  CheckLogits(probs, stream, op);
  CheckF32(counts, probs.device(), op, "counts");
  CheckShape(counts, {probs.dim(1)}, op, "counts");
  MF_CHECK(total_tokens > 0 && k > 0)
      << op << ": total_tokens=" << total_tokens << " and k=" << k << " must be positive";
}

}  // namespace

void AuxLossForward(const Tensor& probs, const Tensor& counts, int64_t total_tokens, int k,
                    float coeff, Tensor* loss_sum, Stream& stream) {
  constexpr const char* kOp = "AuxLossForward";
  CheckAux(probs, counts, total_tokens, k, stream, kOp);
  CheckOut(loss_sum, probs.device(), DType::kF32, {1}, kOp, "loss_sum");
  const int64_t rows = probs.dim(0);
  const int experts = static_cast<int>(probs.dim(1));
  AccumulateRows(rows, 1.0, 1.0, loss_sum, stream, [&](double* values) {
    AuxLossRows<<<Blocks(rows), kThreads, 0, Native(stream)>>>(
        probs.data<float>(), counts.data<float>(), rows, experts, static_cast<double>(total_tokens),
        k, coeff, values);
  });
}

void AuxLossBackward(const Tensor& probs, const Tensor& counts, int64_t total_tokens, int k,
                     float coeff, float d_loss, Tensor* d_logits, Stream& stream) {
  constexpr const char* kOp = "AuxLossBackward";
  CheckAux(probs, counts, total_tokens, k, stream, kOp);
  CheckOut(d_logits, probs.device(), DType::kF32, probs.shape(), kOp, "d_logits");
  const int64_t rows = probs.dim(0);
  if (rows == 0) return;
  AuxLossBackwardKernel<<<Blocks(rows), kThreads, 0, Native(stream)>>>(
      probs.data<float>(), counts.data<float>(), rows, static_cast<int>(probs.dim(1)),
      static_cast<double>(total_tokens), k, coeff, d_loss, d_logits->data<float>());
  MF_CUDA_CHECK_LAUNCH();
}

void ZLossForward(const Tensor& logits, float coeff, int64_t total_tokens, Tensor* loss_sum,
                  Stream& stream) {
  constexpr const char* kOp = "ZLossForward";
  CheckLogits(logits, stream, kOp);
  MF_CHECK_GT(total_tokens, 0) << kOp << ": total_tokens";
  CheckOut(loss_sum, logits.device(), DType::kF32, {1}, kOp, "loss_sum");
  const int64_t rows = logits.dim(0);
  const int experts = static_cast<int>(logits.dim(1));
  AccumulateRows(rows, coeff, static_cast<double>(total_tokens), loss_sum, stream,
                 [&](double* values) {
                   ZLossRows<<<Blocks(rows), kThreads, 0, Native(stream)>>>(logits.data<float>(),
                                                                            rows, experts, values);
                 });
}

void ZLossBackward(const Tensor& logits, float coeff, int64_t total_tokens, float d_loss,
                   Tensor* d_logits, Stream& stream) {
  constexpr const char* kOp = "ZLossBackward";
  CheckLogits(logits, stream, kOp);
  MF_CHECK_GT(total_tokens, 0) << kOp << ": total_tokens";
  CheckOut(d_logits, logits.device(), DType::kF32, logits.shape(), kOp, "d_logits");
  const int64_t rows = logits.dim(0);
  if (rows == 0) return;
  const double scale = static_cast<double>(d_loss) * coeff / total_tokens;
  ZLossBackwardKernel<<<Blocks(rows), kThreads, 0, Native(stream)>>>(
      logits.data<float>(), rows, static_cast<int>(logits.dim(1)), scale, d_logits->data<float>());
  MF_CUDA_CHECK_LAUNCH();
}

}  // namespace moefold::ops::cuda
