// moefold: the command-line entry point. Dispatches to a subcommand.
#include <cstdio>
#include <string>
#include <vector>

#include "core/train/experiment_checks.h"
#include "launch/commands.h"

namespace {

constexpr char kUsage[] =
    "moefold — train Mixture-of-Experts language models\n"
    "\n"
    "usage: moefold <command> [options]\n"
    "\n"
    "commands:\n"
    "  train      train a model from a YAML experiment file\n"
    "  plan       print the parallel layout (both meshes and every group) without running\n"
    "  prep-data  turn a text file into a Megatron indexed dataset (byte tokenizer)\n"
    "  export     write a checkpoint's model as a Hugging Face directory (safetensors)\n"
    "  report     write a run's HTML report (charts, step-time breakdown, MFU sinks)\n"
    "  launch     run a training job and restart it from its last checkpoint when it fails\n"
    "\n"
    "Run 'moefold <command> --help' for the options of a command.\n";

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::fputs(kUsage, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  // Validate's memory checks, which need the model library (core/train/experiment_checks.h).
  moefold::train::RegisterExperimentChecks();
  const std::string command = args[0];
  args.erase(args.begin());
  if (command == "train") return moefold::launch::TrainCommand(args);
  if (command == "plan") return moefold::launch::PlanCommand(args);
  if (command == "prep-data") return moefold::launch::PrepDataCommand(args);
  if (command == "export") return moefold::launch::ExportCommand(args);
  if (command == "report") return moefold::launch::ReportCommand(args);
  if (command == "launch") return moefold::launch::LaunchCommand(args);
  std::fprintf(stderr, "moefold: unknown command '%s'\n\n%s", command.c_str(), kUsage);
  return 2;
}
