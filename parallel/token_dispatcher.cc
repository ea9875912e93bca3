// Dispatch/Combine: counts all-gather and index construction on the host (one upload), then per
// chunk EP all-to-all-v, ETP all-gather-v / reduce-scatter-v and the regrouping gathers on the
// rows' device; a chunk's first collective is started early and the rest run when it is waited for.
#include "parallel/token_dispatcher.h"

#include <numeric>
#include <utility>

#include "absl/strings/str_cat.h"
#include "ops/rows.h"

namespace moefold::parallel {
namespace {

int64_t Sum(const std::vector<int64_t>& v) {
  return std::accumulate(v.begin(), v.end(), int64_t{0});
}

Tensor Rows(int64_t n, const Tensor& like) {
  return Tensor::Empty({n, like.dim(1)}, like.dtype(), like.device());
}

int64_t RowBytes(const Tensor& t) { return t.dim(1) * static_cast<int64_t>(DTypeSize(t.dtype())); }

// Whether `index` is 0, 1, 2, ...: the gather through it would copy its input unchanged.
bool IsIdentity(const std::vector<int32_t>& index) {
  for (size_t i = 0; i < index.size(); ++i) {
    if (index[i] != static_cast<int32_t>(i)) return false;
  }
  return true;
}

// The inverse of a permutation of [0, n).
std::vector<int32_t> Inverse(const std::vector<int32_t>& index) {
  std::vector<int32_t> inverse(index.size());
  for (size_t i = 0; i < index.size(); ++i) inverse[index[i]] = static_cast<int32_t>(i);
  return inverse;
}

// Collects the plan's index vectors and uploads them as one tensor; each becomes a view of it.
class IndexUpload {
 public:
  // Registers `index` unless it is the identity (then *target stays undefined).
  void Add(std::vector<int32_t> index, Tensor* target) {
    if (IsIdentity(index)) return;
    parts_.emplace_back(std::move(index), target);
  }
  void Upload(const Stream* stream) {
    int64_t total = 0;
    for (const auto& [index, target] : parts_) total += static_cast<int64_t>(index.size());
    if (parts_.empty()) return;
    Tensor host = Tensor::Empty({total}, DType::kI32);
    int64_t at = 0;
    for (const auto& [index, target] : parts_) {
      std::copy(index.begin(), index.end(), host.data<int32_t>() + at);
      at += static_cast<int64_t>(index.size());
    }
    const Tensor all =
        stream != nullptr && !stream->device().is_cpu() ? host.To(stream->device(), *stream) : host;
    at = 0;
    for (auto& [index, target] : parts_) {
      *target = all.Slice(at, at + static_cast<int64_t>(index.size()));
      at += static_cast<int64_t>(index.size());
    }
  }

