// The all-to-all MoE token dispatcher (docs/ARCHITECTURE.md §5.5, counts in docs/FORMULAS.md §5):
// where the attention mapping and the expert mapping meet. A rank's permuted rows (grouped by
// global expert) travel to the EP rank that owns each expert (EP rank p owns experts
// [p·E/ep, (p+1)·E/ep)), are all-gathered within ETP (every ETP rank computes its slice of each
// expert's FFN on all of the group's tokens), and are regrouped local-expert-major for the grouped
// GEMMs. Combine is the exact reverse: regroup back, reduce-scatter the ETP partial sums (added in
// ETP rank order), all-to-all home. Combine is the adjoint of Dispatch, so each one's backward is
// the other. Every rank joins every collective even with zero rows (no rank waits for one that
// skipped).
//
// Rows stay on their device in their dtype (f32 or bf16): the exchanges are the communicator's
// AllToAllV, AllGatherV and ReduceScatterV, the padding and regrouping are ops::GatherRows through
// index tensors the plan builds on the host from the all-gathered counts and uploads once. The
// local experts are cut into chunks (contiguous expert ranges); DispatchAndCombine starts chunk
// c+1's exchange before chunk c's experts run and leaves chunk c's return in flight while c+1's
// run, so communication overlaps the expert GEMMs. Each expert's rows sit in exactly one chunk, so
// every expert GEMM (and weight gradient) sees the same rows in the same order whatever the chunks.
//
//   MF_ASSIGN_OR_RETURN(DispatchPlan plan,
//                       BuildDispatchPlan(counts, {.chunks = 2, .stream = &stream}, groups));
//   MF_RETURN_IF_ERROR(DispatchAndCombine(plan, groups, permuted, experts, &grouped, &rows,
//                                         stream));
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "core/stream.h"
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
  // Chunks of the local experts that DispatchAndCombine pipelines (>= 1; capped at the number of
  // local experts, so every chunk holds at least one).
  int chunks = 1;
  // A stream of the rows' device: the plan's index tensors are uploaded on it. Null: the CPU.
  const Stream* stream = nullptr;
};

// One chunk: local experts [first_expert, first_expert + experts) and their rows, exchanged on
// their own.
struct DispatchChunk {
  int first_expert = 0, experts = 0;
  int64_t send_offset = 0;         // the chunk's first row in the send layout
  std::vector<int64_t> send_rows;  // (ep) rows to each EP peer (after padding)
  std::vector<int64_t> recv_rows;  // (ep) rows from each EP peer
  std::vector<int64_t> etp_rows;   // (etp) rows each ETP peer received from its EP exchange
  int64_t grouped_offset = 0;      // the chunk's first row among the grouped rows
  int64_t grouped_rows = 0;
  // (grouped_rows) i32 on the rows' device: the chunk's grouped row r is gathered row regroup[r]
  // (ETP member-major, then EP peer, then expert); ungroup is the inverse. Undefined: identity.
  Tensor regroup, ungroup;
  Tensor local_counts;  // (experts) i32 on the host: grouped rows per expert of the chunk
  int64_t send_total() const;
};

// Everything the exchanges need, fixed at forward and replayed by the backward (part of the
// RoutingPlan: backward never re-routes).
struct DispatchPlan {
  int num_experts = 0, local_experts = 0;
  std::vector<int64_t> counts;  // (E) this rank's rows per global expert, before padding
  int64_t pad_to = 0;
  std::vector<int64_t> send_rows;  // (ep) rows to each EP peer (after padding), all chunks
  std::vector<int64_t> recv_rows;  // (ep) rows from each EP peer, all chunks
  std::vector<int64_t> etp_rows;   // (etp) rows each ETP peer received, all chunks
  // The send layout is chunk-major, then EP peer, then expert, each expert's block padded.
  // send_index (send rows) i32 on the rows' device: send row s = input row send_index[s], or a
  // zero row for −1 (padding). unsend_index (Σ counts): input row r = send row unsend_index[r].
  // Undefined: identity (no padding, one chunk or one EP rank).
  Tensor send_index, unsend_index;
  std::vector<DispatchChunk> chunks;
  Tensor local_counts;  // (E/ep) i32 on the host: grouped rows per local expert, all chunks
  int64_t grouped_rows() const;  // Σ over chunks; local-expert major
  int64_t rows() const;          // rows of this rank's permuted input (Σ counts)
  int64_t send_total() const;    // rows of the send layout (Σ send_rows)
};

