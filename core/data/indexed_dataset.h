// Megatron-LM's indexed dataset (.idx index + .bin tokens, little-endian; docs/FORMULAS.md §11): a
// validating, mmap-backed reader and an atomic writer. Invariant: an opened dataset has passed
// every structural check, so accessors only MF_CHECK their arguments.
//
//   MF_ASSIGN_OR_RETURN(IndexedDataset ds, IndexedDataset::Open("data/kjv_byte"));
//   MF_RETURN_IF_ERROR(ds.ValidateTokens(/*vocab_size=*/257));
//   std::vector<int32_t> t(ds.sequence_length(0));
//   ds.GetTokens(0, 0, t.size(), t.data());
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/data/mapped_file.h"

namespace moefold::data {

// Megatron-LM's DType codes (docs/FORMULAS.md §11). Only the integer codes can
// hold token ids; the float codes are recognised so the error can say what the file holds.
enum class IndexDType : uint8_t {
  kU8 = 1,
  kI8 = 2,
  kI16 = 3,
  kI32 = 4,
  kI64 = 5,
  kF64 = 6,
  kF32 = 7,
  kU16 = 8
};
int IndexDTypeSize(IndexDType dtype);                // bytes per token: 1, 1, 2, 4, 8, 8, 4, 2
absl::string_view IndexDTypeName(IndexDType dtype);  // "uint8", "int8", ... (NumPy names)

// Layout constants: magic (9 B), u64 version, u8 dtype code, u64 S, u64 D, then the arrays.
inline constexpr char kIndexMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', '\0', '\0'};
inline constexpr uint64_t kIndexVersion = 1;
inline constexpr int64_t kIndexHeaderBytes = 34;

class IndexedDataset {
 public:
  // Opens prefix.idx and prefix.bin (both mmapped read-only) and validates the structure: exact
  // .idx size (34 + 4S + 8S + 8D, or + S with Megatron's optional int8 modes), magic, version 1, an
  // integer dtype code, lengths ≥ 0, pointers contiguous from 0 ending at the .bin size, document
  // indices non-decreasing from 0 to S. Errors: NotFound (a file is missing), InvalidArgument (not
  // this format: magic, version, dtype) or DataLoss (truncated or inconsistent); every message
  // starts with the offending file's path and names the problem.
  static absl::StatusOr<IndexedDataset> Open(absl::string_view prefix);

  // Scans every token; InvalidArgument naming the .bin path, the sequence, the offset and the id
  // when an id is < 0 or ≥ vocab_size. O(total tokens); returns at once when the dtype cannot
  // exceed it.
  absl::Status ValidateTokens(int64_t vocab_size) const;

  const std::string& prefix() const { return prefix_; }
  const std::string& idx_path() const { return idx_.path(); }
  const std::string& bin_path() const { return bin_.path(); }
  IndexDType dtype() const { return dtype_; }
  int64_t num_sequences() const { return num_sequences_; }
  // Documents = document-index entries − 1 (a document is a run of sequences).
  int64_t num_documents() const { return num_doc_index_entries_ - 1; }
  int64_t num_tokens() const { return num_tokens_; }
  bool has_modes() const { return has_modes_; }

  // Tokens in sequence `seq` (0 ≤ seq < S).
  int64_t sequence_length(int64_t seq) const;
  // Byte offset of sequence `seq` in the .bin file.
  int64_t sequence_pointer(int64_t seq) const;
  // Entry i of the document index (0 ≤ i ≤ num_documents()): first sequence of document i; the last
  // entry is S.
  int64_t document_index(int64_t i) const;

  // Copies tokens [offset, offset + length) of sequence `seq` into out[0, length), widened to
  // int32. MF_CHECKs the range. int64 files holding ids beyond int32 must be refused by
  // ValidateTokens first.
  void GetTokens(int64_t seq, int64_t offset, int64_t length, int32_t* out) const;

 private:
  IndexedDataset() = default;

  std::string prefix_;
  MappedFile idx_;
  MappedFile bin_;
  IndexDType dtype_ = IndexDType::kU16;
  int64_t num_sequences_ = 0;
  int64_t num_doc_index_entries_ = 0;
  int64_t num_tokens_ = 0;
  bool has_modes_ = false;
};

// Writes a dataset with one sequence per document, as Megatron-LM's preprocessing does. Data goes
// to "<prefix>.bin.tmp-<pid>" / "<prefix>.idx.tmp-<pid>"; Finalize() removes any old prefix.idx,
// then renames the .bin and finally the .idx into place, so prefix.idx exists only beside a
// complete .bin (an interrupted run leaves no dataset). Destroying an unfinalized writer deletes
// its temporaries.
class IndexedDatasetWriter {
 public:
  // InvalidArgument for a float dtype or when the temporary file cannot be created (names the
  // path).
  static absl::StatusOr<IndexedDatasetWriter> Create(absl::string_view prefix, IndexDType dtype);

  IndexedDatasetWriter(IndexedDatasetWriter&& other) noexcept;
  IndexedDatasetWriter& operator=(IndexedDatasetWriter&& other) = delete;
  IndexedDatasetWriter(const IndexedDatasetWriter&) = delete;
  IndexedDatasetWriter& operator=(const IndexedDatasetWriter&) = delete;
  ~IndexedDatasetWriter();

  // Appends one document (one sequence). InvalidArgument when a token does not fit the dtype
  // (nothing is written then); DataLoss on a write failure; FailedPrecondition after Finalize().
  absl::Status AddDocument(absl::Span<const int32_t> tokens);
  // Appends a document without sequences (a repeated document-index entry), as Megatron's
  // preprocess_data.py writes a text that tokenizes to nothing.
  absl::Status AddEmptyDocument();

  // Writes the index and moves both files into place. DataLoss on an I/O failure.
  absl::Status Finalize();

  int64_t num_sequences() const { return static_cast<int64_t>(lengths_.size()); }
  int64_t num_tokens() const { return num_tokens_; }

 private:
  struct FileCloser {
    void operator()(std::FILE* f) const;
  };
  IndexedDatasetWriter() = default;
  void RemoveTemporaries();

  std::string prefix_;
  std::string bin_tmp_;
  std::string idx_tmp_;
  IndexDType dtype_ = IndexDType::kU16;
  std::unique_ptr<std::FILE, FileCloser> bin_;
  std::vector<int32_t> lengths_;
  std::vector<int64_t> document_index_ = {0};  // first sequence of each document, then S
  std::vector<uint8_t> buffer_;
  int64_t num_tokens_ = 0;
  bool finalized_ = false;
};

}  // namespace moefold::data
