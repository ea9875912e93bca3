// Causal GQA attention as cuDNN operation graphs of generic operations (matmul, pointwise,
// reduction, reshape), the pattern cuDNN's fused flash-attention engines recognise since 8.9 and
// the one its own frontend emits for a top-left causal mask before 9.21. Our BSHD tensors are
// (B, H, S, D) views with strides; K (and V in the backward) enter transposed, (B, Hkv, D, S), and
// GQA is the head dimension of K/V dividing that of Q. Intermediates are f32 except the
// probabilities and score gradients that feed a second matmul (the input dtype), as cuDNN asks.
// A plan is built from the graph as the current frontend writes it and, should cuDNN refuse that,
// from the form its frontend wrote up to 1.8 (cuDNN 9.0 to 9.6 era).
#include "ops/cuda/attention_cudnn.h"

#include <cuda_runtime.h>

#include <limits>
#include <map>
#include <mutex>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/cuda_runtime.h"
#include "ops/cuda/check.h"
#include "ops/cuda/cudnn_graph.h"
#include "ops/cuda/cudnn_library.h"

namespace moefold::ops::cuda {
namespace {

// Unique ids of the tensors bound in the variant pack.
constexpr int64_t kQ = 1, kK = 2, kV = 3, kO = 4, kStats = 5, kDO = 6, kDQ = 7, kDK = 8, kDV = 9;
constexpr int64_t kScale = 10, kMaskValue = 11, kOne = 12, kSoftmaxSum = 13, kDQAccum = 14;

// The problem in cuDNN's terms: (B, H, S, D) dimensions and our BSHD strides.
struct Shapes {
  explicit Shapes(const AttentionDims& d)
      : b(d.batch), s(d.seq), hq(d.q_heads), hkv(d.kv_heads), dim(d.head_dim) {}
  CudnnDims Heads(int64_t h) const { return {b, h, s, dim}; }
  CudnnDims Bshd(int64_t h) const { return {s * h * dim, dim, h * dim, 1}; }
  // K or V of BSHD memory as (B, Hkv, D, S).
  CudnnDims Transposed() const { return {b, hkv, dim, s}; }
  CudnnDims TransposedStrides() const { return {s * hkv * dim, dim, 1, hkv * dim}; }
  // (B, Hq, S, D) packed per head: the layout of the f32 dQ accumulator and head-wise gradients.
  CudnnDims PackedStrides() const { return {hq * s * dim, s * dim, dim, 1}; }
  CudnnDims Scores() const { return {b, hq, s, s}; }
  CudnnDims ScoreStrides() const { return {hq * s * s, s * s, s, 1}; }
  CudnnDims ScoreStridesTransposed() const { return {hq * s * s, s * s, 1, s}; }
  CudnnDims Rows() const { return {b, hq, s, 1}; }
  CudnnDims RowStrides() const { return {hq * s, s, 1, 1}; }  // = our lse (B, Hq, S)
  int64_t b, s, hq, hkv, dim;
};

// The two ways cuDNN's frontend has written the causal graphs. kCurrent (frontend 1.10 on): index
// generation computed in f32, the backward masks after subtracting lse, masked scores -inf from
// cuDNN 9.10 on. kEarlier (up to 1.8): index generation in i32, the backward masks before
// subtracting lse, masked scores the most negative finite float.
enum class GraphForm { kCurrent, kEarlier };

float MaskValue(GraphForm form, int64_t version) {
  return form == GraphForm::kCurrent && version >= 91000 ? -std::numeric_limits<float>::infinity()
                                                         : std::numeric_limits<float>::lowest();
}

// Versions and shapes the installed cuDNN is known to refuse or get wrong (its frontend's list).
absl::Status VersionTakes(int64_t version, const AttentionDims& d, bool backward) {
  if (version == 91000 || version == 91001) {
    return absl::UnimplementedError(
        "cuDNN 9.10.0 and 9.10.1 have known bf16 SDPA bugs (fixed in 9.10.2)");
  }
  // Up to 9.15.0 the backward engines need S % 128 == 0 unless the graph carries a padding mask
  // with per-batch sequence lengths, which these graphs do not build.
  if (backward && version <= 91500 && d.seq % 128 != 0) {
    return absl::UnimplementedError(
        absl::StrCat("cuDNN <= 9.15.0 backward needs S % 128 == 0, S = ", d.seq));
  }
  return absl::OkStatus();
}

// Scores with the causal mask: key j > query i takes the mask value (top-left diagonal, S_q =
// S_kv). Returns the masked scores.
int64_t CausalMask(CudnnGraph& g, const Shapes& x, GraphForm form, int64_t scores) {
  const cudnnDataType_t index_math =
      form == GraphForm::kCurrent ? CUDNN_DATA_FLOAT : CUDNN_DATA_INT32;
  const int64_t row = g.Virtual("row index", CUDNN_DATA_INT32, x.Scores(), x.ScoreStrides());
  g.GenIndex("row index", 2, index_math, scores, row);
  const int64_t col = g.Virtual("column index", CUDNN_DATA_INT32, x.Scores(), x.ScoreStrides());
  g.GenIndex("column index", 3, index_math, scores, col);
  const int64_t keep = g.Virtual("row >= column", CUDNN_DATA_BOOLEAN, x.Scores(), x.ScoreStrides());
  g.Pointwise("row >= column", CUDNN_POINTWISE_CMP_GE, CUDNN_DATA_BOOLEAN, row, col, -1, keep);
  const int64_t masked = g.Virtual("masked scores", CUDNN_DATA_FLOAT, x.Scores(), x.ScoreStrides());
  g.Pointwise("causal mask", CUDNN_POINTWISE_BINARY_SELECT, CUDNN_DATA_FLOAT, scores, kMaskValue,
              keep, masked);
  return masked;
}

// out = softmax(mask(scale·Q·Kᵀ))·V and lse = max + log Σ exp, row by row.
void BuildForward(CudnnGraph& g, const Shapes& x, GraphForm form, cudnnDataType_t io) {
  constexpr cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
  g.Tensor("q", kQ, io, x.Heads(x.hq), x.Bshd(x.hq));
  g.Tensor("k (transposed)", kK, io, x.Transposed(), x.TransposedStrides());
  g.Tensor("v", kV, io, x.Heads(x.hkv), x.Bshd(x.hkv));
  g.Tensor("out", kO, io, x.Heads(x.hq), x.Bshd(x.hq));
  g.Tensor("lse", kStats, f32, x.Rows(), x.RowStrides());
  g.Scalar("scale", kScale);
  g.Scalar("mask value", kMaskValue);

  const int64_t s = g.Virtual("q·kᵀ", f32, x.Scores(), x.ScoreStrides());
  g.Matmul("q·kᵀ", kQ, kK, s);
  const int64_t scaled = g.Virtual("scaled scores", f32, x.Scores(), x.ScoreStrides());
  g.Pointwise("scale", CUDNN_POINTWISE_MUL, f32, s, kScale, -1, scaled);
  const int64_t masked = CausalMask(g, x, form, scaled);
  const int64_t max = g.Virtual("row max", f32, x.Rows(), x.RowStrides());
  g.Reduction("row max", CUDNN_REDUCE_TENSOR_MAX, masked, max);
  const int64_t shifted = g.Virtual("scores - max", f32, x.Scores(), x.ScoreStrides());
  g.Pointwise("scores - max", CUDNN_POINTWISE_SUB, f32, masked, max, -1, shifted);
  const int64_t e = g.Virtual("exp", f32, x.Scores(), x.ScoreStrides());
  g.Pointwise("exp", CUDNN_POINTWISE_EXP, f32, shifted, -1, -1, e);
  const int64_t sum = g.Virtual("row sum", f32, x.Rows(), x.RowStrides());
  g.Reduction("row sum", CUDNN_REDUCE_TENSOR_ADD, e, sum);
  const int64_t log_sum = g.Virtual("log row sum", f32, x.Rows(), x.RowStrides());
  g.Pointwise("log row sum", CUDNN_POINTWISE_LOG, f32, sum, -1, -1, log_sum);
  g.Pointwise("lse", CUDNN_POINTWISE_ADD, f32, max, log_sum, -1, kStats);
  // The second matmul reads P in the input dtype.
  const int64_t p = g.Virtual("probabilities", io, x.Scores(), x.ScoreStrides());
  g.Pointwise("softmax", CUDNN_POINTWISE_DIV, f32, e, sum, -1, p);
  g.Matmul("p·v", p, kV, kO);
}

// A K or V gradient: out = scoresᵀ·rhs per query head, summed over each KV head's group of query
// heads. The transposed scores are a view in the input dtype (the matmul's operand).
void KvGradient(CudnnGraph& g, const Shapes& x, cudnnDataType_t io, absl::string_view name,
                int64_t scores, int64_t rhs, int64_t out) {
  const int64_t transposed =
      g.Virtual(absl::StrCat(name, ": scoresᵀ"), io, x.Scores(), x.ScoreStridesTransposed());
  g.Reshape(absl::StrCat(name, ": scoresᵀ"), scores, transposed);
  if (x.hq == x.hkv) {
    g.Matmul(name, transposed, rhs, out);
    return;
  }
  const int64_t per_head =
      g.Virtual(absl::StrCat(name, " per query head"), io, x.Heads(x.hq), x.PackedStrides());
  g.Matmul(name, transposed, rhs, per_head);
  g.Reduction(absl::StrCat(name, ": sum over the group"), CUDNN_REDUCE_TENSOR_ADD, per_head, out);
}

// Attention backward from the saved lse: P = exp(mask(scale·Q·Kᵀ) − lse), δ = Σ_d dO∘O,
// dS = scale·P∘(dO·Vᵀ − δ), dV = Pᵀ·dO, dK = dSᵀ·Q (both summed over each KV head's query heads),
// dQ = dS·K through an f32 accumulator in memory (zeroed by the caller).
void BuildBackward(CudnnGraph& g, const Shapes& x, GraphForm form, cudnnDataType_t io) {
  constexpr cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
  g.Tensor("q", kQ, io, x.Heads(x.hq), x.Bshd(x.hq));
  g.Tensor("k (transposed)", kK, io, x.Transposed(), x.TransposedStrides());
  g.Tensor("v (transposed)", kV, io, x.Transposed(), x.TransposedStrides());
  g.Tensor("out", kO, io, x.Heads(x.hq), x.Bshd(x.hq));
  g.Tensor("lse", kStats, f32, x.Rows(), x.RowStrides());
  g.Tensor("d_out", kDO, io, x.Heads(x.hq), x.Bshd(x.hq));
  g.Tensor("d_q", kDQ, io, x.Heads(x.hq), x.Bshd(x.hq));
  g.Tensor("d_k", kDK, io, x.Heads(x.hkv), x.Bshd(x.hkv));
  g.Tensor("d_v", kDV, io, x.Heads(x.hkv), x.Bshd(x.hkv));
  g.Tensor("softmax sum", kSoftmaxSum, f32, x.Rows(), x.RowStrides());
  g.Tensor("d_q accumulator", kDQAccum, f32, x.Heads(x.hq), x.PackedStrides());
  g.Scalar("scale", kScale);
  g.Scalar("mask value", kMaskValue);
  g.Scalar("one", kOne);

  // δ = Σ_d dO∘O goes to memory (a scratch tensor), as in the graph cuDNN's frontend emits.
  const int64_t product = g.Virtual("d_out·out", f32, x.Heads(x.hq), x.Bshd(x.hq));
  g.Pointwise("d_out·out", CUDNN_POINTWISE_MUL, f32, kDO, kO, -1, product);
  const int64_t row_sum = g.Virtual("Σ d_out·out", f32, x.Rows(), x.RowStrides());
  g.Reduction("Σ d_out·out", CUDNN_REDUCE_TENSOR_ADD, product, row_sum);
  // ·1 where dropout would scale δ: the frontend emits this step even without dropout, so it is
  // the form the engines are known to take.
  g.Pointwise("softmax sum", CUDNN_POINTWISE_MUL, f32, row_sum, kOne, -1, kSoftmaxSum);

  const int64_t s = g.Virtual("q·kᵀ", f32, x.Scores(), x.ScoreStrides());
  g.Matmul("q·kᵀ", kQ, kK, s);
  int64_t logits = g.Virtual("scaled scores", f32, x.Scores(), x.ScoreStrides());
  g.Pointwise("scale", CUDNN_POINTWISE_MUL, f32, s, kScale, -1, logits);
  if (form == GraphForm::kEarlier) logits = CausalMask(g, x, form, logits);
  const int64_t shifted = g.Virtual("scores - lse", f32, x.Scores(), x.ScoreStrides());
  g.Pointwise("scores - lse", CUDNN_POINTWISE_SUB, f32, logits, kStats, -1, shifted);
  const int64_t masked = form == GraphForm::kCurrent ? CausalMask(g, x, form, shifted) : shifted;
  const int64_t p = g.Virtual("probabilities", f32, x.Scores(), x.ScoreStrides());
  g.Pointwise("exp", CUDNN_POINTWISE_EXP, f32, masked, -1, -1, p);

  KvGradient(g, x, io, "d_v = pᵀ·d_out", p, kDO, kDV);

  const int64_t d_p = g.Virtual("d_out·vᵀ", f32, x.Scores(), x.ScoreStrides());
  g.Matmul("d_out·vᵀ", kDO, kV, d_p);
  const int64_t centered = g.Virtual("d_p - δ", f32, x.Scores(), x.ScoreStrides());
  g.Pointwise("d_p - δ", CUDNN_POINTWISE_SUB, f32, d_p, kSoftmaxSum, -1, centered);
  const int64_t d_s_unscaled = g.Virtual("p·(d_p - δ)", f32, x.Scores(), x.ScoreStrides());
  g.Pointwise("p·(d_p - δ)", CUDNN_POINTWISE_MUL, f32, centered, p, -1, d_s_unscaled);
  const int64_t d_s = g.Virtual("d_s", f32, x.Scores(), x.ScoreStrides());
  g.Pointwise("d_s", CUDNN_POINTWISE_MUL, f32, d_s_unscaled, kScale, -1, d_s);

  KvGradient(g, x, io, "d_k = d_sᵀ·q", d_s, kQ, kDK);

  const int64_t k = g.Virtual("k", f32, x.Heads(x.hkv), x.Bshd(x.hkv));
  g.Reshape("k", kK, k);
  g.Matmul("d_s·k", d_s, k, kDQAccum);
  g.Pointwise("d_q", CUDNN_POINTWISE_IDENTITY, f32, kDQAccum, -1, -1, kDQ);
}

void BuildGraph(CudnnGraph& g, const AttentionDims& d, GraphForm form, bool backward) {
  const Shapes x(d);
  if (backward) {
    BuildBackward(g, x, form, CUDNN_DATA_BFLOAT16);
  } else {
    BuildForward(g, x, form, CUDNN_DATA_BFLOAT16);
  }
}

// A plan and the mask value its graph form expects at execution.
struct SdpaPlan {
  CudnnPlan plan;
  float mask_value = 0.0f;
};

std::string Problem(const CudnnLibrary& lib, const AttentionDims& d, bool backward) {
  return absl::StrCat("cuDNN ", CudnnVersionString(lib.version), " SDPA ",
                      backward ? "backward" : "forward", " B", d.batch, " S", d.seq, " Hq",
                      d.q_heads, " Hkv", d.kv_heads, " D", d.head_dim);
}

// Handles (one per device) and plans, made on first use and never destroyed.
struct Registry {
  std::mutex mutex;
  std::map<int, absl::StatusOr<cudnnHandle_t>> handles;
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int, bool, int>;
  std::map<Key, absl::StatusOr<SdpaPlan>> plans;
};

Registry& GetRegistry() {
  static Registry* registry = new Registry();
  return *registry;
}

absl::StatusOr<cudnnHandle_t> HandleLocked(Registry& r, const CudnnLibrary& lib, int device) {
  auto it = r.handles.find(device);
  if (it == r.handles.end()) {
    cudnnHandle_t handle = nullptr;
    const absl::Status s = MF_CUDNN_STATUS_(lib, cudnnCreate(&handle));
    it = r.handles
             .emplace(device, s.ok() ? absl::StatusOr<cudnnHandle_t>(handle)
                                     : absl::StatusOr<cudnnHandle_t>(s))
             .first;
  }
  return it->second;
}

Registry::Key KeyOf(const AttentionDims& d, DType dtype, bool backward, int device) {
  return {d.batch,  d.seq, d.q_heads, d.kv_heads, d.head_dim, static_cast<int>(dtype),
          backward, device};
}

// The plan of a problem on `device`, which must be the calling thread's current device.
absl::StatusOr<const SdpaPlan*> PlanLocked(Registry& r, const CudnnLibrary& lib,
                                           const AttentionDims& d, DType dtype, bool backward,
                                           int device) {
  const Registry::Key key = KeyOf(d, dtype, backward, device);
  auto it = r.plans.find(key);
  if (it == r.plans.end()) {
    absl::StatusOr<SdpaPlan> plan = [&]() -> absl::StatusOr<SdpaPlan> {
      if (!CudnnAttentionSupports(d, dtype)) {
        return absl::UnimplementedError(
            absl::StrCat("the cuDNN graphs take bf16 with head dim 64 or 128, got ",
                         DTypeName(dtype), " head dim ", d.head_dim));
      }
      MF_RETURN_IF_ERROR(VersionTakes(lib.version, d, backward));
      MF_ASSIGN_OR_RETURN(cudnnHandle_t handle, HandleLocked(r, lib, device));
      absl::Status first;
      for (const GraphForm form : {GraphForm::kCurrent, GraphForm::kEarlier}) {
        CudnnGraph g(lib);
        BuildGraph(g, d, form, backward);
        absl::StatusOr<CudnnPlan> built = std::move(g).Build(handle);
        if (built.ok()) return SdpaPlan{*std::move(built), MaskValue(form, lib.version)};
        if (first.ok()) first = built.status();
      }
      return first;  // the current form's reason
    }();
    if (!plan.ok()) {
      plan = absl::Status(plan.status().code(),
                          absl::StrCat(Problem(lib, d, backward), ": ", plan.status().message()));
    }
    it = r.plans.emplace(key, std::move(plan)).first;
  }
  if (!it->second.ok()) return it->second.status();
  return &*it->second;
}

// Sets the handle's stream and runs the plan of `key` with `uids`/`pointers` and a workspace of its
// size. A failure replaces the plan by the error: the problem is not tried on cuDNN again.
absl::Status RunLocked(Registry& r, const CudnnLibrary& lib, const Registry::Key& key,
                       const SdpaPlan& sdpa, const std::vector<int64_t>& uids,
                       const std::vector<void*>& pointers, const Stream& stream) {
  const CudnnPlan& plan = sdpa.plan;
  absl::Status status = [&]() -> absl::Status {
    MF_ASSIGN_OR_RETURN(cudnnHandle_t handle, HandleLocked(r, lib, stream.device().index));
    MF_CUDNN_RETURN_IF_ERROR(lib,
                             cudnnSetStream(handle, static_cast<cudaStream_t>(stream.native())));
    Tensor workspace;
    if (plan.workspace_bytes > 0) workspace = Scratch({plan.workspace_bytes}, DType::kU8, stream);
    return CudnnExecute(lib, handle, plan, uids, pointers,
                        plan.workspace_bytes > 0 ? workspace.raw_data() : nullptr);
  }();
  if (!status.ok()) {
    status = absl::Status(status.code(), absl::StrCat("cuDNN ", CudnnVersionString(lib.version),
                                                      " SDPA execution: ", status.message()));
    r.plans.insert_or_assign(key, status);  // `sdpa` dies here; it is not used after
  }
  return status;
}

}  // namespace

bool CudnnAttentionSupports(const AttentionDims& d, DType dtype) {
  return dtype == DType::kBF16 && (d.head_dim == 64 || d.head_dim == 128) && d.seq >= 2 &&
         d.batch > 0 && d.kv_heads > 0 && d.q_heads % d.kv_heads == 0;
}

absl::Status CudnnAttentionPrepare(const AttentionDims& d, DType dtype, bool backward, int device) {
  MF_ASSIGN_OR_RETURN(const CudnnLibrary* lib, LoadCudnn());
  // Handles and plans belong to the current device: switch to `device` for the build.
  MF_ASSIGN_OR_RETURN(const int current, moefold::cuda::CurrentDevice());
  if (current != device) MF_RETURN_IF_ERROR(moefold::cuda::SetDevice(device));
  absl::Status status;
  {
    Registry& r = GetRegistry();
    std::lock_guard<std::mutex> lock(r.mutex);
    status = PlanLocked(r, *lib, d, dtype, backward, device).status();
  }
  if (current != device) MF_RETURN_IF_ERROR(moefold::cuda::SetDevice(current));
  return status;
}

absl::Status CudnnAttentionForward(const AttentionDims& d, const Tensor& q, const Tensor& k,
                                   const Tensor& v, float scale, Tensor* out, Tensor* lse,
                                   const Stream& stream) {
  MF_ASSIGN_OR_RETURN(const CudnnLibrary* lib, LoadCudnn());
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mutex);
  const int device = stream.device().index;
  MF_ASSIGN_OR_RETURN(const SdpaPlan* plan, PlanLocked(r, *lib, d, q.dtype(), false, device));
  float scale_value = scale, mask_value = plan->mask_value;
  return RunLocked(r, *lib, KeyOf(d, q.dtype(), false, device), *plan,
                   {kQ, kK, kV, kO, kStats, kScale, kMaskValue},
                   {q.raw_data(), k.raw_data(), v.raw_data(), out->raw_data(), lse->raw_data(),
                    &scale_value, &mask_value},
                   stream);
}

