// The llama-style MoE decoder (docs/ARCHITECTURE.md §4):
// embedding → L × [x + Attn(norm(x)); h + FFN(norm(h))] with FFN a SwiGLU MLP or an MoE layer →
// final RMSNorm → LM head → per-token cross entropy, averaged per sequence. Forward returns
// per-sample losses (for reweighting) or adds their sum to the step's device sums, with the aux/z
// loss sums; Backward is seeded explicitly (BackwardSeeds) and accumulates into every Parameter's
// grad.
// Parallel layouts (ModelParallel) change only what each rank holds: the embedding and the head
// are vocabulary-parallel, the residual stream is split along the sequence under SP, a micro-batch
// holds this rank's CP chunks of each sequence, and per-sample losses are reduced over CP so every
// rank of a TP×CP group returns the same, whole-sequence values.
//
//   ParameterSet params;  Decoder model(spec, {}, &params);  params.Initialize(seed);
//   Decoder::Saved saved;  MF_ASSIGN_OR_RETURN(ForwardStats stats, model.Forward(ctx, batch, &saved));
//   MF_RETURN_IF_ERROR(model.Backward(ctx, batch, saved, seeds));
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"

#include "core/model/activation_store.h"
#include "core/model/attention_layer.h"
#include "core/model/mlp_layer.h"
#include "core/model/model_parallel.h"
#include "core/model/model_spec.h"
#include "core/model/moe_layer.h"
#include "core/model/step_context.h"
#include "core/parameter.h"

namespace moefold::model {

// The part of the model one pipeline (virtual) stage runs: layers [first_layer, last_layer), the
// embedding on the first stage, the final norm, head and loss on the last. The default is the
// whole model.
struct DecoderStage {
  int first_layer = 0;
  int last_layer = -1;  // -1 = num_layers
  bool embedding = true;
  bool head = true;
};

class Decoder {
 public:
  struct BlockSaved {
    AttentionLayer::Saved attention;
    Tensor h;           // (T, H) residual after attention
    Tensor ffn_in;      // (T, H) RMSNorm(h)
    Tensor ffn_rstd;    // (T)
    SwiGluMlp::Saved mlp;
    MoeLayer::Saved moe;
    SwapStash stash;  // host rows of the swapped tensors (ActivationStore)
  };
  struct Saved {
    std::vector<BlockSaved> blocks;
    Tensor final_in;     // (T_x, H) T_x = T/tp under sequence parallelism, else T = B·S
    Tensor final_norm;   // (T_x, H)
    Tensor final_rstd;   // (T_x)
    Tensor final_full;   // (T, H) every TP rank's final_norm rows (final_norm itself without SP)
    Tensor logits;       // (T, V/tp) this rank's vocabulary slice
    Tensor lse;          // (T)
    std::vector<int64_t> sample_tokens;  // (B) tokens with a target per sequence, over CP
  };

  // With tie_embeddings, a last stage without the embedding holds its own copy of
  // "model.embed_tokens.weight" (GradReduction::kTiedCopy): the trainer sums the two copies'
  // gradients over the embedding group, so both stay equal.
  Decoder(const ModelSpec& spec, const ModelParallel& mp, ParameterSet* params,
          const DecoderStage& stage = {});

  // batch tokens must lie in [0, V) (the data layer validates datasets; checked here too).
  // A stage without the embedding takes `input` (T_x, H), the previous stage's output; a stage
  // without the head writes its output to *output and returns no sample losses.
  // Status: a failed collective.
  absl::StatusOr<ForwardStats> Forward(const StepContext& ctx, const MicroBatch& batch,
                                       Saved* saved, const Tensor* input = nullptr,
                                       Tensor* output = nullptr);
  // A stage without the head takes d_output (the next stage's d_input); one without the embedding
  // writes the gradient of its input to *d_input.
  absl::Status Backward(const StepContext& ctx, const MicroBatch& batch, const Saved& saved,
                        const BackwardSeeds& seeds, const Tensor* d_output = nullptr,
                        Tensor* d_input = nullptr);

  const ModelSpec& spec() const { return spec_; }
  const ModelParallel& parallel() const { return mp_; }
  const DecoderStage& stage() const { return stage_; }
  // This stage's MoE layers, and the index among the whole model's MoE layers of the first one.
  std::vector<MoeLayer*> moe_layers();
  int first_moe_index() const;
  Parameter* embedding() const { return embedding_; }  // nullptr when not the first stage
  // The tied embedding's copy on a last stage without the embedding (nullptr otherwise).
  Parameter* tied_copy() const { return tied_copy_; }
  // Saved activations go through `store` (shared by a rank's chunks); null = keep everything.
  void set_activation_store(std::shared_ptr<ActivationStore> store) { store_ = std::move(store); }

 private:
  struct Block {
    int64_t first_param = 0, last_param = 0;  // ParameterSet index range of this block
    std::unique_ptr<AttentionLayer> attention;
    Parameter* ffn_norm;
    std::unique_ptr<SwiGluMlp> mlp;  // dense layers
    std::unique_ptr<MoeLayer> moe;   // MoE layers
  };

  ModelSpec spec_;
  ModelParallel mp_;
  DecoderStage stage_;
  Parameter* embedding_ = nullptr;  // first stage
  Parameter* tied_copy_ = nullptr;
  // x (B·S or its SP slice, H): the token embeddings (vocabulary-parallel under TP).
  absl::Status EmbeddingForward(const StepContext& ctx, const MicroBatch& batch, Tensor* x) const;
  // The loss head's backward: d(final_in) from the seeds. And the blocks' backward, in reverse,
  // on the residual-stream gradient *d_x (replaced by the gradient of the stage's input).
  absl::StatusOr<Tensor> HeadBackward(const StepContext& ctx, const MicroBatch& batch,
                                      const Saved& saved, const BackwardSeeds& seeds) const;
  // The head's forward from the final norm's input: logits, per-token losses and the per-sample
  // losses (on the host, or added to ctx's device sums).
  absl::Status HeadForward(const StepContext& ctx, const MicroBatch& batch, const Tensor& x,
                           Saved* saved, ForwardStats* stats) const;
  absl::Status BlocksBackward(const StepContext& ctx, const MicroBatch& batch, const Saved& saved,
                              const BackwardSeeds& seeds, Tensor* d_x) const;

  // Every tensor of a block's tape by kind, in an order where a view follows its base.
  std::vector<SavedRef> BlockRefs(const Block& block, BlockSaved* bs) const;
  // Recomputes the undefined tensors of a block's tape from its input (ActivationStore).
  absl::Status RecomputeBlock(const StepContext& ctx, const MicroBatch& batch, const Block& block,
                              BlockSaved* bs) const;
  bool StoreActive() const { return store_ != nullptr && !store_->policy().IsKeep(); }

  std::shared_ptr<ActivationStore> store_;
  std::unique_ptr<RopeTables> rope_;  // the attention layers' shared cos/sin table
  std::vector<Block> blocks_;
  Parameter* final_norm_ = nullptr;  // last stage
  Parameter* head_ = nullptr;        // == embedding_ (or tied_copy_) when tied
  int64_t embedding_param_ = 0;
  int64_t head_first_param_ = 0, head_last_param_ = 0;  // final norm (+ untied head)
};

}  // namespace moefold::model
