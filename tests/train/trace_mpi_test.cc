// Traces of a real multi-rank run (mpirun, 4 ranks): logging.trace_steps "1-2" on TP2×DP2 with
// EP2 (sequence parallel, ZeRO-1, a checkpoint saved between the traced steps) and on PP2×DP2
// with EP2. Every rank writes RUN_DIR/trace/rank-NNNNN.json, valid Chrome trace JSON with its
// rank as pid; it holds the two step spans, each of its layers' forward and backward for every
// micro-batch, the optimizer, gpu spans of the op families, a span of every collective kind the
// rank's steps timed (with group, bytes and peers), the checkpoint write; per track lane the
// spans nest and, checkpoint writes aside, lie within their step.
#include <mpi.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_format.h"
#include "core/train/trainer.h"
#include "gtest/gtest.h"
#include "tests/testing/testing.h"
#include "tests/testing/trace_testing.h"
#include "tests/train/equivalence.h"

namespace moefold::train {
namespace {

using testing::ParsedTrace;
using testing::ReadTrace;
using testing::TraceEvent;
using testing::TraceProblems;

// A run directory every rank agrees on (rank 0's pid), removed at the end.
class SharedRunDir {
 public:
  explicit SharedRunDir(const std::string& name) {
    int pid = static_cast<int>(::getpid());
    MPI_Bcast(&pid, 1, MPI_INT, 0, MPI_COMM_WORLD);
    path_ =
        (std::filesystem::temp_directory_path() / absl::StrFormat("moefold-trace-%s-%d", name, pid))
            .string();
    if (WorldRank() == 0) std::filesystem::remove_all(path_);
    MPI_Barrier(MPI_COMM_WORLD);
  }
  ~SharedRunDir() {
    MPI_Barrier(MPI_COMM_WORLD);
    std::error_code ec;
    if (WorldRank() == 0) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

struct TraceCase {
  const char* name;
  std::vector<std::string> layout;
  std::vector<std::string> kinds;  // group kinds that must have run (and be traced) somewhere
};

class TraceMpiTest : public ::testing::TestWithParam<TraceCase> {};

TEST_P(TraceMpiTest, EveryRankTracesItsLayersCollectivesAndOptimizer) {
  const TraceCase& c = GetParam();
  const int rank = WorldRank(), world = WorldSize();
  ASSERT_EQ(world, 4) << "a 4-rank test";
  SharedRunDir dir(c.name);
  std::vector<std::string> overrides = c.layout;
  for (const std::string& o :
       {std::string("train.steps=3"), std::string("logging.trace_steps=1-2"),
        "checkpoint.dir=" + dir.path() + "/checkpoints", std::string("checkpoint.async=false")}) {
    overrides.push_back(o);
  }
  const config::ExperimentConfig config = EquivalenceConfig(overrides);
  const auto groups = MakeGroups(config, nullptr);
  std::set<std::string> kinds_run;  // this rank's group kinds in the traced steps
  {
    TrainerOptions options;
    options.groups = groups.get();
    options.run_dir = dir.path();
    options.write_metrics = false;
    options.print_progress = false;
    auto trainer = Trainer::Create(config, options);
    ASSERT_TRUE(trainer.ok()) << trainer.status();
    for (int64_t step = 0; step < 3; ++step) {
      absl::StatusOr<StepResult> r = (*trainer)->Step(step);
      ASSERT_TRUE(r.ok()) << r.status();
      EXPECT_FALSE(r->profile.has_value()) << "a step profiled for its trace is not reported";
      if (step == 1 || step == 2) {
        for (const auto& [kind, seconds] : r->comm_s) kinds_run.insert(kind);
      }
      // Between the traced steps, a synchronous save: the checkpoint track.
      if (step == 1) {
        ASSERT_OK((*trainer)->BeginSave(2));
        ASSERT_OK((*trainer)->FinishSave());
      }
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);

  const ParsedTrace t = ReadTrace(absl::StrFormat("%s/trace/rank-%05d.json", dir.path(), rank));
  ASSERT_TRUE(t.ok);
  EXPECT_EQ(t.process_name, absl::StrFormat("rank %d", rank));
  EXPECT_EQ(t.other_data.value("world_size", 0), world);
  for (const std::string& p : TraceProblems(t.spans)) ADD_FAILURE() << "rank " << rank << ": " << p;

  std::set<std::string> names, kinds_traced;
  std::map<std::string, int> per_track;
  // (layer, pass) → micro-batches seen, per step.
  std::map<std::tuple<int, std::string>, std::multiset<int>> layer_spans;
  for (const TraceEvent& e : t.spans) {
    EXPECT_EQ(e.pid, rank) << e.name;
    names.insert(e.name);
    ++per_track[e.track];
    if (e.track == "comm") {
      kinds_traced.insert(e.args.value("group", ""));
      EXPECT_TRUE(e.args.contains("bytes")) << e.name;
      EXPECT_TRUE(e.args["peers"].is_array() && !e.args["peers"].empty()) << e.name;
    }
    if (e.track == "host" && e.name.rfind("layer ", 0) == 0) {
      const std::string pass = e.name.substr(e.name.rfind(' ') + 1);
      const int layer = e.args.value("layer", -1);
      EXPECT_EQ(e.name, absl::StrFormat("layer %d %s", layer, pass));
      EXPECT_GE(e.args.value("stage", -1), 0);
      layer_spans[{layer, pass}].insert(e.args.value("micro_batch", -1));
    }
  }
  for (const char* expected :
       {"step 1", "step 2", "data loading", "optimizer update", "gradient norm",
        "forward micro-batch 0", "backward micro-batch 1", "checkpoint write"}) {
    EXPECT_TRUE(names.count(expected)) << "rank " << rank << " has no span \"" << expected << "\"";
  }
  EXPECT_FALSE(names.count("step 0")) << "step 0 is not traced";
  EXPECT_GT(per_track["gpu"], 0) << "rank " << rank << ": no op-family spans";
  EXPECT_TRUE(names.count("optimizer")) << "rank " << rank << ": no gpu span of the optimizer";
  EXPECT_EQ(kinds_traced, kinds_run) << "rank " << rank;

  // Every layer this rank runs: forward and backward of micro-batches 0 and 1 in both steps.
  ASSERT_FALSE(layer_spans.empty()) << "rank " << rank;
  int my_layers = 0;
  for (int layer = 0; layer < config.model().num_layers(); ++layer) {
    const bool mine = layer_spans.count({layer, "forward"}) > 0;
    my_layers += mine;
    if (!mine) continue;
    for (const char* pass : {"forward", "backward"}) {
      const std::multiset<int>& micro_batches = layer_spans[std::make_tuple(layer, pass)];
      EXPECT_EQ(micro_batches, (std::multiset<int>{0, 0, 1, 1}))
          << "rank " << rank << " layer " << layer << " " << pass;
    }
  }
  EXPECT_EQ(static_cast<int>(layer_spans.size()), 2 * my_layers);

  // Across the ranks: every layer and every required group kind was traced somewhere.
  std::vector<int> layers_seen(config.model().num_layers(), 0);
  for (int layer = 0; layer < config.model().num_layers(); ++layer) {
    layers_seen[layer] = layer_spans.count({layer, "forward"}) > 0;
  }
  MPI_Allreduce(MPI_IN_PLACE, layers_seen.data(), static_cast<int>(layers_seen.size()), MPI_INT,
                MPI_SUM, MPI_COMM_WORLD);
  for (int layer = 0; layer < config.model().num_layers(); ++layer) {
    EXPECT_GT(layers_seen[layer], 0) << "no rank traced layer " << layer;
  }
  for (const std::string& kind : c.kinds) {
    int seen = kinds_traced.count(kind) > 0;
    MPI_Allreduce(MPI_IN_PLACE, &seen, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    EXPECT_GT(seen, 0) << "no rank traced a collective of " << kind;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, TraceMpiTest,
    ::testing::Values(TraceCase{"Tp2Dp2Ep2",
                                {"parallel.tp=2", "parallel.ep=2",
                                 "parallel.sequence_parallel=true", "parallel.zero1=true"},
                                {"tp", "ep", "dp-cp", "edp"}},
                      TraceCase{
                          "Pp2Dp2Ep2", {"parallel.pp=2", "parallel.ep=2"}, {"pp", "ep", "dp-cp"}}),
    [](const ::testing::TestParamInfo<TraceCase>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace moefold::train
