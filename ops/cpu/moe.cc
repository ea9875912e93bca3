// CPU reference of MoE token permutation: a stable counting sort of the (token, choice) pairs by
// expert, the row gather into that order, and the weighted scatter-add back. Row r of the permuted
// buffer holds pair sorted[r] = t·k + j; rows whose pair is absent (dropped) simply never appear.
// Capacity mode keeps a per-expert selection of the pairs in the same order. Also the per-unit
// expert counts (integers, stored as f32).
#include "ops/moe.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "ops/cpu/bf16_emulation.h"
#include "ops/cpu/check.h"

namespace moefold::ops {
namespace {

// sorted (N) i32 with every entry a pair index in [0, T·k).
void CheckSorted(const Tensor& sorted, int64_t num_pairs, const char* op) {
  internal::CheckI32(sorted, op, "sorted");
  internal::CheckRank(sorted, 1, op, "sorted");
  const int32_t* s = sorted.data<int32_t>();
  for (int64_t r = 0; r < sorted.numel(); ++r) {
    MF_CHECK(s[r] >= 0 && s[r] < num_pairs)
        << op << ": sorted[" << r << "] = " << s[r]
        << " is not a pair index in [0, T·k=" << num_pairs << ")";
  }
}

}  // namespace

void ComputePermutation(const Tensor& ids, int num_experts, Tensor* sorted, Tensor* counts,
                        Stream& stream) {
  MF_RETURN_IF_GPU(ids, "ComputePermutation",
                   cuda::ComputePermutation(ids, num_experts, sorted, counts, stream));
  constexpr const char* kOp = "ComputePermutation";
  internal::CheckI32(ids, kOp, "ids");
  internal::CheckRank(ids, 2, kOp, "ids");
  MF_CHECK_GT(num_experts, 0) << kOp << ": num_experts";
  const int64_t pairs = ids.numel();
  MF_CHECK(sorted != nullptr && counts != nullptr) << kOp << ": null output";
  internal::CheckI32(*sorted, kOp, "sorted");
  internal::CheckShape(*sorted, {pairs}, kOp, "sorted");
  internal::CheckI32(*counts, kOp, "counts");
  internal::CheckShape(*counts, {num_experts}, kOp, "counts");
  const int32_t* id = ids.data<int32_t>();
  int32_t* count = counts->data<int32_t>();
  std::fill(count, count + num_experts, 0);
  for (int64_t p = 0; p < pairs; ++p) {
    MF_CHECK(id[p] >= 0 && id[p] < num_experts)
        << kOp << ": expert id " << id[p] << " (token " << p / ids.dim(1) << ", choice "
        << p % ids.dim(1) << ") out of range [0, E=" << num_experts << ")";
    ++count[id[p]];
  }
  // Exclusive prefix sum gives each expert's first row; scanning pairs in order keeps it stable.
  std::vector<int64_t> next(num_experts, 0);
  for (int e = 1; e < num_experts; ++e) next[e] = next[e - 1] + count[e - 1];
  int32_t* out = sorted->data<int32_t>();
  for (int64_t p = 0; p < pairs; ++p) out[next[id[p]]++] = static_cast<int32_t>(p);
}

void ComputeCapacityPermutation(const Tensor& ids, const Tensor& weights, int num_experts,
                                int64_t capacity, DropPolicy policy, Tensor* sorted,
                                Tensor* counts, Tensor* demand, Stream& stream) {
  MF_RETURN_IF_GPU(ids, "ComputeCapacityPermutation",
                   cuda::ComputeCapacityPermutation(ids, weights, num_experts, capacity, policy,
                                                    sorted, counts, demand, stream));
  constexpr const char* kOp = "ComputeCapacityPermutation";
  internal::CheckI32(ids, kOp, "ids");
  internal::CheckRank(ids, 2, kOp, "ids");
  internal::CheckF32(weights, kOp, "weights");
  internal::CheckShape(weights, ids.shape(), kOp, "weights");
  MF_CHECK_GT(num_experts, 0) << kOp << ": num_experts";
  MF_CHECK_GE(capacity, 0) << kOp << ": capacity";
  const int64_t pairs = ids.numel();
  MF_CHECK(sorted != nullptr && counts != nullptr && demand != nullptr) << kOp << ": null output";
  internal::CheckI32(*sorted, kOp, "sorted");
  internal::CheckShape(*sorted, {pairs}, kOp, "sorted");
  internal::CheckI32(*counts, kOp, "counts");
  internal::CheckShape(*counts, {num_experts}, kOp, "counts");
  internal::CheckI32(*demand, kOp, "demand");
  internal::CheckShape(*demand, {num_experts}, kOp, "demand");
  const int32_t* id = ids.data<int32_t>();
  const float* w = weights.data<float>();
  std::vector<std::vector<int32_t>> per_expert(num_experts);
  for (int64_t p = 0; p < pairs; ++p) {
    MF_CHECK(id[p] >= 0 && id[p] < num_experts)
        << kOp << ": expert id " << id[p] << " (token " << p / ids.dim(1) << ", choice "
        << p % ids.dim(1) << ") out of range [0, E=" << num_experts << ")";
    per_expert[id[p]].push_back(static_cast<int32_t>(p));  // token order
  }
  int32_t* out = sorted->data<int32_t>();
  int64_t kept = 0;
  for (int e = 0; e < num_experts; ++e) {
    std::vector<int32_t>& list = per_expert[e];
    demand->data<int32_t>()[e] = static_cast<int32_t>(list.size());
    if (static_cast<int64_t>(list.size()) > capacity) {
      if (policy == DropPolicy::kProbs) {
        // Highest weight first, the earlier pair first among equal weights.
        std::stable_sort(list.begin(), list.end(),
                         [&](int32_t a, int32_t b) { return w[a] > w[b]; });
      }
      list.resize(capacity);
      std::sort(list.begin(), list.end());  // back to token order
    }
    std::copy(list.begin(), list.end(), out + kept);
    kept += static_cast<int64_t>(list.size());
    counts->data<int32_t>()[e] = static_cast<int32_t>(list.size());
  }
  std::fill(out + kept, out + pairs, -1);
}

void PermuteTokens(const Tensor& x, const Tensor& sorted, int k, Tensor* out, Stream& stream) {
  MF_RETURN_IF_GPU(x, "PermuteTokens", cuda::PermuteTokens(x, sorted, k, out, stream));
  constexpr const char* kOp = "PermuteTokens";
  if (internal::AnyBf16({&x, out})) {
    internal::Bf16Emulation emu(kOp);
    emu.SameDType({&x, out}, {"x", "out"});
    PermuteTokens(emu.In(x), sorted, k, emu.Out(out), stream);
    emu.RoundBack();
    return;
  }
  internal::CheckF32(x, kOp, "x");
  internal::CheckRank(x, 2, kOp, "x");
  MF_CHECK_GT(k, 0) << kOp << ": k";
  const int64_t hidden = x.dim(1), rows = sorted.numel();
  CheckSorted(sorted, x.dim(0) * k, kOp);
  internal::CheckF32Out(out, {rows, hidden}, kOp, "out");
  const int32_t* s = sorted.data<int32_t>();
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(out->data<float>() + r * hidden, x.data<float>() + (s[r] / k) * hidden,
                sizeof(float) * hidden);
  }
}

