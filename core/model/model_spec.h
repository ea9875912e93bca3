// The model's shape and MoE settings as plain values (core/model does not see the config protobuf;
// core/train converts). Shape vocabulary: T tokens, H hidden, F ffn, E experts, K top-k, V vocab.
#pragma once

#include <vector>

#include "core/model/capacity.h"
#include "ops/router.h"

namespace moefold::model {

enum class AuxLossType { kNone, kBatch /*per micro-batch*/, kSequence /*per sequence*/ };

struct MoeSpec {
  int num_experts = 8;        // E
  int top_k = 2;              // K
  int expert_ffn = 256;       // F_e
  int num_shared_experts = 0;
  int shared_ffn = 0;         // F_s of each shared expert
  ops::TopKOptions topk;      // score function, normalisation, groups (topk.k == top_k)
  AuxLossType aux_type = AuxLossType::kBatch;
  float aux_coeff = 0.0f;
  float z_coeff = 0.0f;
  bool expert_bias = false;   // aux-loss-free balancing: bias on selection only
  float capacity_factor = 0;  // 0 = dropless
  DropPolicy drop_policy = DropPolicy::kProbs;
  bool pad_to_capacity = false;  // every expert's block padded to C rows (static shapes)
  bool force_balanced_routing = false;  // benchmarks: round-robin experts (ops::BalancedRouting)
  int dispatch_chunks = 0;  // expert chunks the dispatcher pipelines; 0 = 2 when ep > 1, else 1
};

struct ModelSpec {
  int vocab = 257;            // V
  int hidden = 128;           // H
  int num_layers = 2;         // L
  int num_heads = 4;
  int num_kv_heads = 2;
  int head_dim = 32;          // D
  int ffn = 512;              // F of dense layers
  float rope_theta = 10000.0f;
  float norm_eps = 1e-5f;
  float init_std = 0.02f;
  bool tie_embeddings = false;
  std::vector<bool> moe_layer;  // size num_layers: which layers are MoE
  MoeSpec moe;
};

}  // namespace moefold::model