 private:
  std::vector<std::pair<std::vector<int32_t>, Tensor*>> parts_;
};

}  // namespace

int64_t DispatchChunk::send_total() const { return Sum(send_rows); }
int64_t DispatchPlan::rows() const { return Sum(counts); }
int64_t DispatchPlan::send_total() const { return Sum(send_rows); }
int64_t DispatchPlan::grouped_rows() const {
  int64_t n = 0;
  for (const DispatchChunk& c : chunks) n += c.grouped_rows;
  return n;
}

absl::StatusOr<DispatchPlan> BuildDispatchPlan(const std::vector<int64_t>& counts,
                                               const DispatchOptions& options,
                                               const DispatchGroups& groups) {
  const int e = static_cast<int>(counts.size()), ep = groups.ep_size(), etp = groups.etp_size();
  if (e == 0 || e % ep != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("token dispatcher: ", e, " experts do not split over ep ", ep));
  }
  if (options.chunks < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("token dispatcher: ", options.chunks, " chunks (at least 1)"));
  }
  DispatchPlan plan;
  plan.num_experts = e;
  plan.local_experts = e / ep;
  plan.counts = counts;
  plan.pad_to = options.pad_to;
  std::vector<int64_t> rows(counts);
  if (options.pad_to > 0) {
    for (int i = 0; i < e; ++i) {
      if (counts[i] > options.pad_to) {
        return absl::InvalidArgumentError(absl::StrCat("token dispatcher: expert ", i, " has ",
                                                       counts[i], " rows > capacity ",
                                                       options.pad_to));
      }
      rows[i] = options.pad_to;
    }
  }
  // Every member's rows per expert, tagged with its (etp, ep) coordinates: m[q][p][expert].
  const int members = etp * ep, width = 2 + e;
  Tensor mine = Tensor::Empty({width}, DType::kI64);
  mine.data<int64_t>()[0] = groups.etp_rank();
  mine.data<int64_t>()[1] = groups.ep_rank();
  std::copy(rows.begin(), rows.end(), mine.data<int64_t>() + 2);
  Tensor all = mine;
  if (!IsSingleRank(groups.etp_ep)) {
    if (groups.etp_ep->size() != members) {
      return absl::InvalidArgumentError(absl::StrCat("token dispatcher: the etp-ep group has ",
                                                     groups.etp_ep->size(), " members, not etp ",
                                                     etp, " × ep ", ep));
    }
    all = Tensor::Empty({members * width}, DType::kI64);
    MF_RETURN_IF_ERROR(WaitFor(groups.etp_ep->AllGather(mine, &all, {})));
  } else if (members != 1) {
    return absl::InvalidArgumentError("token dispatcher: ep/etp > 1 needs an etp-ep group");
  }
  std::vector<std::vector<std::vector<int64_t>>> m(etp, std::vector<std::vector<int64_t>>(ep));
  for (int i = 0; i < members; ++i) {
    const int64_t* row = all.data<int64_t>() + i * width;
    MF_CHECK(row[0] >= 0 && row[0] < etp && row[1] >= 0 && row[1] < ep && m[row[0]][row[1]].empty())
        << "token dispatcher: member " << i << " has coordinates (" << row[0] << ", " << row[1]
        << ")";
    m[row[0]][row[1]].assign(row + 2, row + width);
  }

  const int q0 = groups.etp_rank(), p0 = groups.ep_rank(), le_count = plan.local_experts;
  const int first = p0 * le_count;
  const int chunks = std::min(options.chunks, le_count);
  // Where each expert's rows start in the (unpadded, expert-major) input.
  std::vector<int64_t> input_start(e, 0);
  for (int i = 1; i < e; ++i) input_start[i] = input_start[i - 1] + counts[i - 1];
  std::vector<int32_t> send_index;
  send_index.reserve(Sum(rows));
  std::vector<int32_t> unsend_index(plan.rows());
  plan.send_rows.assign(ep, 0);
  plan.recv_rows.assign(ep, 0);
  plan.etp_rows.assign(etp, 0);
  plan.local_counts = Tensor::Zeros({le_count}, DType::kI32);
  plan.chunks.resize(chunks);
  IndexUpload upload;
  int64_t grouped_at = 0;
  for (int c = 0; c < chunks; ++c) {
    DispatchChunk& chunk = plan.chunks[c];
    chunk.first_expert = c * le_count / chunks;
    chunk.experts = (c + 1) * le_count / chunks - chunk.first_expert;
    const int lo = chunk.first_expert, hi = lo + chunk.experts;
    chunk.send_offset = static_cast<int64_t>(send_index.size());
    chunk.send_rows.assign(ep, 0);
    chunk.recv_rows.assign(ep, 0);
    chunk.etp_rows.assign(etp, 0);
    // Send layout: peer-major, then the peer's experts of this chunk, each block padded.
    for (int p = 0; p < ep; ++p) {
      for (int le = lo; le < hi; ++le) {
        const int expert = p * le_count + le;
        for (int64_t i = 0; i < rows[expert]; ++i) {
          if (i < counts[expert]) {
            unsend_index[input_start[expert] + i] = static_cast<int32_t>(send_index.size());
            send_index.push_back(static_cast<int32_t>(input_start[expert] + i));
          } else {
            send_index.push_back(-1);
          }
        }
        chunk.send_rows[p] += rows[expert];
        chunk.recv_rows[p] += m[q0][p][first + le];
      }
    }
    // The gathered rows are blocks [q][p][le]; regrouped they are [le][q][p].
    std::vector<int64_t> offset(static_cast<size_t>(etp) * ep * chunk.experts);
    int64_t at = 0;
    for (int q = 0; q < etp; ++q) {
      for (int p = 0; p < ep; ++p) {
        for (int le = lo; le < hi; ++le) {
          offset[(q * ep + p) * chunk.experts + (le - lo)] = at;
          at += m[q][p][first + le];
          chunk.etp_rows[q] += m[q][p][first + le];
        }
      }
    }
    std::vector<int32_t> regroup;
    regroup.reserve(at);
    chunk.local_counts = Tensor::Zeros({chunk.experts}, DType::kI32);
    for (int le = lo; le < hi; ++le) {
      for (int q = 0; q < etp; ++q) {
        for (int p = 0; p < ep; ++p) {
          const int64_t begin = offset[(q * ep + p) * chunk.experts + (le - lo)];
          const int64_t n = m[q][p][first + le];
          for (int64_t r = 0; r < n; ++r) regroup.push_back(static_cast<int32_t>(begin + r));
          chunk.local_counts.data<int32_t>()[le - lo] += static_cast<int32_t>(n);
        }
      }
      plan.local_counts.data<int32_t>()[le] = chunk.local_counts.data<int32_t>()[le - lo];
    }
    chunk.grouped_offset = grouped_at;
    chunk.grouped_rows = at;
    grouped_at += at;
    for (int p = 0; p < ep; ++p) {
      plan.send_rows[p] += chunk.send_rows[p];
      plan.recv_rows[p] += chunk.recv_rows[p];
    }
    for (int q = 0; q < etp; ++q) plan.etp_rows[q] += chunk.etp_rows[q];
    if (!IsIdentity(regroup)) {
      upload.Add(Inverse(regroup), &chunk.ungroup);
      upload.Add(std::move(regroup), &chunk.regroup);
    }
  }
  if (!IsIdentity(send_index)) {
    upload.Add(std::move(unsend_index), &plan.unsend_index);
    upload.Add(std::move(send_index), &plan.send_index);
  }
  upload.Upload(options.stream);
  return plan;
}

