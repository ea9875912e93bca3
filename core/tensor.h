// Tensor: a shape (int64, up to 5 dims), a DType, a Device, and shared storage plus a byte offset.
// Row-major and contiguous; views are slices of the leading dimension and reshapes. No autograd.
//
//   Tensor x = Tensor::Zeros({T, H}, DType::kF32);
//   float* p = x.data<float>();
//   Tensor first = x.Slice(0, 4);   // rows [0, 4), shares storage
//   Tensor g = x.To(Device::Cuda(0));  // a copy in GPU memory; g.ToVector() copies back
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/status.h"
#include "core/stream.h"

namespace moefold {

using Shape = std::vector<int64_t>;
inline constexpr int kMaxTensorRank = 5;

std::string ShapeToString(const Shape& shape);  // "(2, 3)"
int64_t NumElements(const Shape& shape);

class Allocator;

// A block of memory owned by an allocator; freed when the last tensor viewing it goes away (after
// the work of every stream recorded with RecordStream, for memory used off the default stream).
class Storage {
 public:
  Storage(size_t bytes, const Device& device);  // from AllocatorFor(device)
  Storage(size_t bytes, Allocator& allocator);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  const Device& device() const { return device_; }
  void RecordStream(void* stream);  // cudaStream_t; the default stream needs no record

 private:
  Allocator* allocator_;
  void* data_;
  size_t bytes_;
  Device device_;
  std::vector<void*> streams_;
};

class Tensor {
 public:
  Tensor() = default;  // undefined: defined() is false

  static Tensor Empty(const Shape& shape, DType dtype, const Device& device = Device::Cpu());
  static Tensor Zeros(const Shape& shape, DType dtype, const Device& device = Device::Cpu());
  // A CPU tensor in page-locked memory (PinnedMemory()), for asynchronous host-device copies.
  static Tensor EmptyPinned(const Shape& shape, DType dtype);
  // f32 CPU tensor holding `values` (values.size() must equal the shape's element count).
  static Tensor FromVector(const std::vector<float>& values, const Shape& shape);
  static Tensor FromVectorI32(const std::vector<int32_t>& values, const Shape& shape);

  bool defined() const { return storage_ != nullptr || NumElements(shape_) == 0; }
  const Shape& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const;  // negative i counts from the end
  int64_t numel() const { return NumElements(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device() : Device::Cpu(); }

  void* raw_data() const;
  template <typename T>
  T* data() const {
    CheckElementType(sizeof(T), std::is_floating_point_v<T>, std::is_signed_v<T>);
    return static_cast<T*>(raw_data());
  }

  Tensor Slice(int64_t begin, int64_t end) const;  // rows [begin, end) of dim 0, shares storage
  Tensor Reshape(const Shape& shape) const;        // same element count, shares storage
  Tensor Clone() const;                            // deep copy on the same device
  // Same shape and dtype, any two devices. Runs on the default stream of the GPU involved and
  // returns when the copy is done; CopyFromAsync enqueues it on `stream` (a stream of the GPU side)
  // and the caller keeps both tensors alive until it has run.
  void CopyFrom(const Tensor& src);
  void CopyFromAsync(const Tensor& src, const Stream& stream);
  void SetZero();                                  // on a GPU: on its default stream, then waits
  void SetZero(const Stream& stream);              // enqueued on `stream` (CPU: at once)
  void Fill(float value);                          // floating dtypes (rounded to the dtype)
  Tensor To(DType dtype) const;                    // converted copy (RNE, saturating as in dtype.h)
  // The same, enqueued on `stream` (a stream of this tensor's GPU; CPU: at once). Returns this
  // tensor itself when it already has `dtype`.
  Tensor To(DType dtype, const Stream& stream) const;
  // this[i] = convert(src[i]): same shape and device, any two dtypes, on `stream` (CPU: at once).
  void ConvertFrom(const Tensor& src, const Stream& stream);
  Tensor To(const Device& device) const;           // copy on `device` (itself if already there)
  // A copy on the stream's device (itself if already there), enqueued on `stream` without waiting
  // for it. A host source is first copied into pinned memory, so the caller may change or free it
  // at once; a GPU source must stay alive until the stream has run the copy.
  Tensor To(const Device& device, const Stream& stream) const;
  std::vector<float> ToVector() const;             // any dtype, as f32 (copied to the host first)
  // This tensor's memory is used by work on `stream`: it is reused only after that work is done.
  void RecordStream(const Stream& stream) const;
  std::string DebugString() const;                 // "f32(2, 3)@cpu"

 private:
  void CheckElementType(size_t size, bool is_float, bool is_signed) const;

  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;  // bytes into storage_
  Shape shape_;
  DType dtype_ = DType::kF32;
};

}  // namespace moefold
