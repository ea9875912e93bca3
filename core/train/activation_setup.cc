// Builds the activation store for a run; resolves memory.swap_auto.
#include "core/train/activation_setup.h"

#include <cstdio>

#include "absl/strings/str_format.h"
#include "core/train/activation_memory.h"
#include "core/train/flops.h"
#include "core/train/memory_plan.h"
#include "core/train/model_from_config.h"
#include "core/train/peak.h"

namespace moefold::train {

absl::StatusOr<std::shared_ptr<model::ActivationStore>> MakeActivationStore(
    const config::ExperimentConfig& config, const parallel::Mapping* mapping, int rank,
    const Device& device, parallel::Communicator* world) {
  MF_ASSIGN_OR_RETURN(model::ActivationPolicy policy, ActivationPolicyFromConfig(config));
  if (policy.IsKeep()) return std::shared_ptr<model::ActivationStore>();
  std::optional<parallel::Mapping> one;
  if (mapping == nullptr) {
    const auto& p = config.parallel();
    MF_ASSIGN_OR_RETURN(one, parallel::Mapping::Create(
                                 1, {.tp = p.tp(), .cp = p.cp(), .dp = p.dp(), .pp = p.pp(),
                                     .etp = p.etp(), .ep = p.ep(), .order = p.order()}));
    mapping = &*one;
    rank = 0;
  }
  MF_RETURN_IF_ERROR(CheckHostBudget(config, *mapping, rank));
  if (policy.AnySwap() && config.memory().swap_auto()) {
    // α·(swappable bytes of a layer) / bandwidth ≤ the layer's forward time, and α·host ≤ budget.
    model::ActivationPolicy all_rows = policy;
    all_rows.swap_fraction = 1.0f;
    MF_ASSIGN_OR_RETURN(const MemoryEstimate m, EstimateMemory(config, *mapping, rank, all_rows));
    MF_ASSIGN_OR_RETURN(const model::ModelSpec spec, ModelSpecFromConfig(config));
    const auto& s = mapping->sizes();
    const int64_t tokens = config.train().micro_batch_size() * config.train().seq_len() /
                           (int64_t{s.cp} * s.tp);
    const double forward_flops =
        TrainingFlopsPerToken(spec, config.train().seq_len()) / 3.0 / spec.num_layers * tokens;
    MF_ASSIGN_OR_RETURN(const DType dtype, ParseDType(config.precision().compute_dtype()));
    // The layer's forward time from a measurement: a timed GEMM of its largest dense projection's
    // shape (the gate/up projection of its tokens) gives the rate its FLOPs run at here; the
    // device's peak only where nothing could be timed.
    const int64_t ffn = std::max<int64_t>(spec.ffn, spec.moe.expert_ffn);
    const double measured = MeasureGemmFlops(device, dtype, tokens * s.tp, spec.hidden,
                                             2 * std::max<int64_t>(1, ffn / s.tp));
    const Peak peak = ResolvePeak(config.train().peak_tflops(), device, dtype);
    const double rate = measured > 0 ? measured : peak.tflops * 1e12;
    const double forward_s = rate > 0 ? forward_flops / rate : 0;
    const double bandwidth = config.memory().host_link_gbps() > 0
                                 ? config.memory().host_link_gbps() * 1e9
                                 : MeasureHostLinkBandwidth(device);
    const int layers = std::max(1, config.model().num_layers() / std::max(1, s.pp));
    const SwapHostBytes per_rank{m.activation_host_bytes - m.activation_host_whole_bytes,
                                 m.activation_host_whole_bytes};
    const int64_t per_layer_share = int64_t{std::max(1, m.in_flight)} * layers;
    const SwapHostBytes per_layer{per_rank.split / per_layer_share,
                                  per_rank.whole / per_layer_share};
    const int64_t per_layer_bytes = per_layer.split + per_layer.whole;
    policy.swap_fraction = ChooseSwapFraction(
        per_layer, forward_s, bandwidth, per_rank,
        static_cast<int64_t>(config.memory().host_budget_gb() * 1073741824.0));
    if (!parallel::IsSingleRank(world)) {
      // The smallest α of any rank: its copy hides on every rank and fits every rank's budget.
      Tensor alpha = Tensor::FromVector({policy.swap_fraction}, {1}).To(device);
      MF_RETURN_IF_ERROR(
          parallel::WaitFor(world->AllReduce(&alpha, {.op = parallel::ReduceOp::kMin})));
      policy.swap_fraction = alpha.ToVector()[0];
    }
    if (rank == 0) {
      std::fprintf(stderr,
                   "memory.swap_auto: α = %.4f, the smallest of every rank's (rank 0: layer "
                   "forward %.3g ms at %.3g TFLOP/s %s, %.3g MB of rows per layer at %.3g GB/s "
                   "%s, host budget %g GiB)\n",
                   policy.swap_fraction, forward_s * 1e3, rate / 1e12,
                   measured > 0 ? "measured by a GEMM probe" : "peak", per_layer_bytes / 1e6,
                   bandwidth / 1e9,
                   config.memory().host_link_gbps() > 0 ? "given (memory.host_link_gbps)"
                                                          : "measured",
                   config.memory().host_budget_gb());
    }
  }
  return std::make_shared<model::ActivationStore>(std::move(policy));
}

}  // namespace moefold::train
