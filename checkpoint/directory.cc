#include "checkpoint/directory.h"

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "checkpoint/files.h"

namespace moefold::checkpoint {
namespace fs = std::filesystem;

std::string StepDirName(int64_t step) { return absl::StrFormat("step-%08d", step); }
std::string StepDir(const std::string& root, int64_t step) {
  return (fs::path(root) / StepDirName(step)).string();
}
std::string TempStepDir(const std::string& root, int64_t step) {
  return StepDir(root, step) + ".tmp";
}
std::string ShardName(int rank) { return absl::StrFormat("rank-%05d.bin", rank); }
std::string RecordName(int rank) { return absl::StrFormat("rank-%05d.record", rank); }

namespace {

bool IsComplete(const fs::path& dir) {
  std::error_code ec;
  return fs::is_regular_file(dir / kManifestName, ec);
}

// Step number of a complete-checkpoint directory name, or -1.
int64_t StepOf(const std::string& name) {
  absl::string_view rest = name;
  if (!absl::ConsumePrefix(&rest, "step-")) return -1;
  int64_t step = -1;
  return absl::SimpleAtoi(rest, &step) ? step : -1;
}

}  // namespace

std::vector<std::string> ListComplete(const std::string& root) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const std::string name = entry.path().filename().string();
    const int64_t step = StepOf(name);
    if (step >= 0 && entry.is_directory(ec) && IsComplete(entry.path())) {
      found.emplace_back(step, entry.path().string());
    }
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> dirs;
  for (auto& [step, dir] : found) dirs.push_back(dir);
  return dirs;
}

std::optional<std::string> FindLatestComplete(const std::string& root) {
  auto pointer = ReadWholeFile((fs::path(root) / kLatestName).string());
  std::vector<std::string> complete = ListComplete(root);
  if (pointer.ok()) {
    const std::string name(absl::StripAsciiWhitespace(*pointer));
    const fs::path dir = fs::path(root) / name;
    // The pointer is written after the rename, so it is never newer than the newest complete one;
    // prefer the highest complete step in case the pointer update itself was lost.
    if (StepOf(name) >= 0 && IsComplete(dir) &&
        (complete.empty() || StepOf(fs::path(complete.back()).filename().string()) <=
                                 StepOf(name))) {
      return dir.string();
    }
  }
  if (complete.empty()) return std::nullopt;
  return complete.back();
}

absl::Status UpdateLatest(const std::string& root, const std::string& name) {
  return WriteFileAtomically((fs::path(root) / kLatestName).string(), name + "\n");
}

absl::Status Prune(const std::string& root, int keep_last, const std::string& keep_tmp) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const std::string path = entry.path().string();
    if (absl::EndsWith(path, ".tmp") && entry.is_directory(ec) &&
        entry.path().filename().string() != fs::path(keep_tmp).filename().string()) {
      fs::remove_all(entry.path(), ec);
    }
  }
  if (keep_last <= 0) return absl::OkStatus();
  std::vector<std::string> complete = ListComplete(root);
  for (size_t i = 0; i + keep_last < complete.size(); ++i) {
    fs::remove_all(complete[i], ec);
    if (ec) {
      return absl::InternalError(
          absl::StrCat("cannot remove old checkpoint ", complete[i], ": ", ec.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace moefold::checkpoint
