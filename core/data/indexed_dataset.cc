// IndexedDataset: opening, structural validation and token access. Arrays in the .idx start at byte
// 34 and are unaligned, so every element is read with memcpy (never a reinterpret_cast).
#include "core/data/indexed_dataset.h"

#include <bit>
#include <cstring>
#include <limits>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace moefold::data {
namespace {

static_assert(std::endian::native == std::endian::little,
              "the indexed dataset is little-endian; a big-endian host needs byte swaps here");

template <typename T>
T Load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// Reads token `i` of a buffer of `dtype` as int64 (integer dtypes only).
int64_t LoadToken(const uint8_t* p, IndexDType dtype, int64_t i) {
  switch (dtype) {
    case IndexDType::kU8:
      return p[i];
    case IndexDType::kI8:
      return Load<int8_t>(p + i);
    case IndexDType::kI16:
      return Load<int16_t>(p + 2 * i);
    case IndexDType::kU16:
      return Load<uint16_t>(p + 2 * i);
    case IndexDType::kI32:
      return Load<int32_t>(p + 4 * i);
    case IndexDType::kI64:
      return Load<int64_t>(p + 8 * i);
    default:
      break;
  }
  MF_CHECK(false) << "not an integer dtype: " << static_cast<int>(dtype);
  return 0;
}

// Largest id a dtype can store (to skip the token scan when the vocabulary covers it).
int64_t MaxTokenOf(IndexDType dtype) {
  switch (dtype) {
    case IndexDType::kU8:
      return 255;
    case IndexDType::kI8:
      return 127;
    case IndexDType::kI16:
      return 32767;
    case IndexDType::kU16:
      return 65535;
    case IndexDType::kI32:
      return std::numeric_limits<int32_t>::max();
    default:
      return std::numeric_limits<int64_t>::max();
  }
}

bool IsSigned(IndexDType dtype) { return dtype != IndexDType::kU8 && dtype != IndexDType::kU16; }

}  // namespace

int IndexDTypeSize(IndexDType dtype) {
  switch (dtype) {
    case IndexDType::kU8:
    case IndexDType::kI8:
      return 1;
    case IndexDType::kI16:
    case IndexDType::kU16:
      return 2;
    case IndexDType::kI32:
    case IndexDType::kF32:
      return 4;
    case IndexDType::kI64:
    case IndexDType::kF64:
      return 8;
  }
  return 0;
}

absl::string_view IndexDTypeName(IndexDType dtype) {
  switch (dtype) {
    case IndexDType::kU8:
      return "uint8";
    case IndexDType::kI8:
      return "int8";
    case IndexDType::kI16:
      return "int16";
    case IndexDType::kI32:
      return "int32";
    case IndexDType::kI64:
      return "int64";
    case IndexDType::kF64:
      return "float64";
    case IndexDType::kF32:
      return "float32";
    case IndexDType::kU16:
      return "uint16";
  }
  return "unknown";
}

