// The cuDNN backend graph builder (see cudnn_graph.h). Every descriptor is finalised where it is
// made, so a wrong attribute fails at the step that set it, not later inside the heuristics.
#include "ops/cuda/cudnn_graph.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace moefold::ops::cuda {

absl::StatusOr<CudnnDescriptor> CudnnDescriptor::Create(const CudnnLibrary& lib,
                                                        cudnnBackendDescriptorType_t type) {
  CudnnDescriptor d;
  MF_CUDNN_RETURN_IF_ERROR(lib, cudnnBackendCreateDescriptor(type, &d.desc_));
  d.lib_ = &lib;
  return d;
}

CudnnDescriptor::CudnnDescriptor(CudnnDescriptor&& other) noexcept
    : lib_(std::exchange(other.lib_, nullptr)), desc_(std::exchange(other.desc_, nullptr)) {}

CudnnDescriptor& CudnnDescriptor::operator=(CudnnDescriptor&& other) noexcept {
  if (this != &other) {
    if (desc_ != nullptr) lib_->cudnnBackendDestroyDescriptor(desc_);
    lib_ = std::exchange(other.lib_, nullptr);
    desc_ = std::exchange(other.desc_, nullptr);
  }
  return *this;
}

CudnnDescriptor::~CudnnDescriptor() {
  if (desc_ != nullptr) lib_->cudnnBackendDestroyDescriptor(desc_);
}

namespace {

absl::Status Annotated(const absl::Status& s, absl::string_view what) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(what, ": ", s.message()));
}

}  // namespace

bool CudnnGraph::Ok(const absl::Status& s, absl::string_view what) {
  if (s.ok()) return true;
  if (status_.ok()) status_ = Annotated(s, what);
  return false;
}

absl::Status CudnnGraph::Set(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name,
                             cudnnBackendAttributeType_t type, int64_t count,
                             const void* values) const {
  return Annotated(MF_CUDNN_STATUS_(*lib_, cudnnBackendSetAttribute(d, name, type, count, values)),
                   absl::StrCat("attribute ", static_cast<int>(name)));
}

absl::Status CudnnGraph::MakeTensor(int64_t uid, cudnnDataType_t type, const CudnnDims& dims,
                                    const CudnnDims& strides, bool is_virtual, bool by_value) {
  if (tensors_.count(uid) != 0) return absl::InternalError(absl::StrCat("uid ", uid, " reused"));
  MF_ASSIGN_OR_RETURN(CudnnDescriptor t,
                      CudnnDescriptor::Create(*lib_, CUDNN_BACKEND_TENSOR_DESCRIPTOR));
  const int64_t alignment = 16;  // the tensor-core engines need it (callers check pointers)
  MF_RETURN_IF_ERROR(Set(t.get(), CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type));
  MF_RETURN_IF_ERROR(Set(t.get(), CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims.data()));
  MF_RETURN_IF_ERROR(Set(t.get(), CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides.data()));
  MF_RETURN_IF_ERROR(Set(t.get(), CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid));
  MF_RETURN_IF_ERROR(
      Set(t.get(), CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment));
  MF_RETURN_IF_ERROR(
      Set(t.get(), CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual));
  MF_RETURN_IF_ERROR(Set(t.get(), CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &by_value));
  MF_CUDNN_RETURN_IF_ERROR(*lib_, cudnnBackendFinalize(t.get()));
  tensors_.emplace(uid, std::move(t));
  return absl::OkStatus();
}

int64_t CudnnGraph::Tensor(absl::string_view name, int64_t uid, cudnnDataType_t type,
                           const CudnnDims& dims, const CudnnDims& strides) {
  if (status_.ok()) {
    Ok(MakeTensor(uid, type, dims, strides, false, false), absl::StrCat("tensor ", name));
  }
  return uid;
}

int64_t CudnnGraph::Scalar(absl::string_view name, int64_t uid) {
  if (status_.ok()) {
    Ok(MakeTensor(uid, CUDNN_DATA_FLOAT, {1, 1, 1, 1}, {1, 1, 1, 1}, false, true),
       absl::StrCat("scalar ", name));
  }
  return uid;
}

