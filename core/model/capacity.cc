// The capacity C of capacity mode (which pairs each expert keeps: ops::ComputeCapacityPermutation).
#include "core/model/capacity.h"

#include <algorithm>
#include <cmath>

namespace moefold::model {

int64_t ExpertCapacity(int64_t tokens, int k, int num_experts, float factor) {
  if (tokens == 0) return 0;
  const double c = std::ceil(static_cast<double>(tokens) * k / num_experts * factor);
  return std::max<int64_t>(1, static_cast<int64_t>(c));
}

}  // namespace moefold::model
