// The checkpoint directory: DIR/step-NNNNNNNN/ per complete checkpoint, written as
// DIR/step-NNNNNNNN.tmp/ and renamed by rank 0 after its manifest is in place, and DIR/latest naming
// the newest complete one (replaced atomically after the rename). So an interrupted save leaves
// only a .tmp directory, which is never taken for a checkpoint and is removed by the next save.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace moefold::checkpoint {

inline constexpr char kManifestName[] = "manifest.pb";
inline constexpr char kManifestJsonName[] = "manifest.json";
inline constexpr char kLatestName[] = "latest";

std::string StepDirName(int64_t step);              // "step-00000006"
std::string StepDir(const std::string& root, int64_t step);
std::string TempStepDir(const std::string& root, int64_t step);  // ".../step-00000006.tmp"
std::string ShardName(int rank);                    // "rank-00003.bin"
std::string RecordName(int rank);                   // "rank-00003.record"

// The newest complete checkpoint under `root`: the one `latest` names when it is complete, else the
// highest-numbered step directory holding a manifest (a lost or stale pointer does not hide one).
// nullopt when there is none (or root does not exist).
std::optional<std::string> FindLatestComplete(const std::string& root);
// Complete checkpoints under root, oldest first.
std::vector<std::string> ListComplete(const std::string& root);

// Points `latest` at step directory `name` (atomically).
absl::Status UpdateLatest(const std::string& root, const std::string& name);
// Removes complete checkpoints beyond the newest keep_last (0 = keep all) and leftover .tmp
// directories of interrupted saves other than `keep_tmp`.
absl::Status Prune(const std::string& root, int keep_last, const std::string& keep_tmp = "");

}  // namespace moefold::checkpoint
