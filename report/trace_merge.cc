// Chrome trace merge: one process track per rank.
#include "report/trace_merge.h"

#include <filesystem>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/file_io.h"
#include "nlohmann/json.hpp"

namespace moefold::report {
namespace {

// The rank in "rank-00003.json"; false for any other name.
bool RankOfFile(const std::string& path, int* rank) {
  const std::string name = std::filesystem::path(path).filename().string();
  return name.rfind("rank-", 0) == 0 && name.size() > 10 &&
         name.substr(name.size() - 5) == ".json" &&
         absl::SimpleAtoi(name.substr(5, name.size() - 10), rank) && *rank >= 0;
}

// Process metadata is replaced by the merge's own: the ranks' files name their process by the
// operating system's pid or not at all.
bool IsProcessMetadata(const nlohmann::json& event) {
  if (event.value("ph", "") != "M") return false;
  const std::string name = event.value("name", "");
  return name == "process_name" || name == "process_sort_index" || name == "process_labels";
}

}  // namespace

absl::StatusOr<MergedTrace> MergeTraces(const std::vector<std::string>& rank_files,
                                        const std::string& output) {
  if (rank_files.empty()) return absl::NotFoundError("no per-rank trace files to merge");
  nlohmann::json events = nlohmann::json::array();
  MergedTrace merged;
  merged.path = output;
  for (const std::string& file : rank_files) {
    int rank = 0;
    if (!RankOfFile(file, &rank)) {
      return absl::InvalidArgumentError(
          absl::StrCat(file, " is not named rank-N.json, so its rank is unknown"));
    }
    absl::StatusOr<std::string> text = ReadWholeFile(file);
    if (!text.ok()) return text.status();
    const nlohmann::json trace = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
    const nlohmann::json* list = nullptr;
    if (trace.is_array()) {
      list = &trace;
    } else if (trace.is_object() && trace.contains("traceEvents") &&
               trace["traceEvents"].is_array()) {
      list = &trace["traceEvents"];
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          file, " is not a Chrome trace (a JSON object with a \"traceEvents\" array)"));
    }
    events.push_back({{"name", "process_name"},
                      {"ph", "M"},
                      {"pid", rank},
                      {"tid", 0},
                      {"args", {{"name", absl::StrCat("rank ", rank)}}}});
    events.push_back({{"name", "process_sort_index"},
                      {"ph", "M"},
                      {"pid", rank},
                      {"tid", 0},
                      {"args", {{"sort_index", rank}}}});
    for (nlohmann::json event : *list) {
      if (!event.is_object() || IsProcessMetadata(event)) continue;
      event["pid"] = rank;
      events.push_back(std::move(event));
      ++merged.events;
    }
    ++merged.ranks;
  }
  const nlohmann::json out = {{"traceEvents", std::move(events)}, {"displayTimeUnit", "ms"}};
  const absl::Status written = WriteFileAtomically(output, out.dump());
  if (!written.ok()) return written;
  return merged;
}

}  // namespace moefold::report