absl::Status CudnnAttentionBackward(const AttentionDims& d, const Tensor& q, const Tensor& k,
                                    const Tensor& v, const Tensor& out, const Tensor& lse,
                                    const Tensor& d_out, float scale, Tensor* d_q, Tensor* d_k,
                                    Tensor* d_v, const Stream& stream) {
  MF_ASSIGN_OR_RETURN(const CudnnLibrary* lib, LoadCudnn());
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mutex);
  const int device = stream.device().index;
  MF_ASSIGN_OR_RETURN(const SdpaPlan* plan, PlanLocked(r, *lib, d, q.dtype(), true, device));
  // The engine adds into the dQ accumulator; its frontend zeroes it before 9.6 and leaves it to
  // the engine after. Zeroing always costs one memset and holds for every version.
  Tensor softmax_sum = Scratch({d.batch * d.q_heads * d.seq}, DType::kF32, stream);
  Tensor d_q_accum = Scratch({d.batch * d.q_heads * d.seq * d.head_dim}, DType::kF32, stream);
  d_q_accum.SetZero(stream);
  float scale_value = scale, mask_value = plan->mask_value, one = 1.0f;
  return RunLocked(
      r, *lib, KeyOf(d, q.dtype(), true, device), *plan,
      {kQ, kK, kV, kO, kStats, kDO, kDQ, kDK, kDV, kScale, kMaskValue, kOne, kSoftmaxSum, kDQAccum},
      {q.raw_data(), k.raw_data(), v.raw_data(), out.raw_data(), lse.raw_data(), d_out.raw_data(),
       d_q->raw_data(), d_k->raw_data(), d_v->raw_data(), &scale_value, &mask_value, &one,
       softmax_sum.raw_data(), d_q_accum.raw_data()},
      stream);
}