void PermuteTokensBackward(const Tensor& d_out, const Tensor& sorted, int k, Tensor* d_x,
                           Stream& stream) {
  MF_RETURN_IF_GPU(d_out, "PermuteTokensBackward",
                   cuda::PermuteTokensBackward(d_out, sorted, k, d_x, stream));
  constexpr const char* kOp = "PermuteTokensBackward";
  if (internal::AnyBf16({&d_out, d_x})) {
    internal::Bf16Emulation emu(kOp);
    emu.SameDType({&d_out, d_x}, {"d_out", "d_x"});
    PermuteTokensBackward(emu.In(d_out), sorted, k, emu.Out(d_x), stream);
    emu.RoundBack();
    return;
  }
  internal::CheckF32(d_out, kOp, "d_out");
  internal::CheckRank(d_out, 2, kOp, "d_out");
  MF_CHECK_GT(k, 0) << kOp << ": k";
  MF_CHECK(d_x != nullptr) << kOp << ": output d_x is null";
  internal::CheckF32(*d_x, kOp, "d_x");
  internal::CheckRank(*d_x, 2, kOp, "d_x");
  const int64_t hidden = d_out.dim(1), rows = sorted.numel();
  internal::CheckShape(d_out, {rows, hidden}, kOp, "d_out");
  internal::CheckShape(*d_x, {d_x->dim(0), hidden}, kOp, "d_x");
  CheckSorted(sorted, d_x->dim(0) * k, kOp);
  d_x->SetZero();
  const int32_t* s = sorted.data<int32_t>();
  for (int64_t r = 0; r < rows; ++r) {
    float* dst = d_x->data<float>() + (s[r] / k) * hidden;
    const float* src = d_out.data<float>() + r * hidden;
    for (int64_t h = 0; h < hidden; ++h) dst[h] += src[h];
  }
}

