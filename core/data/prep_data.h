// Text → Megatron indexed dataset with the byte tokenizer (`moefold prep-data`), and the built-in
// corpus (core/data/corpus/kjv.txt) prepared on first use. Invariant: a prepared prefix is either
// complete and valid or absent (the writer renames into place, .idx last).
//
//   MF_ASSIGN_OR_RETURN(std::string prefix, EnsureBuiltinDataset("runs/cache"));
//   MF_ASSIGN_OR_RETURN(IndexedDataset ds, IndexedDataset::Open(prefix));
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/data/indexed_dataset.h"

namespace moefold::data {

struct PrepOptions {
  enum class Split {
    kLine,       // one document per non-blank line (a trailing '\r' is dropped)
    kParagraph,  // one document per run of non-blank lines, joined with '\n'
  };
  Split split = Split::kLine;
  IndexDType dtype = IndexDType::kU16;  // must hold id 256 (so not uint8/int8)
};

// Reads `text_path`, splits it into documents (whitespace-only lines count as blank), encodes each
// with ByteTokenizer (bytes + EOD 256) and writes out_prefix.{bin,idx} atomically. NotFound when
// the text is missing, InvalidArgument when it holds no document or the dtype cannot hold 256,
// DataLoss on a write failure; messages name the path.
absl::Status PrepareTextDataset(absl::string_view text_path, absl::string_view out_prefix,
                                const PrepOptions& options = {});

// The built-in corpus file: $MOEFOLD_CORPUS when set, else <source dir>/core/data/corpus/kjv.txt
// (the source dir is compiled in as MOEFOLD_SOURCE_DIR).
std::string BuiltinCorpusPath();

// Prepares the built-in corpus (line split) into cache_dir/kjv_byte and returns that prefix. Skips
// the work when the dataset opens, its tokens fit the byte vocabulary and its stamp file
// (prefix + ".source": tokenizer, split, corpus size and FNV-1a hash) matches the corpus. Creates
// cache_dir. Callers sharing a cache_dir may call it concurrently: an flock on prefix + ".lock"
// makes one prepare while the others wait and then find it valid.
absl::StatusOr<std::string> EnsureBuiltinDataset(absl::string_view cache_dir);

}  // namespace moefold::data
