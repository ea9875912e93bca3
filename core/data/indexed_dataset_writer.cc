// IndexedDatasetWriter: streams tokens to a temporary .bin, then writes the .idx and renames both
// into place (the .idx last: its presence marks a complete dataset).
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/data/indexed_dataset.h"
#include "core/status.h"

namespace moefold::data {
namespace {

template <typename T>
void Append(std::vector<uint8_t>* out, T v) {
  const size_t at = out->size();
  out->resize(at + sizeof(T));
  std::memcpy(out->data() + at, &v, sizeof(T));
}

bool FitsIn(int32_t token, IndexDType dtype) {
  switch (dtype) {
    case IndexDType::kU8:
      return token >= 0 && token <= 255;
    case IndexDType::kI8:
      return token >= -128 && token <= 127;
    case IndexDType::kI16:
      return token >= -32768 && token <= 32767;
    case IndexDType::kU16:
      return token >= 0 && token <= 65535;
    default:
      return true;  // i32, i64
  }
}

void AppendToken(std::vector<uint8_t>* out, int32_t token, IndexDType dtype) {
  switch (dtype) {
    case IndexDType::kU8:
      Append<uint8_t>(out, static_cast<uint8_t>(token));
      break;
    case IndexDType::kI8:
      Append<int8_t>(out, static_cast<int8_t>(token));
      break;
    case IndexDType::kI16:
      Append<int16_t>(out, static_cast<int16_t>(token));
      break;
    case IndexDType::kU16:
      Append<uint16_t>(out, static_cast<uint16_t>(token));
      break;
    case IndexDType::kI32:
      Append<int32_t>(out, token);
      break;
    case IndexDType::kI64:
      Append<int64_t>(out, token);
      break;
    default:
      MF_CHECK(false) << "float dtype";
  }
}

absl::Status WriteAll(std::FILE* f, const std::vector<uint8_t>& bytes, const std::string& path) {
  if (!bytes.empty() && std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size()) {
    return absl::DataLossError(absl::StrCat(path, ": write failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace

void IndexedDatasetWriter::FileCloser::operator()(std::FILE* f) const { std::fclose(f); }

absl::StatusOr<IndexedDatasetWriter> IndexedDatasetWriter::Create(absl::string_view prefix,
                                                                  IndexDType dtype) {
  if (dtype == IndexDType::kF32 || dtype == IndexDType::kF64 || IndexDTypeSize(dtype) == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, ": dtype ", IndexDTypeName(dtype), " cannot hold token ids"));
  }
  IndexedDatasetWriter w;
  w.prefix_ = std::string(prefix);
  w.dtype_ = dtype;
  w.bin_tmp_ = absl::StrCat(prefix, ".bin.tmp-", ::getpid());
  w.idx_tmp_ = absl::StrCat(prefix, ".idx.tmp-", ::getpid());
  w.bin_.reset(std::fopen(w.bin_tmp_.c_str(), "wb"));
  if (w.bin_ == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(w.bin_tmp_, ": cannot create: ", std::strerror(errno)));
  }
  return w;
}

IndexedDatasetWriter::IndexedDatasetWriter(IndexedDatasetWriter&& other) noexcept
    : prefix_(std::move(other.prefix_)),
      bin_tmp_(std::move(other.bin_tmp_)),
      idx_tmp_(std::move(other.idx_tmp_)),
      dtype_(other.dtype_),
      bin_(std::move(other.bin_)),
      lengths_(std::move(other.lengths_)),
      document_index_(std::move(other.document_index_)),
      buffer_(std::move(other.buffer_)),
      num_tokens_(other.num_tokens_),
      finalized_(std::exchange(other.finalized_, true)) {}

IndexedDatasetWriter::~IndexedDatasetWriter() {
  if (!finalized_) RemoveTemporaries();
}

void IndexedDatasetWriter::RemoveTemporaries() {
  bin_.reset();
  if (!bin_tmp_.empty()) std::remove(bin_tmp_.c_str());
  if (!idx_tmp_.empty()) std::remove(idx_tmp_.c_str());
}

absl::Status IndexedDatasetWriter::AddDocument(absl::Span<const int32_t> tokens) {
  if (finalized_ || bin_ == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat(prefix_, ": writer already finalized (or its Finalize failed)"));
  }
  if (tokens.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return absl::InvalidArgumentError(absl::StrCat(prefix_, ": document of ", tokens.size(),
                                                   " tokens exceeds the int32 length field"));
  }
  buffer_.clear();
  buffer_.reserve(tokens.size() * IndexDTypeSize(dtype_));
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (!FitsIn(tokens[i], dtype_)) {
      return absl::InvalidArgumentError(
          absl::StrCat(prefix_, ": token ", tokens[i], " at offset ", i, " of document ",
                       lengths_.size(), " does not fit dtype ", IndexDTypeName(dtype_)));
    }
    AppendToken(&buffer_, tokens[i], dtype_);
  }
  MF_RETURN_IF_ERROR(WriteAll(bin_.get(), buffer_, bin_tmp_));
  lengths_.push_back(static_cast<int32_t>(tokens.size()));
  document_index_.push_back(static_cast<int64_t>(lengths_.size()));
  num_tokens_ += static_cast<int64_t>(tokens.size());
  return absl::OkStatus();
}

absl::Status IndexedDatasetWriter::AddEmptyDocument() {
  if (finalized_ || bin_ == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat(prefix_, ": writer already finalized (or its Finalize failed)"));
  }
  document_index_.push_back(static_cast<int64_t>(lengths_.size()));
  return absl::OkStatus();
}

