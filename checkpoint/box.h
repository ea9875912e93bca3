// Boxes: how a checkpoint describes which elements of a global tensor a piece holds, so any layout
// can read its slices from the shards of any other. A box is a rectangular slice of the global
// tensor (per dimension a first index and an extent: what a TP/ETP shard or an expert range is);
// a piece holds the row-major element range [flat_begin, flat_end) of a box (a whole box for
// parameters, a part for ZeRO-1 optimizer shards, which cut flat buffers without regard to rows).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/parameter.h"

namespace moefold::checkpoint {

struct BoxRange {
  std::vector<int64_t> offset;  // global index of the box's first element, per dimension
  std::vector<int64_t> shape;   // the box's extent per dimension
  int64_t flat_begin = 0;       // row-major range within the box
  int64_t flat_end = 0;
  int64_t BoxElements() const;
};

// The whole box a parameter holds on this rank: its TP/ETP range of sharding.tp_dim and its
// experts along sharding.expert_dim, full extent elsewhere (flat range = all of it).
BoxRange ParameterBox(const Parameter& param);

// Copies the elements the two ranges share from `src_data` (the values of `src`'s flat range) into
// `dst_data` (of `dst`'s flat range) and marks them in `covered` (one flag per element of dst's
// range). Both boxes index the same global tensor (same rank). Returns the elements copied.
int64_t CopyOverlap(const BoxRange& src, const float* src_data, const BoxRange& dst,
                    float* dst_data, std::vector<uint8_t>* covered);

// Whether the boxes (ignoring flat ranges) intersect.
bool BoxesIntersect(const BoxRange& a, const BoxRange& b);

std::string BoxString(const BoxRange& box);  // "[0:4, 8:16] elements 0..32"

}  // namespace moefold::checkpoint
