// A small builder over cuDNN's backend graph API (internal to ops/cuda): 4-D tensors and operations
// are created and finalised as they are added; the first failure sticks (later calls do nothing)
// and comes back from status() and Build() naming the step. Build() turns the operation graph into
// an execution plan (engine heuristics, mode A; the first engine config that finalises); the plan
// keeps every descriptor it was made from alive. Descriptors need no GPU until Build().
//
//   CudnnGraph g(lib);
//   const int64_t s = g.Virtual("s", CUDNN_DATA_FLOAT, dims, strides);
//   g.Matmul("q·kᵀ", kQ, kK, s);
//   MF_ASSIGN_OR_RETURN(CudnnPlan plan, std::move(g).Build(handle));
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "ops/cuda/cudnn_library.h"

namespace moefold::ops::cuda {

// Owns one cudnnBackendDescriptor_t (move-only; destroyed with the object).
class CudnnDescriptor {
 public:
  CudnnDescriptor() = default;
  static absl::StatusOr<CudnnDescriptor> Create(const CudnnLibrary& lib,
                                                cudnnBackendDescriptorType_t type);
  CudnnDescriptor(CudnnDescriptor&& other) noexcept;
  CudnnDescriptor& operator=(CudnnDescriptor&& other) noexcept;
  CudnnDescriptor(const CudnnDescriptor&) = delete;
  CudnnDescriptor& operator=(const CudnnDescriptor&) = delete;
  ~CudnnDescriptor();

  cudnnBackendDescriptor_t get() const { return desc_; }

 private:
  const CudnnLibrary* lib_ = nullptr;
  cudnnBackendDescriptor_t desc_ = nullptr;
};

// An execution plan and everything it references.
struct CudnnPlan {
  std::vector<CudnnDescriptor> parts;  // tensors, operations, graph, engine configs
  CudnnDescriptor plan;
  int64_t workspace_bytes = 0;
};

using CudnnDims = std::array<int64_t, 4>;

class CudnnGraph {
 public:
  explicit CudnnGraph(const CudnnLibrary& lib) : lib_(&lib) {}

  // A tensor in memory, bound by `uid` in the variant pack. Every tensor claims 16-byte
  // alignment: callers check their pointers. Returns `uid`.
  int64_t Tensor(absl::string_view name, int64_t uid, cudnnDataType_t type, const CudnnDims& dims,
                 const CudnnDims& strides);
  // An f32 scalar passed by value: the variant pack points at a host float. Returns `uid`.
  int64_t Scalar(absl::string_view name, int64_t uid);
  // An intermediate that never reaches memory; returns its fresh uid (from 1 << 20 up).
  int64_t Virtual(absl::string_view name, cudnnDataType_t type, const CudnnDims& dims,
                  const CudnnDims& strides);

  // c = a·b over the last two dimensions, batched over the first two (a head dimension of b may
  // be a divisor of a's: grouped heads), f32 accumulation.
  void Matmul(absl::string_view name, int64_t a, int64_t b, int64_t c);
  // y = mode(x), mode(x, b) or mode(x, b, t) elementwise with broadcasting, computed in
  // `compute`; b or t of -1 = absent.
  void Pointwise(absl::string_view name, cudnnPointwiseMode_t mode, cudnnDataType_t compute,
                 int64_t x, int64_t b, int64_t t, int64_t y);
  // y = the index of each element of x along `axis` (GEN_INDEX), computed in `compute`.
  void GenIndex(absl::string_view name, int64_t axis, cudnnDataType_t compute, int64_t x,
                int64_t y);
  // y = op over the dimensions where y has extent 1 (or a divisor: grouped heads), f32.
  void Reduction(absl::string_view name, cudnnReduceTensorOp_t op, int64_t x, int64_t y);
  // y = x seen with y's dimensions and strides (no data movement).
  void Reshape(absl::string_view name, int64_t x, int64_t y);

  const absl::Status& status() const { return status_; }

  // The operation graph on `handle`, its engine configs from the heuristics and the plan of the
  // first config that finalises. Any failure (including an earlier sticky one) is returned with
  // the step and cuDNN's own message.
  absl::StatusOr<CudnnPlan> Build(cudnnHandle_t handle) &&;
  // Without a GPU: how many engine configs the heuristics offer, and the engines' support checks
  // pass, for the device `device_json` describes (the JSON form of a DEVICEPROP descriptor; cuDNN
  // >= 9.11). The checks need libcuda (the driver, or the toolkit's stub where there is none).
  // Tests use it to learn whether cuDNN takes a graph on a GPU they lack.
  absl::StatusOr<int64_t> SupportedConfigsFor(const std::string& device_json) &&;

 private:
  // Records `s` (with `what` in front) as the sticky failure; true when s is OK.
  bool Ok(const absl::Status& s, absl::string_view what);
  absl::Status Set(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name,
                   cudnnBackendAttributeType_t type, int64_t count, const void* values) const;
  absl::Status MakeTensor(int64_t uid, cudnnDataType_t type, const CudnnDims& dims,
                          const CudnnDims& strides, bool is_virtual, bool by_value);
  // The descriptor of tensor `uid`, or null (recorded as a failure) when none was added.
  cudnnBackendDescriptor_t TensorDesc(int64_t uid, absl::string_view op);
  void AddOperation(const std::string& what, absl::StatusOr<CudnnDescriptor> op);
  struct Candidates;
  // The operation graph on `handle` or for the (finalised) device properties `device` (exactly one
  // is set), and the engine configs of its heuristics that pass the engines' support checks.
  absl::StatusOr<Candidates> Heuristics(cudnnHandle_t handle, CudnnDescriptor device);
  // Pointwise and GenIndex; `axis` < 0: none.
  void AddPointwise(absl::string_view name, cudnnPointwiseMode_t mode, cudnnDataType_t compute,
                    int64_t x, int64_t b, int64_t t, int64_t y, int64_t axis);

  const CudnnLibrary* lib_;
  absl::Status status_;
  std::map<int64_t, CudnnDescriptor> tensors_;  // by uid
  std::vector<CudnnDescriptor> parts_;          // operator descriptors the operations refer to
  std::vector<CudnnDescriptor> operations_;     // in order of addition (topological)
  int64_t next_virtual_uid_ = int64_t{1} << 20;
};

// Runs `plan` on the stream of `handle` (set by the caller) with `pointers[i]` bound to
// `uids[i]` (device memory, or a host float for a scalar) and `workspace` (at least
// plan.workspace_bytes of device memory; may be null when that is 0).
absl::Status CudnnExecute(const CudnnLibrary& lib, cudnnHandle_t handle, const CudnnPlan& plan,
                          const std::vector<int64_t>& uids, const std::vector<void*>& pointers,
                          void* workspace);

}  // namespace moefold::ops::cuda
