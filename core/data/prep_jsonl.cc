// JSONL → indexed dataset: a reader (plain or zstd) cuts the input into blocks of lines, the
// workers parse and tokenize a block's lines in parallel, the writer appends them in line order.
#include "core/data/prep_jsonl.h"

#include <zstd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "nlohmann/json.hpp"

namespace moefold::data {
namespace {

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

// Bytes of the input, decompressed when it is zstd.
class InputStream {
 public:
  static absl::StatusOr<std::unique_ptr<InputStream>> Open(const std::string& path) {
    auto in = std::unique_ptr<InputStream>(new InputStream());
    in->path_ = path;
    in->file_.reset(std::fopen(path.c_str(), "rb"));
    if (in->file_ == nullptr) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
    if (absl::EndsWith(path, ".zst")) {
      in->zstd_ = ZSTD_createDStream();
      in->compressed_.resize(ZSTD_DStreamInSize());
    }
    return in;
  }
  ~InputStream() {
    if (zstd_ != nullptr) ZSTD_freeDStream(zstd_);
  }
  // Appends up to about `max` bytes to *out; returns false at the end of the input.
  absl::StatusOr<bool> Read(size_t max, std::string* out) {
    const size_t at = out->size();
    if (zstd_ == nullptr) {
      out->resize(at + max);
      const size_t n = std::fread(out->data() + at, 1, max, file_.get());
      out->resize(at + n);
      bytes_ += n;
      if (n == 0 && std::ferror(file_.get())) {
        return absl::DataLossError(absl::StrCat(path_, ": read error"));
      }
      return n > 0;
    }
    size_t produced = 0;
    while (produced < max) {
      if (in_.pos == in_.size) {
        const size_t n = std::fread(compressed_.data(), 1, compressed_.size(), file_.get());
        bytes_ += n;
        if (n == 0) {
          if (!frame_done_) {
            return absl::InvalidArgumentError(
                absl::StrCat(path_, ": truncated zstd data (the last frame does not end)"));
          }
          break;
        }
        in_ = {compressed_.data(), n, 0};
      }
      out->resize(at + produced + ZSTD_DStreamOutSize());
      ZSTD_outBuffer o = {out->data() + at + produced, ZSTD_DStreamOutSize(), 0};
      const size_t rc = ZSTD_decompressStream(zstd_, &o, &in_);
      if (ZSTD_isError(rc)) {
        return absl::InvalidArgumentError(
            absl::StrCat(path_, ": corrupt zstd data (", ZSTD_getErrorName(rc), ")"));
      }
      frame_done_ = rc == 0;
      produced += o.pos;
      out->resize(at + produced);
    }
    return produced > 0;
  }
  int64_t bytes_read() const { return bytes_; }

 private:
  InputStream() = default;
  std::string path_;
  std::unique_ptr<std::FILE, FileCloser> file_;
  ZSTD_DStream* zstd_ = nullptr;
  std::vector<char> compressed_;
  ZSTD_inBuffer in_ = {nullptr, 0, 0};
  bool frame_done_ = true;
  int64_t bytes_ = 0;
};

// One line's outcome.
struct Encoded {
  std::vector<int32_t> ids;
  std::string error;  // non-empty: the line is bad
  bool blank = false; // an empty line (no document; Megatron's reader would fail on it)
};

void EncodeLine(absl::string_view line, const Tokenizer& tokenizer,
                const JsonlPrepOptions& options, Encoded* out) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.find_first_not_of(" \t") == absl::string_view::npos) {
    out->blank = true;
    return;
  }
  const nlohmann::json j = nlohmann::json::parse(line.begin(), line.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    out->error = "not a JSON object";
    return;
  }
  const auto it = j.find(options.json_key);
  if (it == j.end()) {
    out->error = absl::StrCat("no key \"", options.json_key, "\"");
    return;
  }
  if (!it->is_string()) {
    out->error = absl::StrCat("\"", options.json_key, "\" is not a string");
    return;
  }
  auto ids = tokenizer.Encode(it->get_ref<const std::string&>());
  if (!ids.ok()) {
    out->error = std::string(ids.status().message());
    return;
  }
  out->ids = std::move(*ids);
  if (!out->ids.empty() && options.append_eod) out->ids.push_back(tokenizer.eod());
}

}  // namespace

