// The activation store: per-kind policies, the swap's host copies on a copy stream, and the
// prefetch that brings a layer's rows back one layer ahead of its backward.
#include "core/model/activation_store.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/cuda_runtime.h"

namespace moefold::model {
namespace {

constexpr const char* kKindNames[kNumSavedKinds] = {
    "layer_input",  "norm_output",  "norm_stats",    "attention_qkv",
    "attention_output", "attention_lse", "residual", "swiglu_input",
    "swiglu_output", "router",      "moe_dispatched", "moe_combined"};

int64_t RowElements(const Tensor& t, int64_t rows) { return rows == 0 ? 0 : t.numel() / rows; }

// Whether b's bytes lie inside a's (b is a view of a).
bool Inside(const Tensor& b, const Tensor& a) {
  if (!a.defined() || !b.defined() || a.nbytes() == 0 || b.nbytes() == 0) return false;
  const auto* pa = static_cast<const char*>(a.raw_data());
  const auto* pb = static_cast<const char*>(b.raw_data());
  return pb >= pa && pb + b.nbytes() <= pa + a.nbytes();
}

}  // namespace

HostBuffer::HostBuffer(size_t bytes, Allocator& allocator)
    : allocator_(&allocator), data_(allocator.Allocate(bytes)), bytes_(bytes) {}

HostBuffer::~HostBuffer() {
  if (data_ != nullptr) allocator_->FreeAfter(data_, bytes_, streams_);
}

void HostBuffer::RecordStream(const Stream& stream) {
  if (stream.native() != nullptr) streams_.push_back(stream.native());
}

absl::Status CopyBytes(void* dst, const void* src, size_t bytes, const Stream& stream) {
  if (bytes == 0) return absl::OkStatus();
  if (stream.device().is_cpu()) {
    std::memcpy(dst, src, bytes);
    return absl::OkStatus();
  }
  return cuda::Memcpy(dst, src, bytes, stream.native(), /*synchronous=*/false);
}

const char* SavedKindName(SavedKind kind) { return kKindNames[static_cast<int>(kind)]; }

absl::StatusOr<SavedKind> ParseSavedKind(absl::string_view name) {
  for (int i = 0; i < kNumSavedKinds; ++i) {
    if (name == kKindNames[i]) return static_cast<SavedKind>(i);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown saved tensor kind \"", name, "\" (known: ",
                   absl::StrJoin(std::begin(kKindNames), std::end(kKindNames), ", "), ")"));
}

const char* SavePolicyName(SavePolicy policy) {
  switch (policy) {
    case SavePolicy::kKeep: return "keep";
    case SavePolicy::kRecompute: return "recompute";
    case SavePolicy::kSwap: return "swap";
  }
  return "?";
}

absl::StatusOr<SavePolicy> ParseSavePolicy(absl::string_view name) {
  for (SavePolicy p : {SavePolicy::kKeep, SavePolicy::kRecompute, SavePolicy::kSwap}) {
    if (name == SavePolicyName(p)) return p;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown save policy \"", name, "\" (keep, recompute or swap)"));
}

ActivationPolicy ActivationPolicy::Keep() { return {}; }

ActivationPolicy ActivationPolicy::Selective() {
  ActivationPolicy p;
  for (SavedKind k : {SavedKind::kNormOutput, SavedKind::kAttentionQkv, SavedKind::kSwiGluInput,
                      SavedKind::kSwiGluOutput, SavedKind::kMoeDispatched}) {
    p.kinds[static_cast<int>(k)] = SavePolicy::kRecompute;
  }
  return p;
}

ActivationPolicy ActivationPolicy::Full() {
  ActivationPolicy p;
  p.kinds.fill(SavePolicy::kRecompute);
  p.kinds[static_cast<int>(SavedKind::kLayerInput)] = SavePolicy::kKeep;
  return p;
}

ActivationPolicy ActivationPolicy::Swap(float alpha) {
  ActivationPolicy p;
  p.kinds.fill(SavePolicy::kSwap);
  p.kinds[static_cast<int>(SavedKind::kLayerInput)] = SavePolicy::kKeep;
  p.kinds[static_cast<int>(SavedKind::kNormStats)] = SavePolicy::kKeep;
  p.swap_fraction = alpha;
  return p;
}

