// EF21 inside GradSync under mpirun (2 and 4 ranks). Per-rank gradients are known functions of
// (world rank, step, element), so every rank computes the exact group sums itself (f64). Identity
// EF21 equals the plain reduction; int8/FP8/Top-K track the exact sum and equal the plain reduction
// bit for bit at anchor steps; a sync started at an anchor retraces the run; bytes follow the
// formulas. The same syncs over host-staged communicators with the buffers on the GPU (ranks share
// GPU 0; on the CPU where there is none, staging CPU tensors) give the CPU run's bits.
#include <cmath>
#include <cstdio>
#include <functional>

#include "core/cuda_runtime.h"
#include "gtest/gtest.h"
#include "parallel/grad_sync.h"
#include "parallel/host_staged_communicator.h"
#include "parallel/mpi_communicator.h"

namespace moefold::parallel {
namespace {

constexpr int64_t kSteps = 12;
using GradFn = std::function<float(int rank, int64_t step, int buffer, int64_t i)>;

// A field that drifts slowly with the step (EF21's regime), with magnitudes varying by block (so
// the per-block scales matter) and a per-rank part.
float SmoothGrad(int rank, int64_t step, int buffer, int64_t i) {
  const double t = static_cast<double>(step), x = static_cast<double>(i);
  const double magnitude = 1.0 + static_cast<double>((i / 128) % 3);
  return static_cast<float>(magnitude * std::sin(0.37 * x + 0.9 * buffer) * (1.0 + 0.05 * t) +
                            0.3 * std::cos(0.11 * x * (rank + 1) + 0.2 * t) + 0.01 * rank);
}

struct Groups {
  MpiCommunicator world = MpiCommunicator::World("dp");
  std::unique_ptr<MpiCommunicator> pairs;  // world ranks {0, 1}, {2, 3}, …: an EDP group
  // The same two groups behind host staging (CPU tensors staged too, so the copies run without a
  // GPU as well).
  std::unique_ptr<HostStagedCommunicator> staged_world, staged_pairs;
  Groups() {
    auto split = world.Split(world.rank() / 2, world.rank(), "edp");
    MF_CHECK(split.ok()) << split.status();
    pairs = std::move(*split);
    auto world_copy = world.Dup("dp");
    MF_CHECK(world_copy.ok()) << world_copy.status();
    staged_world = std::make_unique<HostStagedCommunicator>(std::move(*world_copy), true);
    auto pairs_copy = pairs->Dup("edp");
    MF_CHECK(pairs_copy.ok()) << pairs_copy.status();
    staged_pairs = std::make_unique<HostStagedCommunicator>(std::move(*pairs_copy), true);
  }
};

// What this rank owns after Finish() of one step, beside the exact sums.
struct Owned {
  std::vector<std::vector<float>> values;  // per bucket: shard (ZeRO-1) or whole bucket
  std::vector<std::vector<double>> exact;  // the same elements of Σ over the group, in f64
  std::vector<int64_t> sizes;              // per bucket: its elements
  std::vector<int> group_sizes;            // per bucket: the size of its group
  int64_t bytes_sent = 0, uncompressed = 0;
  double sum_squares = 0;
  double invariant_error = 0;  // max |s − Σₘ n·wₘ·hₘ| / (1 + |s|) over this rank's state
};

struct RunSpec {
  GradSyncOptions options;
  bool split_expert = false;  // expert buffer reduced over pairs instead of the world
  int64_t first = 0, last = kSteps;
  GradFn grad = SmoothGrad;
  std::vector<int64_t> reset_after = {};  // steps after which ResetState() is called
  Device device = Device::Cpu();          // where the flat buffers live
  bool staged = false;                    // reduce over the host-staged groups
};

// The EF21 invariant: the owner's estimate s is the weighted sum of every member's h.
double InvariantError(GradSync& sync, const Ef21Options& ef) {
  double worst = 0;
  for (GradBucket& bucket : sync.buckets()) {
    Communicator* comm = sync.group_of(bucket.buffer);
    if (comm == nullptr || comm->size() == 1 || !bucket.s.defined() || !bucket.h.defined()) {
      continue;
    }
    const int64_t n = comm->size(), size = bucket.h.numel();
    const Tensor h = bucket.h.To(Device::Cpu()), s_all = bucket.s.To(Device::Cpu());
    Tensor all = Tensor::Empty({n * size}, DType::kF32);
    MF_CHECK(WaitFor(comm->AllGather(h, &all, {})).ok());
    const bool whole = bucket.s.numel() == size;  // Top-K keeps s for the whole bucket
    const int64_t offset = whole ? 0 : comm->rank() * (size / n);
    for (int64_t i = 0; i < bucket.s.numel(); ++i) {
      double expected = 0;
      for (int64_t m = 0; m < n; ++m) {
        const double weight = ef.rank_weights.empty() ? 1.0 : n * ef.rank_weights[m];
        expected += weight * all.data<float>()[m * size + offset + i];
      }
      const double s = s_all.data<float>()[i];
      worst = std::max(worst, std::fabs(s - expected) / (1.0 + std::fabs(s)));
    }
  }
  return worst;
}

std::vector<Owned> SyncSteps(Groups& groups, const RunSpec& spec) {
  ParameterSet params;
  params.Add("model.embed.weight", {37, 5}, GradReduction::kDenseDataCp, 0.02f);
  params.Add("model.layers.0.mlp.experts.gate_proj.weight", {4, 50, 3}, GradReduction::kExpertData,
             0.02f);
  params.Add("model.layers.0.attn.weight", {64, 40}, GradReduction::kDenseDataCp, 0.02f);
  params.Add("model.norm.weight", {300}, GradReduction::kDenseDataCp, 0.0f, false, 1.0f);
  Communicator* world =
      spec.staged ? static_cast<Communicator*>(groups.staged_world.get()) : &groups.world;
  Communicator* pairs =
      spec.staged ? static_cast<Communicator*>(groups.staged_pairs.get()) : groups.pairs.get();
  GradSyncGroups sync_groups;
  sync_groups.dp_cp = world;
  sync_groups.edp = spec.split_expert ? pairs : world;
  // As the trainer does with EF21: every parameter starts a compressor block (here for plain runs
  // too, so plain and compressed runs lay the buffers out alike and compare element by element).
  const int64_t block = spec.options.ef21.compressor.block;
  auto& buffers = params.Flatten(GradSync::Alignment(sync_groups) * block, block, spec.device);
  GradSync sync(&params, sync_groups, spec.options);
  const int num_params = static_cast<int>(params.params().size());
  std::vector<Owned> steps;
  for (int64_t t = spec.first; t < spec.last; ++t) {
    sync.BeginStep(t);
    for (int b = 0; b < static_cast<int>(buffers.size()); ++b) {
      Tensor g = Tensor::Empty(buffers[b].grads.shape(), DType::kF32);
      for (int64_t i = 0; i < g.numel(); ++i) {
        g.data<float>()[i] = i < buffers[b].used ? spec.grad(groups.world.rank(), t, b, i) : 0.0f;
      }
      buffers[b].grads.CopyFrom(g);
    }
    // Backward order, one parameter at a time: buckets launch while others are still pending.
    for (int p = num_params - 1; p >= 0; --p) MF_CHECK(sync.MarkReady(p, p + 1).ok());
    const absl::Status finished = sync.Finish();
    MF_CHECK(finished.ok()) << finished;
    Owned owned;
    for (GradBucket& bucket : sync.buckets()) {
      const FlatBuffer& buffer = buffers[bucket.buffer];
      Communicator* comm = sync.group_of(bucket.buffer);
      owned.values.push_back(bucket.shard.ToVector());
      std::vector<double>& exact = owned.exact.emplace_back();
      for (int64_t i = 0; i < bucket.shard.numel(); ++i) {
        const int64_t at = bucket.shard_begin + i;
        double sum = 0;
        for (int m : comm->world_ranks()) {
          sum += at < buffer.used ? spec.grad(m, t, bucket.buffer, at) : 0.0;
        }
        exact.push_back(sum);
      }
      owned.sizes.push_back(bucket.end - bucket.begin);
      owned.group_sizes.push_back(comm->size());
    }
    owned.bytes_sent = sync.bytes_sent();
    owned.uncompressed = sync.uncompressed_bytes();
    auto squares = sync.GlobalSumOfSquares();
    MF_CHECK(squares.ok()) << squares.status();
    owned.sum_squares = *squares;
    if (spec.options.ef21.enabled) owned.invariant_error = InvariantError(sync, spec.options.ef21);
    for (int64_t r : spec.reset_after) {
      if (r == t) sync.ResetState();
    }
    steps.push_back(std::move(owned));
  }
  return steps;
}

// ‖result − exact‖ / ‖exact‖ over what this rank owns.
double RelativeError(const Owned& o) {
  double err = 0, norm = 0;
  for (size_t k = 0; k < o.values.size(); ++k) {
    for (size_t i = 0; i < o.values[k].size(); ++i) {
      err += (o.values[k][i] - o.exact[k][i]) * (o.values[k][i] - o.exact[k][i]);
      norm += o.exact[k][i] * o.exact[k][i];
    }
  }
  return std::sqrt(err / norm);
}

// max |a − b| / (1 + |b|) between two runs' owned values.
double MaxDifference(const Owned& a, const Owned& b) {
  double worst = 0;
  for (size_t k = 0; k < a.values.size(); ++k) {
    for (size_t i = 0; i < a.values[k].size(); ++i) {
      worst = std::max(worst, std::fabs(static_cast<double>(a.values[k][i]) - b.values[k][i]) /
                                  (1.0 + std::fabs(b.values[k][i])));
    }
  }
  return worst;
}

GradSyncOptions Options(bool zero1, CompressorKind kind, int64_t warm, int64_t reanchor) {
  GradSyncOptions options;
  options.zero1 = zero1;
  options.bucket_elements = 1024;
  options.ef21.enabled = true;
  options.ef21.compressor.kind = kind;
  options.ef21.compressor.topk_fraction = 0.01f;
  options.ef21.warm_start_steps = warm;
  options.ef21.reanchor_every = reanchor;
  return options;
}

GradSyncOptions Plain(bool zero1) {
  GradSyncOptions options;
  options.zero1 = zero1;
  options.bucket_elements = 1024;
  return options;
}

// Bytes this rank sends in a compressed step, bucket by bucket (docs/FORMULAS.md §8.3).
int64_t CompressedBytes(const Owned& o, const GradSyncOptions& options) {
  const Compressor& c = options.ef21.compressor;
  int64_t bytes = 0;
  for (size_t k = 0; k < o.sizes.size(); ++k) {
    const int64_t n = o.group_sizes[k], chunk = o.sizes[k] / n;
    if (n == 1) continue;
    if (c.kind == CompressorKind::kTopK) {
      bytes += (n - 1) * c.MessageBytes(o.sizes[k]);  // all-gather of (index, value) pairs
    } else {
      bytes += (n - 1) * c.MessageBytes(chunk) + (options.zero1 ? 0 : (n - 1) * chunk * 4);
    }
  }
  return bytes;
}

const char* KindName(CompressorKind kind) {
  switch (kind) {
    case CompressorKind::kIdentity:
      return "identity";
    case CompressorKind::kInt8:
      return "int8";
    case CompressorKind::kFp8:
      return "fp8";
    case CompressorKind::kTopK:
      return "topk";
  }
  return "?";
}

bool IsAnchor(int64_t t, int64_t warm, int64_t reanchor) {
  return t == warm || (t > warm && reanchor > 0 && (t - warm) % reanchor == 0);
}

class Ef21Identity : public ::testing::TestWithParam<bool> {};

TEST_P(Ef21Identity, EqualsThePlainReduction) {
  Groups groups;
  const bool zero1 = GetParam();
  const auto plain = SyncSteps(groups, {.options = Plain(zero1), .split_expert = true});
  const auto ef = SyncSteps(
      groups, {.options = Options(zero1, CompressorKind::kIdentity, 1, 0), .split_expert = true});
  for (int64_t t = 0; t < kSteps; ++t) {
    EXPECT_LT(MaxDifference(ef[t], plain[t]), 1e-6) << "step " << t;
    EXPECT_EQ(ef[t].bytes_sent, plain[t].bytes_sent) << "identity sends f32, as the plain sync";
    EXPECT_EQ(ef[t].uncompressed, plain[t].bytes_sent);
    EXPECT_LT(ef[t].invariant_error, 1e-6) << "step " << t;
  }
}

INSTANTIATE_TEST_SUITE_P(WithAndWithoutZero1, Ef21Identity, ::testing::Bool());

struct Case {
  CompressorKind kind;
  bool zero1;
  double max_error;  // relative error of the estimate at compressed steps
};

class Ef21Compressors : public ::testing::TestWithParam<Case> {};

TEST_P(Ef21Compressors, TracksTheSumAndAnchorsExactly) {
  Groups groups;
  const Case c = GetParam();
  constexpr int64_t kWarm = 2, kReanchor = 4;  // anchors at steps 2, 6, 10
  const GradSyncOptions options = Options(c.zero1, c.kind, kWarm, kReanchor);
  const auto plain = SyncSteps(groups, {.options = Plain(c.zero1), .split_expert = true});
  const auto ef = SyncSteps(groups, {.options = options, .split_expert = true});
  double worst = 0;
  for (int64_t t = 0; t < kSteps; ++t) {
    if (t < kWarm || IsAnchor(t, kWarm, kReanchor)) {
      // A Top-K anchor under ZeRO-1 all-reduces (s covers the whole bucket): twice the bytes, and
      // the backend may sum in another order than its reduce-scatter.
      const bool all_reduce =
          IsAnchor(t, kWarm, kReanchor) && c.kind == CompressorKind::kTopK && c.zero1;
      if (all_reduce) {
        EXPECT_LT(MaxDifference(ef[t], plain[t]), 1e-6) << "step " << t << " is exact";
      } else {
        EXPECT_EQ(ef[t].values, plain[t].values) << "step " << t << " is exact";
      }
      EXPECT_EQ(ef[t].bytes_sent, (all_reduce ? 2 : 1) * ef[t].uncompressed) << "step " << t;
      continue;
    }
    const double error = RelativeError(ef[t]);
    worst = std::max(worst, error);
    EXPECT_LT(error, c.max_error) << "step " << t;
    EXPECT_GT(error, RelativeError(plain[t])) << "step " << t << " was not compressed";
    EXPECT_EQ(ef[t].bytes_sent, CompressedBytes(ef[t], options)) << "step " << t;
    EXPECT_EQ(ef[t].uncompressed, plain[t].bytes_sent) << "step " << t;
    EXPECT_LT(ef[t].invariant_error, 1e-5) << "step " << t;
  }
  // The factors: int8/FP8 send a quarter of f32 plus one f32 scale per 128 (and, without ZeRO-1,
  // the f32 all-gather of s); Top-K 1% sends 8 bytes per 128 elements, 1/64 of an f32 all-gather.
  const Owned& last = ef[kSteps - 1];
  const double ratio =
      static_cast<double>(last.bytes_sent) / static_cast<double>(last.uncompressed);
  if (c.kind == CompressorKind::kTopK) {
    int64_t all_gather = 0;
    for (size_t k = 0; k < last.sizes.size(); ++k)
      all_gather += (last.group_sizes[k] - 1) * last.sizes[k] * 4;
    const double of_gather = static_cast<double>(last.bytes_sent) / static_cast<double>(all_gather);
    EXPECT_GE(of_gather, 1.0 / 64);
    EXPECT_LT(of_gather, 0.02);
  } else if (c.zero1) {
    EXPECT_GE(ratio, 0.25);
    EXPECT_LT(ratio, 0.26);
  } else {
    EXPECT_GE(ratio, (1.0 + 4.0) / 8);
    EXPECT_LT(ratio, (1.04 + 4.0) / 8);
  }
  if (groups.world.rank() == 0) {
    std::printf("[ ef21 ] %d ranks, %-5s zero1 %d: worst relative error %.3g, bytes %lld of %lld\n",
                groups.world.size(), KindName(c.kind), c.zero1, worst,
                static_cast<long long>(ef[kSteps - 1].bytes_sent),
                static_cast<long long>(ef[kSteps - 1].uncompressed));
  }
}

INSTANTIATE_TEST_SUITE_P(Compressors, Ef21Compressors,
                         ::testing::Values(Case{CompressorKind::kInt8, false, 1e-3},
                                           Case{CompressorKind::kInt8, true, 1e-3},
                                           Case{CompressorKind::kFp8, false, 5e-3},
                                           Case{CompressorKind::kFp8, true, 5e-3},
                                           Case{CompressorKind::kTopK, false, 0.2},
                                           Case{CompressorKind::kTopK, true, 0.2}),
                         [](const auto& info) {
                           return std::string(KindName(info.param.kind)) +
                                  (info.param.zero1 ? "_zero1" : "");
                         });

TEST(Ef21, AFrozenGradientIsApproachedStepByStep) {
  // The gradient jumps after the anchor at step 1 and then stays put: the EF21 error contracts.
  Groups groups;
  const GradFn frozen = [](int rank, int64_t step, int buffer, int64_t i) {
    return SmoothGrad(rank, step < 2 ? step : 8, buffer, i);
  };
  for (CompressorKind kind : {CompressorKind::kInt8, CompressorKind::kTopK}) {
    const auto ef = SyncSteps(groups, {.options = Options(true, kind, 1, 0), .grad = frozen});
    for (int64_t t = 3; t < kSteps; ++t) {
      EXPECT_LT(RelativeError(ef[t]), RelativeError(ef[t - 1]) + 1e-7)
          << KindName(kind) << " step " << t;
    }
    // int8 reaches the f32 floor within two steps; Top-K fixes one entry of 128 per block and step.
    const double shrink = kind == CompressorKind::kInt8 ? 1e-3 : 0.9;
    EXPECT_LT(RelativeError(ef[kSteps - 1]), shrink * RelativeError(ef[2])) << KindName(kind);
  }
}

TEST(Ef21, UniformRankWeightsArePlainEf21BitForBit) {
  Groups groups;
  GradSyncOptions weighted = Options(false, CompressorKind::kInt8, 1, 0);
  weighted.ef21.rank_weights.assign(groups.world.size(), 1.0f / groups.world.size());
  const auto plain = SyncSteps(groups, {.options = Options(false, CompressorKind::kInt8, 1, 0)});
  const auto ef21w = SyncSteps(groups, {.options = weighted});
  for (int64_t t = 0; t < kSteps; ++t) EXPECT_EQ(ef21w[t].values, plain[t].values) << "step " << t;
}

TEST(Ef21, UnequalRankWeightsStillEstimateThePlainSum) {
  Groups groups;
  const int n = groups.world.size();
  for (CompressorKind kind : {CompressorKind::kIdentity, CompressorKind::kInt8}) {
    GradSyncOptions options = Options(true, kind, 1, 0);
    for (int i = 0; i < n; ++i) options.ef21.rank_weights.push_back(2.0f * (i + 1) / (n * (n + 1)));
    const auto ef = SyncSteps(groups, {.options = options});
    for (int64_t t = 2; t < kSteps; ++t) {
      EXPECT_LT(RelativeError(ef[t]), kind == CompressorKind::kIdentity ? 1e-6 : 2e-3)
          << "step " << t;
      EXPECT_LT(ef[t].invariant_error, 1e-5) << "step " << t;
    }
  }
}

TEST(Ef21, ASyncStartedAtAnAnchorRetracesTheRun) {
  // The EF state is a function of the step: a run resumed at an anchor needs no saved h and s.
  Groups groups;
  const GradSyncOptions options = Options(true, CompressorKind::kInt8, 2, 4);
  const auto full = SyncSteps(groups, {.options = options});
  const auto resumed = SyncSteps(groups, {.options = options, .first = 6});
  for (int64_t t = 6; t < kSteps; ++t) {
    EXPECT_EQ(resumed[t - 6].values, full[t].values) << "step " << t;
  }
  // Started between anchors (no state yet): the first step anchors instead, then compresses.
  const auto late = SyncSteps(groups, {.options = options, .first = 7});
  const auto plain = SyncSteps(groups, {.options = Plain(true), .first = 7, .last = 8});
  EXPECT_EQ(late[0].values, plain[0].values);
  EXPECT_EQ(late[0].bytes_sent, late[0].uncompressed);
  EXPECT_LT(late[1].bytes_sent, late[1].uncompressed);
}

class Ef21NonFinite : public ::testing::TestWithParam<CompressorKind> {};

TEST_P(Ef21NonFinite, ReachesEveryRankAndResetReanchors) {
  Groups groups;
  const GradFn poisoned = [](int rank, int64_t step, int buffer, int64_t i) {
    return rank == 0 && step == 3 && buffer == 0 && i == 5 ? std::nanf("")
                                                           : SmoothGrad(rank, step, buffer, i);
  };
  const GradSyncOptions options = Options(true, GetParam(), 1, 0);
  const auto kept = SyncSteps(groups, {.options = options, .grad = poisoned});
  const auto reset = SyncSteps(groups, {.options = options, .grad = poisoned, .reset_after = {3}});
  const auto plain = SyncSteps(groups, {.options = Plain(true), .first = 4, .last = 5});
  EXPECT_TRUE(std::isfinite(kept[2].sum_squares));
  EXPECT_FALSE(std::isfinite(kept[3].sum_squares)) << "the NaN must not be quantized away";
  EXPECT_FALSE(std::isfinite(kept[4].sum_squares)) << "h and s keep it until an anchor";
  EXPECT_FALSE(std::isfinite(reset[3].sum_squares));
  EXPECT_EQ(reset[4].values, plain[0].values) << "after ResetState the next step anchors";
  EXPECT_TRUE(std::isfinite(reset[5].sum_squares));
}

INSTANTIATE_TEST_SUITE_P(Compressors, Ef21NonFinite,
                         ::testing::Values(CompressorKind::kInt8, CompressorKind::kFp8,
                                           CompressorKind::kTopK),
                         [](const auto& info) { return std::string(KindName(info.param)); });

// The device path: buffers on GPU 0 (ranks share it) reduced over host-staged MPI give the CPU
// run's values bit for bit, for every compressor with and without ZeRO-1, at plain, anchor and
// compressed steps, with EF21-W weights too. Without a GPU the staged run keeps CPU buffers.
TEST(Ef21OnTheDevice, HostStagedBuffersEqualTheCpuRunBitForBit) {
  Groups groups;
  const Device device = cuda::DeviceCount() > 0 ? Device::Cuda(0) : Device::Cpu();
  const int n = groups.world.size();
  for (CompressorKind kind : {CompressorKind::kIdentity, CompressorKind::kInt8,
                              CompressorKind::kFp8, CompressorKind::kTopK}) {
    for (bool zero1 : {false, true}) {
      for (bool weighted : {false, true}) {
        GradSyncOptions options = Options(zero1, kind, 1, 4);  // anchors at 1, 5, 9
        if (weighted) {
          for (int i = 0; i < n; ++i) {
            options.ef21.rank_weights.push_back(2.0f * (i + 1) / (n * (n + 1)));
          }
        }
        // EF21-W needs groups of one size: the expert buffer then reduces over the world too.
        const RunSpec cpu{.options = options, .split_expert = !weighted};
        RunSpec on_device = cpu;
        on_device.device = device;
        on_device.staged = true;
        const auto expected = SyncSteps(groups, cpu);
        const auto actual = SyncSteps(groups, on_device);
        for (int64_t t = 0; t < kSteps; ++t) {
          EXPECT_EQ(actual[t].values, expected[t].values)
              << KindName(kind) << (zero1 ? " zero1" : "") << (weighted ? " weighted" : "")
              << " on " << device.ToString() << ", step " << t;
          EXPECT_EQ(actual[t].bytes_sent, expected[t].bytes_sent) << KindName(kind);
          EXPECT_LT(actual[t].invariant_error, 1e-5) << KindName(kind) << " step " << t;
        }
      }
    }
  }
}

}  // namespace
}  // namespace moefold::parallel
