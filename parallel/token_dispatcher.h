// The all-to-all MoE token dispatcher (docs/ARCHITECTURE.md §5.5, counts in docs/FORMULAS.md §5):
// where the attention mapping and
// the expert mapping meet. A rank's permuted rows (grouped by global expert) travel to the EP rank
// that owns each expert (EP rank p owns experts [p·E/ep, (p+1)·E/ep)), are all-gathered within ETP
// (every ETP rank computes its slice of each expert's FFN on all of the group's tokens), and are
// regrouped local-expert-major for one grouped GEMM. Combine is the exact reverse: regroup back,
// reduce-scatter the ETP partial sums (added in ETP rank order), all-to-all home.
// Combine is the adjoint of Dispatch, so each one's backward is the other: the backward of
// Dispatch(rows) is Combine(d_grouped) and the backward of Combine(grouped) is Dispatch(d_rows).
// Every rank joins every collective even with zero rows (no rank waits for one that skipped).
//
//   MF_ASSIGN_OR_RETURN(DispatchPlan plan, BuildDispatchPlan(counts, {}, groups));
//   MF_RETURN_IF_ERROR(Dispatch(plan, groups, permuted, &grouped));   // experts on `grouped`
//   MF_RETURN_IF_ERROR(Combine(plan, groups, expert_out, &rows));
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "core/tensor.h"
#include "parallel/communicator.h"

namespace moefold::parallel {

// The expert-side groups of this rank; nullptr = a group of one rank.
struct DispatchGroups {
  Communicator* ep = nullptr;
  Communicator* etp = nullptr;
  Communicator* etp_ep = nullptr;  // the counts' all-gather
  int ep_size() const { return ep == nullptr ? 1 : ep->size(); }
  int ep_rank() const { return ep == nullptr ? 0 : ep->rank(); }
  int etp_size() const { return etp == nullptr ? 1 : etp->size(); }
  int etp_rank() const { return etp == nullptr ? 0 : etp->rank(); }
};

struct DispatchOptions {
  // > 0: every expert's block is padded with zero rows to this many rows (static shapes in capacity
  // mode; each count must be <= it). 0: variable counts (dropless).
  int64_t pad_to = 0;
};

// Everything the exchanges need, fixed at forward and replayed by the backward (part of the
// RoutingPlan: backward never re-routes).
struct DispatchPlan {
  int num_experts = 0, local_experts = 0;
  std::vector<int64_t> counts;      // (E) this rank's rows per global expert, before padding
  int64_t pad_to = 0;
  std::vector<int64_t> send_rows;   // (ep) rows to each EP peer (after padding)
  std::vector<int64_t> recv_rows;   // (ep) rows from each EP peer
  std::vector<int64_t> etp_rows;    // (etp) rows each ETP peer received from its EP exchange
  std::vector<int32_t> regroup;     // grouped row r = gathered row regroup[r]
  Tensor local_counts;              // (E/ep) i32 grouped rows per local expert
  int64_t grouped_rows() const { return static_cast<int64_t>(regroup.size()); }
  int64_t rows() const;             // rows of this rank's permuted input (Σ counts)
};

// `counts` (E) rows per global expert of this rank's permuted input. Collective over
// groups.etp_ep (one all-gather of counts). InvalidArgument when E % ep != 0 or a count exceeds
// pad_to; communicator failures as their Status.
absl::StatusOr<DispatchPlan> BuildDispatchPlan(const std::vector<int64_t>& counts,
                                               const DispatchOptions& options,
                                               const DispatchGroups& groups);

// rows (Σ counts, H) grouped by global expert -> *grouped (plan.grouped_rows(), H), local-expert
// major (allocated here; with one rank and no padding the plan is the identity and *grouped is
// `rows` itself, so neither may be changed while the other is read). `bytes` (optional) += bytes
// this rank sent to other ranks. GPU tensors: the identity plan only (Unimplemented otherwise).
absl::Status Dispatch(const DispatchPlan& plan, const DispatchGroups& groups, const Tensor& rows,
                      Tensor* grouped, int64_t* bytes = nullptr);
// grouped (plan.grouped_rows(), H) -> *rows (Σ counts, H): the ETP partial sums added, back home
// (`grouped` itself under the identity plan, as above).
absl::Status Combine(const DispatchPlan& plan, const DispatchGroups& groups, const Tensor& grouped,
                     Tensor* rows, int64_t* bytes = nullptr);

}  // namespace moefold::parallel
