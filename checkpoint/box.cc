#include "checkpoint/box.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/status.h"

namespace moefold::checkpoint {

int64_t BoxRange::BoxElements() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

BoxRange ParameterBox(const Parameter& param) {
  const Sharding& sh = param.sharding;
  const Shape& local = param.value.shape();
  BoxRange box;
  box.shape.assign(local.begin(), local.end());
  box.offset.assign(local.size(), 0);
  if (sh.tp_dim >= 0) box.offset[sh.tp_dim] = sh.tp_begin;
  if (sh.expert_dim >= 0) box.offset[sh.expert_dim] = sh.expert_offset;
  box.flat_begin = 0;
  box.flat_end = box.BoxElements();
  return box;
}

bool BoxesIntersect(const BoxRange& a, const BoxRange& b) {
  if (a.shape.size() != b.shape.size()) return false;
  for (size_t d = 0; d < a.shape.size(); ++d) {
    const int64_t lo = std::max(a.offset[d], b.offset[d]);
    const int64_t hi = std::min(a.offset[d] + a.shape[d], b.offset[d] + b.shape[d]);
    if (lo >= hi) return false;
  }
  return true;
}

int64_t CopyOverlap(const BoxRange& src, const float* src_data, const BoxRange& dst,
                    float* dst_data, std::vector<uint8_t>* covered) {
  MF_CHECK_EQ(src.shape.size(), dst.shape.size()) << "boxes of different ranks";
  if (!BoxesIntersect(src, dst) || dst.flat_begin >= dst.flat_end) return 0;
  // A scalar is a box of one element; otherwise walk dst's range row by row (a row = the last
  // dimension), where both boxes are contiguous.
  const size_t rank = dst.shape.size();
  const int64_t dst_row = rank == 0 ? 1 : dst.shape[rank - 1];
  const int64_t src_row = rank == 0 ? 1 : src.shape[rank - 1];
  const int64_t last_dst_off = rank == 0 ? 0 : dst.offset[rank - 1];
  const int64_t last_src_off = rank == 0 ? 0 : src.offset[rank - 1];
  int64_t copied = 0;
  std::vector<int64_t> coord(rank == 0 ? 0 : rank - 1);
  for (int64_t row = dst.flat_begin / dst_row; row * dst_row < dst.flat_end; ++row) {
    // Global coordinates of this dst row's leading dimensions, and the src row holding them.
    int64_t rest = row, src_row_index = 0;
    bool inside = true;
    for (int d = static_cast<int>(rank) - 2; d >= 0; --d) {
      coord[d] = rest % dst.shape[d] + dst.offset[d];
      rest /= dst.shape[d];
    }
    for (size_t d = 0; d + 1 < rank; ++d) {
      const int64_t local = coord[d] - src.offset[d];
      if (local < 0 || local >= src.shape[d]) {
        inside = false;
        break;
      }
      src_row_index = src_row_index * src.shape[d] + local;
    }
    if (!inside) continue;
    // Columns of this row inside dst's flat range, in global terms, intersected with src's box.
    const int64_t row_start = row * dst_row;
    const int64_t c0 = std::max<int64_t>(0, dst.flat_begin - row_start);
    const int64_t c1 = std::min<int64_t>(dst_row, dst.flat_end - row_start);
    int64_t g0 = std::max(last_dst_off + c0, last_src_off);
    int64_t g1 = std::min(last_dst_off + c1, last_src_off + src_row);
    if (g0 >= g1) continue;
    // ...and with src's flat range.
    const int64_t s_row_start = src_row_index * src_row;
    const int64_t s0 = std::max(s_row_start + (g0 - last_src_off), src.flat_begin);
    const int64_t s1 = std::min(s_row_start + (g1 - last_src_off), src.flat_end);
    if (s0 >= s1) continue;
    g0 = last_src_off + (s0 - s_row_start);
    g1 = last_src_off + (s1 - s_row_start);
    const int64_t d0 = row_start + (g0 - last_dst_off) - dst.flat_begin;
    const int64_t n = g1 - g0;
    std::memcpy(dst_data + d0, src_data + (s0 - src.flat_begin), n * sizeof(float));
    std::fill(covered->begin() + d0, covered->begin() + d0 + n, 1);
    copied += n;
  }
  return copied;
}

std::string BoxString(const BoxRange& box) {
  std::vector<std::string> dims;
  for (size_t d = 0; d < box.shape.size(); ++d) {
    dims.push_back(absl::StrCat(box.offset[d], ":", box.offset[d] + box.shape[d]));
  }
  return absl::StrCat("[", absl::StrJoin(dims, ", "), "] elements ", box.flat_begin, "..",
                      box.flat_end);
}

}  // namespace moefold::checkpoint