namespace {

// A chunk's exchange in flight: the collective started first, and the stages that follow it.
struct Flight {
  std::unique_ptr<Work> work;          // null: nothing was started
  std::function<absl::Status()> rest;  // null: nothing follows
};

// Waits for the started collective, then runs the remaining stages (each waits for its own).
absl::Status Land(Flight* flight) {
  if (flight->work != nullptr) MF_RETURN_IF_ERROR(flight->work->Wait());
  flight->work.reset();
  if (!flight->rest) return absl::OkStatus();
  const std::function<absl::Status()> rest = std::move(flight->rest);
  flight->rest = nullptr;
  return rest();
}

// One rank holds every expert: the send layout is the grouped layout (no exchange, no regroup).
bool IsLocal(const DispatchGroups& groups) {
  return IsSingleRank(groups.ep) && IsSingleRank(groups.etp);
}

// The send layout of `rows` (padded, chunk-major): `rows` itself when that is the identity.
Tensor SendRows(const DispatchPlan& plan, const Tensor& rows, Stream& stream) {
  if (!plan.send_index.defined()) return rows;
  Tensor send = Rows(plan.send_total(), rows);
  ops::GatherRows(rows, plan.send_index, &send, stream);
  return send;
}

// The inverse: the input rows from the send layout (dropping the padding). Without an index the
// input rows lead the send layout in order; padding (one rank, the last experts short of capacity)
// may follow them.
Tensor UnsendRows(const DispatchPlan& plan, const Tensor& returned, Stream& stream) {
  if (!plan.unsend_index.defined()) return returned.Slice(0, plan.rows());
  Tensor rows = Rows(plan.rows(), returned);
  ops::GatherRows(returned, plan.unsend_index, &rows, stream);
  return rows;
}

// Chunk c of `send` (the send layout) → its rows of `grouped`: EP all-to-all-v (started here),
// then ETP all-gather-v and the regroup (run by Land). With EP of one rank the all-gather starts
// here. Each stage writes straight into `grouped` when nothing follows it.
absl::StatusOr<Flight> StartDispatch(const DispatchPlan& plan, const DispatchGroups& groups, int c,
                                     const Tensor& send, const Tensor& grouped, Stream& stream,
                                     int64_t* bytes) {
  const DispatchChunk& chunk = plan.chunks[c];
  const bool ep = !IsSingleRank(groups.ep), etp = !IsSingleRank(groups.etp);
  MF_CHECK(ep || etp) << "StartDispatch: one rank holds every expert (nothing to exchange)";
  const Tensor in = send.Slice(chunk.send_offset, chunk.send_offset + chunk.send_total());
  Tensor dest = grouped.Slice(chunk.grouped_offset, chunk.grouped_offset + chunk.grouped_rows);
  Tensor gathered = chunk.regroup.defined() ? Rows(chunk.grouped_rows, send) : dest;
  // The EP exchange's output (without EP: the chunk's send rows themselves), the ETP gather's input.
  Tensor received = !ep ? in : etp ? Rows(Sum(chunk.recv_rows), send) : gathered;
  const int64_t row_bytes = RowBytes(send);
  Flight flight;
  auto regroup = [&stream, &chunk, gathered, dest]() mutable {
    if (chunk.regroup.defined()) ops::GatherRows(gathered, chunk.regroup, &dest, stream);
    return absl::OkStatus();
  };
  if (ep) {
    MF_ASSIGN_OR_RETURN(flight.work,
                        groups.ep->AllToAllV(in, chunk.send_rows, &received, chunk.recv_rows, {}));
    if (bytes != nullptr) {
      *bytes += (chunk.send_total() - chunk.send_rows[groups.ep_rank()]) * row_bytes;
    }
  }
  if (etp) {
    if (bytes != nullptr) *bytes += (groups.etp_size() - 1) * received.dim(0) * row_bytes;
    auto gather = [&groups, &chunk, received, gathered]() mutable {
      return groups.etp->AllGatherV(received, chunk.etp_rows, &gathered, {});
    };
    if (!ep) {
      MF_ASSIGN_OR_RETURN(flight.work, gather());
      flight.rest = regroup;
    } else {
      flight.rest = [gather, regroup]() mutable {
        MF_RETURN_IF_ERROR(WaitFor(gather()));
        return regroup();
      };
    }
  } else {
    flight.rest = regroup;
  }
  return flight;
}

// Chunk c of `expert_out` (grouped layout) → its rows of `returned` (send layout): the ungroup
// gather and the first collective here (ETP reduce-scatter-v, or the EP all-to-all-v without
// ETP), the EP all-to-all-v after the reduce-scatter in Land.
absl::StatusOr<Flight> StartCombine(const DispatchPlan& plan, const DispatchGroups& groups, int c,
                                    const Tensor& expert_out, const Tensor& returned,
                                    Stream& stream, int64_t* bytes) {
  const DispatchChunk& chunk = plan.chunks[c];
  const bool ep = !IsSingleRank(groups.ep), etp = !IsSingleRank(groups.etp);
  MF_CHECK(ep || etp) << "StartCombine: one rank holds every expert (nothing to exchange)";
  const Tensor src =
      expert_out.Slice(chunk.grouped_offset, chunk.grouped_offset + chunk.grouped_rows);
  Tensor out = returned.Slice(chunk.send_offset, chunk.send_offset + chunk.send_total());
  const int64_t row_bytes = RowBytes(expert_out);
  Tensor ungrouped = src;
  if (chunk.ungroup.defined()) {
    ungrouped = Rows(chunk.grouped_rows, src);
    ops::GatherRows(src, chunk.ungroup, &ungrouped, stream);
  }
  Flight flight;
  if (!etp) {
    MF_ASSIGN_OR_RETURN(
        flight.work, groups.ep->AllToAllV(ungrouped, chunk.recv_rows, &out, chunk.send_rows, {}));
  } else {
    // The partial sums of this member's rows, added in ETP member order.
    const int64_t mine_rows = chunk.etp_rows[groups.etp_rank()];
    Tensor mine = ep ? Rows(mine_rows, src) : out;
    MF_ASSIGN_OR_RETURN(flight.work,
                        groups.etp->ReduceScatterV(ungrouped, chunk.etp_rows, &mine, {}));
    if (bytes != nullptr) *bytes += (chunk.grouped_rows - mine_rows) * row_bytes;
    if (ep) {
      flight.rest = [&groups, &chunk, mine, out]() mutable {
        return WaitFor(groups.ep->AllToAllV(mine, chunk.recv_rows, &out, chunk.send_rows, {}));
      };
    }
  }
  if (ep && bytes != nullptr) {
    *bytes += (Sum(chunk.recv_rows) - chunk.recv_rows[groups.ep_rank()]) * row_bytes;
  }
  return flight;
}

}  // namespace

