// The safetensors format, read and written by hand: an 8-byte little-endian header length N, N
// bytes of JSON {"name": {"dtype", "shape", "data_offsets": [begin, end)}, "__metadata__": {..}},
// then the raw little-endian data, offsets relative to its start. Invariant: a file that opens has
// a header whose tensors tile the data section exactly (no gap, no overlap, nothing after), each
// tensor's byte count = its element count × dtype size; tensors are read by name with pread.
//
//   MF_ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::Open("model.safetensors"));
//   MF_ASSIGN_OR_RETURN(Tensor w, f.Read("model.norm.weight"));       // CPU, the file's dtype
//   MF_RETURN_IF_ERROR(WriteSafetensors(path, {{"a", a}, {"b", b}}, {{"format", "pt"}}));
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/tensor.h"

namespace moefold::hf {

// safetensors' dtype names: F32, BF16, F16, F8_E4M3, F8_E5M2, I32, I64, U8 are read and written
// (the moefold DTypes); any other name is InvalidArgument.
absl::StatusOr<DType> ParseSafetensorsDType(absl::string_view name);
absl::string_view SafetensorsDTypeName(DType dtype);

struct SafetensorsEntry {
  std::string name;
  DType dtype;
  Shape shape;
  int64_t begin = 0, end = 0;  // byte range in the data section
};

// One open safetensors file (shared: copies read the same descriptor).
class SafetensorsFile {
 public:
  // Opens `path` and validates its header. InvalidArgument naming the file (and the tensor, where
  // one is at fault) for: a file shorter than 8 bytes, a header length beyond the file or above
  // 100 MB, JSON that is not an object of tensors, an unknown dtype, a shape of more than 5 or
  // negative dimensions, data_offsets out of the data section, overlapping or leaving a gap, a byte
  // count that is not numel × dtype size, bytes after the last tensor. NotFound when the file is
  // missing.
  static absl::StatusOr<SafetensorsFile> Open(const std::string& path);

  const std::string& path() const;
  const std::map<std::string, std::string>& metadata() const;
  // Every tensor, in name order.
  const std::map<std::string, SafetensorsEntry>& entries() const;
  const SafetensorsEntry* Find(const std::string& name) const;  // nullptr when absent

  // The tensor `name` as a CPU tensor of the file's dtype and shape. NotFound naming file and
  // tensor when absent; DataLoss when the read comes short (the file changed since Open).
  absl::StatusOr<Tensor> Read(const std::string& name) const;

 private:
  struct State;
  explicit SafetensorsFile(std::shared_ptr<const State> state) : state_(std::move(state)) {}
  std::shared_ptr<const State> state_;
};

// Writes `tensors` (CPU, contiguous; any dtype above) to `path`: the header padded with spaces to
// a multiple of 8 bytes, tensors ordered by decreasing dtype size then name (as Python's
// safetensors does, so each stays aligned to its element size), `metadata` as "__metadata__".
// Written to PATH.tmp, fsynced, renamed over `path`. InvalidArgument for a duplicate or empty name
// or "__metadata__"; Internal naming the file for an I/O failure (the tmp file is removed).
absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<std::pair<std::string, Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

// A model directory: either one `model.safetensors` or the shards an index names
// (`model.safetensors.index.json`: {"metadata": {"total_size": bytes}, "weight_map": {tensor:
// file}}). Files open on first use.
class SafetensorsDir {
 public:
  // InvalidArgument for an index that is not JSON of that form or names a file outside `dir`;
  // NotFound when neither the index nor model.safetensors exists.
  static absl::StatusOr<SafetensorsDir> Open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  bool Contains(const std::string& name) const;
  // The file (relative to dir) that holds `name`; NotFound naming the tensor and the directory.
  absl::StatusOr<std::string> FileOf(const std::string& name) const;
  // The tensor `name`: FileOf, then SafetensorsFile::Read; a tensor that the index maps to a
  // file which lacks it is NotFound naming both.
  absl::StatusOr<Tensor> Read(const std::string& name);
  // Every tensor name, in order.
  std::vector<std::string> Names() const;

 private:
  std::string dir_;
  std::map<std::string, std::string> weight_map_;   // tensor -> file
  std::map<std::string, SafetensorsFile> open_;     // file -> opened
};

// Writes `index` = model.safetensors.index.json into `dir` (tmp file, fsync, rename).
absl::Status WriteSafetensorsIndex(const std::string& dir,
                                   const std::map<std::string, std::string>& weight_map,
                                   int64_t total_size);

}  // namespace moefold::hf
