// Index cache files: "MFIDXC1\n", u64 description bytes, the description, then five arrays, each
// a u64 count and its little-endian elements (scalars, i32, i64a, i64b, i16).
#include "core/data/index_cache.h"

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace moefold::data {
namespace {

constexpr char kMagic[8] = {'M', 'F', 'I', 'D', 'X', 'C', '1', '\n'};

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

template <typename T>
bool WriteArray(std::FILE* f, const std::vector<T>& v) {
  const uint64_t n = v.size();
  return std::fwrite(&n, sizeof(n), 1, f) == 1 &&
         (n == 0 || std::fwrite(v.data(), sizeof(T), n, f) == n);
}

template <typename T>
bool ReadArray(std::FILE* f, uint64_t max_bytes, std::vector<T>* v) {
  uint64_t n = 0;
  if (std::fread(&n, sizeof(n), 1, f) != 1 || n > max_bytes / sizeof(T)) return false;
  v->resize(n);
  return n == 0 || std::fread(v->data(), sizeof(T), n, f) == n;
}

}  // namespace

uint64_t Fnv1a64(const void* data, size_t size, uint64_t hash) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < size; ++i) {
    hash ^= p[i];
    hash *= 1099511628211ull;
  }
  return hash;
}

std::string IndexCachePath(absl::string_view dir, absl::string_view kind,
                           absl::string_view description) {
  return absl::StrFormat("%s/%s-%016x.idxcache", dir, kind,
                         Fnv1a64(description.data(), description.size()));
}

absl::Status WriteIndexCache(const std::string& path, absl::string_view description,
                             const CachedIndices& indices) {
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  const std::string tmp = absl::StrCat(path, ".tmp-", ::getpid());
  bool ok = false;
  {
    File f(std::fopen(tmp.c_str(), "wb"));
    if (f != nullptr) {
      const uint64_t n = description.size();
      ok = std::fwrite(kMagic, 1, sizeof(kMagic), f.get()) == sizeof(kMagic) &&
           std::fwrite(&n, sizeof(n), 1, f.get()) == 1 &&
           std::fwrite(description.data(), 1, n, f.get()) == n &&
           WriteArray(f.get(), indices.scalars) && WriteArray(f.get(), indices.i32) &&
           WriteArray(f.get(), indices.i64a) && WriteArray(f.get(), indices.i64b) &&
           WriteArray(f.get(), indices.i16);
      ok = std::fclose(f.release()) == 0 && ok;
    }
  }
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return absl::DataLossError(absl::StrCat(path, ": cannot write the index cache (",
                                            std::strerror(errno), ")"));
  }
  return absl::OkStatus();
}

bool ReadIndexCache(const std::string& path, absl::string_view description,
                    CachedIndices* indices) {
  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) return false;
  File f(std::fopen(path.c_str(), "rb"));
  if (f == nullptr) return false;
  char magic[sizeof(kMagic)];
  uint64_t n = 0;
  if (std::fread(magic, 1, sizeof(magic), f.get()) != sizeof(magic) ||
      std::memcmp(magic, kMagic, sizeof(kMagic)) != 0 ||
      std::fread(&n, sizeof(n), 1, f.get()) != 1 || n != description.size()) {
    return false;
  }
  std::string stored(n, '\0');
  if (std::fread(stored.data(), 1, n, f.get()) != n || stored != description) return false;
  CachedIndices out;
  if (!ReadArray(f.get(), size, &out.scalars) || !ReadArray(f.get(), size, &out.i32) ||
      !ReadArray(f.get(), size, &out.i64a) || !ReadArray(f.get(), size, &out.i64b) ||
      !ReadArray(f.get(), size, &out.i16) || std::fgetc(f.get()) != EOF) {
    return false;
  }
  *indices = std::move(out);
  return true;
}

}  // namespace moefold::data