bool ActivationPolicy::AppliesTo(int layer) const {
  return layers.empty() || std::find(layers.begin(), layers.end(), layer) != layers.end();
}

SavePolicy ActivationPolicy::For(int layer, SavedKind kind) const {
  return AppliesTo(layer) ? kinds[static_cast<int>(kind)] : SavePolicy::kKeep;
}

bool ActivationPolicy::IsKeep() const {
  return std::all_of(kinds.begin(), kinds.end(), [](SavePolicy p) { return p == SavePolicy::kKeep; });
}

bool ActivationPolicy::AnySwap() const {
  return std::any_of(kinds.begin(), kinds.end(), [](SavePolicy p) { return p == SavePolicy::kSwap; });
}

int64_t TokenRows(const Tensor& t) {
  if (t.rank() == 0) return 1;
  return t.rank() == 4 ? t.dim(0) * t.dim(1) : t.dim(0);
}

ActivationStore::ActivationStore(ActivationPolicy policy) : policy_(std::move(policy)) {}

CpuAllocator& ActivationStore::CpuHostArena() {
  static CpuAllocator* arena = new CpuAllocator();  // never destroyed: tensors may outlive main's
  return *arena;
}

Allocator& ActivationStore::HostArena(const Device& device) {
  return device.is_cpu() ? static_cast<Allocator&>(CpuHostArena()) : PinnedMemory();
}

absl::Status ActivationStore::EnsureCopyStream(const Device& device) {
  if (copy_stream_.has_value() && copy_stream_->device() == device) return absl::OkStatus();
  MF_ASSIGN_OR_RETURN(Stream stream, Stream::Create(device));
  copy_stream_ = stream;
  return absl::OkStatus();
}

absl::Status ActivationStore::Release(const StepContext& ctx, int layer, bool last_resident,
                                      std::span<const SavedRef> refs, SwapStash* stash) {
  stash->entries.clear();
  stash->copied.reset();
  const int n = static_cast<int>(refs.size());
  std::vector<SavePolicy> policy(n, SavePolicy::kKeep);
  std::vector<bool> view(n, false);
  bool swaps = false;
  for (int i = 0; i < n; ++i) {
    const Tensor& t = *refs[i].tensor;
    if (!t.defined()) continue;
    int base = -1;
    for (int j = 0; j < i && base < 0; ++j) {
      if (Inside(t, *refs[j].tensor)) base = j;
    }
    if (base >= 0) {  // a view follows its base and is never copied itself
      policy[i] = policy[base];
      view[i] = true;
      continue;
    }
    SavePolicy p = policy_.For(layer, refs[i].kind);
    if (p == SavePolicy::kSwap && last_resident) p = SavePolicy::kKeep;
    if (p == SavePolicy::kRecompute && !refs[i].recomputable) p = SavePolicy::kKeep;
    if (t.nbytes() == 0) p = SavePolicy::kKeep;  // nothing to free (e.g. no rows for an expert)
    policy[i] = p;
    swaps |= p == SavePolicy::kSwap;
  }
  if (swaps) {
    // The copies start once the compute stream has produced the tensors.
    MF_RETURN_IF_ERROR(EnsureCopyStream(ctx.device()));
    MF_ASSIGN_OR_RETURN(Event produced, Event::Create(ctx.device()));
    MF_RETURN_IF_ERROR(produced.Record(ctx.s()));
    MF_RETURN_IF_ERROR(copy_stream_->Wait(produced));
    for (int i = 0; i < n; ++i) {
      const Tensor& t = *refs[i].tensor;
      if (policy[i] != SavePolicy::kSwap || view[i]) continue;
      SwapStash::Entry e;
      e.index = i;
      e.total_rows = TokenRows(t);
      // Rows that cannot be recomputed without an exchange all go to the host; a tensor recomputed
      // only whole goes all or (α = 0, recompute everything) not at all; the rest α of its rows.
      const double alpha = policy_.swap_fraction;
      if (!refs[i].recomputable) {
        e.rows = e.total_rows;
      } else if (!refs[i].row_split) {
        e.rows = alpha > 0 ? e.total_rows : 0;
      } else {
        e.rows = static_cast<int64_t>(std::floor(alpha * static_cast<double>(e.total_rows)));
      }
      e.shape = t.shape();
      e.dtype = t.dtype();
      const int64_t width = RowElements(t, e.total_rows);
      e.width = width;
      if (e.rows > 0) {
        const size_t bytes = static_cast<size_t>(e.rows * width) * DTypeSize(t.dtype());
        e.host = std::make_shared<HostBuffer>(bytes, HostArena(ctx.device()));
        MF_RETURN_IF_ERROR(CopyBytes(e.host->data(), t.raw_data(), bytes, *copy_stream_));
        t.RecordStream(*copy_stream_);  // the device block is reused only after the copy read it
      }
      stash->entries.push_back(std::move(e));
    }
    auto copied = std::make_shared<Event>(*Event::Create(ctx.device()));
    MF_RETURN_IF_ERROR(copied->Record(*copy_stream_));
    stash->copied = std::move(copied);
  }
  for (int i = 0; i < n; ++i) {
    if (policy[i] != SavePolicy::kKeep) *refs[i].tensor = Tensor();
  }
  return absl::OkStatus();
}

