// The report page: inline CSS, a table of contents, the sections in order, and the notes on what
// the run directory lacked.
#include "report/report.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/file_io.h"
#include "report/sections.h"
#include "report/svg.h"
#include "report/trace_merge.h"

namespace moefold::report {
namespace {

// No '<' or '&' in the CSS: the page stays well-formed XML.
constexpr char kStyle[] = R"(
body { font-family: -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1180px;
       padding: 12px 20px 40px; color: #222; background: #fff; }
h1 { font-size: 22px; margin: 8px 0 4px; }
h2 { font-size: 18px; border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 28px; }
h3 { font-size: 14px; margin: 16px 0 6px; }
nav { font-size: 13px; color: #555; margin-bottom: 8px; }
nav a { margin-right: 10px; color: #2a5d9f; text-decoration: none; }
.headline { background: #f3f6fa; border: 1px solid #cfd9e6; border-radius: 6px; padding: 10px 16px; }
.headline .lead { font-size: 18px; font-weight: bold; margin: 4px 0; }
.headline dl { display: grid; grid-template-columns: 80px auto; margin: 4px 0; font-size: 14px; }
.headline dt { color: #555; }
.headline dd { margin: 0 0 2px; }
.headline dl.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 10px 0; }
.cards div { background: #fff; border: 1px solid #d8dee6; border-radius: 5px; padding: 6px 12px;
             flex: 1 1 0; min-width: 140px; }
.cards dt { font-size: 12px; text-transform: uppercase; letter-spacing: 0.04em; }
.cards .big { font-size: 24px; font-weight: bold; }
.cards small { color: #666; }
#where-time-goes { font-size: 15px; }
.charts { display: flex; flex-wrap: wrap; gap: 14px; align-items: flex-start; }
svg { background: #fff; border: 1px solid #eee; }
table { border-collapse: collapse; font-size: 13px; margin: 4px 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f5f5f5; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.missing { color: #888; font-style: italic; }
pre { background: #f7f7f7; padding: 8px; font-size: 12px; overflow-x: auto; }
footer { margin-top: 30px; font-size: 12px; color: #666; }
)";

constexpr std::pair<const char*, const char*> kContents[] = {
    {"headline", "at a glance"}, {"loss", "loss"},           {"learning-rate", "learning rate"},
    {"throughput", "MFU"},       {"step-time", "step time"}, {"ops", "op families"},
    {"memory", "memory"},        {"experts", "experts"},     {"stragglers", "stragglers"},
    {"config", "config"},        {"layout", "layout"},       {"environment", "environment"}};

}  // namespace

std::string RenderReport(const RunData& run, const std::string& trace_link) {
  const std::string name = ConfigValue(run, "name");
  std::string page = absl::StrCat(
      "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\"><head>"
      "<meta charset=\"utf-8\"/><title>moefold report — ",
      EscapeXml(name.empty() ? run.run_dir : name), "</title><style>", kStyle,
      "</style></head>\n<body><h1>moefold report: ", EscapeXml(run.run_dir), "</h1><nav>");
  for (const auto& [id, label] : kContents) {
    absl::StrAppend(&page, "<a href=\"#", id, "\">", label, "</a>");
  }
  page += "</nav>\n";
  page += HeadlineSection(run, trace_link);
  page += LossSection(run);
  page += LearningRateSection(run);
  page += ThroughputSection(run);
  page += StepTimeSection(run, trace_link);
  page += OpsSection(run);
  page += MemorySection(run);
  page += ExpertsSection(run);
  page += StragglersSection(run);
  page += ReliabilitySection(run);
  page += ConfigSection(run);
  page += LayoutSection(run);
  page += EnvironmentSection(run);
  page += "<footer>";
  if (!run.notes.empty()) {
    page += "<p>Not recorded or unreadable in the run directory:</p><ul>";
    for (const std::string& note : run.notes) page += "<li>" + EscapeXml(note) + "</li>";
    page += "</ul>";
  }
  page +=
      "<p>Written by <code>moefold report</code> from the files of the run directory.</p>"
      "</footer></body></html>\n";
  return page;
}

absl::StatusOr<std::string> WriteReport(const std::string& run_dir, const std::string& output) {
  absl::StatusOr<RunData> run = ReadRunDir(run_dir);
  if (!run.ok()) return run.status();
  std::string trace_link;
  if (!run->trace_files.empty()) {
    const std::string merged_path = (std::filesystem::path(run_dir) / "trace.json").string();
    absl::StatusOr<MergedTrace> merged = MergeTraces(run->trace_files, merged_path);
    if (merged.ok()) {
      // The link is relative to the page, so the run directory can be moved or copied whole.
      const std::string page_dir =
          std::filesystem::path(output.empty() ? run_dir + "/report.html" : output)
              .parent_path()
              .string();
      std::error_code ec;
      const std::filesystem::path relative = std::filesystem::relative(
          merged_path, page_dir.empty() ? std::string(".") : page_dir, ec);
      trace_link = ec || relative.empty() ? merged_path : relative.string();
    } else {
      run->notes.push_back(absl::StrCat("trace merge failed: ", merged.status().message()));
    }
  }
  const std::string path = output.empty() ? run_dir + "/report.html" : output;
  const absl::Status written = WriteFileAtomically(path, RenderReport(*run, trace_link));
  if (!written.ok()) return written;
  return path;
}

}  // namespace moefold::report
