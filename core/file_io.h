// Durable file I/O shared by checkpoints and the Hugging Face writer: whole writes that are
// crash-safe (a temporary name, fsync, rename, fsync of the directory: after a crash the file
// exists whole under its final name or not at all) and full positional reads. Errors name the
// path and the system's reason; a full disk is ResourceExhausted, a refused permission
// PermissionDenied, a missing file NotFound.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moefold {

// The Status of the failed system call that set errno: "`what` `path`: reason".
absl::Status ErrnoStatus(absl::string_view what, const std::string& path);

// `path`.tmp ← the chunks one after another, fsync, rename to `path`, fsync its directory.
absl::Status WriteFileAtomically(const std::string& path,
                                 const std::vector<absl::string_view>& chunks);
inline absl::Status WriteFileAtomically(const std::string& path, absl::string_view bytes) {
  return WriteFileAtomically(path, std::vector<absl::string_view>{bytes});
}
absl::Status FsyncDirectory(const std::string& dir);
absl::StatusOr<std::string> ReadWholeFile(const std::string& path);

// write() until all `bytes` are out (EINTR retried).
absl::Status WriteAll(int fd, const void* data, size_t bytes, const std::string& path);
// pread() of exactly `bytes` at `offset`; DataLoss naming the path at an early end of file.
absl::Status ReadAt(int fd, void* out, size_t bytes, int64_t offset, const std::string& path);

}  // namespace moefold