absl::Status DispatchAndCombine(const DispatchPlan& plan, const DispatchGroups& groups,
                                const Tensor& rows, const ChunkExperts& experts, Tensor* grouped,
                                Tensor* combined, Stream& stream, int64_t* bytes) {
  DispatchRows out;
  MF_RETURN_IF_ERROR(DispatchAndCombine(plan, groups, {.rows = rows, .scales = Tensor()},
                                        rows.dtype(), experts, &out, combined, stream, bytes));
  *grouped = out.rows;
  return absl::OkStatus();
}

absl::Status DispatchAndCombine(const DispatchPlan& plan, const DispatchGroups& groups,
                                const DispatchRows& in, DType out_dtype,
                                const ChunkExperts& experts, DispatchRows* grouped,
                                Tensor* combined, Stream& stream, int64_t* bytes) {
  MF_CHECK_EQ(in.rows.dim(0), plan.rows()) << "DispatchAndCombine: rows do not match the plan";
  const bool local = IsLocal(groups), scaled = in.scales.defined();
  MF_CHECK(!scaled || in.scales.dim(0) == plan.rows())
      << "DispatchAndCombine: scales " << in.scales.DebugString() << " do not match the rows";
  const Tensor send = SendRows(plan, in.rows, stream);
  const Tensor send_scales = scaled ? SendRows(plan, in.scales, stream) : Tensor();
  grouped->rows = local ? send : Rows(plan.grouped_rows(), in.rows);
  grouped->scales = !scaled ? Tensor() : local ? send_scales : Rows(plan.grouped_rows(), in.scales);
  const Tensor out_like = Tensor::Empty({0, in.rows.dim(1)}, out_dtype, in.rows.device());
  const Tensor expert_out = Rows(plan.grouped_rows(), out_like);
  const Tensor returned = local ? expert_out : Rows(plan.send_total(), out_like);
  const int n = static_cast<int>(plan.chunks.size());
  // dispatch[c]: chunk c's rows; scale_dispatch[c]: their scales (started right after them).
  std::vector<Flight> dispatch(n), scale_dispatch(n), combine(n);
  // A poll of every collective in flight (the result is read by Land).
  const std::function<void()> progress = [&dispatch, &scale_dispatch, &combine]() {
    for (std::vector<Flight>* flights : {&dispatch, &scale_dispatch, &combine}) {
      for (Flight& flight : *flights) {
        if (flight.work != nullptr) flight.work->IsCompleted();
      }
    }
  };
  auto start = [&](int c) -> absl::Status {
    MF_ASSIGN_OR_RETURN(dispatch[c],
                        StartDispatch(plan, groups, c, send, grouped->rows, stream, bytes));
    if (scaled) {
      MF_ASSIGN_OR_RETURN(scale_dispatch[c], StartDispatch(plan, groups, c, send_scales,
                                                           grouped->scales, stream, bytes));
    }
    return absl::OkStatus();
  };
  // Chunk c + 1's dispatch is in flight while chunk c's experts run; chunk c's combine while
  // chunk c + 1's run. Every rank issues the collectives in this same order.
  if (!local && n > 0) MF_RETURN_IF_ERROR(start(0));
  for (int c = 0; c < n; ++c) {
    if (!local && c + 1 < n) MF_RETURN_IF_ERROR(start(c + 1));
    MF_RETURN_IF_ERROR(Land(&dispatch[c]));
    MF_RETURN_IF_ERROR(Land(&scale_dispatch[c]));
    const DispatchChunk& chunk = plan.chunks[c];
    const int64_t begin = chunk.grouped_offset, end = begin + chunk.grouped_rows;
    Tensor out = expert_out.Slice(begin, end);
    MF_RETURN_IF_ERROR(experts(chunk, grouped->rows.Slice(begin, end), &out, progress));
    if (!local) {
      MF_ASSIGN_OR_RETURN(combine[c],
                          StartCombine(plan, groups, c, expert_out, returned, stream, bytes));
    }
  }
  for (int c = 0; c < n; ++c) MF_RETURN_IF_ERROR(Land(&combine[c]));
  *combined = UnsendRows(plan, returned, stream);
  return absl::OkStatus();
}

