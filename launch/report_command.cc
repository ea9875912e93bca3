// `moefold report RUN_DIR [--output FILE.html]`: the run's HTML report (and its merged trace).
#include <cstdio>

#include "launch/args.h"
#include "launch/commands.h"
#include "report/report.h"

namespace moefold::launch {
namespace {

constexpr char kReportHelp[] =
    "usage: moefold report RUN_DIR [--output FILE.html]\n"
    "\n"
    "  RUN_DIR          a run directory written by `moefold train` (metrics.jsonl, and when\n"
    "                   present profile.jsonl, run.json, plan.json, config.yaml, trace/)\n"
    "  --output FILE    where the page goes (default RUN_DIR/report.html)\n"
    "\n"
    "Writes one self-contained HTML page (inline SVG charts, no network): the headline figures,\n"
    "loss, learning rate, MFU and tokens/s over steps, where the step time goes (phases,\n"
    "communication exposed and overlapped per group kind, idle), the op families and top sinks\n"
    "of MFU, memory per rank against the plan, expert load, stragglers, config, layout and\n"
    "environment. Files the run lacks are reported as not recorded. When RUN_DIR/trace/ holds\n"
    "per-rank traces, merges them into RUN_DIR/trace.json (a track per rank) and links it.\n"
    "Prints the page's path.\n";

}  // namespace

int ReportCommand(const std::vector<std::string>& args) {
  if (!args.empty() && (args[0] == "--help" || args[0] == "-h")) {
    std::fputs(kReportHelp, stdout);
    return 0;
  }
  ArgSpec spec{.options = {"output"}, .repeatable = {}, .flags = {}, .max_positionals = 1};
  auto parsed = ParseArgs(args, spec, "report");
  if (!parsed.ok()) return Fail("report", std::string(parsed.status().message()), 2);
  if (parsed->positionals.size() != 1) {
    return Fail("report", "expected one RUN_DIR (see --help)", 2);
  }
  auto path = report::WriteReport(parsed->positionals[0], parsed->Get("output"));
  if (!path.ok()) return Fail("report", std::string(path.status().message()));
  std::printf("%s\n", path->c_str());
  return 0;
}

}  // namespace moefold::launch