IndexDType DTypeForVocabulary(int64_t vocab_size) {
  return vocab_size < 65500 ? IndexDType::kU16 : IndexDType::kI32;
}

absl::StatusOr<JsonlPrepStats> PrepareJsonlDataset(absl::string_view input,
                                                   const Tokenizer& tokenizer,
                                                   absl::string_view out_prefix,
                                                   const JsonlPrepOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  const std::string path(input);
  MF_ASSIGN_OR_RETURN(std::unique_ptr<InputStream> in, InputStream::Open(path));
  MF_ASSIGN_OR_RETURN(IndexedDatasetWriter writer,
                      IndexedDatasetWriter::Create(out_prefix,
                                                   DTypeForVocabulary(tokenizer.vocab_size())));
  JsonlPrepStats stats;
  stats.workers = options.workers > 0 ? options.workers
                                      : std::max(1u, std::thread::hardware_concurrency());
  // A block is about 4 MiB of text per worker: large enough to keep every worker busy, small
  // enough that memory stays bounded.
  const size_t block_bytes = size_t{4} << 20;
  std::string buffer;
  bool more = true;
  double last_print = 0;
  while (more || !buffer.empty()) {
    while (more && buffer.size() < block_bytes * stats.workers) {
      MF_ASSIGN_OR_RETURN(more, in->Read(block_bytes, &buffer));
    }
    // Whole lines only (the last line may lack its newline at the end of the input).
    size_t end = more ? buffer.rfind('\n') : buffer.size();
    if (end == std::string::npos) {
      if (more) {  // one line longer than the buffer: read on until it ends
        MF_ASSIGN_OR_RETURN(more, in->Read(block_bytes, &buffer));
        continue;
      }
      end = buffer.size();
    } else if (more) {
      ++end;
    }
    std::vector<absl::string_view> lines;
    for (size_t at = 0; at < end;) {
      size_t nl = buffer.find('\n', at);
      if (nl == std::string::npos || nl >= end) nl = end;
      lines.emplace_back(buffer.data() + at, nl - at);
      at = nl + 1;
    }
    std::vector<Encoded> encoded(lines.size());
    {
      std::vector<std::thread> threads;
      const size_t per = (lines.size() + stats.workers - 1) / stats.workers;
      for (int w = 0; w < stats.workers && w * per < lines.size(); ++w) {
        threads.emplace_back([&, w] {
          for (size_t i = w * per; i < std::min(lines.size(), (w + 1) * per); ++i) {
            EncodeLine(lines[i], tokenizer, options, &encoded[i]);
          }
        });
      }
      for (std::thread& t : threads) t.join();
    }
    for (size_t i = 0; i < lines.size(); ++i) {
      const int64_t line_number = ++stats.lines;
      const Encoded& e = encoded[i];
      if (e.blank) continue;
      if (!e.error.empty()) {
        const std::string message = absl::StrCat(path, ":", line_number, ": ", e.error);
        if (!options.skip_bad_lines) {
          return absl::InvalidArgumentError(
              absl::StrCat(message, " (--on-error skip leaves such lines out)"));
        }
        std::fprintf(stderr, "%s%s (skipped)\n", options.progress ? "\n" : "", message.c_str());
        ++stats.skipped;
        continue;
      }
      if (e.ids.empty()) {
        MF_RETURN_IF_ERROR(writer.AddEmptyDocument());
      } else {
        MF_RETURN_IF_ERROR(writer.AddDocument(e.ids));
      }
      ++stats.documents;
      stats.tokens += static_cast<int64_t>(e.ids.size());
    }
    buffer.erase(0, end);
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (options.progress && (elapsed - last_print >= 1.0 || (!more && buffer.empty()))) {
      last_print = elapsed;
      std::fprintf(stderr, "\r%lld documents (%.0f/s), %lld tokens (%.0f/s), %.1f MB read",
                   static_cast<long long>(stats.documents), stats.documents / elapsed,
                   static_cast<long long>(stats.tokens), stats.tokens / elapsed,
                   in->bytes_read() / 1e6);
      std::fflush(stderr);
    }
  }
  if (options.progress) std::fputc('\n', stderr);
  MF_RETURN_IF_ERROR(writer.Finalize());
  stats.input_bytes = in->bytes_read();
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

}  // namespace moefold::data