absl::StatusOr<FetchedRows> ActivationStore::Prefetch(const StepContext& ctx,
                                                      const SwapStash& stash) {
  FetchedRows fetched;
  if (stash.entries.empty()) return fetched;
  MF_RETURN_IF_ERROR(EnsureCopyStream(ctx.device()));
  // New blocks of the caching allocator may still be read by the compute stream's earlier work,
  // and the host rows must have arrived: the copies wait for both.
  MF_ASSIGN_OR_RETURN(Event now, Event::Create(ctx.device()));
  MF_RETURN_IF_ERROR(now.Record(ctx.s()));
  MF_RETURN_IF_ERROR(copy_stream_->Wait(now));
  if (stash.copied) MF_RETURN_IF_ERROR(copy_stream_->Wait(*stash.copied));
  for (const SwapStash::Entry& e : stash.entries) {
    if (e.rows == 0) continue;
    const bool whole = e.rows == e.total_rows;
    Tensor dev = Tensor::Empty(whole ? e.shape : Shape{e.rows, e.width}, e.dtype, ctx.device());
    MF_RETURN_IF_ERROR(CopyBytes(dev.raw_data(), e.host->data(), e.host->bytes(), *copy_stream_));
    dev.RecordStream(*copy_stream_);
    e.host->RecordStream(*copy_stream_);  // the pinned block returns to its pool after the copy
    fetched.tensors.emplace_back(e.index, std::move(dev));
  }
  auto arrived = std::make_shared<Event>(*Event::Create(ctx.device()));
  MF_RETURN_IF_ERROR(arrived->Record(*copy_stream_));
  fetched.arrived = std::move(arrived);
  return fetched;
}

absl::Status ActivationStore::Place(const StepContext& ctx, std::span<const SavedRef> refs,
                                    const FetchedRows& fetched, const SwapStash& stash,
                                    RecomputeRows* partial) {
  if (fetched.arrived) MF_RETURN_IF_ERROR(ctx.s().Wait(*fetched.arrived));
  for (const auto& [index, dev] : fetched.tensors) {
    const auto e = std::find_if(stash.entries.begin(), stash.entries.end(),
                                [index = index](const auto& x) { return x.index == index; });
    MF_CHECK(e != stash.entries.end());
    if (e->rows == e->total_rows) {
      *refs[index].tensor = dev;
      continue;
    }
    // The fetched rows first, the rest for the recompute (the fetched block returns to the
    // caching allocator once the caller drops `fetched`).
    Tensor full = Tensor::Empty(e->shape, e->dtype, ctx.device());
    full.Reshape({e->total_rows, e->width}).Slice(0, e->rows).CopyFromAsync(dev, ctx.s());
    dev.RecordStream(ctx.s());  // its block is reused only after this copy read it
    *refs[index].tensor = full;
    partial->MarkPartial(refs[index].tensor, e->rows);
  }
  return absl::OkStatus();
}

}  // namespace moefold::model