absl::StatusOr<IndexedDataset> IndexedDataset::Open(absl::string_view prefix) {
  IndexedDataset ds;
  ds.prefix_ = std::string(prefix);
  MF_ASSIGN_OR_RETURN(ds.idx_, MappedFile::Open(absl::StrCat(prefix, ".idx")));
  const std::string& idx = ds.idx_.path();
  const uint8_t* p = ds.idx_.data();
  const uint64_t idx_size = ds.idx_.size();

  if (idx_size < static_cast<uint64_t>(kIndexHeaderBytes)) {
    return absl::DataLossError(absl::StrCat(idx, ": truncated: expected at least ",
                                            kIndexHeaderBytes, " bytes (header), found ",
                                            idx_size));
  }
  if (std::memcmp(p, kIndexMagic, sizeof(kIndexMagic)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(idx, ": bad magic \"",
                     absl::CHexEscape(absl::string_view(reinterpret_cast<const char*>(p), 9)),
                     "\" (expected \"MMIDIDX\\000\\000\"): not a Megatron-LM indexed dataset"));
  }
  const uint64_t version = Load<uint64_t>(p + 9);
  if (version != kIndexVersion) {
    return absl::InvalidArgumentError(
        absl::StrCat(idx, ": bad version ", version, " (expected ", kIndexVersion, ")"));
  }
  const uint8_t code = p[17];
  if (code < 1 || code > 8) {
    return absl::InvalidArgumentError(
        absl::StrCat(idx, ": bad dtype code ", code, " (expected 1..8)"));
  }
  ds.dtype_ = static_cast<IndexDType>(code);
  if (ds.dtype_ == IndexDType::kF32 || ds.dtype_ == IndexDType::kF64) {
    return absl::InvalidArgumentError(absl::StrCat(
        idx, ": dtype code ", code, " (", IndexDTypeName(ds.dtype_), ") cannot hold token ids"));
  }
  const uint64_t s = Load<uint64_t>(p + 18);
  const uint64_t d = Load<uint64_t>(p + 26);
  // Bound S and D by the file size before multiplying, so a corrupt count cannot overflow.
  if (s > idx_size || d > idx_size) {
    return absl::DataLossError(
        absl::StrCat(idx, ": truncated: header claims ", s, " sequences and ", d,
                     " document index entries, file has ", idx_size, " bytes"));
  }
  const uint64_t expected = kIndexHeaderBytes + 4 * s + 8 * s + 8 * d;
  if (idx_size == expected + s && s > 0) {
    ds.has_modes_ = true;
  } else if (idx_size < expected) {
    return absl::DataLossError(
        absl::StrCat(idx, ": truncated: expected ", expected, " bytes, found ", idx_size));
  } else if (idx_size != expected) {
    return absl::DataLossError(absl::StrCat(idx, ": size mismatch: expected ", expected,
                                            " bytes (or ", expected + s, " with modes), found ",
                                            idx_size));
  }
  if (d < 1) {
    return absl::DataLossError(
        absl::StrCat(idx, ": bad document index: it is empty (expected at least the entry 0)"));
  }
  ds.num_sequences_ = static_cast<int64_t>(s);
  ds.num_doc_index_entries_ = static_cast<int64_t>(d);

  MF_ASSIGN_OR_RETURN(ds.bin_, MappedFile::Open(absl::StrCat(prefix, ".bin")));
  const int64_t item = IndexDTypeSize(ds.dtype_);
  int64_t next_pointer = 0;
  for (int64_t i = 0; i < ds.num_sequences_; ++i) {
    const int64_t length = ds.sequence_length(i);
    if (length < 0) {
      return absl::DataLossError(
          absl::StrCat(idx, ": bad length: sequence ", i, " has negative length ", length));
    }
    const int64_t pointer = ds.sequence_pointer(i);
    if (pointer != next_pointer) {
      return absl::DataLossError(
          absl::StrCat(idx, ": bad pointer: sequence ", i, " starts at byte ", pointer,
                       ", expected ", next_pointer, " (pointers must be monotone and contiguous)"));
    }
    next_pointer += length * item;
  }
  const int64_t bin_size = static_cast<int64_t>(ds.bin_.size());
  if (bin_size < next_pointer) {
    return absl::DataLossError(absl::StrCat(ds.bin_.path(), ": truncated: expected ", next_pointer,
                                            " bytes, found ", bin_size));
  }
  if (bin_size != next_pointer) {
    return absl::DataLossError(absl::StrCat(ds.bin_.path(), ": size mismatch: the index covers ",
                                            next_pointer, " bytes, found ", bin_size));
  }
  ds.num_tokens_ = next_pointer / item;

  int64_t previous = 0;
  for (int64_t i = 0; i < ds.num_doc_index_entries_; ++i) {
    const int64_t entry = ds.document_index(i);
    const bool ok = (i == 0) ? entry == 0 : (entry >= previous && entry <= ds.num_sequences_);
    if (!ok) {
      return absl::DataLossError(absl::StrCat(idx, ": bad document index: entry ", i, " is ", entry,
                                              " (must be non-decreasing from 0 to ",
                                              ds.num_sequences_, ", previous entry ", previous,
                                              ")"));
    }
    previous = entry;
  }
  if (previous != ds.num_sequences_) {
    return absl::DataLossError(absl::StrCat(idx, ": bad document index: last entry is ", previous,
                                            ", expected the sequence count ", ds.num_sequences_));
  }
  return ds;
}

absl::Status IndexedDataset::ValidateTokens(int64_t vocab_size) const {
  if (vocab_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("vocab_size must be positive, got ", vocab_size));
  }
  if (!IsSigned(dtype_) && MaxTokenOf(dtype_) < vocab_size) return absl::OkStatus();
  for (int64_t seq = 0; seq < num_sequences_; ++seq) {
    const uint8_t* tokens = bin_.data() + sequence_pointer(seq);
    const int64_t length = sequence_length(seq);
    for (int64_t i = 0; i < length; ++i) {
      const int64_t id = LoadToken(tokens, dtype_, i);
      if (id < 0 || id >= vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat(bin_.path(), ": token id ", id,
                                                       " out of range [0, ", vocab_size,
                                                       ") at sequence ", seq, ", offset ", i));
      }
    }
  }
  return absl::OkStatus();
}

int64_t IndexedDataset::sequence_length(int64_t seq) const {
  MF_CHECK(seq >= 0 && seq < num_sequences_) << "sequence " << seq << " of " << num_sequences_;
  return Load<int32_t>(idx_.data() + kIndexHeaderBytes + 4 * seq);
}

int64_t IndexedDataset::sequence_pointer(int64_t seq) const {
  MF_CHECK(seq >= 0 && seq < num_sequences_) << "sequence " << seq << " of " << num_sequences_;
  return Load<int64_t>(idx_.data() + kIndexHeaderBytes + 4 * num_sequences_ + 8 * seq);
}

int64_t IndexedDataset::document_index(int64_t i) const {
  MF_CHECK(i >= 0 && i < num_doc_index_entries_)
      << "entry " << i << " of " << num_doc_index_entries_;
  return Load<int64_t>(idx_.data() + kIndexHeaderBytes + 12 * num_sequences_ + 8 * i);
}

void IndexedDataset::GetTokens(int64_t seq, int64_t offset, int64_t length, int32_t* out) const {
  const int64_t seq_length = sequence_length(seq);
  MF_CHECK(offset >= 0 && length >= 0 && offset + length <= seq_length)
      << "tokens [" << offset << ", " << offset + length << ") of sequence " << seq << " (length "
      << seq_length << ")";
  const uint8_t* tokens = bin_.data() + sequence_pointer(seq);
  for (int64_t i = 0; i < length; ++i) {
    out[i] = static_cast<int32_t>(LoadToken(tokens, dtype_, offset + i));
  }
}

}  // namespace moefold::data
