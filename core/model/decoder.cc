// Decoder forward/backward: wires the layers, the residual stream and the loss head together.
#include "core/model/decoder.h"

#include <optional>

#include "absl/strings/str_cat.h"
#include "core/flight_recorder.h"
#include "core/model/recompute_rows.h"
#include "core/profiler.h"
#include "core/trace.h"
#include "ops/elementwise.h"
#include "ops/fp8_fused.h"
#include "ops/gemm.h"
#include "ops/loss.h"
#include "ops/norm.h"
#include "parallel/tensor_parallel.h"

namespace moefold::model {
namespace {

// Token ids in [0, V) and targets in [-1, V): a bad id is an error, not a silent zero row of a
// vocabulary-parallel lookup.
absl::Status CheckIds(const MicroBatch& batch, int64_t vocab) {
  for (const auto& [t, name, low] : {std::tuple{&batch.tokens, "token", 0},
                                     std::tuple{&batch.targets, "target", -1}}) {
    const int32_t* ids = t->data<int32_t>();
    for (int64_t i = 0; i < t->numel(); ++i) {
      if (ids[i] < low || ids[i] >= vocab) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, " id ", ids[i], " at sequence ", i / batch.seq_len(), " position ",
                         i % batch.seq_len(), " is outside the vocabulary [0, ", vocab, ")"));
      }
    }
  }
  return absl::OkStatus();
}

// "layer 3 forward" {layer, micro_batch, stage} on the host track of a traced step; nothing (and
// no name built) otherwise.
TraceSpan LayerSpan(const StepContext& ctx, const char* pass) {
  if (!Tracer::Get().enabled()) return TraceSpan();
  return TraceSpan(TraceTrack::kHost, absl::StrCat("layer ", ctx.layer, " ", pass),
                   {{"layer", int64_t{ctx.layer}},
                    {"micro_batch", int64_t{ctx.micro_batch}},
                    {"stage", int64_t{ctx.stage}}});
}

}  // namespace

Decoder::Decoder(const ModelSpec& spec, const ModelParallel& mp, ParameterSet* params,
                 const DecoderStage& stage)
    : spec_(spec), mp_(mp), stage_(stage) {
  MF_CHECK_EQ(static_cast<int>(spec.moe_layer.size()), spec.num_layers);
  if (stage_.last_layer < 0) stage_.last_layer = spec.num_layers;
  MF_CHECK(0 <= stage_.first_layer && stage_.first_layer <= stage_.last_layer &&
           stage_.last_layer <= spec.num_layers)
      << "stage layers [" << stage_.first_layer << ", " << stage_.last_layer << ") of "
      << spec.num_layers;
  const int64_t h = spec.hidden;
  rope_ = std::make_unique<RopeTables>(spec.head_dim, spec.rope_theta);
  // Vocabulary-parallel; the vocabulary need not divide by TP (ShardRange: the last shards are
  // shorter, e.g. 257 bytes over TP 2 = 129 + 128 rows).
  if (stage_.embedding) {
    embedding_param_ = static_cast<int64_t>(params->params().size());
    embedding_ = params->Add("model.embed_tokens.weight", {spec.vocab, h},
                             GradReduction::kDenseDataCp, spec.init_std, true, 0.0f, mp.Split(0));
  }
  for (int l = stage_.first_layer; l < stage_.last_layer; ++l) {
    const std::string prefix = absl::StrCat("model.layers.", l);
    Block block;
    block.first_param = static_cast<int64_t>(params->params().size());
    block.attention = std::make_unique<AttentionLayer>(spec, mp, prefix, params, rope_.get());
    block.ffn_norm = params->Add(prefix + ".post_attention_layernorm.weight", {h},
                                 mp.NormReduction(), 0.0f, false, 1.0f);
    if (spec.moe_layer[l]) {
      block.moe = std::make_unique<MoeLayer>(spec, mp, prefix + ".mlp", params);
    } else {
      block.mlp = std::make_unique<SwiGluMlp>(spec, mp, prefix + ".mlp", spec.ffn, params);
    }
    block.last_param = static_cast<int64_t>(params->params().size());
    blocks_.push_back(std::move(block));
  }
  if (!stage_.head) return;
  head_first_param_ = static_cast<int64_t>(params->params().size());
  final_norm_ = params->Add("model.norm.weight", {h}, mp.NormReduction(), 0.0f, false, 1.0f);
  if (spec.tie_embeddings && stage_.embedding) {
    head_ = embedding_;
  } else if (spec.tie_embeddings) {
    // The same name draws the same initial values as the first stage's embedding.
    head_ = tied_copy_ = params->Add("model.embed_tokens.weight", {spec.vocab, h},
                                     GradReduction::kTiedCopy, spec.init_std, true, 0.0f,
                                     mp.Split(0));
  } else {
    head_ = params->Add("lm_head.weight", {spec.vocab, h}, GradReduction::kDenseDataCp,
                        spec.init_std, true, 0.0f, mp.Split(0));
  }
  head_last_param_ = static_cast<int64_t>(params->params().size());
}

