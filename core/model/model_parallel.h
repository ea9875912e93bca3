// How one rank holds the model (docs/ARCHITECTURE.md §5): its attention-side tensor- and
// context-parallel groups, whether activations between TP regions are split along the sequence, and
// its expert-side (EP, ETP) groups for the MoE layers — the two meshes of MoE parallel folding.
// Null communicators are groups of one rank. Layers read only this, so the model code is the same
// for every layout; the layout itself comes from the config.
#pragma once

#include "core/parameter.h"
#include "parallel/communicator.h"
#include "parallel/token_dispatcher.h"

namespace moefold::model {

struct ModelParallel {
  parallel::Communicator* tp = nullptr;
  parallel::Communicator* cp = nullptr;
  parallel::Communicator* tp_cp = nullptr;  // the MoE aux loss counts the tokens of TP×CP
  bool sequence_parallel = false;
  parallel::DispatchGroups experts = {};  // EP, ETP and ETP×EP: the MoE mesh

  int ep_size() const { return experts.ep_size(); }
  int ep_rank() const { return experts.ep_rank(); }
  int etp_size() const { return experts.etp_size(); }
  int etp_rank() const { return experts.etp_rank(); }

  int tp_size() const { return tp == nullptr ? 1 : tp->size(); }
  int tp_rank() const { return tp == nullptr ? 0 : tp->rank(); }
  int cp_size() const { return cp == nullptr ? 1 : cp->size(); }
  // Split dimension `dim` of a parameter over TP.
  TpSplit Split(int dim) const { return {.dim = dim, .rank = tp_rank(), .size = tp_size()}; }
  // Norm weights are replicated across TP; their gradient sums over TP only when each TP rank
  // normalised other tokens (sequence parallelism).
  GradReduction NormReduction() const {
    return sequence_parallel ? GradReduction::kDenseDataCpTp : GradReduction::kReplicatedDataCp;
  }
};

}  // namespace moefold::model