// `counts` (E) rows per global expert of this rank's permuted input. Collective over
// groups.etp_ep (one all-gather of counts, host i64). Index tensors are built on the host and
// uploaded in one copy on options.stream (no wait). InvalidArgument when E % ep != 0, chunks < 1
// or a count exceeds pad_to; communicator failures as their Status.
absl::StatusOr<DispatchPlan> BuildDispatchPlan(const std::vector<int64_t>& counts,
                                               const DispatchOptions& options,
                                               const DispatchGroups& groups);

// The expert computation of one chunk: grouped (chunk.grouped_rows, H) the chunk's rows,
// local-expert major (chunk.local_counts per expert) -> *out (chunk.grouped_rows, H), a view to
// write (the rows' dtype and device). Called once per chunk, in chunk order. `progress` polls the
// exchanges in flight: call it between long computations, so that a backend that advances only
// inside its own calls (MPI without a progress thread) moves the other chunks' rows meanwhile
// (cheap and harmless where the network progresses by itself, as NCCL does).
using ChunkExperts =
    std::function<absl::Status(const DispatchChunk& chunk, const Tensor& grouped, Tensor* out,
                               const std::function<void()>& progress)>;

// Dispatch, the experts and Combine, pipelined over the plan's chunks: rows (Σ counts, H) f32 or
// bf16 grouped by global expert -> *grouped (plan.grouped_rows(), H) the local experts' rows (kept
// for a backward) and *combined (Σ counts, H) the experts' outputs back home (ETP partial sums
// added). Both allocated here; with one rank and no padding *grouped is `rows` itself. `bytes`
// (optional) += bytes this rank sent to other ranks. On the GPU the collectives run on the
// communicator's stream after the work queued on `stream`'s device so far (its default stream).
absl::Status DispatchAndCombine(const DispatchPlan& plan, const DispatchGroups& groups,
                                const Tensor& rows, const ChunkExperts& experts, Tensor* grouped,
                                Tensor* combined, Stream& stream, int64_t* bytes = nullptr);

// Rows that travel through Dispatch together with per-row data moved row for row: the FP8 token
// dispatch's codes (Σ counts, H) kFp8E4M3 and their dequantisation scales (Σ counts, S) f32 (S = 1
// per row, H/128 per tile; undefined: none travel). Padding rows arrive as zero codes with zero
// scales. Each travels in its own collectives, the scales' right after the codes'.
struct DispatchRows {
  Tensor rows;
  Tensor scales;
};

// DispatchAndCombine for rows that need not be what the experts return (the FP8 dispatch): `in`
// (rows of any 1-, 2- or 4-byte dtype, with optional scales) -> *grouped (plan.grouped_rows()
// rows, scales alike); the experts write `out_dtype` rows (H = in.rows.dim(1)) and *combined
// (Σ counts, H) is out_dtype. ChunkExperts receives the chunk's rows of grouped->rows; the
// chunk's scales are grouped->scales at the same rows (valid while the experts run). `bytes` +=
// the bytes of rows and scales sent.
absl::Status DispatchAndCombine(const DispatchPlan& plan, const DispatchGroups& groups,
                                const DispatchRows& in, DType out_dtype,
                                const ChunkExperts& experts, DispatchRows* grouped,
                                Tensor* combined, Stream& stream, int64_t* bytes = nullptr);

// The two halves on their own (every chunk, no experts between): rows (Σ counts, H) -> *grouped
// (plan.grouped_rows(), H), allocated here (with one rank and no padding the plan is the identity
// and *grouped is `rows` itself, so neither may be changed while the other is read).
absl::Status Dispatch(const DispatchPlan& plan, const DispatchGroups& groups, const Tensor& rows,
                      Tensor* grouped, Stream& stream, int64_t* bytes = nullptr);
// Dispatch of rows with scales (see DispatchRows).
absl::Status Dispatch(const DispatchPlan& plan, const DispatchGroups& groups,
                      const DispatchRows& in, DispatchRows* grouped, Stream& stream,
                      int64_t* bytes = nullptr);
// grouped (plan.grouped_rows(), H) -> *rows (Σ counts, H): the ETP partial sums added, back home
// (`grouped` itself under the identity plan, as above).
absl::Status Combine(const DispatchPlan& plan, const DispatchGroups& groups, const Tensor& grouped,
                     Tensor* rows, Stream& stream, int64_t* bytes = nullptr);

}  // namespace moefold::parallel
