// Trainer::Evaluate: forward-only passes over a split (a plain micro-batch loop; under pipeline
// parallelism every rank walks the micro-batches and its virtual stages in the same order, so each
// activation is received after everything it depends on has been sent and no cycle can form).
#include "core/train/evaluator.h"

#include <chrono>
#include <cmath>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/train/micro_batches.h"
#include "core/train/trainer.h"
#include "core/train/trainer_state.h"

namespace moefold::train {

SplitSampleCounts SamplesPerSplit(const config::ExperimentConfig& config) {
  const auto& t = config.train();
  const int64_t g = t.global_batch_size();
  SplitSampleCounts n;
  n.train = static_cast<int64_t>(t.steps()) * g;
  if (t.eval_every() > 0) n.valid = (t.steps() / t.eval_every() + 1) * int64_t{t.eval_iters()} * g;
  n.test = int64_t{t.eval_iters()} * g;
  return n;
}

std::optional<int64_t> ValidEvaluationIndex(const config::TrainConfig& train, int64_t steps_done) {
  if (train.eval_every() <= 0 || train.eval_iters() <= 0) return std::nullopt;
  if (steps_done % train.eval_every() == 0) return steps_done / train.eval_every() - 1;
  if (steps_done == train.steps()) return steps_done / train.eval_every();
  return std::nullopt;
}

void AddEvaluation(const StepEvaluation& evaluation, JsonLine* line) {
  if (evaluation.valid) {
    line->Add("eval_loss", evaluation.valid->loss).Add("eval_ppl", evaluation.valid->ppl);
  }
  if (evaluation.test) {
    line->Add("test_loss", evaluation.test->loss).Add("test_ppl", evaluation.test->ppl);
  }
}

absl::StatusOr<EvalResult> Trainer::Evaluate(data::SplitKind split, int64_t first_batch,
                                             int64_t num_batches) {
  State& st = *state_;
  const data::SampleSource* samples = st.data->split(split);
  if (samples == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("no ", data::SplitName(split), " split to evaluate on: data.split \"",
                     st.config.data().split(), "\" gives it no share (or it was not built)"));
  }
  if (first_batch < 0 || num_batches < 0) {
    return absl::InvalidArgumentError(absl::StrCat("evaluation batches [", first_batch, ", +",
                                                   num_batches, ") out of range"));
  }
  const auto start = std::chrono::steady_clock::now();
  const RankGroups& g = st.groups;
  const int64_t global_batch = st.config.train().global_batch_size(), micro = st.micro_batch;
  const int64_t seq = st.config.train().seq_len();
  const Tensor positions = LocalPositions(seq, g.model.cp_size(), g.cp_rank);
  const int64_t local_seq = positions.numel();
  const int pp = g.pp_size, chunks = static_cast<int>(st.chunks.size());
  const Shape activation{micro * local_seq / (g.model.sequence_parallel ? g.model.tp_size() : 1),
                         st.spec.hidden};

  model::StepContext ctx;
  ctx.stream = st.stream;
  ctx.act_dtype = st.act_dtype;
  ctx.sample_losses_on_host = false;  // the loss sums stay on the device until the end
  ctx.ResetDeviceSums();
  std::vector<std::pair<Tensor, std::unique_ptr<parallel::Work>>> sends;
  for (int64_t b = first_batch; b < first_batch + num_batches; ++b) {
    // This DP rank's micro-batches of global batch b, this CP rank's chunks of each sequence.
    std::vector<model::MicroBatch> batches = LocalMicroBatches(
        *samples, b, {seq, global_batch, micro, g.dp_size, g.dp_rank}, positions, *st.stream);
    for (int64_t m = 0; m < static_cast<int64_t>(batches.size()); ++m) {
      const model::MicroBatch& batch = batches[m];
      // Virtual stages in order: chunk c of this rank is stage c·pp + pp_rank.
      for (int c = 0; c < chunks; ++c) {
        model::Decoder& chunk = *st.chunks[c];
        const int s = c * pp + g.pp_rank;
        // Tagged by the receiving stage: between two ranks the messages of one stage pair are
        // sent and received in the same (micro-batch) order, which MPI keeps per tag.
        auto tag = [](int to_stage) { return to_stage; };
        Tensor input, output;
        MF_CHECK(g.pp != nullptr || (chunk.stage().embedding && chunk.stage().head))
            << "virtual stages need pipeline ranks";
        if (!chunk.stage().embedding) {
          input = ctx.Act(activation);
          MF_ASSIGN_OR_RETURN(auto work,
                              g.pp->Recv(&input, (g.pp_rank + pp - 1) % pp, {.tag = tag(s)}));
          MF_RETURN_IF_ERROR(Annotate(work->Wait(), absl::StrCat("evaluation: activation of stage ",
                                                                 s - 1, " for stage ", s)));
        }
        model::Decoder::Saved saved;  // forward only: dropped at once
        ctx.micro_batch = static_cast<int>(m);
        ctx.stage = s;
        MF_RETURN_IF_ERROR(chunk
                               .Forward(ctx, batch, &saved,
                                        chunk.stage().embedding ? nullptr : &input,
                                        chunk.stage().head ? nullptr : &output)
                               .status());
        if (!chunk.stage().head) {
          MF_ASSIGN_OR_RETURN(auto work,
                              g.pp->Send(output, (g.pp_rank + 1) % pp, {.tag = tag(s + 1)}));
          sends.emplace_back(std::move(output), std::move(work));
        }
      }
    }
  }
  for (auto& [tensor, work] : sends) {
    MF_RETURN_IF_ERROR(Annotate(work->Wait(), "evaluation: pipeline send"));
  }
  // Per-sample losses are the same on every rank of a TP×CP group: they add over DP, and over the
  // stages (only the last one has them), as in the training step.
  std::vector<float> sums = {ctx.device_sums.ToVector()[model::kSampleLossSum]};
  for (parallel::Communicator* comm : {g.dp, g.pp}) {
    if (parallel::IsSingleRank(comm)) continue;
    Tensor t = Tensor::FromVector(sums, {1});
    MF_RETURN_IF_ERROR(Annotate(parallel::WaitFor(comm->AllReduce(&t, {})),
                                "evaluation: loss sum"));
    sums = t.ToVector();
  }
  EvalResult r;
  r.samples = num_batches * global_batch;
  r.tokens = r.samples * seq;
  r.loss = r.samples > 0 ? sums[0] / static_cast<double>(r.samples) : 0.0;
  r.ppl = std::exp(r.loss);
  r.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

absl::StatusOr<StepEvaluation> Trainer::EvaluateAfterStep(int64_t step) {
  State& st = *state_;
  const auto& train = st.config.train();
  StepEvaluation out;
  if (const std::optional<int64_t> k = ValidEvaluationIndex(train, step + 1)) {
    MF_ASSIGN_OR_RETURN(out.valid, Evaluate(data::SplitKind::kValid, *k * train.eval_iters(),
                                            train.eval_iters()));
  }
  if (step + 1 == train.steps() && train.eval_iters() > 0 &&
      st.data->split(data::SplitKind::kTest) != nullptr) {
    MF_ASSIGN_OR_RETURN(out.test, Evaluate(data::SplitKind::kTest, 0, train.eval_iters()));
  }
  return out;
}

}  // namespace moefold::train
