// Dispatch/Combine: counts all-gather, EP all-to-all-v, ETP all-gather-v / reduce-scatter-v (both
// as all-to-all-v), regrouping by local expert, optional padding to a fixed block size.
#include "parallel/token_dispatcher.h"

#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace moefold::parallel {
namespace {

// Row r of a 2-D tensor as bytes.
char* RowPtr(const Tensor& t, int64_t r) {
  return static_cast<char*>(t.raw_data()) + r * t.dim(1) * DTypeSize(t.dtype());
}
size_t RowBytes(const Tensor& t) { return t.dim(1) * DTypeSize(t.dtype()); }

int64_t Sum(const std::vector<int64_t>& v) { return std::accumulate(v.begin(), v.end(), int64_t{0}); }

Tensor Rows(int64_t n, const Tensor& like) {
  return Tensor::Empty({n, like.dim(1)}, like.dtype(), like.device());
}

// `copies` copies of t stacked along the rows (the input of an all-gather-v by all-to-all-v).
Tensor Repeat(const Tensor& t, int copies) {
  Tensor out = Rows(t.dim(0) * copies, t);
  for (int c = 0; c < copies; ++c) {
    if (t.numel() > 0) std::memcpy(RowPtr(out, c * t.dim(0)), t.raw_data(), t.nbytes());
  }
  return out;
}

}  // namespace

int64_t DispatchPlan::rows() const { return Sum(counts); }

absl::StatusOr<DispatchPlan> BuildDispatchPlan(const std::vector<int64_t>& counts,
                                               const DispatchOptions& options,
                                               const DispatchGroups& groups) {
  const int e = static_cast<int>(counts.size()), ep = groups.ep_size(), etp = groups.etp_size();
  if (e == 0 || e % ep != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("token dispatcher: ", e, " experts do not split over ep ", ep));
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
      return absl::InvalidArgumentError(absl::StrCat(
          "token dispatcher: the etp-ep group has ", groups.etp_ep->size(), " members, not etp ",
          etp, " × ep ", ep));
    }
    all = Tensor::Empty({members * width}, DType::kI64);
    MF_RETURN_IF_ERROR(WaitFor(groups.etp_ep->AllGather(mine, &all, {})));
  } else if (members != 1) {
    return absl::InvalidArgumentError("token dispatcher: ep/etp > 1 needs an etp-ep group");
  }
  std::vector<std::vector<std::vector<int64_t>>> m(
      etp, std::vector<std::vector<int64_t>>(ep));
  for (int i = 0; i < members; ++i) {
    const int64_t* row = all.data<int64_t>() + i * width;
    MF_CHECK(row[0] >= 0 && row[0] < etp && row[1] >= 0 && row[1] < ep && m[row[0]][row[1]].empty())
        << "token dispatcher: member " << i << " has coordinates (" << row[0] << ", " << row[1]
        << ")";
    m[row[0]][row[1]].assign(row + 2, row + width);
  }
  const int q0 = groups.etp_rank(), p0 = groups.ep_rank(), le_count = plan.local_experts;
  const int first = p0 * le_count;
  plan.send_rows.assign(ep, 0);
  plan.recv_rows.assign(ep, 0);
  plan.etp_rows.assign(etp, 0);
  for (int p = 0; p < ep; ++p) {
    for (int le = 0; le < le_count; ++le) {
      plan.send_rows[p] += rows[p * le_count + le];
      plan.recv_rows[p] += m[q0][p][first + le];
    }
  }
  // The gathered rows are blocks [q][p][le]; regrouped they are [le][q][p].
  std::vector<int64_t> offset(static_cast<size_t>(etp) * ep * le_count);
  int64_t at = 0;
  for (int q = 0; q < etp; ++q) {
    for (int p = 0; p < ep; ++p) {
      for (int le = 0; le < le_count; ++le) {
        offset[(q * ep + p) * le_count + le] = at;
        at += m[q][p][first + le];
        plan.etp_rows[q] += m[q][p][first + le];
      }
    }
  }
  plan.local_counts = Tensor::Zeros({le_count}, DType::kI32);
  plan.regroup.reserve(at);
  for (int le = 0; le < le_count; ++le) {
    for (int q = 0; q < etp; ++q) {
      for (int p = 0; p < ep; ++p) {
        const int64_t begin = offset[(q * ep + p) * le_count + le], n = m[q][p][first + le];
        for (int64_t r = 0; r < n; ++r) plan.regroup.push_back(static_cast<int32_t>(begin + r));
        plan.local_counts.data<int32_t>()[le] += static_cast<int32_t>(n);
      }
    }
  }
  return plan;
}

namespace {

// One rank holds every expert and nothing is padded: the permuted rows already are the grouped
// rows (regroup is the identity), so Dispatch and Combine pass the tensor through.
bool IsIdentity(const DispatchPlan& plan, const DispatchGroups& groups) {
  return plan.pad_to == 0 && IsSingleRank(groups.ep) && IsSingleRank(groups.etp);
}

// The exchanges below move rows with host copies: GPU tensors take only the identity plan.
absl::Status CheckHostRows(const Tensor& t, const char* what) {
  if (t.numel() == 0 || t.device().is_cpu()) return absl::OkStatus();
  return absl::UnimplementedError(
      absl::StrCat("token dispatcher: ", what,
                   " of GPU tensors needs ep = etp = 1 and no padding to capacity "
                   "(the GPU exchange is not built yet); got ",
                   t.DebugString()));
}

}  // namespace