absl::Status Dispatch(const DispatchPlan& plan, const DispatchGroups& groups, const Tensor& rows,
                      Tensor* grouped, Stream& stream, int64_t* bytes) {
  DispatchRows out;
  MF_RETURN_IF_ERROR(
      Dispatch(plan, groups, {.rows = rows, .scales = Tensor()}, &out, stream, bytes));
  *grouped = out.rows;
  return absl::OkStatus();
}

absl::Status Dispatch(const DispatchPlan& plan, const DispatchGroups& groups,
                      const DispatchRows& in, DispatchRows* grouped, Stream& stream,
                      int64_t* bytes) {
  MF_CHECK_EQ(in.rows.dim(0), plan.rows()) << "Dispatch: rows do not match the plan";
  const bool scaled = in.scales.defined();
  const Tensor send = SendRows(plan, in.rows, stream);
  const Tensor send_scales = scaled ? SendRows(plan, in.scales, stream) : Tensor();
  if (IsLocal(groups)) {
    *grouped = {.rows = send, .scales = send_scales};
    return absl::OkStatus();
  }
  grouped->rows = Rows(plan.grouped_rows(), in.rows);
  grouped->scales = scaled ? Rows(plan.grouped_rows(), in.scales) : Tensor();
  const int n = static_cast<int>(plan.chunks.size());
  std::vector<Flight> flights(n), scale_flights(n);
  for (int c = 0; c < n; ++c) {
    MF_ASSIGN_OR_RETURN(flights[c],
                        StartDispatch(plan, groups, c, send, grouped->rows, stream, bytes));
    if (scaled) {
      MF_ASSIGN_OR_RETURN(scale_flights[c], StartDispatch(plan, groups, c, send_scales,
                                                          grouped->scales, stream, bytes));
    }
  }
  for (int c = 0; c < n; ++c) {
    MF_RETURN_IF_ERROR(Land(&flights[c]));
    MF_RETURN_IF_ERROR(Land(&scale_flights[c]));
  }
  return absl::OkStatus();
}

absl::Status Combine(const DispatchPlan& plan, const DispatchGroups& groups, const Tensor& grouped,
                     Tensor* rows, Stream& stream, int64_t* bytes) {
  MF_CHECK_EQ(grouped.dim(0), plan.grouped_rows()) << "Combine: rows do not match the plan";
  if (IsLocal(groups)) {
    *rows = UnsendRows(plan, grouped, stream);
    return absl::OkStatus();
  }
  const Tensor returned = Rows(plan.send_total(), grouped);
  const int n = static_cast<int>(plan.chunks.size());
  std::vector<Flight> flights(n);
  for (int c = 0; c < n; ++c) {
    MF_ASSIGN_OR_RETURN(flights[c],
                        StartCombine(plan, groups, c, grouped, returned, stream, bytes));
  }
  for (int c = 0; c < n; ++c) MF_RETURN_IF_ERROR(Land(&flights[c]));
  *rows = UnsendRows(plan, returned, stream);
  return absl::OkStatus();
}

}  // namespace moefold::parallel
