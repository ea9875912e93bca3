// Parameter bookkeeping and layout-independent initialisation.
#include "core/parameter.h"

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/philox.h"

namespace moefold {

absl::string_view GradReductionName(GradReduction reduction) {
  switch (reduction) {
    case GradReduction::kDenseDataCp: return "dp-cp";
    case GradReduction::kReplicatedDataCp: return "dp-cp (tp-replicated)";
    case GradReduction::kDenseDataCpTp: return "dp-cp+tp";
    case GradReduction::kExpertData: return "edp";
    case GradReduction::kTiedCopy: return "dp-cp (tied copy)";
  }
  return "?";
}

std::string ExpertTensorName(absl::string_view stacked, int64_t expert) {
  const absl::string_view marker = ".experts.";
  const size_t at = stacked.find(marker);
  MF_CHECK(at != absl::string_view::npos) << stacked << " is not an expert tensor";
  return absl::StrCat(stacked.substr(0, at + marker.size()), expert, ".",
                      stacked.substr(at + marker.size()));
}

std::string Parameter::ExpertName(int64_t expert) const { return ExpertTensorName(name, expert); }

std::pair<int64_t, int64_t> ShardRange(int64_t n, int rank, int size) {
  MF_CHECK(size >= 1 && rank >= 0 && rank < size) << "shard " << rank << " of " << size;
  const int64_t chunk = (n + size - 1) / size;
  const int64_t begin = std::min(n, rank * chunk);
  return {begin, std::min(n, begin + chunk)};
}

namespace {

// A contiguous run of normal draws: out[i] = std · draw (first + i) of Philox(seed, subsequence).
struct NormalRun {
  uint64_t seed, subsequence;
  int64_t first;  // global element index of out[0]
  int64_t count;
  float std;
  float* out;
};

// The runs of rows [begin, end) of dimension `dim` of a tensor of `global` shape whose element i is
// draw i of Philox(seed, subsequence) (dim -1: the whole tensor), written contiguously to `out`.
void AppendNormalSlice(uint64_t seed, uint64_t subsequence, const Shape& global, int dim,
                       int64_t begin, int64_t end, float std, float* out,
                       std::vector<NormalRun>* runs) {
  int64_t outer = 1, inner = 1, rows = 1;
  if (dim >= 0) {
    for (int i = 0; i < dim; ++i) outer *= global[i];
    for (size_t i = dim + 1; i < global.size(); ++i) inner *= global[i];
    rows = global[dim];
  } else {
    inner = NumElements(global);
    begin = 0;
    end = 1;
  }
  const int64_t run = (end - begin) * inner;
  for (int64_t o = 0; o < outer; ++o) {
    runs->push_back({seed, subsequence, (o * rows + begin) * inner, run, std, out});
    out += run;
  }
}

// Fills every run, cut into pieces that threads take in turn. Each piece starts its stream at its
// own offset (two outputs per draw), so the values do not depend on the cutting or the threads.
void FillNormalRuns(const std::vector<NormalRun>& runs) {
  constexpr int64_t kPiece = 1 << 20;
  std::vector<NormalRun> pieces;
  for (const NormalRun& r : runs) {
    for (int64_t at = 0; at < r.count; at += kPiece) {
      pieces.push_back({r.seed, r.subsequence, r.first + at, std::min(kPiece, r.count - at), r.std,
                        r.out + at});
    }
  }
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < pieces.size(); i = next++) {
      const NormalRun& p = pieces[i];
      PhiloxStream rng(p.seed, p.subsequence, 2 * static_cast<uint64_t>(p.first));
      for (int64_t j = 0; j < p.count; ++j) p.out[j] = p.std * rng.Normal();
    }
  };
  const size_t threads = std::min<size_t>(
      pieces.size(), std::max(1u, std::min(32u, std::thread::hardware_concurrency())));
  std::vector<std::thread> pool;
  for (size_t t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
}

}  // namespace

uint64_t HashName(absl::string_view name) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : name) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

Parameter* ParameterSet::Add(std::string name, const Shape& shape, GradReduction reduction,
                             float init_std, bool weight_decay, float init_value,
                             const TpSplit& split, const ExpertSplit& experts) {
  MF_CHECK(Find(name) == nullptr) << "duplicate parameter " << name;
  auto p = std::make_unique<Parameter>();
  p->name = std::move(name);
  p->sharding.global_shape = shape;
  Shape local = shape;
  if (split.dim >= 0) {
    MF_CHECK_LT(split.dim, static_cast<int>(shape.size())) << p->name;
    const auto [begin, end] = ShardRange(shape[split.dim], split.rank, split.size);
    local[split.dim] = end - begin;
    p->sharding.tp_dim = split.dim;
    p->sharding.tp_rank = split.rank;
    p->sharding.tp_size = split.size;
    p->sharding.tp_begin = begin;
  }
  if (experts.count >= 0) {
    MF_CHECK(split.dim != 0 && experts.first >= 0 && experts.first + experts.count <= shape[0])
        << p->name << ": experts [" << experts.first << ", " << experts.first + experts.count
        << ") of " << shape[0];
    local[0] = experts.count;
    p->sharding.expert_dim = 0;
    p->sharding.expert_offset = experts.first;
  }
  p->value = Tensor::Zeros(local, DType::kF32);
  p->grad = Tensor::Zeros(local, DType::kF32);
  p->compute = p->value;
  p->reduction = reduction;
  p->init_std = init_std;
  p->init_value = init_value;
  p->weight_decay = weight_decay;
  params_.push_back(std::move(p));
  return params_.back().get();
}

