// Schedule construction, in-flight accounting and a deadlock simulator.
#include "parallel/pipeline_schedule.h"

#include <algorithm>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace moefold::parallel {
namespace {

using Type = PipelineAction::Type;

// Megatron's interleaved order: the k-th forward (or backward) of a rank runs micro-batch
// (k / (pp·v))·pp + k % pp on chunk (k / pp) % v (backward: chunks in reverse).
PipelineAction InterleavedAction(Type type, int k, int pp, int chunks) {
  const int group = k / (pp * chunks), in_group = k % (pp * chunks);
  int chunk = in_group / pp;
  if (type == Type::kBackward) chunk = chunks - 1 - chunk;
  return {type, group * pp + in_group % pp, chunk};
}

}  // namespace

absl::StatusOr<ScheduleKind> ParseScheduleKind(absl::string_view name) {
  if (name == "afab") return ScheduleKind::kAllForwardAllBackward;
  if (name == "1f1b") return ScheduleKind::kOneFOneB;
  if (name == "interleaved") return ScheduleKind::kInterleaved;
  return absl::InvalidArgumentError(
      absl::StrCat("pipeline schedule '", name, "' is not one of: afab, 1f1b, interleaved"));
}

absl::string_view ScheduleKindName(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::kAllForwardAllBackward: return "afab";
    case ScheduleKind::kOneFOneB: return "1f1b";
    case ScheduleKind::kInterleaved: return "interleaved";
  }
  return "?";
}

absl::StatusOr<std::vector<PipelineAction>> BuildSchedule(ScheduleKind kind, int pp, int stage,
                                                          int num_micro, int chunks) {
  if (pp < 1 || stage < 0 || stage >= pp || num_micro < 1 || chunks < 1) {
    return absl::InvalidArgumentError(absl::StrCat("pipeline schedule: stage ", stage, " of pp ",
                                                   pp, ", ", num_micro, " micro-batches, ",
                                                   chunks, " chunks"));
  }
  if (kind != ScheduleKind::kInterleaved && chunks != 1) {
    return absl::InvalidArgumentError(absl::StrCat(ScheduleKindName(kind), " runs one model chunk per rank, not ", chunks));
  }
  if (kind == ScheduleKind::kInterleaved && (chunks < 2 || num_micro % pp != 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "interleaved 1F1B needs virtual stages > 1 (has ", chunks, ") and micro-batches ",
        num_micro, " % pp ", pp, " = 0"));
  }
  std::vector<PipelineAction> out;
  if (kind == ScheduleKind::kAllForwardAllBackward) {
    for (int m = 0; m < num_micro; ++m) out.push_back({Type::kForward, m, 0});
    for (int m = 0; m < num_micro; ++m) out.push_back({Type::kBackward, m, 0});
    return out;
  }
  const int total = num_micro * chunks;
  const int warmup =
      kind == ScheduleKind::kOneFOneB
          ? std::min(pp - stage - 1, num_micro)
          : std::min((pp - stage - 1) * 2 + (chunks - 1) * pp, total);
  auto forward = [&](int k) {
    return kind == ScheduleKind::kOneFOneB ? PipelineAction{Type::kForward, k, 0}
                                           : InterleavedAction(Type::kForward, k, pp, chunks);
  };
  auto backward = [&](int k) {
    return kind == ScheduleKind::kOneFOneB ? PipelineAction{Type::kBackward, k, 0}
                                           : InterleavedAction(Type::kBackward, k, pp, chunks);
  };
  int f = 0, b = 0;
  for (; f < warmup; ++f) out.push_back(forward(f));
  while (f < total) {  // steady state: one forward, one backward
    out.push_back(forward(f++));
    out.push_back(backward(b++));
  }
  while (b < total) out.push_back(backward(b++));
  return out;
}

int MaxInFlight(const std::vector<PipelineAction>& actions) {
  int now = 0, most = 0;
  for (const PipelineAction& a : actions) {
    now += a.type == Type::kForward ? 1 : -1;
    most = std::max(most, now);
  }
  return most;
}

int InFlightBound(ScheduleKind kind, int pp, int stage, int num_micro, int chunks) {
  switch (kind) {
    case ScheduleKind::kAllForwardAllBackward: return num_micro;
    case ScheduleKind::kOneFOneB: return std::min(pp - stage, num_micro);
    case ScheduleKind::kInterleaved:
      return std::min((pp - stage - 1) * 2 + (chunks - 1) * pp + 1, num_micro * chunks);
  }
  return 0;
}

double BubbleFraction(int pp, int num_micro, int chunks) {
  return static_cast<double>(pp - 1) / (static_cast<double>(chunks) * num_micro + pp - 1);
}

absl::Status SimulateSchedules(const std::vector<std::vector<PipelineAction>>& per_rank, int pp,
                               int chunks, int num_micro) {
  const int stages = pp * chunks;
  // done[(type, micro, virtual stage)]
  std::set<std::tuple<int, int, int>> done;
  std::vector<size_t> next(per_rank.size(), 0);
  auto virtual_stage = [&](int rank, int chunk) { return chunk * pp + rank; };
  for (bool progress = true; progress;) {
    progress = false;
    for (int r = 0; r < static_cast<int>(per_rank.size()); ++r) {
      while (next[r] < per_rank[r].size()) {
        const PipelineAction& a = per_rank[r][next[r]];
        const int s = virtual_stage(r, a.chunk);
        bool ready;
        if (a.type == Type::kForward) {
          ready = s == 0 || done.count({0, a.micro, s - 1});
        } else {
          // Its own forward, and the gradient from the next virtual stage (the loss on the last).
          ready = done.count({0, a.micro, s}) && (s == stages - 1 || done.count({1, a.micro, s + 1}));
        }
        if (!ready) break;
        done.insert({a.type == Type::kForward ? 0 : 1, a.micro, s});
        ++next[r];
        progress = true;
      }
    }
  }
  std::vector<std::string> stuck;
  for (int r = 0; r < static_cast<int>(per_rank.size()); ++r) {
    if (next[r] < per_rank[r].size()) {
      const PipelineAction& a = per_rank[r][next[r]];
      stuck.push_back(absl::StrCat("rank ", r, " at ", a.type == Type::kForward ? "F" : "B",
                                   a.micro, ".", a.chunk));
    }
  }
  if (!stuck.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("pipeline schedule deadlocks: ", absl::StrJoin(stuck, ", ")));
  }
  if (static_cast<int>(done.size()) != 2 * num_micro * stages) {
    return absl::FailedPreconditionError(absl::StrCat("pipeline schedule ran ", done.size(),
                                                      " actions, expected ",
                                                      2 * num_micro * stages));
  }
  return absl::OkStatus();
}

std::string FormatSchedule(const std::vector<PipelineAction>& actions, bool with_chunks) {
  std::vector<std::string> parts;
  for (const PipelineAction& a : actions) {
    parts.push_back(absl::StrCat(a.type == Type::kForward ? "F" : "B", a.micro,
                                 with_chunks ? absl::StrCat(".", a.chunk) : ""));
  }
  return absl::StrJoin(parts, " ");
}

}  // namespace moefold::parallel