int64_t CudnnGraph::Virtual(absl::string_view name, cudnnDataType_t type, const CudnnDims& dims,
                            const CudnnDims& strides) {
  const int64_t uid = next_virtual_uid_++;
  if (status_.ok()) {
    Ok(MakeTensor(uid, type, dims, strides, true, false), absl::StrCat("virtual tensor ", name));
  }
  return uid;
}

cudnnBackendDescriptor_t CudnnGraph::TensorDesc(int64_t uid, absl::string_view op) {
  const auto it = tensors_.find(uid);
  if (it != tensors_.end()) return it->second.get();
  Ok(absl::InternalError(absl::StrCat("no tensor with uid ", uid)), op);
  return nullptr;
}

void CudnnGraph::AddOperation(const std::string& what, absl::StatusOr<CudnnDescriptor> op) {
  if (Ok(op.status(), what)) operations_.push_back(*std::move(op));
}

void CudnnGraph::Matmul(absl::string_view name, int64_t a, int64_t b, int64_t c) {
  if (!status_.ok()) return;
  cudnnBackendDescriptor_t da = TensorDesc(a, name), db = TensorDesc(b, name),
                           dc = TensorDesc(c, name);
  if (!status_.ok()) return;
  auto build = [&]() -> absl::StatusOr<CudnnDescriptor> {
    MF_ASSIGN_OR_RETURN(CudnnDescriptor desc,
                        CudnnDescriptor::Create(*lib_, CUDNN_BACKEND_MATMUL_DESCRIPTOR));
    const cudnnDataType_t compute = CUDNN_DATA_FLOAT;
    MF_RETURN_IF_ERROR(
        Set(desc.get(), CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &compute));
    MF_CUDNN_RETURN_IF_ERROR(*lib_, cudnnBackendFinalize(desc.get()));
    MF_ASSIGN_OR_RETURN(CudnnDescriptor op,
                        CudnnDescriptor::Create(*lib_, CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR));
    const cudnnBackendDescriptor_t raw = desc.get();
    MF_RETURN_IF_ERROR(
        Set(op.get(), CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &da));
    MF_RETURN_IF_ERROR(
        Set(op.get(), CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &db));
    MF_RETURN_IF_ERROR(
        Set(op.get(), CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &dc));
    MF_RETURN_IF_ERROR(
        Set(op.get(), CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &raw));
    MF_CUDNN_RETURN_IF_ERROR(*lib_, cudnnBackendFinalize(op.get()));
    parts_.push_back(std::move(desc));
    return op;
  };
  AddOperation(absl::StrCat("matmul ", name), build());
}

void CudnnGraph::Pointwise(absl::string_view name, cudnnPointwiseMode_t mode,
                           cudnnDataType_t compute, int64_t x, int64_t b, int64_t t, int64_t y) {
  AddPointwise(name, mode, compute, x, b, t, y, -1);
}

void CudnnGraph::GenIndex(absl::string_view name, int64_t axis, cudnnDataType_t compute, int64_t x,
                          int64_t y) {
  AddPointwise(name, CUDNN_POINTWISE_GEN_INDEX, compute, x, -1, -1, y, axis);
}