void ParameterSet::Initialize(uint64_t seed) {
  std::vector<NormalRun> runs;
  for (auto& p : params_) {
    float* v = p->value.data<float>();
    if (p->init_std == 0.0f) {
      p->value.Fill(p->init_value);
      continue;
    }
    const Sharding& sh = p->sharding;
    const int64_t end = sh.tp_dim >= 0 ? sh.tp_begin + p->value.dim(sh.tp_dim) : 0;
    // Stacked expert tensors draw each expert from its global name, so EP sharding keeps values.
    if (sh.expert_dim == 0) {
      const Shape per_expert_shape(sh.global_shape.begin() + 1, sh.global_shape.end());
      MF_CHECK(sh.tp_dim != 0) << p->name << ": the expert dimension cannot be TP-split";
      const int64_t per_expert = p->value.numel() / p->value.dim(0);
      for (int64_t e = 0; e < p->value.dim(0); ++e) {
        AppendNormalSlice(seed, HashName(p->ExpertName(sh.expert_offset + e)), per_expert_shape,
                          sh.tp_dim - 1, sh.tp_begin, end, p->init_std, v + e * per_expert, &runs);
      }
      continue;
    }
    AppendNormalSlice(seed, HashName(p->name), sh.global_shape, sh.tp_dim, sh.tp_begin, end,
                      p->init_std, v, &runs);
  }
  FillNormalRuns(runs);
}

void ParameterSet::ZeroGrads(const Stream& stream) {
  if (!flat_.empty()) {
    for (FlatBuffer& b : flat_) b.grads.SetZero(stream);
    return;
  }
  for (auto& p : params_) p->grad.SetZero(stream);
}

void ParameterSet::RefreshCompute(const Stream& stream) {
  for (FlatBuffer& b : flat_) {
    if (b.compute.dtype() != DType::kF32) b.compute.ConvertFrom(b.values, stream);
  }
}

int64_t ParameterSet::NumElements() const {
  int64_t n = 0;
  for (const auto& p : params_) n += p->value.numel();
  return n;
}

std::vector<FlatBuffer>& ParameterSet::Flatten(int64_t align, int64_t segment_align,
                                               const Device& device, DType compute_dtype) {
  MF_CHECK(flat_.empty()) << "parameters are already flattened";
  MF_CHECK_GE(align, 1);
  MF_CHECK_GE(segment_align, 1);
  MF_CHECK(compute_dtype == DType::kF32 || compute_dtype == DType::kBF16)
      << "compute dtype " << DTypeName(compute_dtype) << " (f32 or bf16)";
  for (GradReduction reduction : kAllGradReductions) {
    FlatBuffer buffer;
    buffer.reduction = reduction;
    for (auto& p : params_) {
      if (p->reduction != reduction) continue;
      const int64_t offset = (buffer.used + segment_align - 1) / segment_align * segment_align;
      buffer.segments.push_back({p.get(), offset, p->value.numel()});
      buffer.used = offset + p->value.numel();
    }
    if (buffer.segments.empty()) continue;
    const int64_t padded = (buffer.used + align - 1) / align * align;
    buffer.values = Tensor::Zeros({padded}, DType::kF32, device);
    buffer.grads = Tensor::Zeros({padded}, DType::kF32, device);
    buffer.compute = compute_dtype == DType::kF32 ? buffer.values
                                                  : Tensor::Zeros({padded}, compute_dtype, device);
    for (const FlatSegment& seg : buffer.segments) {
      Parameter* p = seg.param;
      const Shape shape = p->value.shape();
      auto view = [&](const Tensor& flat) {
        return flat.Slice(seg.offset, seg.offset + seg.numel).Reshape(shape);
      };
      Tensor value = view(buffer.values), grad = view(buffer.grads);
      value.CopyFrom(p->value);
      grad.CopyFrom(p->grad);
      p->value = value;
      p->grad = grad;
      p->compute = view(buffer.compute);
    }
    flat_.push_back(std::move(buffer));
  }
  RefreshCompute(DefaultStream(device));
  return flat_;
}

Parameter* ParameterSet::Find(absl::string_view name) const {
  for (const auto& p : params_) {
    if (p->name == name) return p.get();
  }
  return nullptr;
}

}  // namespace moefold