int Decoder::first_moe_index() const {
  int n = 0;
  for (int l = 0; l < stage_.first_layer; ++l) n += spec_.moe_layer[l];
  return n;
}

std::vector<MoeLayer*> Decoder::moe_layers() {
  std::vector<MoeLayer*> layers;
  for (Block& b : blocks_) {
    if (b.moe) layers.push_back(b.moe.get());
  }
  return layers;
}

absl::StatusOr<ForwardStats> Decoder::Forward(const StepContext& ctx, const MicroBatch& host_batch,
                                              Saved* saved, const Tensor* input, Tensor* output) {
  const MicroBatch batch = WithDeviceCopies(host_batch, ctx.s());
  // Token ids are checked here, on the host copies, so the embedding kernel needs no wait.
  MF_RETURN_IF_ERROR(CheckIds(batch, spec_.vocab));
  ForwardStats stats;
  stats.tokens = batch.batch() * batch.seq_len();
  Tensor x;
  if (stage_.embedding) {
    auto timed = ctx.Profile(OpFamily::kEmbedding);
    MF_RETURN_IF_ERROR(EmbeddingForward(ctx, batch, &x));
  } else {
    MF_CHECK(input != nullptr) << "a stage without the embedding needs the previous stage's output";
    x = *input;
  }

  saved->blocks.resize(blocks_.size());
  for (size_t l = 0; l < blocks_.size(); ++l) {
    const Block& block = blocks_[l];
    BlockSaved& bs = saved->blocks[l];
    StepContext lctx = ctx;
    lctx.layer = stage_.first_layer + static_cast<int>(l);
    FlightRecorder::Get().SetLayer(lctx.layer);
    NvtxRange range("layer forward");
    const TraceSpan span = LayerSpan(lctx, "forward");
    Tensor attn;
    MF_RETURN_IF_ERROR(block.attention->Forward(lctx, batch, x, &bs.attention, &attn));
    // h = x + attention, and the FFN's input norm, in one pass.
    bs.h = ctx.Act(x.shape());
    bs.ffn_in = ctx.Act(x.shape());
    bs.ffn_rstd = ctx.F32({x.dim(0)});
    // A dense FFN under an FP8 recipe that fuses gets its gate_up input from the norm in FP8 too.
    Fp8ProducerTarget ffn_fp8;
    const bool fused_ffn = !block.moe && block.mlp->PrepareFusedInput(lctx, x.dim(0), &ffn_fp8);
    {
      auto timed = lctx.Profile(OpFamily::kNorm);
      if (fused_ffn) {
        MF_RETURN_IF_ERROR(ops::AddRmsNormFp8(x, attn, block.ffn_norm->compute, spec_.norm_eps,
                                              ffn_fp8.Quantize(), &bs.h, &bs.ffn_in,
                                              &bs.ffn_rstd, ctx.s()));
      } else {
        ops::AddRmsNormForward(x, attn, block.ffn_norm->compute, spec_.norm_eps, &bs.h,
                               &bs.ffn_in, &bs.ffn_rstd, ctx.s());
      }
    }
    Tensor ffn;
    if (block.moe) {
      MF_RETURN_IF_ERROR(block.moe->Forward(lctx, batch, bs.ffn_in, &bs.moe, &ffn, &stats));
    } else {
      MF_RETURN_IF_ERROR(block.mlp->Forward(lctx, bs.ffn_in, &bs.mlp, &ffn, /*accumulate=*/false,
                                            fused_ffn ? &ffn_fp8.operand : nullptr));
    }
    x = ctx.Act(bs.h.shape());
    {
      auto timed = lctx.Profile(OpFamily::kOther);
      ops::Add(bs.h, ffn, &x, ctx.s());
    }
    if (StoreActive()) {
      // The stage's last layers run their backward first: under swapping they stay resident.
      const bool resident =
          static_cast<int>(blocks_.size() - l) <= store_->policy().resident_layers;
      const std::vector<SavedRef> refs = BlockRefs(block, &bs);
      MF_RETURN_IF_ERROR(store_->Release(lctx, lctx.layer, resident, refs, &bs.stash));
    }
  }
  if (!stage_.head) {
    MF_CHECK(output != nullptr) << "a stage without the head passes its output on";
    *output = x;
    return stats;
  }
  MF_RETURN_IF_ERROR(HeadForward(ctx, batch, x, saved, &stats));
  return stats;
}

