// Tensor storage, views, conversions, and copies between host and GPU memory (the GPU side goes
// through core/cuda_runtime.h, so this file builds with or without the CUDA backend).
#include "core/tensor.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/allocator.h"
#include "core/cuda_runtime.h"

namespace moefold {

std::string ShapeToString(const Shape& shape) {
  return absl::StrCat("(", absl::StrJoin(shape, ", "), ")");
}

int64_t NumElements(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

namespace {

// Aborts with the message of a failed runtime call made on behalf of a tensor helper.
void CheckOk(const absl::Status& status, const char* what, const Tensor& t) {
  MF_CHECK(status.ok()) << what << " " << t.DebugString() << ": " << status.message();
}

}  // namespace

Storage::Storage(size_t bytes, const Device& device) : Storage(bytes, AllocatorFor(device)) {}

Storage::Storage(size_t bytes, Allocator& allocator)
    : allocator_(&allocator),
      data_(allocator.Allocate(bytes)),
      bytes_(bytes),
      device_(allocator.device()) {}

Storage::~Storage() {
  if (streams_.empty()) {
    allocator_->Free(data_, bytes_);
  } else {
    allocator_->FreeAfter(data_, bytes_, streams_);
  }
}

void Storage::RecordStream(void* stream) {
  if (std::find(streams_.begin(), streams_.end(), stream) == streams_.end()) {
    streams_.push_back(stream);
  }
}

Tensor Tensor::Empty(const Shape& shape, DType dtype, const Device& device) {
  MF_CHECK_LE(static_cast<int>(shape.size()), kMaxTensorRank) << ShapeToString(shape);
  for (int64_t d : shape) MF_CHECK_GE(d, 0) << "negative dimension in " << ShapeToString(shape);
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.storage_ = std::make_shared<Storage>(t.nbytes(), device);
  return t;
}

Tensor Tensor::Zeros(const Shape& shape, DType dtype, const Device& device) {
  Tensor t = Empty(shape, dtype, device);
  t.SetZero();
  return t;
}

Tensor Tensor::EmptyPinned(const Shape& shape, DType dtype) {
  MF_CHECK_LE(static_cast<int>(shape.size()), kMaxTensorRank) << ShapeToString(shape);
  for (int64_t d : shape) MF_CHECK_GE(d, 0) << "negative dimension in " << ShapeToString(shape);
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.storage_ = std::make_shared<Storage>(t.nbytes(), PinnedMemory());
  return t;
}

Tensor Tensor::FromVector(const std::vector<float>& values, const Shape& shape) {
  Tensor t = Empty(shape, DType::kF32);
  MF_CHECK_EQ(static_cast<int64_t>(values.size()), t.numel()) << ShapeToString(shape);
  if (!values.empty()) std::memcpy(t.raw_data(), values.data(), t.nbytes());
  return t;
}

Tensor Tensor::FromVectorI32(const std::vector<int32_t>& values, const Shape& shape) {
  Tensor t = Empty(shape, DType::kI32);
  MF_CHECK_EQ(static_cast<int64_t>(values.size()), t.numel()) << ShapeToString(shape);
  if (!values.empty()) std::memcpy(t.raw_data(), values.data(), t.nbytes());
  return t;
}

int64_t Tensor::dim(int i) const {
  const int r = rank();
  if (i < 0) i += r;
  MF_CHECK(i >= 0 && i < r) << "dim " << i << " of " << ShapeToString(shape_);
  return shape_[i];
}

void* Tensor::raw_data() const {
  if (!storage_) return nullptr;
  return static_cast<char*>(storage_->data()) + offset_;
}

void Tensor::CheckElementType(size_t size, bool is_float, bool is_signed) const {
  const bool ok = DTypeSize(dtype_) == size &&
                  (dtype_ == DType::kF32 ? is_float
                   : dtype_ == DType::kI32 || dtype_ == DType::kI64 ? (!is_float && is_signed)
                                                                     : (!is_float && !is_signed));
  MF_CHECK(ok) << "element type of size " << size << " does not match " << DebugString();
}

Tensor Tensor::Slice(int64_t begin, int64_t end) const {
  MF_CHECK_GE(rank(), 1);
  MF_CHECK(0 <= begin && begin <= end && end <= shape_[0])
      << "slice [" << begin << ", " << end << ") of " << DebugString();
  Tensor t = *this;
  t.shape_[0] = end - begin;
  t.offset_ = offset_ + static_cast<size_t>(begin) * (nbytes() / std::max<int64_t>(shape_[0], 1));
  return t;
}

Tensor Tensor::Reshape(const Shape& shape) const {
  MF_CHECK_EQ(NumElements(shape), numel()) << ShapeToString(shape) << " from " << DebugString();
  MF_CHECK_LE(static_cast<int>(shape.size()), kMaxTensorRank);
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

Tensor Tensor::Clone() const {
  Tensor t = Empty(shape_, dtype_, device());
  t.CopyFrom(*this);
  return t;
}

void Tensor::CopyFrom(const Tensor& src) {
  MF_CHECK(src.shape_ == shape_ && src.dtype_ == dtype_)
      << "copy " << src.DebugString() << " into " << DebugString();
  if (nbytes() == 0) return;
  if (device().is_cpu() && src.device().is_cpu()) {
    std::memmove(raw_data(), src.raw_data(), nbytes());
    return;
  }
  const Device gpu = device().is_cuda() ? device() : src.device();
  CheckOk(cuda::Memcpy(raw_data(), src.raw_data(), nbytes(), DefaultStream(gpu).native(),
                       /*synchronous=*/true),
          "copy into", *this);
}

void Tensor::CopyFromAsync(const Tensor& src, const Stream& stream) {
  MF_CHECK(src.shape_ == shape_ && src.dtype_ == dtype_)
      << "copy " << src.DebugString() << " into " << DebugString();
  if (nbytes() == 0) return;
  if (device().is_cpu() && src.device().is_cpu()) {
    std::memmove(raw_data(), src.raw_data(), nbytes());
    return;
  }
  MF_CHECK(stream.device().is_cuda() &&
           (stream.device() == device() || stream.device() == src.device()))
      << "CopyFromAsync of " << src.DebugString() << " into " << DebugString()
      << " needs a stream of its GPU, got " << stream.device().ToString();
  CheckOk(cuda::Memcpy(raw_data(), src.raw_data(), nbytes(), stream.native(),
                       /*synchronous=*/false),
          "asynchronous copy into", *this);
}

void Tensor::SetZero() {
  if (nbytes() == 0) return;
  if (device().is_cpu()) {
    std::memset(raw_data(), 0, nbytes());
    return;
  }
  const Stream& stream = DefaultStream(device());
  SetZero(stream);
  stream.Synchronize();
}

void Tensor::SetZero(const Stream& stream) {
  if (nbytes() == 0) return;
  if (device().is_cpu()) {
    std::memset(raw_data(), 0, nbytes());
    return;
  }
  MF_CHECK(stream.device() == device())
      << "SetZero of " << DebugString() << " on a stream of " << stream.device().ToString();
  CheckOk(cuda::Memset(raw_data(), 0, nbytes(), stream.native()), "zeroing", *this);
}

void Tensor::Fill(float value) {
  std::vector<float> values(numel(), value);
  if (device().is_cpu()) {
    ConvertFromF32(values.data(), raw_data(), dtype_, values.size());
    return;
  }
  Tensor host = Empty(shape_, dtype_);
  ConvertFromF32(values.data(), host.raw_data(), dtype_, values.size());
  CopyFrom(host);
}

Tensor Tensor::To(DType dtype) const {
  Tensor t = Empty(shape_, dtype, device());
  if (device().is_cpu()) {
    std::vector<float> values = ToVector();
    ConvertFromF32(values.data(), t.raw_data(), dtype, values.size());
    return t;
  }
  const Stream& stream = DefaultStream(device());
  CheckOk(cuda::Convert(raw_data(), dtype_, t.raw_data(), dtype, static_cast<size_t>(numel()),
                        stream.native()),
          "converting", *this);
  stream.Synchronize();
  return t;
}

Tensor Tensor::To(DType dtype, const Stream& stream) const {
  if (dtype == dtype_) return *this;
  Tensor t = Empty(shape_, dtype, device());
  t.ConvertFrom(*this, stream);
  return t;
}

void Tensor::ConvertFrom(const Tensor& src, const Stream& stream) {
  MF_CHECK(src.shape_ == shape_ && src.device() == device())
      << "convert " << src.DebugString() << " into " << DebugString();
  if (numel() == 0) return;
  if (device().is_cpu()) {
    if (src.dtype_ == dtype_) {
      std::memmove(raw_data(), src.raw_data(), nbytes());
      return;
    }
    std::vector<float> values = src.ToVector();
    ConvertFromF32(values.data(), raw_data(), dtype_, values.size());
    return;
  }
  MF_CHECK(stream.device() == device())
      << "ConvertFrom into " << DebugString() << " on a stream of " << stream.device().ToString();
  CheckOk(cuda::Convert(src.raw_data(), src.dtype_, raw_data(), dtype_,
                        static_cast<size_t>(numel()), stream.native()),
          "converting into", *this);
}

Tensor Tensor::To(const Device& device) const {
  if (device == this->device()) return *this;
  Tensor t = Empty(shape_, dtype_, device);
  t.CopyFrom(*this);
  return t;
}

Tensor Tensor::To(const Device& device, const Stream& stream) const {
  if (device == this->device()) return *this;
  MF_CHECK(stream.device() == device || stream.device() == this->device())
      << "copy of " << DebugString() << " to " << device.ToString() << " on a stream of "
      << stream.device().ToString();
  Tensor src = *this;
  if (this->device().is_cpu()) {
    src = EmptyPinned(shape_, dtype_);
    if (nbytes() > 0) std::memcpy(src.raw_data(), raw_data(), nbytes());
    src.RecordStream(stream);  // the pinned block returns to the pool after the copy ran
  }
  Tensor t = Empty(shape_, dtype_, device);
  t.CopyFromAsync(src, stream);
  return t;
}

std::vector<float> Tensor::ToVector() const {
  if (!device().is_cpu()) return To(Device::Cpu()).ToVector();
  std::vector<float> values(numel());
  ConvertToF32(raw_data(), dtype_, values.data(), values.size());
  return values;
}

void Tensor::RecordStream(const Stream& stream) const {
  if (!storage_ || stream.device().is_cpu()) return;
  // GPU memory is reused in the default stream's order anyway; host memory (pinned) is reused by
  // the host at once, so any stream's pending copy must finish first.
  if (device().is_cuda() && stream.native() == DefaultStream(stream.device()).native()) return;
  storage_->RecordStream(stream.native());
}

std::string Tensor::DebugString() const {
  return absl::StrCat(DTypeName(dtype_), ShapeToString(shape_), "@", device().ToString());
}

}  // namespace moefold
