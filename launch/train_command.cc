// `moefold train`: load and validate the experiment, train, print the summary.
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "configs/config_loader.h"
#include "configs/validate.h"
#include "core/train/trainer.h"
#include "launch/args.h"
#include "launch/commands.h"

namespace moefold::launch {

int Fail(const std::string& command, const std::string& message, int code) {
  std::fprintf(stderr, "moefold %s: %s\n", command.c_str(), message.c_str());
  return code;
}

namespace {

constexpr char kTrainHelp[] =
    "usage: moefold train --config FILE [--set key=value ...] [--run-dir DIR]\n"
    "\n"
    "  --config FILE     YAML experiment file (schema: configs/moefold.proto)\n"
    "  --set key=value   override one config value by dotted path, e.g. --set train.steps=20\n"
    "                    (repeatable)\n"
    "  --run-dir DIR     where metrics.jsonl goes (default runs/<config name>)\n"
    "\n"
    "Prints a live progress line on a terminal (plain lines otherwise) and a summary at the end.\n"
    "With data.path empty the built-in corpus is prepared under data/ on first use.\n";

}  // namespace

int TrainCommand(const std::vector<std::string>& args) {
  if (!args.empty() && (args[0] == "--help" || args[0] == "-h")) {
    std::fputs(kTrainHelp, stdout);
    return 0;
  }
  auto parsed = ParseArgs(args, {{"config", "run-dir"}, {"set"}, {}}, "train");
  if (!parsed.ok()) return Fail("train", std::string(parsed.status().message()), 2);
  if (!parsed->Has("config")) return Fail("train", "--config FILE is required (see --help)", 2);
  const std::string config_path = parsed->Get("config");

  auto config = config::LoadConfigFile(config_path, parsed->lists["set"]);
  if (!config.ok()) return Fail("train", std::string(config.status().message()));
  if (absl::Status s = config::Validate(*config, /*world_size=*/1); !s.ok()) {
    return Fail("train", absl::StrCat(config_path, " is not a valid experiment:\n",
                                      s.message()));
  }
  train::TrainerOptions options;
  const std::string name = config->name().empty()
                               ? std::filesystem::path(config_path).stem().string()
                               : config->name();
  options.run_dir = parsed->Get("run-dir", "runs/" + name);
  const std::string progress = config->logging().progress();
  options.live_progress = progress == "always" || (progress == "auto" && isatty(fileno(stdout)));

  std::printf("moefold train: %s (%d layers, hidden %d, %d experts top-%d), %d steps of %d × %d "
              "tokens\n",
              name.c_str(), config->model().num_layers(), config->model().hidden_size(),
              config->model().moe().num_experts(), config->model().moe().top_k(),
              config->train().steps(), config->train().global_batch_size(),
              config->train().seq_len());
  std::fflush(stdout);
  auto trainer = train::Trainer::Create(*config, options);
  if (!trainer.ok()) return Fail("train", std::string(trainer.status().message()));
  auto summary = (*trainer)->Run();
  if (!summary.ok()) return Fail("train", std::string(summary.status().message()));
  std::fputs(train::FormatSummary(*summary).c_str(), stdout);
  return 0;
}

}  // namespace moefold::launch
