#include "checkpoint/reader.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "checkpoint/directory.h"
#include "core/status.h"
#include "google/protobuf/util/json_util.h"

namespace moefold::checkpoint {
namespace fs = std::filesystem;
namespace {

// Pieces kept in memory while a rank reads its slices: a piece usually serves several requests
// (the boxes of a layout change cut across each other), but a rank must not hold the whole model.
constexpr int64_t kCacheElements = int64_t{1} << 27;  // 512 MiB of f32

BoxRange RangeOf(const Piece& piece) {
  BoxRange r;
  r.offset.assign(piece.box_offset().begin(), piece.box_offset().end());
  r.shape.assign(piece.box_shape().begin(), piece.box_shape().end());
  r.flat_begin = piece.flat_begin();
  r.flat_end = piece.flat_end();
  return r;
}

}  // namespace

absl::StatusOr<Manifest> ReadManifest(const std::string& dir) {
  const std::string path = (fs::path(dir) / kManifestName).string();
  MF_ASSIGN_OR_RETURN(const std::string bytes, ReadWholeFile(path));
  Manifest manifest;
  if (!manifest.ParseFromString(bytes)) {
    return absl::DataLossError(absl::StrCat("checkpoint manifest ", path, " is corrupted"));
  }
  if (manifest.format_version() != kFormatVersion) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint manifest ", path, " has format ",
                                                   manifest.format_version(), ", this build reads ",
                                                   kFormatVersion));
  }
  return manifest;
}

absl::Status WriteManifest(const std::string& dir, const Manifest& manifest) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  if (!google::protobuf::util::MessageToJsonString(manifest, &json, options).ok()) json = "{}";
  MF_RETURN_IF_ERROR(WriteFileAtomically((fs::path(dir) / kManifestJsonName).string(), json));
  // The binary manifest last: its presence is what makes the checkpoint complete.
  return WriteFileAtomically((fs::path(dir) / kManifestName).string(),
                             manifest.SerializeAsString());
}

absl::StatusOr<std::unique_ptr<CheckpointReader>> CheckpointReader::Open(const std::string& dir) {
  std::unique_ptr<CheckpointReader> reader(new CheckpointReader());
  reader->dir_ = dir;
  MF_ASSIGN_OR_RETURN(reader->manifest_, ReadManifest(dir));
  const Manifest& m = reader->manifest_;
  for (int i = 0; i < m.tensors_size(); ++i) reader->tensors_[m.tensors(i).name()] = i;
  for (int i = 0; i < m.files_size(); ++i) reader->file_of_rank_[m.files(i).rank()] = i;
  for (int i = 0; i < m.files_size(); ++i) {
    const ShardFile& f = m.files(i);
    if (f.name().empty() || f.name().find('/') != std::string::npos || f.name() == ".." ||
        f.bytes() < 0) {
      return absl::DataLossError(absl::StrCat("checkpoint manifest in ", dir, ": file entry ", i,
                                              " ('", f.name(), "', ", f.bytes(),
                                              " bytes) is not a shard file of the directory"));
    }
  }
  for (int i = 0; i < m.pieces_size(); ++i) {
    const Piece& p = m.pieces(i);
    if (!reader->file_of_rank_.count(p.rank()) || p.flat_end() < p.flat_begin()) {
      return absl::DataLossError(absl::StrCat("checkpoint manifest in ", dir, ": tensor ",
                                              p.tensor(), " has a piece without a valid file"));
    }
    if (absl::Status s = reader->CheckPiece(p); !s.ok()) {
      return absl::DataLossError(absl::StrCat("checkpoint manifest in ", dir, ": piece ", i,
                                              " (tensor ", p.tensor(), ", ", p.kind(), ") ",
                                              s.message()));
    }
    reader->pieces_[{p.tensor(), p.kind()}].push_back(i);
  }
  return reader;
}

