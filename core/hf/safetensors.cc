// safetensors reader (header validation, pread by name) and writer (tmp file, fsync, rename).
#include "core/hf/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/file_io.h"
#include "core/status.h"
#include "nlohmann/json.hpp"

namespace moefold::hf {

// The format is little-endian and so is every machine moefold runs on; raw copies are then exact.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

namespace {

using nlohmann::json;

constexpr int64_t kMaxHeaderBytes = 100'000'000;  // Python's safetensors refuses larger headers
constexpr absl::string_view kIndexFile = "model.safetensors.index.json";
constexpr absl::string_view kSingleFile = "model.safetensors";

struct NamedDType {
  DType dtype;
  absl::string_view name;
};
constexpr NamedDType kDTypes[] = {
    {DType::kF32, "F32"},         {DType::kBF16, "BF16"},       {DType::kF16, "F16"},
    {DType::kFp8E4M3, "F8_E4M3"}, {DType::kFp8E5M2, "F8_E5M2"}, {DType::kI32, "I32"},
    {DType::kI64, "I64"},         {DType::kU8, "U8"},
};

std::string ErrnoText() { return std::strerror(errno); }

// pread until `bytes` are read; false on error or end of file.
bool ReadFully(int fd, void* out, int64_t bytes, int64_t offset) {
  return ReadAt(fd, out, static_cast<size_t>(bytes), offset, "").ok();
}

absl::Status Bad(const std::string& path, absl::string_view tensor, absl::string_view what) {
  if (tensor.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
  return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", tensor, "': ", what));
}

// A JSON integer that fits in int64 (nlohmann parses non-negative literals as unsigned).
bool AsInt64(const json& v, int64_t* out) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(INT64_MAX)) return false;
    *out = static_cast<int64_t>(u);
    return true;
  }
  if (v.is_number_integer()) {
    *out = v.get<int64_t>();
    return true;
  }
  return false;
}

absl::StatusOr<SafetensorsEntry> ParseEntry(const std::string& path, const std::string& name,
                                            const json& v) {
  if (!v.is_object()) return Bad(path, name, "header entry is not an object");
  const auto dtype_it = v.find("dtype");
  const auto shape_it = v.find("shape");
  const auto offsets_it = v.find("data_offsets");
  if (dtype_it == v.end() || shape_it == v.end() || offsets_it == v.end()) {
    return Bad(path, name, "header entry needs dtype, shape and data_offsets");
  }
  SafetensorsEntry e;
  e.name = name;
  if (!dtype_it->is_string()) return Bad(path, name, "dtype is not a string");
  absl::StatusOr<DType> dtype = ParseSafetensorsDType(dtype_it->get<std::string>());
  if (!dtype.ok()) return Bad(path, name, dtype.status().message());
  e.dtype = *dtype;
  if (!shape_it->is_array()) return Bad(path, name, "shape is not an array");
  if (shape_it->size() > 5) {
    return Bad(path, name, absl::StrCat("shape has ", shape_it->size(), " dimensions (at most 5)"));
  }
  int64_t numel = 1;
  bool overflow = false;
  for (const json& d : *shape_it) {
    int64_t n = 0;
    if (!AsInt64(d, &n) || n < 0) return Bad(path, name, "shape has a negative or non-integer dimension");
    e.shape.push_back(n);
    overflow |= __builtin_mul_overflow(numel, n, &numel);
  }
  if (!offsets_it->is_array() || offsets_it->size() != 2 || !AsInt64((*offsets_it)[0], &e.begin) ||
      !AsInt64((*offsets_it)[1], &e.end) || e.begin < 0 || e.end < e.begin) {
    return Bad(path, name, "data_offsets is not [begin, end] with 0 <= begin <= end");
  }
  int64_t bytes = 0;
  overflow |= __builtin_mul_overflow(numel, static_cast<int64_t>(DTypeSize(e.dtype)), &bytes);
  if (overflow || bytes != e.end - e.begin) {
    return Bad(path, name,
               absl::StrCat("data_offsets [", e.begin, ", ", e.end, ") hold ", e.end - e.begin,
                            " bytes but ", dtype_it->get<std::string>(), " shape [",
                            absl::StrJoin(e.shape, ", "), "] needs ",
                            overflow ? std::string("more than 2^63") : absl::StrCat(bytes)));
  }
  return e;
}

}  // namespace