absl::Status Decoder::HeadForward(const StepContext& ctx, const MicroBatch& batch, const Tensor& x,
                                  Saved* saved, ForwardStats* stats) const {
  const int64_t b = batch.batch(), s = batch.seq_len(), t = b * s;
  NvtxRange range("head forward");
  saved->final_in = x;
  saved->final_norm = ctx.Act(x.shape());
  saved->final_rstd = ctx.F32({x.dim(0)});
  {
    auto timed = ctx.Profile(OpFamily::kNorm);
    ops::RmsNormForward(x, final_norm_->compute, spec_.norm_eps, &saved->final_norm,
                        &saved->final_rstd, ctx.s());
  }
  {
    auto timed = ctx.Profile(OpFamily::kCommunication);
    MF_RETURN_IF_ERROR(
        parallel::TpGather(saved->final_norm, mp_.tp, mp_.sequence_parallel, &saved->final_full));
  }
  saved->logits = ctx.Act({t, head_->value.dim(0)});
  {
    auto timed = ctx.Profile(OpFamily::kGemm);
    ops::LinearForward(saved->final_full, head_->compute, &saved->logits, ctx.s());
  }
  Tensor token_losses = ctx.F32({t});
  saved->lse = ctx.F32({t});
  {
    auto timed = ctx.Profile(OpFamily::kLoss);
    MF_RETURN_IF_ERROR(parallel::VocabParallelCrossEntropyForward(
        saved->logits, batch.on_device.targets.Reshape({t}), head_->sharding.tp_begin, mp_.tp,
        &token_losses, &saved->lse, ctx.s()));
  }

  // Per-sample (Σ loss, count) of this rank's tokens; under CP the sequence's other chunks are on
  // the other CP ranks. Row 0: Σ CE, row 1: tokens with a target.
  const bool cp = !parallel::IsSingleRank(mp_.cp);
  Tensor sums;
  if (ctx.sample_losses_on_host) {
    // The reweighting needs the losses before the backward: a copy to the host (a wait).
    const Tensor host_losses = token_losses.To(Device::Cpu());
    sums = Tensor::Zeros({2, b}, DType::kF32);
    const float* losses = host_losses.data<float>();
    const int32_t* target_ids = batch.targets.data<int32_t>();
    for (int64_t i = 0; i < b; ++i) {
      double sum = 0;
      int64_t count = 0;
      for (int64_t j = i * s; j < (i + 1) * s; ++j) {
        if (target_ids[j] < 0) continue;
        sum += losses[j];
        ++count;
      }
      sums.data<float>()[i] = static_cast<float>(sum);
      sums.data<float>()[b + i] = static_cast<float>(count);
    }
    if (cp) MF_RETURN_IF_ERROR(parallel::WaitFor(mp_.cp->AllReduce(&sums, {})));
  } else {
    // The losses stay on the device: their per-sample means add to the step's device sum, and the
    // host counts the targets itself (it has them).
    {
      auto timed = ctx.Profile(OpFamily::kLoss);
      Tensor device_sums = ctx.F32({2, b});
      ops::SampleLossSums(token_losses, batch.on_device.targets, &device_sums, ctx.s());
      if (cp) MF_RETURN_IF_ERROR(parallel::WaitFor(mp_.cp->AllReduce(&device_sums, {})));
      Tensor total = ctx.DeviceSumSlot(kSampleLossSum);
      ops::AccumulateSampleMeans(device_sums, &total, ctx.s());
    }
    sums = Tensor::Zeros({2, b}, DType::kF32);
    const int32_t* target_ids = batch.targets.data<int32_t>();
    for (int64_t j = 0; j < t; ++j) sums.data<float>()[b + j / s] += target_ids[j] >= 0 ? 1 : 0;
    if (cp) MF_RETURN_IF_ERROR(parallel::WaitFor(mp_.cp->AllReduce(&sums, {})));
  }
  saved->sample_tokens.clear();
  for (int64_t i = 0; i < b; ++i) {
    const float sum = sums.data<float>()[i];
    const auto count = static_cast<int64_t>(sums.data<float>()[b + i]);
    if (ctx.sample_losses_on_host) {
      stats->sample_losses.push_back(count > 0 ? sum / static_cast<float>(count) : 0.0f);
    }
    stats->sample_tokens.push_back(count);
    saved->sample_tokens.push_back(count);
  }
  return absl::OkStatus();
}

