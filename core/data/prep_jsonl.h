// `moefold prep-data --input FILE.jsonl[.zst]`: Megatron-LM's preprocess_data.py in C++. Each line
// is a JSON object; its `json_key` string is tokenized, the end-of-document id appended, and the
// ids written as one document (one sequence) of a Megatron indexed dataset, in line order.
// Invariant: for the same token ids the .bin/.idx bytes equal Megatron's IndexedDatasetBuilder's
// (dtype uint16 when the vocabulary has fewer than 65500 ids, else int32; a text that tokenizes
// to nothing is a document without sequences and gets no end-of-document id).
//
//   MF_ASSIGN_OR_RETURN(auto tok, LoadTokenizer("hf", "tokenizer.json"));
//   MF_ASSIGN_OR_RETURN(JsonlPrepStats stats, PrepareJsonlDataset("c4.jsonl.zst", *tok, "data/c4", {}));
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/data/indexed_dataset.h"
#include "core/data/tokenizer.h"

namespace moefold::data {

struct JsonlPrepOptions {
  std::string json_key = "text";
  int workers = 0;          // tokenizing threads; 0 = every core
  bool skip_bad_lines = false;  // --on-error skip: report and go on; else stop at the first
  bool append_eod = true;
  bool progress = false;    // a progress line on stderr (documents/s, tokens/s)
};

struct JsonlPrepStats {
  int64_t lines = 0, documents = 0, tokens = 0, skipped = 0, input_bytes = 0;
  double seconds = 0;
  int workers = 0;
};

// Megatron's dtype for a vocabulary (IndexedDataset DType.optimal_dtype): uint16 below 65500 ids,
// else int32.
IndexDType DTypeForVocabulary(int64_t vocab_size);

// Reads `input` (zstd-compressed when it ends in .zst), writes out_prefix.{bin,idx} atomically.
// NotFound for a missing input; InvalidArgument naming the file and line number for a line that
// is not a JSON object, lacks the key or whose value is not a string (unless skip_bad_lines: then
// the line is reported on stderr, counted in `skipped` and left out), and for corrupt zstd data;
// the tokenizer's errors with the line number; DataLoss on a write failure.
absl::StatusOr<JsonlPrepStats> PrepareJsonlDataset(absl::string_view input,
                                                   const Tokenizer& tokenizer,
                                                   absl::string_view out_prefix,
                                                   const JsonlPrepOptions& options);

}  // namespace moefold::data