absl::StatusOr<DType> ParseSafetensorsDType(absl::string_view name) {
  for (const NamedDType& d : kDTypes) {
    if (d.name == name) return d.dtype;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported dtype '", name, "' (F32, BF16, F16, F8_E4M3, F8_E5M2, I32, I64, U8)"));
}

absl::string_view SafetensorsDTypeName(DType dtype) {
  for (const NamedDType& d : kDTypes) {
    if (d.dtype == dtype) return d.name;
  }
  MF_CHECK(false) << "no safetensors name for " << DTypeName(dtype);
  return "";
}

struct SafetensorsFile::State {
  std::string path;
  int fd = -1;
  int64_t data_start = 0;  // 8 + header length
  std::map<std::string, std::string> metadata;
  std::map<std::string, SafetensorsEntry> entries;
  ~State() {
    if (fd >= 0) ::close(fd);
  }
};

absl::StatusOr<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  auto state = std::make_shared<State>();
  state->path = path;
  state->fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (state->fd < 0) {
    const std::string reason = ErrnoText();
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot open: ", reason));
  }
  struct stat st;
  if (::fstat(state->fd, &st) != 0) return Bad(path, "", absl::StrCat("cannot stat: ", ErrnoText()));
  const int64_t file_size = st.st_size;
  uint64_t header_len = 0;
  if (file_size < 8 || !ReadFully(state->fd, &header_len, 8, 0)) {
    return Bad(path, "", absl::StrCat("truncated: ", file_size, " bytes, shorter than the 8-byte header length"));
  }
  if (header_len > static_cast<uint64_t>(file_size - 8)) {
    return Bad(path, "", absl::StrCat("header length ", header_len, " runs past the end of the ",
                                      file_size, "-byte file (truncated or not safetensors)"));
  }
  if (header_len > static_cast<uint64_t>(kMaxHeaderBytes)) {
    return Bad(path, "", absl::StrCat("header length ", header_len, " exceeds ", kMaxHeaderBytes, " bytes"));
  }
  std::string header(header_len, '\0');
  if (!ReadFully(state->fd, header.data(), static_cast<int64_t>(header_len), 8)) {
    return Bad(path, "", "cannot read the header");
  }
  const json root = json::parse(header, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) return Bad(path, "", "header is not a JSON object");
  state->data_start = 8 + static_cast<int64_t>(header_len);
  const int64_t data_size = file_size - state->data_start;
  for (const auto& [key, value] : root.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) return Bad(path, "", "__metadata__ is not an object");
      for (const auto& [k, v] : value.items()) {
        if (!v.is_string()) return Bad(path, "", absl::StrCat("__metadata__ '", k, "' is not a string"));
        state->metadata[k] = v.get<std::string>();
      }
      continue;
    }
    MF_ASSIGN_OR_RETURN(SafetensorsEntry e, ParseEntry(path, key, value));
    if (e.end > data_size) {
      return Bad(path, key, absl::StrCat("data_offsets [", e.begin, ", ", e.end, ") run past the ",
                                         data_size, "-byte data section (file truncated?)"));
    }
    state->entries.emplace(key, std::move(e));
  }
  // The tensors must tile [0, data_size) in offset order, as Python's reader demands.
  std::vector<const SafetensorsEntry*> by_offset;
  for (const auto& [name, e] : state->entries) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(), [](const auto* a, const auto* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  int64_t covered = 0;
  const SafetensorsEntry* previous = nullptr;
  for (const SafetensorsEntry* e : by_offset) {
    if (e->begin < covered) {
      return Bad(path, e->name, absl::StrCat("data_offsets [", e->begin, ", ", e->end,
                                             ") overlap tensor '", previous->name, "' [",
                                             previous->begin, ", ", previous->end, ")"));
    }
    if (e->begin > covered) {
      return Bad(path, e->name, absl::StrCat("data_offsets [", e->begin, ", ", e->end,
                                             ") leave a gap after byte ", covered));
    }
    covered = e->end;
    previous = e;
  }
  if (covered != data_size) {
    return Bad(path, previous == nullptr ? "" : previous->name,
               absl::StrCat(data_size - covered, " bytes follow the last tensor's data"));
  }
  return SafetensorsFile(std::move(state));
}

const std::string& SafetensorsFile::path() const { return state_->path; }
const std::map<std::string, std::string>& SafetensorsFile::metadata() const { return state_->metadata; }
const std::map<std::string, SafetensorsEntry>& SafetensorsFile::entries() const { return state_->entries; }

const SafetensorsEntry* SafetensorsFile::Find(const std::string& name) const {
  const auto it = state_->entries.find(name);
  return it == state_->entries.end() ? nullptr : &it->second;
}

absl::StatusOr<Tensor> SafetensorsFile::Read(const std::string& name) const {
  const SafetensorsEntry* e = Find(name);
  if (e == nullptr) {
    return absl::NotFoundError(absl::StrCat(state_->path, ": no tensor '", name, "'"));
  }
  Tensor t = Tensor::Empty(e->shape, e->dtype);
  if (e->end > e->begin &&
      !ReadFully(state_->fd, t.raw_data(), e->end - e->begin, state_->data_start + e->begin)) {
    return absl::DataLossError(absl::StrCat(state_->path, ": tensor '", name,
                                            "': short read (the file changed or is truncated)"));
  }
  return t;
}

absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<std::pair<std::string, Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  std::vector<const std::pair<std::string, Tensor>*> order;
  for (const auto& t : tensors) {
    if (t.first.empty() || t.first == "__metadata__") {
      return absl::InvalidArgumentError(absl::StrCat(path, ": invalid tensor name '", t.first, "'"));
    }
    MF_CHECK(t.second.device().is_cpu()) << path << ": " << t.first << " is not on the CPU";
    order.push_back(&t);
  }
  std::sort(order.begin(), order.end(), [](const auto* a, const auto* b) {
    const size_t sa = DTypeSize(a->second.dtype()), sb = DTypeSize(b->second.dtype());
    return sa != sb ? sa > sb : a->first < b->first;
  });
  for (size_t i = 1; i < order.size(); ++i) {
    if (order[i]->first == order[i - 1]->first) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", order[i]->first, "' twice"));
    }
  }
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  int64_t offset = 0;
  for (const auto* t : order) {
    const int64_t bytes = static_cast<int64_t>(t->second.nbytes());
    header[t->first] = {{"dtype", SafetensorsDTypeName(t->second.dtype())},
                        {"shape", t->second.shape()},
                        {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.resize((text.size() + 7) / 8 * 8, ' ');
  const uint64_t header_len = text.size();
  std::vector<absl::string_view> chunks = {
      {reinterpret_cast<const char*>(&header_len), 8}, {text.data(), text.size()}};
  for (const auto* t : order) {
    if (t->second.nbytes() > 0) {
      chunks.push_back({static_cast<const char*>(t->second.raw_data()), t->second.nbytes()});
    }
  }
  return WriteFileAtomically(path, chunks);
}

absl::StatusOr<SafetensorsDir> SafetensorsDir::Open(const std::string& dir) {
  SafetensorsDir out;
  out.dir_ = dir;
  const std::string index_path = absl::StrCat(dir, "/", kIndexFile);
  struct stat st;
  if (::stat(index_path.c_str(), &st) == 0) {
    const int fd = ::open(index_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Bad(index_path, "", absl::StrCat("cannot open: ", ErrnoText()));
    std::string text(static_cast<size_t>(st.st_size), '\0');
    const bool read = ReadFully(fd, text.data(), st.st_size, 0);
    ::close(fd);
    if (!read) return Bad(index_path, "", "cannot read");
    const json root = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (root.is_discarded() || !root.is_object() || !root.contains("weight_map") ||
        !root["weight_map"].is_object()) {
      return Bad(index_path, "", "not a JSON object with a weight_map object");
    }
    for (const auto& [name, file] : root["weight_map"].items()) {
      if (!file.is_string()) return Bad(index_path, name, "weight_map value is not a file name");
      const std::string f = file.get<std::string>();
      if (f.empty() || f.find('/') != std::string::npos || f == "." || f == "..") {
        return Bad(index_path, name, absl::StrCat("file '", f, "' is not a file name inside ", dir));
      }
      out.weight_map_[name] = f;
    }
    return out;
  }
  const std::string single = absl::StrCat(dir, "/", kSingleFile);
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(single);
  if (absl::IsNotFound(file.status())) {
    return absl::NotFoundError(
        absl::StrCat(dir, ": neither ", kIndexFile, " nor ", kSingleFile, " exists"));
  }
  if (!file.ok()) return file.status();
  for (const auto& [name, e] : file->entries()) out.weight_map_[name] = std::string(kSingleFile);
  out.open_.emplace(std::string(kSingleFile), *std::move(file));
  return out;
}

bool SafetensorsDir::Contains(const std::string& name) const { return weight_map_.count(name) > 0; }

absl::StatusOr<std::string> SafetensorsDir::FileOf(const std::string& name) const {
  const auto it = weight_map_.find(name);
  if (it == weight_map_.end()) {
    const bool single = open_.count(std::string(kSingleFile)) > 0;
    return absl::NotFoundError(absl::StrCat(dir_, ": no tensor '", name, "' in ",
                                            single ? kSingleFile : kIndexFile));
  }
  return it->second;
}

absl::StatusOr<Tensor> SafetensorsDir::Read(const std::string& name) {
  MF_ASSIGN_OR_RETURN(const std::string file, FileOf(name));
  auto it = open_.find(file);
  if (it == open_.end()) {
    MF_ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::Open(absl::StrCat(dir_, "/", file)));
    it = open_.emplace(file, std::move(f)).first;
  }
  if (it->second.Find(name) == nullptr) {
    return absl::NotFoundError(absl::StrCat(it->second.path(), ": no tensor '", name, "' (", kIndexFile,
                                            " maps it to this file)"));
  }
  return it->second.Read(name);
}

std::vector<std::string> SafetensorsDir::Names() const {
  std::vector<std::string> names;
  for (const auto& [name, file] : weight_map_) names.push_back(name);
  return names;
}

absl::Status WriteSafetensorsIndex(const std::string& dir,
                                   const std::map<std::string, std::string>& weight_map,
                                   int64_t total_size) {
  const json index = {{"metadata", {{"total_size", total_size}}}, {"weight_map", weight_map}};
  return WriteFileAtomically(absl::StrCat(dir, "/", kIndexFile), index.dump(2) + "\n");
}

}  // namespace moefold::hf
