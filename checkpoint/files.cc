#include "checkpoint/files.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace moefold::checkpoint {
namespace {

std::string ParentOf(const std::string& path) {
  const std::string parent = std::filesystem::path(path).parent_path().string();
  return parent.empty() ? "." : parent;
}

}  // namespace

uint64_t Xxh3(const void* data, size_t bytes) { return XXH3_64bits(data, bytes); }

ShardFileWriter::~ShardFileWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink((path_ + ".tmp").c_str());
  }
  if (file_state_ != nullptr) XXH3_freeState(static_cast<XXH3_state_t*>(file_state_));
}

absl::Status ShardFileWriter::Open(const std::string& path) {
  path_ = path;
  const std::string tmp = path + ".tmp";
  fd_ = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd_ < 0) return ErrnoStatus("cannot create", tmp);
  auto* state = XXH3_createState();
  XXH3_64bits_reset(state);
  file_state_ = state;
  size_ = 0;
  return absl::OkStatus();
}

absl::Status ShardFileWriter::Append(const void* data, size_t bytes, int64_t* offset,
                                     uint64_t* xxh3) {
  MF_CHECK_GE(fd_, 0) << "ShardFileWriter::Append before Open";
  MF_RETURN_IF_ERROR(WriteAll(fd_, data, bytes, path_ + ".tmp"));
  XXH3_64bits_update(static_cast<XXH3_state_t*>(file_state_), data, bytes);
  *offset = size_;
  *xxh3 = Xxh3(data, bytes);
  size_ += static_cast<int64_t>(bytes);
  return absl::OkStatus();
}

absl::StatusOr<ShardFile> ShardFileWriter::Finish() {
  MF_CHECK_GE(fd_, 0) << "ShardFileWriter::Finish before Open";
  const std::string tmp = path_ + ".tmp";
  absl::Status status;
  if (::fsync(fd_) != 0) status = ErrnoStatus("cannot fsync", tmp);
  ::close(fd_);
  fd_ = -1;
  if (status.ok() && ::rename(tmp.c_str(), path_.c_str()) != 0) {
    status = ErrnoStatus("cannot rename", tmp);
  }
  if (!status.ok()) {
    ::unlink(tmp.c_str());
    return status;
  }
  MF_RETURN_IF_ERROR(FsyncDirectory(ParentOf(path_)));
  ShardFile file;
  file.set_name(std::filesystem::path(path_).filename().string());
  file.set_bytes(size_);
  file.set_xxh3(XXH3_64bits_digest(static_cast<XXH3_state_t*>(file_state_)));
  return file;
}

ShardFileReader::~ShardFileReader() {
  if (fd_ >= 0) ::close(fd_);
}

absl::Status ShardFileReader::Open(const std::string& path, const ShardFile& expected) {
  path_ = path;
  expected_ = expected;
  fd_ = ::open(path.c_str(), O_RDONLY);
  if (fd_ < 0) return ErrnoStatus("checkpoint shard missing or unreadable:", path);
  const off_t size = ::lseek(fd_, 0, SEEK_END);
  if (size != expected.bytes()) {
    return absl::DataLossError(absl::StrCat("checkpoint shard ", path, " has ", size,
                                            " bytes, the manifest says ", expected.bytes(),
                                            " (truncated or replaced)"));
  }
  return absl::OkStatus();
}

absl::Status ShardFileReader::ReadPiece(const Piece& piece, float* out) const {
  const int64_t count = piece.flat_end() - piece.flat_begin();
  const int64_t bytes = count * static_cast<int64_t>(sizeof(float));
  if (piece.byte_offset() < 0 || piece.byte_offset() + bytes > expected_.bytes()) {
    return absl::DataLossError(absl::StrCat("checkpoint shard ", path_, ": tensor ",
                                            piece.tensor(), " (", piece.kind(),
                                            ") lies outside the file"));
  }
  MF_RETURN_IF_ERROR(ReadAt(fd_, out, static_cast<size_t>(bytes), piece.byte_offset(), path_));
  if (Xxh3(out, static_cast<size_t>(bytes)) != piece.xxh3()) {
    return absl::DataLossError(absl::StrCat("checkpoint shard ", path_, ": tensor ",
                                            piece.tensor(), " (", piece.kind(),
                                            ") fails its checksum (corrupted file)"));
  }
  return absl::OkStatus();
}

absl::Status ShardFileReader::VerifyWholeFile() const {
  std::vector<char> buffer(1 << 22);
  XXH3_state_t* state = XXH3_createState();
  XXH3_64bits_reset(state);
  absl::Status status;
  for (int64_t offset = 0; offset < expected_.bytes() && status.ok();) {
    const size_t n = static_cast<size_t>(
        std::min<int64_t>(static_cast<int64_t>(buffer.size()), expected_.bytes() - offset));
    status = ReadAt(fd_, buffer.data(), n, offset, path_);
    XXH3_64bits_update(state, buffer.data(), n);
    offset += static_cast<int64_t>(n);
  }
  const uint64_t digest = XXH3_64bits_digest(state);
  XXH3_freeState(state);
  MF_RETURN_IF_ERROR(status);
  if (digest != expected_.xxh3()) {
    return absl::DataLossError(
        absl::StrCat("checkpoint shard ", path_, " fails its checksum (corrupted file)"));
  }
  return absl::OkStatus();
}

}  // namespace moefold::checkpoint
