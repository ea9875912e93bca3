// Data-parallel gradient synchronisation over contiguous buffers (docs/ARCHITECTURE.md §5.7): every
// parameter's grad lives in one flat buffer per GradReduction (dense and TP-replicated → DP×CP,
// replicated across TP under SP and the router → TP×DP×CP, expert → EDP), cut into buckets whose
// sizes divide by the group size. A bucket is reduced — all-reduce, or reduce-scatter under ZeRO-1
// — as soon as the last of its parameters is marked ready during backward, so communication
// overlaps the rest of the backward; Finish() launches what is left and waits.
//
//   params.Flatten(GradSync::Alignment(groups));
//   GradSync sync(&params, groups, {.zero1 = true});
//   sync.BeginStep(); ... sync.MarkReady(first, last); ... MF_RETURN_IF_ERROR(sync.Finish());
#pragma once

#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "core/parameter.h"
#include "parallel/communicator.h"
#include "parallel/compressors.h"

namespace moefold::parallel {

// EF21 error feedback (docs/FORMULAS.md §8), all-reduce-compatible form. Per
// bucket each rank keeps h (its running estimate of its own gradient) and the owner of each chunk
// keeps s (the running estimate of the reduced sum). A compressed step sends C(v − h), sets h +=
// deq, and the owner adds the pieces of all ranks, dequantised and summed in rank order in f32, to
// s. Quantizers (identity, int8, fp8) go through an all-to-all of destination chunks (a compressed
// reduce-scatter whose output ZeRO-1 consumes directly); Top-K messages are all-gathered and every
// rank rebuilds the full sum. Steps before warm_start_steps reduce uncompressed; step
// warm_start_steps and every reanchor_every steps after it ANCHOR (an uncompressed reduction, then
// h = v and s = the exact sum), so the EF state is a function of the step number alone and a
// resumed run retraces the same trajectory without saving h and s.
//
// EF21-W: with weights wᵢ (Σ = 1) rank i compresses v/(n·wᵢ) − h and the owner adds n·wᵢ·deqᵢ. For
// these positively homogeneous compressors that is EF21 on rescaled state: with h' = n·wᵢ·h,
// n·wᵢ·C(v/(n·wᵢ) − h) = C(v − h') (exactly in real arithmetic, up to f32 rounding here), so rank
// i's contribution to s is that of EF21 run on h'. Uniform wᵢ = 1/n is EF21 bit for bit. One weight
// per member of every reducing group (the groups must then have the same size).
struct Ef21Options {
  bool enabled = false;
  Compressor compressor;
  int64_t warm_start_steps = 0;
  int64_t reanchor_every = 0;       // 0 = anchor only once, at warm_start_steps
  std::vector<float> rank_weights;  // EF21-W, one per group member; empty = uniform
};

struct GradSyncOptions {
  bool zero1 = false;                 // reduce-scatter into per-rank shards instead of all-reduce
  int64_t bucket_elements = 1 << 22;  // target bucket size (rounded to the group size)
  Ef21Options ef21;
};

// The groups a GradSync reduces over (nullptr = a group of one rank) and, for the global norm, the
// model-parallel groups over which buffers hold different elements.
struct GradSyncGroups {
  Communicator* dp_cp = nullptr;     // kDenseDataCp and kReplicatedDataCp gradients
  Communicator* tp_cp_dp = nullptr;  // kDenseDataCpTp gradients
  Communicator* edp = nullptr;       // kExpertData gradients
  Communicator* tp = nullptr;        // kDenseDataCp shards differ over TP
  Communicator* etp_ep = nullptr;    // expert shards differ over ETP×EP
  Communicator* pp = nullptr;        // pipeline stages hold different layers
};

struct GradBucket {
  int buffer = 0;     // index into ParameterSet::flat_buffers()
  int64_t begin = 0;  // element range of the flat buffer
  int64_t end = 0;
  int pending = 0;  // parameters of this bucket not yet marked ready this step
  std::unique_ptr<Work> work;
  Tensor shard;             // ZeRO-1: this rank's reduced chunk ((end − begin) / group size)
  int64_t shard_begin = 0;  // ZeRO-1: flat-buffer offset of this rank's chunk
  // EF21 state and messages.
  Tensor h;           // (end − begin) f32: this rank's estimate of its own (scaled) gradient
  Tensor s;           // chunk (quantizers) or whole bucket (Top-K) f32: estimate of the sum
  Tensor send, recv;  // u8 messages in flight
  int mode = 0;       // GradSync::Mode this bucket runs in this step
};

class GradSync {
 public:
  // Alignment to pass to ParameterSet::Flatten so every buffer splits into equal shards; with
  // EF21, also pass the compressor block as the segment alignment and multiply this by it.
  static int64_t Alignment(const GradSyncGroups& groups);

