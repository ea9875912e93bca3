// prep_data_bench: `moefold prep-data` throughput on JSONL — documents and tokens per second, and
// tokens per second per worker — for the byte tokenizer, a SentencePiece BPE model trained here
// on the corpus, and a Hugging Face tokenizer.json when one is given, with 1 worker and with every
// core. The corpus is the built-in one (core/data/corpus/kjv.txt), one JSON line per verse,
// repeated --copies times. JSON lines on stdout; nothing asserts a time.
//
//   build/bin/prep_data_bench [--copies 4] [--hf-tokenizer tokenizer.json] [--workers 2]
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/data/prep_data.h"
#include "core/data/prep_jsonl.h"
#include "core/data/sentencepiece_backend.h"
#include "core/data/tokenizer.h"
#include "launch/args.h"
#include "nlohmann/json.hpp"
#include "tools/bench/bench_line.h"

namespace moefold::bench {
namespace {

int Run(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  auto parsed = launch::ParseArgs(args, {{"copies", "hf-tokenizer", "workers", "dir"}, {}, {}},
                                  "prep_data_bench");
  if (!parsed.ok()) {
    std::fprintf(stderr, "prep_data_bench: %s\n", std::string(parsed.status().message()).c_str());
    return 2;
  }
  int copies = 4, all = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (parsed->Has("copies") && !absl::SimpleAtoi(parsed->Get("copies"), &copies)) return 2;
  if (parsed->Has("workers") && !absl::SimpleAtoi(parsed->Get("workers"), &all)) return 2;
  const std::string dir =
      parsed->Get("dir", absl::StrCat(std::filesystem::temp_directory_path().string(),
                                      "/prep_data_bench_", ::getpid()));
  std::filesystem::create_directories(dir);

  // The corpus as JSONL: one verse per line, `copies` times.
  std::ifstream text(data::BuiltinCorpusPath());
  std::vector<std::string> verses;
  for (std::string line; std::getline(text, line);) {
    if (!line.empty()) verses.push_back(line);
  }
  const std::string jsonl = dir + "/corpus.jsonl";
  {
    std::ofstream out(jsonl);
    for (int c = 0; c < copies; ++c) {
      for (const std::string& v : verses) out << nlohmann::json({{"text", v}}).dump() << '\n';
    }
  }
  std::vector<std::pair<std::string, std::string>> tokenizers = {{"byte", ""}};
  std::string error;
  const std::string sp = dir + "/sp";
  if (data::spm::Train(absl::StrCat("--input=", data::BuiltinCorpusPath(), " --model_prefix=", sp,
                                    " --vocab_size=8000 --model_type=bpe --minloglevel=2"),
                       &error)) {
    tokenizers.emplace_back("sentencepiece", sp + ".model");
  } else {
    std::fprintf(stderr, "prep_data_bench: no SentencePiece model: %s\n", error.c_str());
  }
  if (parsed->Has("hf-tokenizer")) tokenizers.emplace_back("hf", parsed->Get("hf-tokenizer"));

  for (const auto& [kind, path] : tokenizers) {
    auto tokenizer = data::LoadTokenizer(kind, path);
    if (!tokenizer.ok()) {
      std::fprintf(stderr, "prep_data_bench: %s\n",
                   std::string(tokenizer.status().message()).c_str());
      return 1;
    }
    for (int workers : {1, all}) {
      auto stats = data::PrepareJsonlDataset(jsonl, **tokenizer, dir + "/out",
                                             {.workers = workers});
      if (!stats.ok()) {
        std::fprintf(stderr, "prep_data_bench: %s\n",
                     std::string(stats.status().message()).c_str());
        return 1;
      }
      const double tps = stats->tokens / stats->seconds;
      BenchLine("prep_data")
          .Add("tokenizer", kind)
          .Add("vocab_size", (*tokenizer)->vocab_size())
          .Add("workers", workers)
          .Add("hardware_threads", static_cast<int64_t>(std::thread::hardware_concurrency()))
          .Add("documents", stats->documents)
          .Add("tokens", stats->tokens)
          .Add("input_mb", stats->input_bytes / 1e6)
          .Add("seconds", stats->seconds)
          .Add("documents_per_s", stats->documents / stats->seconds)
          .Add("tokens_per_s", tps)
          .Add("tokens_per_s_per_worker", tps / workers)
          .Add("mb_per_s", stats->input_bytes / 1e6 / stats->seconds)
          .Print();
      if (workers == all) break;  // one run when every core is one worker
    }
  }
  if (!parsed->Has("dir")) std::filesystem::remove_all(dir);
  return 0;
}

}  // namespace
}  // namespace moefold::bench

int main(int argc, char** argv) { return moefold::bench::Run(argc, argv); }