void CudnnGraph::AddPointwise(absl::string_view name, cudnnPointwiseMode_t mode,
                              cudnnDataType_t compute, int64_t x, int64_t b, int64_t t, int64_t y,
                              int64_t axis) {
  if (!status_.ok()) return;
  cudnnBackendDescriptor_t dx = TensorDesc(x, name), dy = TensorDesc(y, name);
  cudnnBackendDescriptor_t db = b >= 0 ? TensorDesc(b, name) : nullptr;
  cudnnBackendDescriptor_t dt = t >= 0 ? TensorDesc(t, name) : nullptr;
  if (!status_.ok()) return;
  auto build = [&]() -> absl::StatusOr<CudnnDescriptor> {
    MF_ASSIGN_OR_RETURN(CudnnDescriptor desc,
                        CudnnDescriptor::Create(*lib_, CUDNN_BACKEND_POINTWISE_DESCRIPTOR));
    MF_RETURN_IF_ERROR(
        Set(desc.get(), CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode));
    MF_RETURN_IF_ERROR(
        Set(desc.get(), CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &compute));
    if (axis >= 0) {
      MF_RETURN_IF_ERROR(Set(desc.get(), CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis));
    }
    MF_CUDNN_RETURN_IF_ERROR(*lib_, cudnnBackendFinalize(desc.get()));
    MF_ASSIGN_OR_RETURN(
        CudnnDescriptor op,
        CudnnDescriptor::Create(*lib_, CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR));
    const cudnnBackendDescriptor_t raw = desc.get();
    MF_RETURN_IF_ERROR(Set(op.get(), CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR,
                           CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &raw));
    MF_RETURN_IF_ERROR(
        Set(op.get(), CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &dx));
    if (db != nullptr) {
      MF_RETURN_IF_ERROR(Set(op.get(), CUDNN_ATTR_OPERATION_POINTWISE_BDESC,
                             CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &db));
    }
    if (dt != nullptr) {
      MF_RETURN_IF_ERROR(Set(op.get(), CUDNN_ATTR_OPERATION_POINTWISE_TDESC,
                             CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &dt));
    }
    MF_RETURN_IF_ERROR(
        Set(op.get(), CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &dy));
    const float one = 1.0f;  // y = op(1·x, 1·b): no blending
    MF_RETURN_IF_ERROR(
        Set(op.get(), CUDNN_ATTR_OPERATION_POINTWISE_ALPHA1, CUDNN_TYPE_FLOAT, 1, &one));
    MF_RETURN_IF_ERROR(
        Set(op.get(), CUDNN_ATTR_OPERATION_POINTWISE_ALPHA2, CUDNN_TYPE_FLOAT, 1, &one));
    MF_CUDNN_RETURN_IF_ERROR(*lib_, cudnnBackendFinalize(op.get()));
    parts_.push_back(std::move(desc));
    return op;
  };
  AddOperation(absl::StrCat("pointwise ", name), build());
}

void CudnnGraph::Reduction(absl::string_view name, cudnnReduceTensorOp_t reduce, int64_t x,
                           int64_t y) {
  if (!status_.ok()) return;
  cudnnBackendDescriptor_t dx = TensorDesc(x, name), dy = TensorDesc(y, name);
  if (!status_.ok()) return;
  auto build = [&]() -> absl::StatusOr<CudnnDescriptor> {
    MF_ASSIGN_OR_RETURN(CudnnDescriptor desc,
                        CudnnDescriptor::Create(*lib_, CUDNN_BACKEND_REDUCTION_DESCRIPTOR));
    const cudnnDataType_t compute = CUDNN_DATA_FLOAT;
    MF_RETURN_IF_ERROR(
        Set(desc.get(), CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &compute));
    MF_RETURN_IF_ERROR(Set(desc.get(), CUDNN_ATTR_REDUCTION_OPERATOR,
                           CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &reduce));
    MF_CUDNN_RETURN_IF_ERROR(*lib_, cudnnBackendFinalize(desc.get()));
    MF_ASSIGN_OR_RETURN(
        CudnnDescriptor op,
        CudnnDescriptor::Create(*lib_, CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR));
    const cudnnBackendDescriptor_t raw = desc.get();
    MF_RETURN_IF_ERROR(
        Set(op.get(), CUDNN_ATTR_OPERATION_REDUCTION_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &raw));
    MF_RETURN_IF_ERROR(
        Set(op.get(), CUDNN_ATTR_OPERATION_REDUCTION_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &dx));
    MF_RETURN_IF_ERROR(
        Set(op.get(), CUDNN_ATTR_OPERATION_REDUCTION_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &dy));
    MF_CUDNN_RETURN_IF_ERROR(*lib_, cudnnBackendFinalize(op.get()));
    parts_.push_back(std::move(desc));
    return op;
  };
  AddOperation(absl::StrCat("reduction ", name), build());
}

void CudnnGraph::Reshape(absl::string_view name, int64_t x, int64_t y) {
  if (!status_.ok()) return;
  cudnnBackendDescriptor_t dx = TensorDesc(x, name), dy = TensorDesc(y, name);
  if (!status_.ok()) return;
  auto build = [&]() -> absl::StatusOr<CudnnDescriptor> {
    MF_ASSIGN_OR_RETURN(CudnnDescriptor op,
                        CudnnDescriptor::Create(*lib_, CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR));
    MF_RETURN_IF_ERROR(
        Set(op.get(), CUDNN_ATTR_OPERATION_RESHAPE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &dx));
    MF_RETURN_IF_ERROR(
        Set(op.get(), CUDNN_ATTR_OPERATION_RESHAPE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &dy));
    MF_CUDNN_RETURN_IF_ERROR(*lib_, cudnnBackendFinalize(op.get()));
    return op;
  };
  AddOperation(absl::StrCat("reshape ", name), build());
}

