// CPU reference of the grouped expert GEMM: one LinearForward/Backward per expert slice.
#include "ops/grouped_gemm.h"

#include <atomic>

#include "absl/strings/str_cat.h"
#include "ops/cpu/bf16_emulation.h"
#include "ops/cpu/check.h"
#include "ops/gemm.h"

namespace moefold::ops {
namespace {

std::atomic<GroupedGemmBackend>& Backend() {
  static std::atomic<GroupedGemmBackend> backend{GroupedGemmBackend::kAuto};
  return backend;
}

void CheckGroupedShapes(const Tensor& x, const Tensor& w, const Tensor& counts) {
  MF_CHECK_EQ(x.rank(), 2) << x.DebugString();
  MF_CHECK_EQ(w.rank(), 3) << w.DebugString();
  MF_CHECK_EQ(counts.numel(), w.dim(0)) << "one count per expert";
  MF_CHECK_EQ(x.dim(1), w.dim(2)) << x.DebugString() << " vs " << w.DebugString();
  int64_t total = 0;
  for (int64_t e = 0; e < counts.numel(); ++e) total += counts.data<int32_t>()[e];
  MF_CHECK_EQ(total, x.dim(0)) << "expert counts must cover every row";
}

Tensor ExpertWeight(const Tensor& w, int64_t e) {
  return w.Slice(e, e + 1).Reshape({w.dim(1), w.dim(2)});
}

}  // namespace

void SetGroupedGemmBackend(GroupedGemmBackend backend) { Backend().store(backend); }
GroupedGemmBackend GetGroupedGemmBackend() { return Backend().load(); }

const char* GroupedGemmBackendName(GroupedGemmBackend backend) {
  switch (backend) {
    case GroupedGemmBackend::kAuto:
      return "auto";
    case GroupedGemmBackend::kLoop:
      return "loop";
    case GroupedGemmBackend::kCublasGrouped:
      return "cublas_grouped";
    case GroupedGemmBackend::kBatched:
      return "batched";
  }
  return "?";
}

absl::StatusOr<GroupedGemmBackend> ParseGroupedGemmBackend(absl::string_view name) {
  for (GroupedGemmBackend b : {GroupedGemmBackend::kAuto, GroupedGemmBackend::kLoop,
                               GroupedGemmBackend::kCublasGrouped, GroupedGemmBackend::kBatched}) {
    if (name == GroupedGemmBackendName(b)) return b;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown grouped GEMM backend \"", name,
                                                 "\" (auto, loop, cublas_grouped or batched)"));
}

void GroupedLinearForward(const Tensor& x, const Tensor& w, const Tensor& counts, Tensor* y,
                          Stream& stream) {
  MF_RETURN_IF_GPU(x, "GroupedLinearForward", cuda::GroupedLinearForward(x, w, counts, y, stream));
  CheckGroupedShapes(x, w, counts);
  // Each expert's slice goes through Gemm, which emulates bf16; the dtype rule is the GPU's.
  internal::Bf16Emulation("GroupedLinearForward").SameDType({&x, &w, y}, {"x", "w", "y"});
  MF_CHECK(y->shape() == (Shape{x.dim(0), w.dim(1)})) << y->DebugString();
  int64_t row = 0;
  for (int64_t e = 0; e < w.dim(0); ++e) {
    const int64_t n = counts.data<int32_t>()[e];
    if (n == 0) continue;
    Tensor y_e = y->Slice(row, row + n);
    LinearForward(x.Slice(row, row + n), ExpertWeight(w, e), &y_e, stream);
    row += n;
  }
}

void GroupedLinearBackward(const Tensor& x, const Tensor& w, const Tensor& counts,
                           const Tensor& d_y, Tensor* d_x, Tensor* d_w, Stream& stream) {
  MF_RETURN_IF_GPU(x, "GroupedLinearBackward",
                   cuda::GroupedLinearBackward(x, w, counts, d_y, d_x, d_w, stream));
  CheckGroupedShapes(x, w, counts);
  internal::Bf16Emulation("GroupedLinearBackward")
      .SameDType({&x, &w, &d_y, d_x}, {"x", "w", "d_y", "d_x"});
  int64_t row = 0;
  for (int64_t e = 0; e < w.dim(0); ++e) {
    const int64_t n = counts.data<int32_t>()[e];
    if (n == 0) continue;
    Tensor d_x_e = d_x ? d_x->Slice(row, row + n) : Tensor();
    Tensor d_w_e = d_w ? ExpertWeight(*d_w, e) : Tensor();
    LinearBackward(x.Slice(row, row + n), ExpertWeight(w, e), d_y.Slice(row, row + n),
                   d_x ? &d_x_e : nullptr, d_w ? &d_w_e : nullptr, stream);
    row += n;
  }
}

}  // namespace moefold::ops