absl::Status Decoder::EmbeddingForward(const StepContext& ctx, const MicroBatch& batch,
                                       Tensor* x) const {
  const int64_t t = batch.batch() * batch.seq_len();
  return parallel::VocabParallelEmbeddingForward(batch.on_device.tokens.Reshape({t}),
                                                 embedding_->compute, embedding_->sharding.tp_begin,
                                                 mp_.tp, mp_.sequence_parallel, x, ctx.s());
}

absl::Status Decoder::Backward(const StepContext& ctx, const MicroBatch& host_batch,
                               const Saved& saved, const BackwardSeeds& seeds,
                               const Tensor* d_output, Tensor* d_input) {
  const MicroBatch batch = WithDeviceCopies(host_batch, ctx.s());
  const int64_t t = batch.batch() * batch.seq_len();
  Tensor d_x;
  if (stage_.head) {
    MF_ASSIGN_OR_RETURN(d_x, HeadBackward(ctx, batch, saved, seeds));
  } else {
    MF_CHECK(d_output != nullptr) << "a stage without the head needs the next stage's gradient";
    d_x = d_output->Clone();
  }
  MF_RETURN_IF_ERROR(BlocksBackward(ctx, batch, saved, seeds, &d_x));
  if (!stage_.embedding) {
    MF_CHECK(d_input != nullptr) << "a stage without the embedding passes its input gradient on";
    *d_input = d_x;
    return absl::OkStatus();
  }
  {
    auto timed = ctx.Profile(OpFamily::kEmbedding);
    MF_RETURN_IF_ERROR(parallel::VocabParallelEmbeddingBackward(
        batch.on_device.tokens.Reshape({t}), d_x, embedding_->sharding.tp_begin, mp_.tp,
        mp_.sequence_parallel, &embedding_->grad, ctx.s()));
  }
  // Tied, the embedding is also the head: it is complete only now.
  if (ctx.grads_ready) ctx.grads_ready(embedding_param_, embedding_param_ + 1);
  return absl::OkStatus();
}

