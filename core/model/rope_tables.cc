// RoPE table cache: grows to the longest position, one upload per size and device.
#include "core/model/rope_tables.h"

#include <algorithm>

#include "ops/rope.h"

namespace moefold::model {

const Tensor& RopeTables::Get(const StepContext& ctx, int64_t max_position) {
  const bool fits = table_.defined() && table_.numel() > 0 && table_.device() == ctx.device() &&
                    table_.dim(0) > max_position;
  if (!fits) {
    // Round the length up so a run whose sequences grow a little rebuilds rarely.
    const int64_t positions = std::max<int64_t>(64, (max_position + 64) / 64 * 64);
    table_ = ctx.Upload(ops::RopeTable(positions, head_dim_, theta_));
  }
  return table_;
}

}  // namespace moefold::model