absl::Status IndexedDatasetWriter::Finalize() {
  if (finalized_ || bin_ == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat(prefix_, ": writer already finalized (or its Finalize failed)"));
  }
  if (std::fflush(bin_.get()) != 0 || std::fclose(bin_.release()) != 0) {
    return absl::DataLossError(absl::StrCat(bin_tmp_, ": write failed: ", std::strerror(errno)));
  }

  const uint64_t s = lengths_.size();
  std::vector<uint8_t> index;
  index.reserve(kIndexHeaderBytes + 20 * s + 8 * document_index_.size());
  index.insert(index.end(), kIndexMagic, kIndexMagic + sizeof(kIndexMagic));
  Append<uint64_t>(&index, kIndexVersion);
  Append<uint8_t>(&index, static_cast<uint8_t>(dtype_));
  Append<uint64_t>(&index, s);
  Append<uint64_t>(&index, document_index_.size());  // documents + 1 entries, the last S
  for (int32_t length : lengths_) Append<int32_t>(&index, length);
  int64_t pointer = 0;
  for (int32_t length : lengths_) {
    Append<int64_t>(&index, pointer);
    pointer += static_cast<int64_t>(length) * IndexDTypeSize(dtype_);
  }
  for (int64_t first : document_index_) Append<int64_t>(&index, first);

  std::unique_ptr<std::FILE, FileCloser> idx(std::fopen(idx_tmp_.c_str(), "wb"));
  if (idx == nullptr) {
    return absl::DataLossError(absl::StrCat(idx_tmp_, ": cannot create: ", std::strerror(errno)));
  }
  MF_RETURN_IF_ERROR(WriteAll(idx.get(), index, idx_tmp_));
  if (std::fclose(idx.release()) != 0) {
    return absl::DataLossError(absl::StrCat(idx_tmp_, ": write failed: ", std::strerror(errno)));
  }

  const std::string idx_path = absl::StrCat(prefix_, ".idx");
  const std::string bin_path = absl::StrCat(prefix_, ".bin");
  // Old .idx first: from here until the last rename there is no dataset rather than a mixed one.
  if (std::remove(idx_path.c_str()) != 0 && errno != ENOENT) {
    return absl::DataLossError(absl::StrCat(idx_path, ": cannot replace: ", std::strerror(errno)));
  }
  if (std::rename(bin_tmp_.c_str(), bin_path.c_str()) != 0) {
    return absl::DataLossError(absl::StrCat(bin_path, ": rename failed: ", std::strerror(errno)));
  }
  if (std::rename(idx_tmp_.c_str(), idx_path.c_str()) != 0) {
    return absl::DataLossError(absl::StrCat(idx_path, ": rename failed: ", std::strerror(errno)));
  }
  finalized_ = true;
  return absl::OkStatus();
}

}  // namespace moefold::data