absl::StatusOr<Tensor> Decoder::HeadBackward(const StepContext& ctx, const MicroBatch& batch,
                                             const Saved& saved,
                                             const BackwardSeeds& seeds) const {
  const int64_t b = batch.batch(), s = batch.seq_len(), t = b * s;
  const bool sp = mp_.sequence_parallel;
  MF_CHECK_EQ(static_cast<int64_t>(seeds.d_sample_loss.size()), b);
  NvtxRange range("head backward");

  // ℓ_b = Σ_valid CE / count_b (count over the whole sequence), so each valid token of sequence b
  // gets d_sample_loss[b] / count_b.
  Tensor d_token_losses = Tensor::Zeros({t}, DType::kF32);
  const int32_t* targets = batch.targets.data<int32_t>();
  for (int64_t i = 0; i < b; ++i) {
    const int64_t count = saved.sample_tokens[i];
    if (count == 0) continue;
    const float seed = seeds.d_sample_loss[i] / static_cast<float>(count);
    for (int64_t j = i * s; j < (i + 1) * s; ++j) {
      if (targets[j] >= 0) d_token_losses.data<float>()[j] = seed;
    }
  }
  Tensor d_logits = ctx.Act(saved.logits.shape());
  {
    auto timed = ctx.Profile(OpFamily::kLoss);
    parallel::VocabParallelCrossEntropyBackward(saved.logits, batch.on_device.targets.Reshape({t}),
                                                head_->sharding.tp_begin, mp_.tp, saved.lse,
                                                ctx.Upload(d_token_losses), &d_logits, ctx.s());
  }
  // Each TP rank's vocabulary slice gives a partial gradient of the head's input.
  Tensor d_full = ctx.Act(saved.final_full.shape());
  {
    auto timed = ctx.Profile(OpFamily::kGemm);
    ops::LinearBackward(saved.final_full, head_->compute, d_logits, &d_full, &head_->grad,
                        ctx.s());
  }
  Tensor d_norm;
  {
    auto timed = ctx.Profile(OpFamily::kCommunication);
    MF_RETURN_IF_ERROR(parallel::TpReduce(d_full, mp_.tp, sp, &d_norm));
  }
  Tensor d_x = ctx.Act(saved.final_in.shape());
  {
    auto timed = ctx.Profile(OpFamily::kNorm);
    ops::RmsNormBackward(saved.final_in, final_norm_->compute, saved.final_rstd, d_norm, &d_x,
                         &final_norm_->grad, ctx.s());
  }
  if (ctx.grads_ready) ctx.grads_ready(head_first_param_, head_last_param_);
  return d_x;
}

absl::Status Decoder::BlocksBackward(const StepContext& ctx, const MicroBatch& batch,
                                     const Saved& saved, const BackwardSeeds& seeds,
                                     Tensor* d_x_io) const {
  // *d_x_io is the residual stream's gradient; every branch adds its input gradient into it in
  // place (the norms' backward accumulates), so the stream is never copied or re-added.
  Tensor& d_x = *d_x_io;
  std::optional<FetchedRows> ahead;  // the next layer's swapped rows, already on their way
  for (size_t l = blocks_.size(); l-- > 0;) {
    const Block& block = blocks_[l];
    BlockSaved bs = saved.blocks[l];  // shares the tensors; what is brought back lives until done
    StepContext lctx = ctx;
    lctx.layer = stage_.first_layer + static_cast<int>(l);
    FlightRecorder::Get().SetLayer(lctx.layer);
    NvtxRange range("layer backward");
    const TraceSpan span = LayerSpan(lctx, "backward");
    if (StoreActive()) {
      FetchedRows fetched;
      if (ahead.has_value()) {
        fetched = std::move(*ahead);
      } else {
        MF_ASSIGN_OR_RETURN(fetched, store_->Prefetch(lctx, bs.stash));
      }
      ahead.reset();
      // One layer ahead: the copy of layer l − 1's rows runs under layer l's backward (two
      // layers' rows on the device at most).
      if (l > 0) {
        MF_ASSIGN_OR_RETURN(ahead, store_->Prefetch(lctx, saved.blocks[l - 1].stash));
      }
      const std::vector<SavedRef> refs = BlockRefs(block, &bs);
      RecomputeRows partial;
      MF_RETURN_IF_ERROR(store_->Place(lctx, refs, fetched, bs.stash, &partial));
      StepContext rctx = lctx;
      rctx.recompute_rows = &partial;
      MF_RETURN_IF_ERROR(RecomputeBlock(rctx, batch, block, &bs));
    }
    // x_out = h + FFN(norm(h)): d_h = d_x_out + norm'ᵀ · FFN'ᵀ · d_x_out, accumulated into d_x.
    Tensor d_ffn_in;
    if (block.moe) {
      MF_RETURN_IF_ERROR(block.moe->Backward(lctx, bs.moe, d_x, seeds, &d_ffn_in));
    } else {
      MF_RETURN_IF_ERROR(block.mlp->Backward(lctx, bs.mlp, d_x, &d_ffn_in));
    }
    {
      auto timed = lctx.Profile(OpFamily::kNorm);
      ops::RmsNormBackwardAccumulate(bs.h, block.ffn_norm->compute, bs.ffn_rstd, d_ffn_in, &d_x,
                                     &block.ffn_norm->grad, ctx.s());
    }
    // h = x + Attn(x): d_x = d_h + Attn'ᵀ · d_h; the attention layer reads d_h before adding its
    // branch into the same tensor.
    MF_RETURN_IF_ERROR(block.attention->Backward(lctx, batch, bs.attention, d_x, &d_x));
    if (ctx.grads_ready) ctx.grads_ready(block.first_param, block.last_param);
  }
  return absl::OkStatus();
}

