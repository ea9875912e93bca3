// Schedule construction, in-flight accounting and a deadlock simulator.
#include "parallel/pipeline_schedule.h"

#include <algorithm>
#include <deque>
#include <functional>
#include <map>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/status.h"

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

// Runs every rank's list in lock-free order, round-robin over the ranks, each as far as it can go:
// an action may run once the neighbouring virtual stage has produced its input (the forward of the
// previous virtual stage, or the backward of the next). `ran(rank, action)` sees every action in
// the order it ran. FailedPrecondition naming the stuck actions if the lists deadlock or miss an
// action.
absl::Status RunInDependencyOrder(const std::vector<std::vector<PipelineAction>>& per_rank, int pp,
                                  int chunks, int num_micro,
                                  const std::function<void(int, const PipelineAction&)>& ran) {
  const int stages = pp * chunks;
  // done[(type, micro, virtual stage)]
  std::set<std::tuple<int, int, int>> done;
  std::vector<size_t> next(per_rank.size(), 0);
  for (bool progress = true; progress;) {
    progress = false;
    for (int r = 0; r < static_cast<int>(per_rank.size()); ++r) {
      while (next[r] < per_rank[r].size()) {
        const PipelineAction& a = per_rank[r][next[r]];
        const int s = a.chunk * pp + r;
        bool ready;
        if (a.type == Type::kForward) {
          ready = s == 0 || done.count({0, a.micro, s - 1});
        } else {
          // Its own forward, and the gradient from the next virtual stage (the loss on the last).
          ready =
              done.count({0, a.micro, s}) && (s == stages - 1 || done.count({1, a.micro, s + 1}));
        }
        if (!ready) break;
        done.insert({a.type == Type::kForward ? 0 : 1, a.micro, s});
        ran(r, a);
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
    return absl::FailedPreconditionError(absl::StrCat(
        "pipeline schedule ran ", done.size(), " actions, expected ", 2 * num_micro * stages));
  }
  return absl::OkStatus();
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
  return RunInDependencyOrder(per_rank, pp, chunks, num_micro, [](int, const PipelineAction&) {});
}

std::string FormatSchedule(const std::vector<PipelineAction>& actions, bool with_chunks) {
  std::vector<std::string> parts;
  for (const PipelineAction& a : actions) {
    parts.push_back(absl::StrCat(a.type == Type::kForward ? "F" : "B", a.micro,
                                 with_chunks ? absl::StrCat(".", a.chunk) : ""));
  }
  return absl::StrJoin(parts, " ");
}

namespace {

// A message: (backward, micro-batch, receiving virtual stage).
using MessageKey = std::tuple<bool, int, int>;

MessageKey KeyOf(const PipelineTransfer& t) { return {t.backward, t.micro, t.to_stage}; }

}  // namespace

absl::StatusOr<std::vector<std::vector<PipelineTransfer>>> BuildTransfers(ScheduleKind kind, int pp,
                                                                          int num_micro,
                                                                          int chunks) {
  std::vector<std::vector<PipelineAction>> lists;
  for (int stage = 0; stage < pp; ++stage) {
    MF_ASSIGN_OR_RETURN(std::vector<PipelineAction> list,
                        BuildSchedule(kind, pp, stage, num_micro, chunks));
    lists.push_back(std::move(list));
  }
  const int stages = pp * chunks;
  std::vector<std::vector<PipelineTransfer>> transfers(pp);
  // Each message joins the global order when the simulation produces it: a forward's output for
  // the next virtual stage, a backward's input gradient for the previous one.
  MF_RETURN_IF_ERROR(
      RunInDependencyOrder(lists, pp, chunks, num_micro, [&](int rank, const PipelineAction& a) {
        const int s = a.chunk * pp + rank;
        const bool backward = a.type == Type::kBackward;
        const int to = backward ? s - 1 : s + 1;
        if (to < 0 || to >= stages) return;
        const int peer = to % pp;
        transfers[rank].push_back({true, peer, backward, a.micro, to});
        transfers[peer].push_back({false, rank, backward, a.micro, to});
      }));
  return transfers;
}

absl::Status SimulateTransfers(const std::vector<std::vector<PipelineAction>>& actions,
                               const std::vector<std::vector<PipelineTransfer>>& transfers, int pp,
                               int chunks) {
  MF_CHECK(static_cast<int>(actions.size()) == pp && static_cast<int>(transfers.size()) == pp)
      << "one action list and one transfer list per pipeline rank";
  const int stages = pp * chunks;
  std::set<MessageKey> produced;  // data a sender holds (its action has run)
  std::vector<std::set<MessageKey>> received(pp);
  std::vector<size_t> next_action(pp, 0), next_transfer(pp, 0);
  std::vector<std::deque<PipelineTransfer>> queue(pp);  // issued, not yet complete, in order
  // Per ordered pair (from, to): the messages issued as sends by `from` and receives by `to`.
  std::map<std::pair<int, int>, std::vector<MessageKey>> sent, posted;
  auto mismatch = [&](int from, int to) -> absl::Status {
    const auto& a = sent[{from, to}];
    const auto& b = posted[{from, to}];
    const size_t k = std::min(a.size(), b.size());
    if (k == 0 || a[k - 1] == b[k - 1]) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat(
        "pipeline transfers mismatch: message ", k, " from rank ", from, " to rank ", to,
        " is sent as ", std::get<0>(a[k - 1]) ? "B" : "F", std::get<1>(a[k - 1]), "@",
        std::get<2>(a[k - 1]), " but received as ", std::get<0>(b[k - 1]) ? "B" : "F",
        std::get<1>(b[k - 1]), "@", std::get<2>(b[k - 1])));
  };
  for (bool progress = true; progress;) {
    progress = false;
    for (int r = 0; r < pp; ++r) {
      for (bool moved = true; moved;) {
        moved = false;
        // Issue: sends once their data exists, receives at once.
        while (next_transfer[r] < transfers[r].size()) {
          const PipelineTransfer& t = transfers[r][next_transfer[r]];
          if (t.send && !produced.count(KeyOf(t))) break;
          if (t.send) {
            sent[{r, t.peer}].push_back(KeyOf(t));
            MF_RETURN_IF_ERROR(mismatch(r, t.peer));
          } else {
            posted[{t.peer, r}].push_back(KeyOf(t));
            MF_RETURN_IF_ERROR(mismatch(t.peer, r));
          }
          queue[r].push_back(t);
          ++next_transfer[r];
          moved = true;
        }
        // Run actions whose input has arrived.
        while (next_action[r] < actions[r].size()) {
          const PipelineAction& a = actions[r][next_action[r]];
          const int s = a.chunk * pp + r;
          const bool backward = a.type == Type::kBackward;
          const bool has_input = backward ? s < stages - 1 : s > 0;
          if (has_input && !received[r].count({backward, a.micro, s})) break;
          const int to = backward ? s - 1 : s + 1;
          if (to >= 0 && to < stages) produced.insert({backward, a.micro, to});
          ++next_action[r];
          moved = true;
        }
        progress = progress || moved;
      }
    }
    // Transport: a send completes with its receive when both are first in their ranks' queues.
    for (int r = 0; r < pp; ++r) {
      if (queue[r].empty() || !queue[r].front().send) continue;
      const PipelineTransfer& t = queue[r].front();
      std::deque<PipelineTransfer>& other = queue[t.peer];
      if (other.empty() || other.front().send || other.front().peer != r) continue;
      if (KeyOf(other.front()) != KeyOf(t)) {
        return absl::FailedPreconditionError(
            absl::StrCat("pipeline transfers mismatch: ", FormatTransfer(t), " on rank ", r,
                         " meets ", FormatTransfer(other.front()), " on rank ", t.peer));
      }
      received[t.peer].insert(KeyOf(t));
      queue[r].pop_front();
      other.pop_front();
      progress = true;
    }
  }
  std::vector<std::string> stuck;
  for (int r = 0; r < pp; ++r) {
    const bool actions_left = next_action[r] < actions[r].size();
    if (!actions_left && queue[r].empty() && next_transfer[r] == transfers[r].size()) continue;
    std::string what = absl::StrCat("rank ", r);
    if (actions_left) {
      const PipelineAction& a = actions[r][next_action[r]];
      absl::StrAppend(&what, " at ", a.type == Type::kForward ? "F" : "B", a.micro, ".", a.chunk);
    }
    if (!queue[r].empty()) absl::StrAppend(&what, " waiting in ", FormatTransfer(queue[r].front()));
    if (next_transfer[r] < transfers[r].size()) {
      absl::StrAppend(&what, " before issuing ", FormatTransfer(transfers[r][next_transfer[r]]));
    }
    stuck.push_back(what);
  }
  if (!stuck.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("pipeline transfers deadlock: ", absl::StrJoin(stuck, "; ")));
  }
  return absl::OkStatus();
}

std::string FormatTransfer(const PipelineTransfer& t) {
  return absl::StrCat(t.send ? "s>" : "r<", t.peer, ":", t.backward ? "B" : "F", t.micro, "@",
                      t.to_stage);
}

}  // namespace moefold::parallel
