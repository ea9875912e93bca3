// Checkpoint shard files: pieces appended to a temporary file, each checksummed, the whole file too,
// then fsynced and renamed into place (core/file_io.h has the crash-safe primitives). Checksums are
// XXH3-64 (libxxhash).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "checkpoint/checkpoint.pb.h"
#include "core/file_io.h"

namespace moefold::checkpoint {

uint64_t Xxh3(const void* data, size_t bytes);

// Appends pieces to `path`.tmp, hashing each piece and the whole file; Finish() fsyncs and renames
// it to `path`. A writer destroyed before Finish removes the temporary file.
class ShardFileWriter {
 public:
  ShardFileWriter() = default;
  ShardFileWriter(const ShardFileWriter&) = delete;
  ShardFileWriter& operator=(const ShardFileWriter&) = delete;
  ~ShardFileWriter();

  absl::Status Open(const std::string& path);
  // Writes `bytes` at the current end; *offset = where they start, *xxh3 = their checksum.
  absl::Status Append(const void* data, size_t bytes, int64_t* offset, uint64_t* xxh3);
  // Size and whole-file checksum of the finished file (name = the final path's file name).
  absl::StatusOr<ShardFile> Finish();

 private:
  std::string path_;
  int fd_ = -1;
  int64_t size_ = 0;
  void* file_state_ = nullptr;  // XXH3_state_t of the whole file
};

// Reads pieces of one shard file, checking the file's size against the manifest on open and each
// piece's checksum on read; errors name the file and the tensor.
class ShardFileReader {
 public:
  ShardFileReader() = default;
  ShardFileReader(const ShardFileReader&) = delete;
  ShardFileReader& operator=(const ShardFileReader&) = delete;
  ~ShardFileReader();

  absl::Status Open(const std::string& path, const ShardFile& expected);
  // The piece's (flat_end − flat_begin) f32 values into `out`.
  absl::Status ReadPiece(const Piece& piece, float* out) const;
  // Recomputes the whole file's checksum (reads it all) and compares it with the manifest's.
  absl::Status VerifyWholeFile() const;

 private:
  std::string path_;
  ShardFile expected_;
  int fd_ = -1;
};

}  // namespace moefold::checkpoint
