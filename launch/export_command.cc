// `moefold export`: a checkpoint's model as a Hugging Face directory (config.json + safetensors).
#include <cstdio>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/train/checkpoint_export.h"
#include "launch/args.h"
#include "launch/commands.h"

namespace moefold::launch {
namespace {

constexpr char kExportHelp[] =
    "usage: moefold export --checkpoint DIR --output HF_DIR [--dtype f32|bf16]\n"
    "                      [--family auto|mixtral|qwen2_moe|glm4_moe] [--max-shard-bytes N]\n"
    "\n"
    "  --checkpoint DIR     a checkpoint step directory (DIR/step-N) or the checkpoint.dir of a\n"
    "                       run (its newest complete checkpoint); saved under any layout\n"
    "  --output HF_DIR      where config.json and model.safetensors go (created)\n"
    "  --dtype              f32 (default: the master weights exactly) or bf16 (rounded to nearest)\n"
    "  --family             the Hugging Face model family; auto picks the one that represents the\n"
    "                       model (a model none represents is refused, every reason named)\n"
    "  --max-shard-bytes N  split the weights into model-0000K-of-0000M.safetensors with\n"
    "                       model.safetensors.index.json above N bytes (default 5000000000)\n"
    "\n"
    "The result loads with transformers' AutoModelForCausalLM.from_pretrained(HF_DIR); a run\n"
    "starts from it with model.init_from: HF_DIR (docs/HF_INTERCHANGE.md).\n";

}  // namespace

int ExportCommand(const std::vector<std::string>& args) {
  if (!args.empty() && (args[0] == "--help" || args[0] == "-h")) {
    std::fputs(kExportHelp, stdout);
    return 0;
  }
  auto parsed = ParseArgs(
      args, {{"checkpoint", "output", "dtype", "family", "max-shard-bytes"}, {}, {}}, "export");
  if (!parsed.ok()) return Fail("export", std::string(parsed.status().message()), 2);
  if (!parsed->Has("checkpoint") || !parsed->Has("output")) {
    return Fail("export", "--checkpoint DIR and --output HF_DIR are required (see --help)", 2);
  }
  hf::ExportOptions options;
  const std::string dtype = absl::AsciiStrToLower(parsed->Get("dtype", "f32"));
  if (dtype == "f32") {
    options.dtype = DType::kF32;
  } else if (dtype == "bf16") {
    options.dtype = DType::kBF16;
  } else {
    return Fail("export", "--dtype must be f32 or bf16, got '" + dtype + "'", 2);
  }
  options.family = parsed->Get("family", "auto");
  if (parsed->Has("max-shard-bytes") &&
      (!absl::SimpleAtoi(parsed->Get("max-shard-bytes"), &options.max_shard_bytes) ||
       options.max_shard_bytes < 1)) {
    return Fail("export", "--max-shard-bytes must be a positive integer, got '" +
                              parsed->Get("max-shard-bytes") + "'", 2);
  }
  const std::string output = parsed->Get("output");
  auto exported = train::ExportCheckpoint(parsed->Get("checkpoint"), output, options);
  if (!exported.ok()) return Fail("export", std::string(exported.status().message()));
  std::printf("moefold export: %s → %s (%s)\n", exported->c_str(), output.c_str(), dtype.c_str());
  return 0;
}

}  // namespace moefold::launch
