// Tensor storage, views and host-side conversions.
#include "core/tensor.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/allocator.h"

namespace moefold {

std::string ShapeToString(const Shape& shape) {
  return absl::StrCat("(", absl::StrJoin(shape, ", "), ")");
}

int64_t NumElements(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Storage::Storage(size_t bytes, const Device& device)
    : data_(AllocatorFor(device).Allocate(bytes)), bytes_(bytes), device_(device) {}

Storage::~Storage() { AllocatorFor(device_).Free(data_, bytes_); }

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
  MF_CHECK(device().is_cpu() && src.device().is_cpu()) << "CopyFrom is host-only";
  if (nbytes() > 0) std::memmove(raw_data(), src.raw_data(), nbytes());
}

void Tensor::SetZero() {
  MF_CHECK(device().is_cpu()) << "SetZero is host-only";
  if (nbytes() > 0) std::memset(raw_data(), 0, nbytes());
}

void Tensor::Fill(float value) {
  MF_CHECK(device().is_cpu()) << "Fill is host-only";
  std::vector<float> values(numel(), value);
  ConvertFromF32(values.data(), raw_data(), dtype_, values.size());
}

Tensor Tensor::To(DType dtype) const {
  Tensor t = Empty(shape_, dtype, device());
  std::vector<float> values = ToVector();
  ConvertFromF32(values.data(), t.raw_data(), dtype, values.size());
  return t;
}

std::vector<float> Tensor::ToVector() const {
  MF_CHECK(device().is_cpu()) << "ToVector is host-only";
  std::vector<float> values(numel());
  ConvertToF32(raw_data(), dtype_, values.data(), values.size());
  return values;
}

std::string Tensor::DebugString() const {
  return absl::StrCat(DTypeName(dtype_), ShapeToString(shape_), "@", device().ToString());
}

}  // namespace moefold
