// Reads a complete checkpoint for any layout: each rank asks for the slices it holds (a box and a
// flat range of a tensor) and gets them from whichever shard files hold them — only the pieces
// that intersect are read, each checked against its checksum — so no rank gathers the whole model.
//
//   MF_ASSIGN_OR_RETURN(auto reader, CheckpointReader::Open(dir));
//   MF_RETURN_IF_ERROR(reader->Read(param.name, "param", ParameterBox(param), param_host_values));
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "checkpoint/box.h"
#include "checkpoint/checkpoint.pb.h"
#include "checkpoint/files.h"

namespace moefold::checkpoint {

inline constexpr int kFormatVersion = 1;

// Reads DIR/manifest.pb (error naming the file when missing, unreadable or of another format).
absl::StatusOr<Manifest> ReadManifest(const std::string& dir);
// Writes the manifest (binary, and a JSON copy for people) crash-safely into dir.
absl::Status WriteManifest(const std::string& dir, const Manifest& manifest);

class CheckpointReader {
 public:
  static absl::StatusOr<std::unique_ptr<CheckpointReader>> Open(const std::string& dir);

  const Manifest& manifest() const { return manifest_; }
  const std::string& dir() const { return dir_; }
  // The tensor's global shape as saved; nullptr when the checkpoint has no such tensor.
  const TensorInfo* FindTensor(const std::string& name) const;
  bool Has(const std::string& tensor, const std::string& kind) const;

  // Fills `out` (range.flat_end − range.flat_begin f32) with the elements of `range` of the
  // tensor's `kind` from every piece that holds some. With `rank` ≥ 0 only that rank's pieces count
  // (per-rank state such as EF21). Error naming the tensor when the checkpoint lacks it, when its
  // saved shape differs from `global_shape` (if given), or when no piece holds some element; naming
  // the file when a shard is missing, truncated or fails its checksum.
  absl::Status Read(const std::string& tensor, const std::string& kind, const BoxRange& range,
                    float* out, const std::vector<int64_t>* global_shape = nullptr,
                    int rank = -1);

 private:
  CheckpointReader() = default;
  absl::StatusOr<const std::vector<float>*> PieceValues(int index);
  absl::Status CheckPiece(const Piece& piece) const;  // the piece fits its tensor and its file
  absl::StatusOr<ShardFileReader*> File(int rank);

  std::string dir_;
  Manifest manifest_;
  std::map<std::pair<std::string, std::string>, std::vector<int>> pieces_;  // (tensor, kind)
  std::map<std::string, int> tensors_;
  std::map<int, int> file_of_rank_;
  std::map<int, std::unique_ptr<ShardFileReader>> open_files_;
  std::map<int, std::vector<float>> cache_;  // piece index → values (bounded, see PieceValues)
  int64_t cached_elements_ = 0;
};

}  // namespace moefold::checkpoint
