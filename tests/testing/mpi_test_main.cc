// gtest main for tests launched by mpirun: MPI around the tests, only rank 0 lists passing tests,
// every rank reports its failures, and the exit code is non-zero when any rank failed.
#include <mpi.h>

#include <cstdio>

#include "gtest/gtest.h"

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  ::testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {
    // Keep failure output from every rank, drop the per-test chatter of the others.
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new ::testing::EmptyTestEventListener());
  }
  const int local = RUN_ALL_TESTS();
  int global = 0;
  MPI_Allreduce(&local, &global, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (rank != 0 && local != 0) std::fprintf(stderr, "[rank %d] tests FAILED\n", rank);
  MPI_Finalize();
  return global;
}