absl::Status CheckpointReader::CheckPiece(const Piece& p) const {
  // A box inside its tensor, a flat range inside its box, bytes inside its file: what the copies
  // index by is checked once here (a corrupt or hand-edited manifest is an error, not a crash).
  const TensorInfo* info = FindTensor(p.tensor());
  if (info == nullptr) return absl::InvalidArgumentError("names a tensor the manifest lacks");
  const int dims = info->global_shape_size();
  if (dims > 8 || p.box_offset_size() != dims || p.box_shape_size() != dims) {
    return absl::InvalidArgumentError(absl::StrCat("has a box of ", p.box_offset_size(), "/",
                                                   p.box_shape_size(), " dimensions for a tensor of ",
                                                   dims));
  }
  constexpr int64_t kMaxElements = int64_t{1} << 48;
  int64_t box_elements = 1;
  for (int d = 0; d < dims; ++d) {
    const int64_t global = info->global_shape(d), offset = p.box_offset(d), n = p.box_shape(d);
    if (global < 0 || global > kMaxElements || offset < 0 || n < 0 || offset > global - n) {
      return absl::InvalidArgumentError(absl::StrCat("has a box [", offset, ", +", n,
                                                     ") outside dimension ", d, " of size ",
                                                     global));
    }
    if (n > 0 && box_elements > kMaxElements / n) {
      return absl::InvalidArgumentError("has a box of too many elements");
    }
    box_elements *= n;
  }
  if (p.flat_begin() < 0 || p.flat_end() > box_elements) {
    return absl::InvalidArgumentError(absl::StrCat("has a flat range [", p.flat_begin(), ", ",
                                                   p.flat_end(), ") outside its box of ",
                                                   box_elements, " elements"));
  }
  const ShardFile& file = manifest_.files(file_of_rank_.at(p.rank()));
  const int64_t bytes = (p.flat_end() - p.flat_begin()) * static_cast<int64_t>(sizeof(float));
  if (p.byte_offset() < 0 || p.byte_offset() > file.bytes() - bytes) {
    return absl::InvalidArgumentError(absl::StrCat("has bytes [", p.byte_offset(), ", +", bytes,
                                                   ") outside ", file.name(), " (", file.bytes(),
                                                   " bytes)"));
  }
  return absl::OkStatus();
}

const TensorInfo* CheckpointReader::FindTensor(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &manifest_.tensors(it->second);
}

bool CheckpointReader::Has(const std::string& tensor, const std::string& kind) const {
  return pieces_.count({tensor, kind}) > 0;
}

absl::StatusOr<ShardFileReader*> CheckpointReader::File(int rank) {
  auto it = open_files_.find(rank);
  if (it != open_files_.end()) return it->second.get();
  const ShardFile& file = manifest_.files(file_of_rank_.at(rank));
  auto reader = std::make_unique<ShardFileReader>();
  MF_RETURN_IF_ERROR(reader->Open((fs::path(dir_) / file.name()).string(), file));
  ShardFileReader* raw = reader.get();
  open_files_[rank] = std::move(reader);
  return raw;
}

absl::StatusOr<const std::vector<float>*> CheckpointReader::PieceValues(int index) {
  auto it = cache_.find(index);
  if (it != cache_.end()) return &it->second;
  const Piece& piece = manifest_.pieces(index);
  MF_ASSIGN_OR_RETURN(ShardFileReader * file, File(piece.rank()));
  const int64_t n = piece.flat_end() - piece.flat_begin();
  if (cached_elements_ + n > kCacheElements) {
    cache_.clear();
    cached_elements_ = 0;
  }
  std::vector<float>& values = cache_[index];
  values.resize(n);
  absl::Status status = file->ReadPiece(piece, values.data());
  if (!status.ok()) {
    cache_.erase(index);
    return status;
  }
  cached_elements_ += n;
  return &values;
}

absl::Status CheckpointReader::Read(const std::string& tensor, const std::string& kind,
                                    const BoxRange& range, float* out,
                                    const std::vector<int64_t>* global_shape, int rank) {
  const TensorInfo* info = FindTensor(tensor);
  auto it = pieces_.find({tensor, kind});
  if (info == nullptr || it == pieces_.end()) {
    return absl::NotFoundError(absl::StrCat("checkpoint ", dir_, " has no ", kind, " of tensor ",
                                            tensor));
  }
  const std::vector<int64_t> saved(info->global_shape().begin(), info->global_shape().end());
  if (global_shape != nullptr && *global_shape != saved) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint ", dir_, ": tensor ", tensor, " has shape (", absl::StrJoin(saved, ", "),
        "), the model's is (", absl::StrJoin(*global_shape, ", "), ")"));
  }
  const int64_t n = range.flat_end - range.flat_begin;
  std::vector<uint8_t> covered(n, 0);
  for (int index : it->second) {
    const Piece& piece = manifest_.pieces(index);
    if (rank >= 0 && piece.rank() != rank) continue;
    const BoxRange src = RangeOf(piece);
    if (src.shape.size() != range.shape.size() || !BoxesIntersect(src, range)) continue;
    MF_ASSIGN_OR_RETURN(const std::vector<float>* values, PieceValues(index));
    CopyOverlap(src, values->data(), range, out, &covered);
  }
  for (int64_t i = 0; i < n; ++i) {
    if (!covered[i]) {
      return absl::DataLossError(absl::StrCat("checkpoint ", dir_, ": no shard holds element ",
                                              range.flat_begin + i, " of ", BoxString(range),
                                              " of tensor ", tensor, " (", kind, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace moefold::checkpoint
