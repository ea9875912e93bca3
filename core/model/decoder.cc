// Decoder forward/backward: wires the layers, the residual stream and the loss head together.
#include "core/model/decoder.h"

#include "absl/strings/str_cat.h"
#include "ops/elementwise.h"
#include "ops/embedding.h"
#include "ops/gemm.h"
#include "ops/loss.h"
#include "ops/norm.h"

namespace moefold::model {

Decoder::Decoder(const ModelSpec& spec, ParameterSet* params) : spec_(spec) {
  MF_CHECK_EQ(static_cast<int>(spec.moe_layer.size()), spec.num_layers);
  const int64_t h = spec.hidden;
  embedding_param_ = static_cast<int64_t>(params->params().size());
  embedding_ = params->Add("model.embed_tokens.weight", {spec.vocab, h},
                           GradReduction::kDenseDataCp, spec.init_std);
  embedding_->sharding.tp_dim = 0;  // vocabulary-parallel
  for (int l = 0; l < spec.num_layers; ++l) {
    const std::string prefix = absl::StrCat("model.layers.", l);
    Block block;
    block.first_param = static_cast<int64_t>(params->params().size());
    block.attention = std::make_unique<AttentionLayer>(spec, prefix, params);
    block.ffn_norm = params->Add(prefix + ".post_attention_layernorm.weight", {h},
                                 GradReduction::kDenseDataCpTp, 0.0f, false, 1.0f);
    if (spec.moe_layer[l]) {
      block.moe = std::make_unique<MoeLayer>(spec, prefix + ".mlp", params);
    } else {
      block.mlp = std::make_unique<SwiGluMlp>(spec, prefix + ".mlp", spec.ffn, params);
    }
    block.last_param = static_cast<int64_t>(params->params().size());
    blocks_.push_back(std::move(block));
  }
  head_first_param_ = static_cast<int64_t>(params->params().size());
  final_norm_ = params->Add("model.norm.weight", {h}, GradReduction::kDenseDataCpTp, 0.0f, false,
                            1.0f);
  if (spec.tie_embeddings) {
    head_ = embedding_;
  } else {
    head_ = params->Add("lm_head.weight", {spec.vocab, h}, GradReduction::kDenseDataCp,
                        spec.init_std);
    head_->sharding.tp_dim = 0;
  }
  head_last_param_ = static_cast<int64_t>(params->params().size());
}

std::vector<MoeLayer*> Decoder::moe_layers() {
  std::vector<MoeLayer*> layers;
  for (Block& b : blocks_) {
    if (b.moe) layers.push_back(b.moe.get());
  }
  return layers;
}

ForwardStats Decoder::Forward(const StepContext& ctx, const MicroBatch& batch, Saved* saved) {
  const int64_t b = batch.batch(), s = batch.seq_len(), t = b * s, h = spec_.hidden;
  ForwardStats stats;
  stats.tokens = t;
  Tensor x = Tensor::Empty({t, h}, DType::kF32);
  ops::EmbeddingForward(batch.tokens.Reshape({t}), embedding_->value, &x, ctx.s());

  saved->blocks.resize(blocks_.size());
  for (size_t l = 0; l < blocks_.size(); ++l) {
    const Block& block = blocks_[l];
    BlockSaved& bs = saved->blocks[l];
    Tensor attn = Tensor::Empty({t, h}, DType::kF32);
    block.attention->Forward(ctx, batch, x, &bs.attention, &attn);
    bs.h = Tensor::Empty({t, h}, DType::kF32);
    ops::Add(x, attn, &bs.h, ctx.s());
    bs.ffn_in = Tensor::Empty({t, h}, DType::kF32);
    bs.ffn_rstd = Tensor::Empty({t}, DType::kF32);
    ops::RmsNormForward(bs.h, block.ffn_norm->value, spec_.norm_eps, &bs.ffn_in, &bs.ffn_rstd,
                        ctx.s());
    Tensor ffn = Tensor::Empty({t, h}, DType::kF32);
    if (block.moe) {
      block.moe->Forward(ctx, batch, bs.ffn_in, &bs.moe, &ffn, &stats);
    } else {
      block.mlp->Forward(ctx, bs.ffn_in, &bs.mlp, &ffn);
    }
    x = Tensor::Empty({t, h}, DType::kF32);
    ops::Add(bs.h, ffn, &x, ctx.s());
  }

  saved->final_in = x;
  saved->final_norm = Tensor::Empty({t, h}, DType::kF32);
  saved->final_rstd = Tensor::Empty({t}, DType::kF32);
  ops::RmsNormForward(x, final_norm_->value, spec_.norm_eps, &saved->final_norm,
                      &saved->final_rstd, ctx.s());
  saved->logits = Tensor::Empty({t, spec_.vocab}, DType::kF32);
  ops::LinearForward(saved->final_norm, head_->value, &saved->logits, ctx.s());
  Tensor token_losses = Tensor::Empty({t}, DType::kF32);
  saved->lse = Tensor::Empty({t}, DType::kF32);
  ops::CrossEntropyForward(saved->logits, batch.targets.Reshape({t}), &token_losses, &saved->lse,
                           ctx.s());

  const float* losses = token_losses.data<float>();
  const int32_t* targets = batch.targets.data<int32_t>();
  for (int64_t i = 0; i < b; ++i) {
    double sum = 0;
    int64_t count = 0;
    for (int64_t j = i * s; j < (i + 1) * s; ++j) {
      if (targets[j] < 0) continue;
      sum += losses[j];
      ++count;
    }
    stats.sample_losses.push_back(count > 0 ? static_cast<float>(sum / count) : 0.0f);
    stats.sample_tokens.push_back(count);
  }
  return stats;
}

void Decoder::Backward(const StepContext& ctx, const MicroBatch& batch, const Saved& saved,
                       const BackwardSeeds& seeds) {
  const int64_t b = batch.batch(), s = batch.seq_len(), t = b * s, h = spec_.hidden;
  MF_CHECK_EQ(static_cast<int64_t>(seeds.d_sample_loss.size()), b);

  // ℓ_b = Σ_valid CE / count_b, so each valid token of sequence b gets d_sample_loss[b] / count_b.
  Tensor d_token_losses = Tensor::Zeros({t}, DType::kF32);
  const int32_t* targets = batch.targets.data<int32_t>();
  for (int64_t i = 0; i < b; ++i) {
    int64_t count = 0;
    for (int64_t j = i * s; j < (i + 1) * s; ++j) count += targets[j] >= 0;
    if (count == 0) continue;
    const float seed = seeds.d_sample_loss[i] / static_cast<float>(count);
    for (int64_t j = i * s; j < (i + 1) * s; ++j) {
      if (targets[j] >= 0) d_token_losses.data<float>()[j] = seed;
    }
  }
  Tensor d_logits = Tensor::Empty({t, spec_.vocab}, DType::kF32);
  ops::CrossEntropyBackward(saved.logits, batch.targets.Reshape({t}), saved.lse, d_token_losses,
                            &d_logits, ctx.s());
  Tensor d_norm = Tensor::Empty({t, h}, DType::kF32);
  ops::LinearBackward(saved.final_norm, head_->value, d_logits, &d_norm, &head_->grad, ctx.s());
  Tensor d_x = Tensor::Empty({t, h}, DType::kF32);
  ops::RmsNormBackward(saved.final_in, final_norm_->value, saved.final_rstd, d_norm, &d_x,
                       &final_norm_->grad, ctx.s());
  if (ctx.grads_ready) ctx.grads_ready(head_first_param_, head_last_param_);

  Tensor d_ffn_in = Tensor::Empty({t, h}, DType::kF32);
  Tensor d_h_part = Tensor::Empty({t, h}, DType::kF32);
  for (size_t l = blocks_.size(); l-- > 0;) {
    const Block& block = blocks_[l];
    const BlockSaved& bs = saved.blocks[l];
    // x_out = h + FFN(norm(h)): d_h = d_x_out + norm'ᵀ · FFN'ᵀ · d_x_out.
    d_ffn_in.SetZero();
    if (block.moe) {
      block.moe->Backward(ctx, bs.moe, d_x, seeds, &d_ffn_in);
    } else {
      block.mlp->Backward(ctx, bs.mlp, d_x, &d_ffn_in);
    }
    ops::RmsNormBackward(bs.h, block.ffn_norm->value, bs.ffn_rstd, d_ffn_in, &d_h_part,
                         &block.ffn_norm->grad, ctx.s());
    Tensor d_h = Tensor::Empty({t, h}, DType::kF32);
    ops::Add(d_x, d_h_part, &d_h, ctx.s());
    // h = x + Attn(x): d_x = d_h + Attn'ᵀ · d_h (the attention layer adds its part into d_h).
    const Tensor d_h_in = d_h.Clone();
    block.attention->Backward(ctx, batch, bs.attention, d_h_in, &d_h);
    if (ctx.grads_ready) ctx.grads_ready(block.first_param, block.last_param);
    d_x = d_h;
  }
  ops::EmbeddingBackward(batch.tokens.Reshape({t}), d_x, &embedding_->grad, ctx.s());
  // Tied, the embedding is also the head: it is complete only now.
  if (ctx.grads_ready) ctx.grads_ready(embedding_param_, embedding_param_ + 1);
}

}  // namespace moefold::model
