// Process start-up for multi-rank runs: MPI initialisation, rank identity, and how a rank's fatal
// error reaches the console (prefixed with its rank) and ends the whole job with a non-zero exit.
#pragma once

#include <string>

namespace moefold::launch {

struct RankInfo {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;  // rank on this node (selects the GPU)
  int local_size = 1;  // ranks on this node
  bool is_root() const { return rank == 0; }
};

// Initialises MPI (thread level FUNNELED); idempotent. Safe under a plain single-process start.
RankInfo InitRanks(int* argc, char*** argv);
void FinalizeRanks();

// True when `ok` holds on every rank (an all-reduce over the world): lets ranks agree to stop together
// after a set-up step instead of the healthy ones waiting in a collective.
bool AllRanksOk(bool ok);

// Prints "[rank R] moefold CMD: message" to stderr and, when more than one rank runs, aborts the
// job (MPI_Abort) so no peer waits forever in a collective. Returns 1 (single rank).
int FailRank(const RankInfo& info, const std::string& command, const std::string& message);

// Ends the whole job at once with `exit_code` (MPI_Abort on several ranks, _exit on one): the
// watchdog's way out of a hang. Callable from any thread.
[[noreturn]] void AbortJob(const RankInfo& info, int exit_code);

}  // namespace moefold::launch