absl::StatusOr<std::string> CudnnRuntimeVersion() {
  MF_ASSIGN_OR_RETURN(const CudnnLibrary* lib, LoadCudnn());
  return CudnnVersionString(lib->version);
}

absl::Status CudnnAttentionCheckGraph(const AttentionDims& d, DType dtype, bool backward) {
  MF_ASSIGN_OR_RETURN(const CudnnLibrary* lib, LoadCudnn());
  if (!CudnnAttentionSupports(d, dtype)) {
    return absl::UnimplementedError("not a problem the cuDNN graphs take");
  }
  for (const GraphForm form : {GraphForm::kCurrent, GraphForm::kEarlier}) {
    CudnnGraph g(*lib);
    BuildGraph(g, d, form, backward);
    MF_RETURN_IF_ERROR(g.status());
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int64_t>> CudnnAttentionSupportedConfigs(
    const AttentionDims& d, DType dtype, bool backward, const std::string& device_json) {
  MF_ASSIGN_OR_RETURN(const CudnnLibrary* lib, LoadCudnn());
  if (!CudnnAttentionSupports(d, dtype)) {
    return absl::UnimplementedError("not a problem the cuDNN graphs take");
  }
  std::vector<int64_t> counts;
  for (const GraphForm form : {GraphForm::kCurrent, GraphForm::kEarlier}) {
    CudnnGraph g(*lib);
    BuildGraph(g, d, form, backward);
    MF_ASSIGN_OR_RETURN(const int64_t n, std::move(g).SupportedConfigsFor(device_json));
    counts.push_back(n);
  }
  return counts;
}

}  // namespace moefold::ops::cuda