// The operation graph, the heuristics over it and their engine configs (those that pass cuDNN's
// support checks), for `handle`'s GPU or for the device `device` describes.
struct CudnnGraph::Candidates {
  CudnnDescriptor device, graph, heuristics;
  std::vector<CudnnDescriptor> configs;
};

absl::StatusOr<CudnnGraph::Candidates> CudnnGraph::Heuristics(cudnnHandle_t handle,
                                                              CudnnDescriptor device) {
  if (!status_.ok()) return status_;
  const CudnnLibrary& lib = *lib_;
  Candidates c;
  c.device = std::move(device);
  std::vector<cudnnBackendDescriptor_t> ops;
  for (const CudnnDescriptor& op : operations_) ops.push_back(op.get());
  MF_ASSIGN_OR_RETURN(c.graph,
                      CudnnDescriptor::Create(lib, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR));
  MF_RETURN_IF_ERROR(Set(c.graph.get(), CUDNN_ATTR_OPERATIONGRAPH_OPS,
                         CUDNN_TYPE_BACKEND_DESCRIPTOR, static_cast<int64_t>(ops.size()),
                         ops.data()));
  // Deprecated in cuDNN 9.19's header (a device-properties descriptor may replace it there) but
  // required by earlier 9.x, and still honoured.
  if (handle != nullptr) {
    MF_RETURN_IF_ERROR(
        Set(c.graph.get(), CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle));
  }
  MF_RETURN_IF_ERROR(Annotated(MF_CUDNN_STATUS_(lib, cudnnBackendFinalize(c.graph.get())),
                               absl::StrCat("operation graph of ", ops.size(), " operations")));
  const cudnnBackendDescriptor_t raw_graph = c.graph.get();
  const cudnnBackendDescriptor_t raw_device = c.device.get();

  MF_ASSIGN_OR_RETURN(c.heuristics,
                      CudnnDescriptor::Create(lib, CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR));
  const cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
  MF_RETURN_IF_ERROR(Set(c.heuristics.get(), CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH,
                         CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &raw_graph));
  MF_RETURN_IF_ERROR(
      Set(c.heuristics.get(), CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode));
  if (raw_device != nullptr) {
    MF_RETURN_IF_ERROR(Set(c.heuristics.get(), CUDNN_ATTR_ENGINEHEUR_DEVICEPROP,
                           CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &raw_device));
  }
  MF_RETURN_IF_ERROR(Annotated(MF_CUDNN_STATUS_(lib, cudnnBackendFinalize(c.heuristics.get())),
                               "engine heuristics"));
  int64_t count = 0;
  MF_CUDNN_RETURN_IF_ERROR(
      lib, cudnnBackendGetAttribute(c.heuristics.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                    CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, nullptr));
  std::vector<cudnnBackendDescriptor_t> raw_configs;
  for (int64_t i = 0; i < count; ++i) {
    MF_ASSIGN_OR_RETURN(CudnnDescriptor config,
                        CudnnDescriptor::Create(lib, CUDNN_BACKEND_ENGINECFG_DESCRIPTOR));
    raw_configs.push_back(config.get());
    c.configs.push_back(std::move(config));
  }
  int64_t returned = 0;
  if (count > 0) {
    MF_CUDNN_RETURN_IF_ERROR(
        lib, cudnnBackendGetAttribute(c.heuristics.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                      CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &returned,
                                      raw_configs.data()));
  }
  // Only the first `returned` passed the engines' support checks.
  c.configs.resize(static_cast<size_t>(std::clamp<int64_t>(returned, 0, count)));
  return c;
}

