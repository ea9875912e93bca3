// MPI bootstrap and job-wide failure.
#include "launch/bootstrap.h"

#include <mpi.h>

#include <cstdio>
#include <cstdlib>

namespace moefold::launch {

RankInfo InitRanks(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  }
  // Errors come back as codes (translated to Status by the communicator), never as aborts.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  RankInfo info;
  MPI_Comm_rank(MPI_COMM_WORLD, &info.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &info.world_size);
  MPI_Comm local;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, info.rank, MPI_INFO_NULL, &local);
  MPI_Comm_rank(local, &info.local_rank);
  MPI_Comm_size(local, &info.local_size);
  MPI_Comm_free(&local);
  return info;
}

void FinalizeRanks() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

bool AllRanksOk(bool ok) {
  int mine = ok ? 1 : 0, all = 0;
  MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return all == 1;
}

int FailRank(const RankInfo& info, const std::string& command, const std::string& message) {
  std::fprintf(stderr, "[rank %d] moefold %s: %s\n", info.rank, command.c_str(), message.c_str());
  std::fflush(stderr);
  if (info.world_size > 1) MPI_Abort(MPI_COMM_WORLD, 1);
  return 1;
}

void AbortJob(const RankInfo& info, int exit_code) {
  std::fflush(stderr);
  std::fflush(stdout);
  if (info.world_size > 1) MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);
}

}  // namespace moefold::launch