namespace {

// Checks shared by UnpermuteTokens and its backward: weights (T, k) f32, y (rows of `sorted`, H)
// f32, `sorted` a valid pair order. Returns T, k and H.
struct UnpermuteShapes {
  int64_t tokens, k, hidden;
};
UnpermuteShapes CheckUnpermuteInputs(const Tensor& y, const Tensor& sorted, const Tensor& weights,
                                     const char* op) {
  internal::CheckF32(weights, op, "weights");
  internal::CheckRank(weights, 2, op, "weights");
  internal::CheckF32(y, op, "y");
  internal::CheckRank(y, 2, op, "y");
  const UnpermuteShapes shapes{weights.dim(0), weights.dim(1), y.dim(1)};
  internal::CheckShape(y, {sorted.numel(), shapes.hidden}, op, "y");
  CheckSorted(sorted, shapes.tokens * shapes.k, op);
  return shapes;
}

}  // namespace

void UnpermuteTokens(const Tensor& y, const Tensor& sorted, const Tensor& weights, Tensor* out,
                     Stream& stream) {
  MF_RETURN_IF_GPU(y, "UnpermuteTokens", cuda::UnpermuteTokens(y, sorted, weights, out, stream));
  constexpr const char* kOp = "UnpermuteTokens";
  if (internal::AnyBf16({&y, out})) {
    internal::Bf16Emulation emu(kOp);
    emu.SameDType({&y, out}, {"y", "out"});
    emu.IsF32(&weights, "weights");
    UnpermuteTokens(emu.In(y), sorted, weights, emu.Out(out), stream);
    emu.RoundBack();
    return;
  }
  const int64_t rows = sorted.numel();
  const auto [tokens, k, hidden] = CheckUnpermuteInputs(y, sorted, weights, kOp);
  internal::CheckF32Out(out, {tokens, hidden}, kOp, "out");
  out->SetZero();
  const int32_t* s = sorted.data<int32_t>();
  const float* w = weights.data<float>();
  for (int64_t r = 0; r < rows; ++r) {
    float* dst = out->data<float>() + (s[r] / k) * hidden;
    const float* src = y.data<float>() + r * hidden;
    for (int64_t h = 0; h < hidden; ++h) dst[h] += w[s[r]] * src[h];
  }
}