std::vector<SavedRef> Decoder::BlockRefs(const Block& block, BlockSaved* bs) const {
  std::vector<SavedRef> refs;
  bs->attention.AppendRefs(&refs);
  refs.push_back({SavedKind::kResidual, &bs->h});
  refs.push_back({SavedKind::kNormOutput, &bs->ffn_in});
  refs.push_back({SavedKind::kNormStats, &bs->ffn_rstd});
  if (block.moe) {
    bs->moe.AppendRefs(block.moe->LocalExperts(), &refs);
  } else {
    bs->mlp.AppendRefs(&refs);
  }
  return refs;
}

absl::Status Decoder::RecomputeBlock(const StepContext& ctx, const MicroBatch& batch,
                                     const Block& block, BlockSaved* bs) const {
  MF_RETURN_IF_ERROR(block.attention->Recompute(ctx, batch, &bs->attention));
  // h = x + attention and the FFN's input norm: row-separable on one TP rank (the output
  // projection's GEMM where its row slice is exact), so only the rows a partial swap did not bring
  // back are recomputed.
  const Tensor& x = bs->attention.x;
  const int64_t n = x.dim(0);
  const bool split = SplitsGemmRows(ctx) && block.attention->SplitsOutputRows();
  const int64_t first =
      GemmBlockStart(RecomputeFrom(ctx, {&bs->h, &bs->ffn_in, &bs->ffn_rstd}, split), n);
  if (first < n) {
    Tensor attn;
    MF_RETURN_IF_ERROR(block.attention->OutputForward(ctx, batch, bs->attention, first, &attn));
    Tensor h = RecomputeRowsOf(ctx, &bs->h, x.shape(), ctx.act_dtype, first);
    Tensor ffn_in = RecomputeRowsOf(ctx, &bs->ffn_in, x.shape(), ctx.act_dtype, first);
    Tensor rstd = RecomputeRowsOf(ctx, &bs->ffn_rstd, {n}, DType::kF32, first);
    auto timed = ctx.Profile(OpFamily::kNorm);
    ops::AddRmsNormForward(x.Slice(first, n), attn, block.ffn_norm->compute, spec_.norm_eps, &h,
                           &ffn_in, &rstd, ctx.s());
  }
  if (block.moe) return block.moe->Recompute(ctx, bs->ffn_in, &bs->moe);
  return block.mlp->Recompute(ctx, bs->ffn_in, &bs->mlp);
}

}  // namespace moefold::model
