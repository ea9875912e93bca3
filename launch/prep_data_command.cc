// `moefold prep-data`: text → Megatron indexed dataset with the byte tokenizer.
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "core/data/indexed_dataset.h"
#include "core/data/prep_data.h"
#include "launch/args.h"
#include "launch/commands.h"

namespace moefold::launch {
namespace {

constexpr char kPrepHelp[] =
    "usage: moefold prep-data --input TEXT --output PREFIX [--split lines|paragraphs]\n"
    "       moefold prep-data --builtin [--output-dir DIR]\n"
    "\n"
    "  --input TEXT      UTF-8 text; one document per non-empty line (or per blank-line-separated\n"
    "                    paragraph with --split paragraphs)\n"
    "  --output PREFIX   writes PREFIX.bin and PREFIX.idx (Megatron-LM indexed dataset, uint16 ids:\n"
    "                    bytes 0-255, end-of-document 256)\n"
    "  --builtin         prepare the built-in corpus into DIR (default data/)\n";

}  // namespace

int PrepDataCommand(const std::vector<std::string>& args) {
  if (!args.empty() && (args[0] == "--help" || args[0] == "-h")) {
    std::fputs(kPrepHelp, stdout);
    return 0;
  }
  auto parsed = ParseArgs(args, {{"input", "output", "split", "output-dir"}, {}, {"builtin"}},
                          "prep-data");
  if (!parsed.ok()) return Fail("prep-data", std::string(parsed.status().message()), 2);
  std::string prefix;
  if (parsed->Has("builtin")) {
    auto built = data::EnsureBuiltinDataset(parsed->Get("output-dir", "data"));
    if (!built.ok()) return Fail("prep-data", std::string(built.status().message()));
    prefix = *built;
  } else {
    if (!parsed->Has("input") || !parsed->Has("output")) {
      return Fail("prep-data", "--input TEXT and --output PREFIX are required (see --help)", 2);
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
