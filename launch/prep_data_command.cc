// `moefold prep-data`: text or JSONL → Megatron indexed dataset (byte, Hugging Face BPE or
// SentencePiece tokens).
#include <cstdio>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/data/indexed_dataset.h"
#include "core/data/prep_data.h"
#include "core/data/prep_jsonl.h"
#include "core/data/tokenizer.h"
#include "launch/args.h"
#include "launch/commands.h"

namespace moefold::launch {
namespace {

constexpr char kPrepHelp[] =
    "usage: moefold prep-data --input FILE.jsonl[.zst] --output PREFIX [--json-key text]\n"
    "                         [--tokenizer byte|hf|sentencepiece] [--tokenizer-path FILE]\n"
    "                         [--workers N] [--on-error stop|skip]\n"
    "       moefold prep-data --input TEXT --output PREFIX [--split lines|paragraphs]\n"
    "       moefold prep-data --builtin [--output-dir DIR]\n"
    "\n"
    "  --input FILE      JSONL (one JSON object per line; .zst = zstd-compressed), the counterpart\n"
    "                    of Megatron-LM's preprocess_data.py; any other name is UTF-8 text, one\n"
    "                    document per non-empty line (or paragraph) with the byte tokenizer\n"
    "  --json-key KEY    the field holding each document's text (default text)\n"
    "  --tokenizer KIND  byte (ids = bytes, end-of-document 256), hf (a Hugging Face\n"
    "                    tokenizer.json with a byte-level BPE: GPT-2, Llama-3, Qwen2) or\n"
    "                    sentencepiece (a .model: Llama-2, Mixtral); default byte\n"
    "  --tokenizer-path  the tokenizer file for hf / sentencepiece\n"
    "  --workers N       tokenizing threads (default: every core)\n"
    "  --on-error MODE   a malformed line (not JSON, no such key): stop (default) or skip it\n"
    "  --output PREFIX   writes PREFIX.bin and PREFIX.idx (Megatron-LM indexed dataset; uint16\n"
    "                    ids below 65500 vocabulary entries, else int32; each document ends with\n"
    "                    the tokenizer's end-of-document id)\n"
    "  --builtin         prepare the built-in corpus into DIR (default data/)\n";

bool IsJsonl(const std::string& path) {
  return absl::EndsWith(path, ".jsonl") || absl::EndsWith(path, ".json") ||
         absl::EndsWith(path, ".jsonl.zst") || absl::EndsWith(path, ".json.zst") ||
         absl::EndsWith(path, ".zst");
}

int PrepJsonl(const ParsedArgs& parsed) {
  auto tokenizer =
      data::LoadTokenizer(parsed.Get("tokenizer", "byte"), parsed.Get("tokenizer-path"));
  if (!tokenizer.ok()) return Fail("prep-data", std::string(tokenizer.status().message()), 2);
  data::JsonlPrepOptions options;
  options.json_key = parsed.Get("json-key", "text");
  const std::string on_error = parsed.Get("on-error", "stop");
  if (on_error != "stop" && on_error != "skip") {
    return Fail("prep-data", "--on-error must be 'stop' or 'skip', got '" + on_error + "'", 2);
  }
  options.skip_bad_lines = on_error == "skip";
  if (parsed.Has("workers") &&
      (!absl::SimpleAtoi(parsed.Get("workers"), &options.workers) || options.workers < 1)) {
    return Fail("prep-data", "--workers must be a positive integer, got '" +
                                 parsed.Get("workers") + "'", 2);
  }
  options.progress = true;
  auto stats = data::PrepareJsonlDataset(parsed.Get("input"), **tokenizer, parsed.Get("output"),
                                         options);
  if (!stats.ok()) return Fail("prep-data", std::string(stats.status().message()));
  std::printf(
      "wrote %s.{bin,idx}: %lld documents, %lld tokens (%s tokenizer, vocabulary %lld, eod %d) "
      "in %.1f s with %d workers: %.0f tokens/s (%.0f per worker)%s\n",
      parsed.Get("output").c_str(), static_cast<long long>(stats->documents),
      static_cast<long long>(stats->tokens), (*tokenizer)->name().c_str(),
      static_cast<long long>((*tokenizer)->vocab_size()), (*tokenizer)->eod(), stats->seconds,
      stats->workers, stats->tokens / std::max(stats->seconds, 1e-9),
      stats->tokens / std::max(stats->seconds, 1e-9) / stats->workers,
      stats->skipped > 0 ? absl::StrCat("; ", stats->skipped, " bad lines skipped").c_str() : "");
  return 0;
}

}  // namespace

int PrepDataCommand(const std::vector<std::string>& args) {
  if (!args.empty() && (args[0] == "--help" || args[0] == "-h")) {
    std::fputs(kPrepHelp, stdout);
    return 0;
  }
  auto parsed = ParseArgs(args,
                          {{"input", "output", "split", "output-dir", "json-key", "tokenizer",
                            "tokenizer-path", "workers", "on-error"},
                           {},
                           {"builtin"}},
                          "prep-data");
  if (!parsed.ok()) return Fail("prep-data", std::string(parsed.status().message()), 2);
  std::string prefix;
  if (parsed->Has("builtin")) {
    auto built = data::EnsureBuiltinDataset(parsed->Get("output-dir", "data"));
    if (!built.ok()) return Fail("prep-data", std::string(built.status().message()));
    prefix = *built;
  } else {
    if (!parsed->Has("input") || !parsed->Has("output")) {
      return Fail("prep-data", "--input FILE and --output PREFIX are required (see --help)", 2);
    }
    if (IsJsonl(parsed->Get("input")) || parsed->Has("json-key")) return PrepJsonl(*parsed);
    if (parsed->Get("tokenizer", "byte") != "byte") {
      return Fail("prep-data", "plain text takes the byte tokenizer; give JSONL for --tokenizer " +
                                   parsed->Get("tokenizer"), 2);
    }
    data::PrepOptions options;
    const std::string split = parsed->Get("split", "lines");
    if (split != "lines" && split != "paragraphs") {
      return Fail("prep-data", "--split must be 'lines' or 'paragraphs', got '" + split + "'", 2);
    }
    if (split == "paragraphs") options.split = data::PrepOptions::Split::kParagraph;
    prefix = parsed->Get("output");
    if (absl::Status s = data::PrepareTextDataset(parsed->Get("input"), prefix, options); !s.ok()) {
      return Fail("prep-data", std::string(s.message()));
    }
  }
  auto dataset = data::IndexedDataset::Open(prefix);
  if (!dataset.ok()) return Fail("prep-data", std::string(dataset.status().message()));
  std::printf("wrote %s.{bin,idx}: %lld documents, %lld tokens\n", prefix.c_str(),
              static_cast<long long>(dataset->num_documents()),
              static_cast<long long>(dataset->num_tokens()));
  return 0;
}

}  // namespace moefold::launch
