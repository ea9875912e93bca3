// The index cache (docs/DECISIONS.md, "Index cache"): the GPT and blend indices of a run, saved as
// one file each under a directory and found again by a 64-bit hash of a description of everything
// that determines them (file fingerprint, sequence range, sequence length, samples, seed, weights,
// format version), as Megatron caches its .npy indices by an MD5 of their description. The file
// holds the description itself, so a hash collision or a stale file is recomputed, never used.
// Writes are atomic (temporary file renamed into place): concurrent ranks may race harmlessly.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace moefold::data {

// dir/<kind>-<16 hex digits of FNV-1a 64 of description>.idxcache
std::string IndexCachePath(absl::string_view dir, absl::string_view kind,
                           absl::string_view description);

// The arrays of one cache file; each is a vector of one of these element types.
struct CachedIndices {
  std::vector<int64_t> scalars;  // small values (epochs, flags)
  std::vector<int32_t> i32;
  std::vector<int64_t> i64a, i64b;
  std::vector<int16_t> i16;
};

// Writes `indices` with `description` to `path` (creating its directory). DataLoss naming the
// path on an I/O failure.
absl::Status WriteIndexCache(const std::string& path, absl::string_view description,
                             const CachedIndices& indices);

// True and *indices filled when `path` exists, is complete and holds exactly `description`;
// false otherwise (absent, truncated, another description).
bool ReadIndexCache(const std::string& path, absl::string_view description,
                    CachedIndices* indices);

// FNV-1a 64 of a byte range, continuing from `hash` (a cheap fingerprint, not a security hash).
uint64_t Fnv1a64(const void* data, size_t size, uint64_t hash = 14695981039346656037ull);

}  // namespace moefold::data
