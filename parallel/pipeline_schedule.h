// Pipeline schedules as data (docs/ARCHITECTURE.md §5.6): the ordered list of
// forward and backward actions one pipeline rank runs for a step's micro-batches. Three kinds:
// all-forward-all-backward (the reference), 1F1B (warm-up of pp − stage − 1 forwards, then one
// forward / one backward, then the cool-down backwards) and interleaved 1F1B with v model chunks
// per rank (Megatron-LM's order; virtual stage of chunk c on rank p is c·pp + p, and
// micro-batches go through the chunks in groups of pp). Every rank executes its list in order;
// an action waits only for its input from the neighbouring virtual stage, and SimulateSchedules
// checks that the ranks' lists together can always make progress.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moefold::parallel {

enum class ScheduleKind { kAllForwardAllBackward, kOneFOneB, kInterleaved };
absl::StatusOr<ScheduleKind> ParseScheduleKind(absl::string_view name);  // "afab", "1f1b", "interleaved"
absl::string_view ScheduleKindName(ScheduleKind kind);

struct PipelineAction {
  enum class Type { kForward, kBackward };
  Type type;
  int micro;  // micro-batch index
  int chunk;  // model chunk on this rank (0 unless interleaved)
  bool operator==(const PipelineAction&) const = default;
};

// The actions of pipeline rank `stage` of `pp`, for `num_micro` micro-batches and `chunks` model
// chunks per rank (1 except for kInterleaved). InvalidArgument when the arguments do not fit the
// kind: interleaving needs chunks > 1 and num_micro % pp == 0; the others chunks == 1.
absl::StatusOr<std::vector<PipelineAction>> BuildSchedule(ScheduleKind kind, int pp, int stage,
                                                          int num_micro, int chunks);

// Micro-batches whose forward has run and whose backward has not, at most, over the list (what
// the activation memory must hold).
int MaxInFlight(const std::vector<PipelineAction>& actions);
// The textbook bound of MaxInFlight for rank `stage`: AFAB num_micro; 1F1B min(pp − stage,
// num_micro); interleaved min((pp − stage − 1)·2 + (chunks − 1)·pp + 1, num_micro·chunks).
int InFlightBound(ScheduleKind kind, int pp, int stage, int num_micro, int chunks);
// Idle fraction of the ideal pipeline: (pp − 1) / (chunks·num_micro + pp − 1).
double BubbleFraction(int pp, int num_micro, int chunks);

// Runs every rank's list in lock-free order: an action may run once the neighbouring virtual stage
// has produced its input (the forward of the previous virtual stage, or the backward of the next).
// FailedPrecondition naming the stuck actions if the lists deadlock or miss an action.
absl::Status SimulateSchedules(const std::vector<std::vector<PipelineAction>>& per_rank, int pp,
                               int chunks, int num_micro);

// "F0 F1 B0 ..." (with ".c" suffixes when chunks > 1), for tests and `moefold plan`.
std::string FormatSchedule(const std::vector<PipelineAction>& actions, bool with_chunks);

}  // namespace moefold::parallel
