// Text preparation: documents from lines or paragraphs, byte tokens, indexed dataset; and the
// cached built-in corpus with a stamp that ties the cache to the corpus contents.
#include "core/data/prep_data.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/data/byte_tokenizer.h"
#include "core/status.h"

#ifndef MOEFOLD_SOURCE_DIR
#define MOEFOLD_SOURCE_DIR "."
#endif

namespace moefold::data {
namespace {

constexpr absl::string_view kBuiltinName = "kjv_byte";

bool IsBlank(absl::string_view line) { return absl::StripAsciiWhitespace(line).empty(); }

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (!std::filesystem::exists(path))
      return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read failed"));
  return std::move(buffer).str();
}

// FNV-1a, 64 bit: a cheap content fingerprint for the cache stamp (not a security hash).
uint64_t Fnv1a64(absl::string_view bytes) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : bytes) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  return h;
}

absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents) {
  const std::string tmp = absl::StrCat(path, ".tmp-", ::getpid());
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) {
    return absl::DataLossError(absl::StrCat(tmp, ": cannot create: ", std::strerror(errno)));
  }
  const bool written = std::fwrite(contents.data(), 1, contents.size(), f) == contents.size();
  if (std::fclose(f) != 0 || !written) {
    std::remove(tmp.c_str());
    return absl::DataLossError(absl::StrCat(tmp, ": write failed"));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return absl::DataLossError(absl::StrCat(path, ": rename failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

// Holds an exclusive flock on `path` (created if needed) for its lifetime, so ranks of one node
// that share a cache directory prepare the corpus once instead of racing on the same files.
class FileLock {
 public:
  explicit FileLock(const std::string& path)
      : fd_(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644)) {
    if (fd_ >= 0) {
      while (::flock(fd_, LOCK_EX) != 0 && errno == EINTR) {
      }
    }
  }
  ~FileLock() {
    if (fd_ >= 0) ::close(fd_);  // closing releases the lock
  }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_;
};

}  // namespace

absl::Status PrepareTextDataset(absl::string_view text_path, absl::string_view out_prefix,
                                const PrepOptions& options) {
  const std::string path(text_path);
  if (options.dtype == IndexDType::kU8 || options.dtype == IndexDType::kI8) {
    return absl::InvalidArgumentError(absl::StrCat(out_prefix, ": dtype ",
                                                   IndexDTypeName(options.dtype),
                                                   " cannot hold the end-of-document id 256"));
  }
  MF_ASSIGN_OR_RETURN(const std::string text, ReadFile(path));
  MF_ASSIGN_OR_RETURN(IndexedDatasetWriter writer,
                      IndexedDatasetWriter::Create(out_prefix, options.dtype));

  std::string paragraph;
  auto flush_paragraph = [&]() -> absl::Status {
    if (paragraph.empty()) return absl::OkStatus();
    absl::Status s = writer.AddDocument(ByteTokenizer::Encode(paragraph));
    paragraph.clear();
    return s;
  };
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    absl::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (options.split == PrepOptions::Split::kLine) {
      if (!IsBlank(line)) MF_RETURN_IF_ERROR(writer.AddDocument(ByteTokenizer::Encode(line)));
    } else if (IsBlank(line)) {
      MF_RETURN_IF_ERROR(flush_paragraph());
    } else {
      if (!paragraph.empty()) paragraph.push_back('\n');
      paragraph.append(line.data(), line.size());
    }
  }
  MF_RETURN_IF_ERROR(flush_paragraph());
  if (writer.num_sequences() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": no documents (the text is blank)"));
  }
  return writer.Finalize();
}

std::string BuiltinCorpusPath() {
  const char* env = std::getenv("MOEFOLD_CORPUS");
  if (env != nullptr && env[0] != '\0') return env;
  return absl::StrCat(MOEFOLD_SOURCE_DIR, "/core/data/corpus/kjv.txt");
}

absl::StatusOr<std::string> EnsureBuiltinDataset(absl::string_view cache_dir) {
  const std::string corpus_path = BuiltinCorpusPath();
  absl::StatusOr<std::string> corpus = ReadFile(corpus_path);
  if (!corpus.ok()) {
    return Annotate(corpus.status(),
                    "built-in corpus (set MOEFOLD_CORPUS to its path, or keep the source tree)");
  }
  std::error_code ec;
  std::filesystem::create_directories(std::string(cache_dir), ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat(cache_dir, ": cannot create directory: ", ec.message()));
  }
  const std::string prefix = absl::StrCat(cache_dir, "/", kBuiltinName);
  const std::string stamp_path = absl::StrCat(prefix, ".source");
  const std::string stamp = absl::StrFormat("byte-tokenizer-v1 split=line size=%d fnv1a64=%016x\n",
                                            corpus->size(), Fnv1a64(*corpus));

  // Without the lock (e.g. a file system that refuses flock) preparation still works; only
  // concurrent callers may then redo it.
  FileLock lock(absl::StrCat(prefix, ".lock"));
  absl::StatusOr<std::string> existing_stamp = ReadFile(stamp_path);
  if (existing_stamp.ok() && *existing_stamp == stamp) {
    absl::StatusOr<IndexedDataset> existing = IndexedDataset::Open(prefix);
    if (existing.ok() && existing->ValidateTokens(ByteTokenizer::kVocabSize).ok()) return prefix;
  }
  // Stale or missing: remove the stamp first so a crash below cannot leave a stamp that vouches for
  // a dataset that was never written.
  std::remove(stamp_path.c_str());
  MF_RETURN_IF_ERROR(PrepareTextDataset(corpus_path, prefix, PrepOptions{}));
  MF_RETURN_IF_ERROR(WriteFileAtomically(stamp_path, stamp));
  return prefix;
}

}  // namespace moefold::data
