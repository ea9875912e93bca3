// The trainer's reliability features (docs/ARCHITECTURE.md, reliability): the watchdog around the
// step loop, the per-step agreement to stop after a preemption signal, train.verify_every's
// second run of a step, and the fault-injection hooks of the tests.
#include <signal.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "configs/validate.h"
#include "core/train/preemption.h"
#include "core/train/trainer.h"
#include "core/train/trainer_state.h"
#include "ops/reduce.h"

namespace moefold::train {

absl::StatusOr<TrainSummary> Trainer::Run() {
  State& st = *state_;
  if (st.options.watchdog && st.watchdog == nullptr) {
    WatchdogOptions options;
    options.rank = st.groups.world_rank;
    options.world_size = st.options.groups == nullptr ? 1 : st.options.groups->world().size();
    options.dir = st.options.run_dir + "/flight";
    options.hang_timeout_s = st.config.train().hang_timeout_s();
    options.end_job = st.options.end_job;
    MF_ASSIGN_OR_RETURN(st.watchdog, Watchdog::Start(options));
  }
  absl::StatusOr<TrainSummary> summary = RunSteps();
  if (st.watchdog) {
    // The last record says how the rank ended (a failed run's error, too).
    st.watchdog->Stop();
    st.watchdog->WriteFinal(!summary.ok()        ? absl::StrCat("error: ", summary.status().message())
                            : summary->preempted ? "preempted"
                                                 : "ok");
  }
  return summary;
}

absl::Status Trainer::AgreeOnStep(StepResult* r) {
  State& st = *state_;
  const bool injected = r->step == st.options.local_anomaly_step;
  if (injected) {
    std::fprintf(stderr, "[rank %d] injected: a non-finite loss seen by this rank at step %lld\n",
                 st.groups.world_rank, static_cast<long long>(r->step));
  }
  const bool nonfinite = injected || !std::isfinite(r->grad_norm);
  // Flags as i64 maxima over the world (one small all-reduce per step): skip, a non-finite
  // gradient somewhere (whose EF21 state every rank drops), stop.
  Tensor flags = Tensor::Empty({3}, DType::kI64);
  int64_t* f = flags.data<int64_t>();
  f[0] = r->skipped || injected;
  f[1] = nonfinite;
  f[2] = PreemptionRequested();
  if (st.options.groups != nullptr) {
    MF_RETURN_IF_ERROR(Annotate(parallel::WaitFor(st.options.groups->world().AllReduce(
                                    &flags, {.op = parallel::ReduceOp::kMax})),
                                "the agreement on skipping and stopping"));
  }
  if (f[1] != 0 && std::isfinite(r->grad_norm)) st.sync->ResetState();  // CheckAnomalies did not
  r->skipped = f[0] != 0;
  r->stop_requested = f[2] != 0;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint64_t>> Trainer::VerifyReference(int64_t step) {
  State& st = *state_;
  const int64_t every = st.config.train().verify_every();
  if (every <= 0 || step % every != every - 1) return std::vector<uint64_t>{};
  // A profiled or traced step is not run twice (its profile would count both runs).
  const auto& listed = st.config.logging().profile_steps();
  if (st.profile_all || std::find(listed.begin(), listed.end(), step) != listed.end()) {
    return std::vector<uint64_t>{};
  }
  MF_ASSIGN_OR_RETURN(const std::optional<config::StepRange> traced,
                      config::ParseTraceSteps(st.config.logging().trace_steps()));
  if (traced && step >= traced->first && step <= traced->last) return std::vector<uint64_t>{};
  // The reference run leaves the state as it found it: the reweighter's range is the one state a
  // step's forward and backward advance (the update, expert bias and loss EMA come later; EF21's
  // error feedback is refused with verify_every by Validate).
  const optim::ReweightingState reweighting = st.reweighter->state();
  MF_ASSIGN_OR_RETURN(std::vector<uint64_t> digest, RunReference(step));
  st.reweighter->set_state(reweighting);
  return digest;
}

absl::StatusOr<std::vector<uint64_t>> Trainer::StepDigest(const Tensor& device_sums,
                                                          const StepResult& r) {
  State& st = *state_;
  std::vector<uint64_t> digest;
  for (float v : device_sums.ToVector()) {
    uint32_t bits;
    std::memcpy(&bits, &v, sizeof(bits));
    digest.push_back(bits);
  }
  // Σg² of every bucket's owned part, on the gradients' device, read in one copy.
  std::vector<parallel::GradBucket>& buckets = st.sync->buckets();
  if (!buckets.empty()) {
    const Device device = buckets[0].shard.device();
    Stream& stream = DefaultStream(device);
    Tensor partials = Tensor::Empty({static_cast<int64_t>(buckets.size())}, DType::kI64, device);
    partials.SetZero(stream);
    for (size_t i = 0; i < buckets.size(); ++i) {
      Tensor slot = partials.Slice(static_cast<int64_t>(i), static_cast<int64_t>(i) + 1);
      ops::SumOfSquaresInto(buckets[i].shard, &slot, stream);
    }
    const Tensor host = partials.To(Device::Cpu());
    for (size_t i = 0; i < buckets.size(); ++i) {
      digest.push_back(static_cast<uint64_t>(host.data<int64_t>()[i]));
    }
  }
  // The reduced values last: equal on every rank, they differ wherever any rank's part did.
  for (double v : {r.loss, r.grad_norm}) {
    uint64_t bits;
    std::memcpy(&bits, &v, sizeof(bits));
    digest.push_back(bits);
  }
  return digest;
}

absl::Status Trainer::CheckVerify(const std::vector<uint64_t>& reference,
                                  const std::vector<uint64_t>& digest, StepResult* r) {
  State& st = *state_;
  MF_CHECK(reference.size() == digest.size() && digest.size() >= 2);
  // This rank's own parts (all but the reduced loss and norm) name it when they differ.
  const size_t local = digest.size() - 2;
  size_t first_diff = local;
  for (size_t i = 0; i < local && first_diff == local; ++i) {
    if (reference[i] != digest[i]) first_diff = i;
  }
  const bool mine = first_diff < local;
  if (mine) {
    const size_t sums = st.sync->buckets().size();
    const size_t forward = local - sums;
    std::fprintf(stderr,
                 "[rank %d] step %lld ran twice from the same state and this rank's %s differed "
                 "(bits %#llx, then %#llx)\n",
                 st.groups.world_rank, static_cast<long long>(r->step),
                 first_diff < forward
                     ? "forward loss sums"
                     : absl::StrCat("gradient bucket ", first_diff - forward, " (Σg²)").c_str(),
                 static_cast<unsigned long long>(reference[first_diff]),
                 static_cast<unsigned long long>(digest[first_diff]));
  }
  std::vector<int> ranks;
  if (st.options.groups == nullptr) {
    if (mine) ranks.push_back(0);
  } else {
    parallel::Communicator& world = st.options.groups->world();
    Tensor flag = Tensor::Empty({1}, DType::kI64);
    flag.data<int64_t>()[0] = mine ? 1 : 0;
    Tensor all = Tensor::Empty({world.size()}, DType::kI64);
    MF_RETURN_IF_ERROR(Annotate(parallel::WaitFor(world.AllGather(flag, &all, {})),
                                "the agreement on train.verify_every's result"));
    for (int i = 0; i < world.size(); ++i) {
      if (all.data<int64_t>()[i] != 0) ranks.push_back(i);
    }
  }
  const bool global_differs = reference[local] != digest[local] ||
                              reference[local + 1] != digest[local + 1];
  if (ranks.empty() && !global_differs) return absl::OkStatus();
  r->verify_mismatch_ranks = ranks;
  ++st.verify_mismatches;
  double ref_loss, ref_norm;
  std::memcpy(&ref_loss, &reference[local], sizeof(double));
  std::memcpy(&ref_norm, &reference[local + 1], sizeof(double));
  const std::string who =
      ranks.empty() ? std::string("the reduced values (no rank's own part)")
                    : absl::StrCat(ranks.size() > 1 ? "rank(s) " : "rank ",
                                   absl::StrJoin(ranks, ", "));
  const std::string message = absl::StrFormat(
      "silent data corruption check (train.verify_every %d): step %d ran twice from the same "
      "state and the result of %s changed (loss %.17g then %.17g, gradient norm %.17g then %.17g)",
      st.config.train().verify_every(), r->step, who, ref_loss, r->loss, ref_norm, r->grad_norm);
  if (st.config.train().on_mismatch() == "stop") return absl::DataLossError(message);
  if (st.groups.world_rank == 0) {
    std::fprintf(stderr, "warning: %s; training continues (train.on_mismatch: warn)\n",
                 message.c_str());
  }
  return absl::OkStatus();
}

absl::Status Trainer::InjectFaults(int64_t step) {
  State& st = *state_;
  const bool resumed = st.options.resume || st.config.checkpoint().resume();
  if (step == st.options.kill_step && !resumed) {
    std::fprintf(stderr, "[rank %d] injected: signal %d in the middle of step %lld\n",
                 st.groups.world_rank, st.options.kill_signal, static_cast<long long>(step));
    std::fflush(stderr);
    raise(st.options.kill_signal);
  }
  if (step != st.options.bitflip_step) return absl::OkStatus();
  // One bit of the first non-zero element this rank owns: bit 22 of an f32 (the top mantissa bit,
  // a relative change of up to 50%), as a flaky multiplier or memory cell would do.
  for (Tensor* grad : st.sync->OwnedGrads()) {
    if (grad->dtype() != DType::kF32 || grad->numel() == 0) continue;
    Tensor host = grad->To(Device::Cpu());
    float* v = host.data<float>();
    for (int64_t i = 0; i < host.numel(); ++i) {
      if (v[i] == 0) continue;
      uint32_t bits;
      std::memcpy(&bits, &v[i], sizeof(bits));
      bits ^= 1u << 22;
      std::memcpy(&v[i], &bits, sizeof(bits));
      if (!grad->device().is_cpu()) grad->CopyFrom(host);  // on the CPU `host` is the gradient
      std::fprintf(stderr, "[rank %d] injected: bit flip in gradient element %lld of step %lld\n",
                   st.groups.world_rank, static_cast<long long>(i), static_cast<long long>(step));
      return absl::OkStatus();
    }
  }
  return absl::InternalError("injected bit flip: this rank owns no non-zero f32 gradient");
}

}  // namespace moefold::train