absl::StatusOr<CudnnPlan> CudnnGraph::Build(cudnnHandle_t handle) && {
  MF_ASSIGN_OR_RETURN(Candidates c, Heuristics(handle, CudnnDescriptor()));
  const CudnnLibrary& lib = *lib_;
  if (c.configs.empty()) {
    return absl::UnimplementedError(
        "no engine config of cuDNN's heuristics supports this operation graph (run with "
        "CUDNN_LOGLEVEL_DBG=2 CUDNN_LOGDEST_DBG=stderr for cuDNN's reasons)");
  }
  absl::Status first_failure;
  for (const CudnnDescriptor& config : c.configs) {
    const cudnnBackendDescriptor_t raw_config = config.get();
    MF_ASSIGN_OR_RETURN(CudnnDescriptor candidate,
                        CudnnDescriptor::Create(lib, CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR));
    MF_RETURN_IF_ERROR(
        Set(candidate.get(), CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle));
    MF_RETURN_IF_ERROR(Set(candidate.get(), CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
                           CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &raw_config));
    const absl::Status finalized = MF_CUDNN_STATUS_(lib, cudnnBackendFinalize(candidate.get()));
    if (!finalized.ok()) {
      if (first_failure.ok()) first_failure = finalized;
      continue;
    }
    CudnnPlan plan;
    int64_t got = 0;
    MF_CUDNN_RETURN_IF_ERROR(
        lib, cudnnBackendGetAttribute(candidate.get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                      CUDNN_TYPE_INT64, 1, &got, &plan.workspace_bytes));
    plan.plan = std::move(candidate);
    for (auto& [uid, t] : tensors_) plan.parts.push_back(std::move(t));
    for (CudnnDescriptor& d : parts_) plan.parts.push_back(std::move(d));
    for (CudnnDescriptor& d : operations_) plan.parts.push_back(std::move(d));
    plan.parts.push_back(std::move(c.graph));
    plan.parts.push_back(std::move(c.heuristics));
    for (CudnnDescriptor& d : c.configs) plan.parts.push_back(std::move(d));
    return plan;
  }
  return Annotated(first_failure, absl::StrCat("none of ", c.configs.size(),
                                               " engine configs makes a plan; the first"));
}

absl::StatusOr<int64_t> CudnnGraph::SupportedConfigsFor(const std::string& device_json) && {
  if (!status_.ok()) return status_;
  MF_ASSIGN_OR_RETURN(CudnnDescriptor device,
                      CudnnDescriptor::Create(*lib_, CUDNN_BACKEND_DEVICEPROP_DESCRIPTOR));
  // The JSON text with its terminating NUL (cuDNN parses a C string).
  MF_RETURN_IF_ERROR(Set(device.get(), CUDNN_ATTR_DEVICEPROP_JSON_REPRESENTATION, CUDNN_TYPE_CHAR,
                         static_cast<int64_t>(device_json.size() + 1), device_json.c_str()));
  MF_RETURN_IF_ERROR(
      Annotated(MF_CUDNN_STATUS_(*lib_, cudnnBackendFinalize(device.get())), "device properties"));
  MF_ASSIGN_OR_RETURN(Candidates c, Heuristics(nullptr, std::move(device)));
  return static_cast<int64_t>(c.configs.size());
}

absl::Status CudnnExecute(const CudnnLibrary& lib, cudnnHandle_t handle, const CudnnPlan& plan,
                          const std::vector<int64_t>& uids, const std::vector<void*>& pointers,
                          void* workspace) {
  MF_CHECK_EQ(uids.size(), pointers.size());
  MF_ASSIGN_OR_RETURN(CudnnDescriptor pack,
                      CudnnDescriptor::Create(lib, CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR));
  const auto n = static_cast<int64_t>(uids.size());
  MF_CUDNN_RETURN_IF_ERROR(lib,
                           cudnnBackendSetAttribute(pack.get(), CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS,
                                                    CUDNN_TYPE_INT64, n, uids.data()));
  MF_CUDNN_RETURN_IF_ERROR(
      lib, cudnnBackendSetAttribute(pack.get(), CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS,
                                    CUDNN_TYPE_VOID_PTR, n, pointers.data()));
  MF_CUDNN_RETURN_IF_ERROR(lib,
                           cudnnBackendSetAttribute(pack.get(), CUDNN_ATTR_VARIANT_PACK_WORKSPACE,
                                                    CUDNN_TYPE_VOID_PTR, 1, &workspace));
  MF_CUDNN_RETURN_IF_ERROR(lib, cudnnBackendFinalize(pack.get()));
  MF_CUDNN_RETURN_IF_ERROR(lib, cudnnBackendExecute(handle, plan.plan.get(), pack.get()));
  return absl::OkStatus();
}

}  // namespace moefold::ops::cuda
