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

// One point-to-point transfer of a pipeline rank: the activation of micro-batch `micro` going
// into virtual stage `to_stage` (from to_stage − 1), or the gradient of that activation
// (backward: from to_stage + 1), which this rank sends to or receives from pipeline rank `peer`.
struct PipelineTransfer {
  bool send;      // else a receive
  int peer;       // pipeline rank on the other side
  bool backward;  // a gradient, else an activation
  int micro;
  int to_stage;  // the receiving virtual stage
  bool operator==(const PipelineTransfer&) const = default;
};

// Every rank's transfers in the order it issues them. One global order of all messages — the order
// in which the dependency simulation of SimulateSchedules produces them — restricted to each
// rank's own sends and receives. Hence (1) between any two ranks, the sends of one list the same
// messages in the same order as the receives of the other (NCCL matches point-to-point messages
// between a pair by issue order alone; tags are for MPI), and (2) where a rank's sends and
// receives are served in issue order and each completes only together with its peer's match (one
// NCCL stream per communicator, unbatched), no two ranks wait for each other: the earliest
// unfinished message of the global order is next on both its ranks. The executor issues a rank's
// transfers in this order, each send once its data exists, each receive as soon as everything
// before it is issued; SimulateTransfers checks exactly that. Same arguments as BuildSchedule;
// result[r] is pipeline rank r's list; pp = 1 has none.
absl::StatusOr<std::vector<std::vector<PipelineTransfer>>> BuildTransfers(ScheduleKind kind, int pp,
                                                                          int num_micro,
                                                                          int chunks);

// Runs every rank's action list with its transfer list as the executor does (issue transfers in
// order, a send once its action has run, a receive at once; an action waits for its input's
// receive), under the strictest transport the communicators may have: per rank one queue of
// issued transfers served in order, a send and its receive completing together only when each is
// first in its rank's queue. FailedPrecondition naming what is stuck on a deadlock, and on a send
// and a receive of one pair that would match different messages.
absl::Status SimulateTransfers(const std::vector<std::vector<PipelineAction>>& actions,
                               const std::vector<std::vector<PipelineTransfer>>& transfers, int pp,
                               int chunks);

// "s>1:F3@2" (send to rank 1: activation of micro-batch 3 into virtual stage 2), "r<0:B3@1".
std::string FormatTransfer(const PipelineTransfer& t);

}  // namespace moefold::parallel