void UnpermuteTokensBackward(const Tensor& d_out, const Tensor& y, const Tensor& sorted,
                             const Tensor& weights, Tensor* d_y, Tensor* d_weights,
                             Stream& stream) {
  MF_RETURN_IF_GPU(
      y, "UnpermuteTokensBackward",
      cuda::UnpermuteTokensBackward(d_out, y, sorted, weights, d_y, d_weights, stream));
  constexpr const char* kOp = "UnpermuteTokensBackward";
  if (internal::AnyBf16({&d_out, &y, d_y})) {
    internal::Bf16Emulation emu(kOp);
    emu.SameDType({&d_out, &y, d_y}, {"d_out", "y", "d_y"});
    emu.IsF32(&weights, "weights");
    emu.IsF32(d_weights, "d_weights");
    UnpermuteTokensBackward(emu.In(d_out), emu.In(y), sorted, weights, emu.Out(d_y), d_weights,
                            stream);
    emu.RoundBack();
    return;
  }
  const int64_t rows = sorted.numel();
  const auto [tokens, k, hidden] = CheckUnpermuteInputs(y, sorted, weights, kOp);
  internal::CheckF32(d_out, kOp, "d_out");
  internal::CheckShape(d_out, {tokens, hidden}, kOp, "d_out");
  internal::CheckF32Out(d_y, y.shape(), kOp, "d_y");
  internal::CheckF32Out(d_weights, weights.shape(), kOp, "d_weights");
  d_weights->SetZero();  // a dropped pair has no row and so no gradient
  const int32_t* s = sorted.data<int32_t>();
  const float* w = weights.data<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = d_out.data<float>() + (s[r] / k) * hidden;
    const float* yr = y.data<float>() + r * hidden;
    float* dyr = d_y->data<float>() + r * hidden;
    double dot = 0;
    for (int64_t h = 0; h < hidden; ++h) {
      dyr[h] = w[s[r]] * g[h];
      dot += static_cast<double>(g[h]) * yr[h];
    }
    d_weights->data<float>()[s[r]] = static_cast<float>(dot);
  }
}

void CountExpertsPerUnit(const Tensor& ids, int64_t first_row, int64_t unit_rows, Tensor* counts,
                         Stream& stream) {
  constexpr const char* kOp = "CountExpertsPerUnit";
  // Shapes and the unit range are host values: checked here, for both devices.
  MF_CHECK(counts != nullptr) << kOp << ": output counts is null";
  internal::CheckRank(ids, 2, kOp, "ids");
  internal::CheckRank(*counts, 2, kOp, "counts");
  const int64_t tokens = ids.dim(0), k = ids.dim(1);
  const int64_t units = counts->dim(0), experts = counts->dim(1);
  MF_CHECK_GT(unit_rows, 0) << kOp << ": unit_rows";
  MF_CHECK_GE(first_row, 0) << kOp << ": first_row";
  MF_CHECK(tokens == 0 || (first_row + tokens - 1) / unit_rows < units)
      << kOp << ": rows [" << first_row << ", " << first_row + tokens << ") reach unit "
      << (first_row + tokens - 1) / unit_rows << " but counts has U=" << units << " units";
  MF_RETURN_IF_GPU(ids, kOp, cuda::CountExpertsPerUnit(ids, first_row, unit_rows, counts, stream));
  internal::CheckI32(ids, kOp, "ids");
  internal::CheckF32(*counts, kOp, "counts");
  const int32_t* id = ids.data<int32_t>();
  std::vector<int64_t> count(static_cast<size_t>(units * experts), 0);  // integers: exact
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t unit = (first_row + t) / unit_rows;
    for (int64_t j = 0; j < k; ++j) {
      const int32_t e = id[t * k + j];
      MF_CHECK(e >= 0 && e < experts)
          << kOp << ": expert id " << e << " (token " << t << ", choice " << j
          << ") out of range [0, E=" << experts << ")";
      ++count[unit * experts + e];
    }
  }
  float* out = counts->data<float>();
  for (int64_t i = 0; i < units * experts; ++i) out[i] = static_cast<float>(count[i]);
}

}  // namespace moefold::ops