  // `params` must be flattened.
  GradSync(ParameterSet* params, const GradSyncGroups& groups, const GradSyncOptions& options);

  // `step` decides the EF21 mode (uncompressed, anchor, compressed); unused without EF21.
  void BeginStep(int64_t step = 0);
  // Drops the EF21 state (h, s) of every bucket: the next compressed step anchors instead. For a
  // step whose gradient was not finite (NaN/Inf reach the result, so the trainer skips the step,
  // but they stay in h and s until the next anchor). Collective in effect: every member of each
  // group must call it before the same step, or the members disagree on the reduction and hang.
  void ResetState();
  // Parameters with indices [first, last) of the set have their final gradient for this step;
  // launches every bucket that became complete, after a Progress() on those in flight.
  absl::Status MarkReady(int64_t first, int64_t last);
  // Polls the reductions in flight (Work::IsCompleted, an MPI_Test on MPI) and returns how many
  // are still running. A non-blocking MPI collective advances only while its process is inside
  // MPI, so the backward calls this (through MarkReady, at every layer boundary of the last
  // micro-batch) to let the buckets move while it computes. Cheap: a poll per bucket in flight.
  int Progress();
  // Launches the remaining buckets and waits for all of them.
  absl::Status Finish();

  // The gradient elements this rank owns after Finish(): whole buffers without ZeRO-1, its shard of
  // every bucket with it. Used for scaling by 1/Z, the norm and the optimizer.
  std::vector<Tensor*> OwnedGrads();
  // Σ g² over the whole (global) gradient, each element counted once: each buffer's sum over its
  // reducing group (under ZeRO-1), then over the group its shards differ in, then over stages, each
  // time adding the members' partial sums in rank order, so every rank gets the same bits. The
  // buffers' partial sums accumulate on the gradients' device and come to the host in one copy
  // (the only wait); the exchanges between ranks move those host scalars.
  absl::StatusOr<double> GlobalSumOfSquares();

  bool zero1() const { return options_.zero1; }
  std::vector<GradBucket>& buckets() { return buckets_; }
  ParameterSet* params() { return params_; }
  Communicator* group_of(int buffer);  // the group reducing flat buffer `buffer` (may be null)
  // Bytes this rank sent in the last step's gradient reductions, and what the uncompressed
  // reduction (all-reduce, or reduce-scatter under ZeRO-1) would have sent.
  int64_t bytes_sent() const { return bytes_sent_; }
  int64_t uncompressed_bytes() const { return uncompressed_bytes_; }

 private:
  enum class Mode { kPlain, kAnchor, kCompressed };
  absl::Status Launch(GradBucket& bucket);
  absl::Status LaunchCompressed(GradBucket& bucket, Communicator* comm);
  absl::Status FinishBucket(GradBucket& bucket);
  float RankScale(const Communicator* comm) const;  // 1/(n·wᵢ) of this rank (1 when uniform)

  ParameterSet* params_;
  GradSyncGroups groups_;
  GradSyncOptions options_;
  std::vector<GradBucket> buckets_;
  std::vector<std::vector<int>> buckets_of_param_;  // parameter index → buckets it touches
  std::vector<bool> ready_;
  Tensor owner_weights_;  // EF21-W: n·wᵢ per member (f32, gradients' device); undefined = uniform
  Mode mode_ = Mode::kPlain;
  int64_t bytes_sent_ = 0;
  int64_t uncompressed_bytes_ = 0;
};

}  // namespace moefold::parallel