absl::Status Dispatch(const DispatchPlan& plan, const DispatchGroups& groups, const Tensor& rows,
                      Tensor* grouped, int64_t* bytes) {
  MF_CHECK_EQ(rows.dim(0), plan.rows()) << "Dispatch: rows do not match the plan";
  if (IsIdentity(plan, groups)) {
    *grouped = rows;
    return absl::OkStatus();
  }
  MF_RETURN_IF_ERROR(CheckHostRows(rows, "Dispatch"));
  const size_t row_bytes = RowBytes(rows);
  // Pad every expert's block to pad_to rows with zeros.
  Tensor padded = rows;
  if (plan.pad_to > 0) {
    padded = Tensor::Zeros({plan.num_experts * plan.pad_to, rows.dim(1)}, rows.dtype());
    int64_t from = 0;
    for (int e = 0; e < plan.num_experts; ++e) {
      if (plan.counts[e] > 0) {
        std::memcpy(RowPtr(padded, e * plan.pad_to), RowPtr(rows, from), plan.counts[e] * row_bytes);
      }
      from += plan.counts[e];
    }
  }
  Tensor received = padded;
  if (!IsSingleRank(groups.ep)) {
    received = Rows(Sum(plan.recv_rows), rows);
    MF_RETURN_IF_ERROR(WaitFor(
        groups.ep->AllToAllV(padded, plan.send_rows, &received, plan.recv_rows, {})));
    if (bytes != nullptr) {
      *bytes += (Sum(plan.send_rows) - plan.send_rows[groups.ep_rank()]) * row_bytes;
    }
  }
  Tensor gathered = received;
  if (!IsSingleRank(groups.etp)) {
    const int etp = groups.etp_size();
    gathered = Rows(Sum(plan.etp_rows), rows);
    const std::vector<int64_t> mine(etp, received.dim(0));
    MF_RETURN_IF_ERROR(WaitFor(
        groups.etp->AllToAllV(Repeat(received, etp), mine, &gathered, plan.etp_rows, {})));
    if (bytes != nullptr) *bytes += (etp - 1) * received.dim(0) * row_bytes;
  }
  *grouped = Rows(plan.grouped_rows(), rows);
  for (int64_t r = 0; r < plan.grouped_rows(); ++r) {
    std::memcpy(RowPtr(*grouped, r), RowPtr(gathered, plan.regroup[r]), row_bytes);
  }
  return absl::OkStatus();
}

absl::Status Combine(const DispatchPlan& plan, const DispatchGroups& groups, const Tensor& grouped,
                     Tensor* rows, int64_t* bytes) {
  MF_CHECK_EQ(grouped.dim(0), plan.grouped_rows()) << "Combine: rows do not match the plan";
  if (IsIdentity(plan, groups)) {
    *rows = grouped;
    return absl::OkStatus();
  }
  MF_RETURN_IF_ERROR(CheckHostRows(grouped, "Combine"));
  const size_t row_bytes = RowBytes(grouped);
  Tensor gathered = Rows(plan.grouped_rows(), grouped);
  for (int64_t r = 0; r < plan.grouped_rows(); ++r) {
    std::memcpy(RowPtr(gathered, plan.regroup[r]), RowPtr(grouped, r), row_bytes);
  }
  Tensor received = gathered;
  if (!IsSingleRank(groups.etp)) {
    // Reduce-scatter-v: every ETP peer's block goes home, and the etp partial sums of this rank's
    // rows are added in ETP rank order (f32, deterministic).
    const int etp = groups.etp_size();
    const int64_t mine = plan.etp_rows[groups.etp_rank()];
    Tensor pieces = Rows(mine * etp, grouped);
    MF_RETURN_IF_ERROR(WaitFor(groups.etp->AllToAllV(gathered, plan.etp_rows, &pieces,
                                                     std::vector<int64_t>(etp, mine), {})));
    if (bytes != nullptr) *bytes += (plan.grouped_rows() - mine) * row_bytes;
    MF_CHECK(grouped.dtype() == DType::kF32) << "Combine: the ETP sum is f32 on the CPU";
    received = Tensor::Zeros({mine, grouped.dim(1)}, DType::kF32);
    float* out = received.data<float>();
    const int64_t n = mine * grouped.dim(1);
    for (int q = 0; q < etp; ++q) {
      const float* piece = pieces.data<float>() + q * n;
      for (int64_t i = 0; i < n; ++i) out[i] += piece[i];
    }
  }
  Tensor padded = received;
  if (!IsSingleRank(groups.ep)) {
    padded = Rows(Sum(plan.send_rows), grouped);
    MF_RETURN_IF_ERROR(WaitFor(
        groups.ep->AllToAllV(received, plan.recv_rows, &padded, plan.send_rows, {})));
    if (bytes != nullptr) {
      *bytes += (Sum(plan.recv_rows) - plan.recv_rows[groups.ep_rank()]) * row_bytes;
    }
  }
  if (plan.pad_to == 0) {
    *rows = padded;
    return absl::OkStatus();
  }
  *rows = Rows(plan.rows(), grouped);
  int64_t to = 0;
  for (int e = 0; e < plan.num_experts; ++e) {
    if (plan.counts[e] > 0) {
      std::memcpy(RowPtr(*rows, to), RowPtr(padded, e * plan.pad_to), plan.counts[e] * row_bytes);
    }
    to += plan.counts[e];
  }
  return absl::OkStatus();
}

}  // namespace moefold::parallel
