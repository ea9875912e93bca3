// Capacity selection: per expert, rank its pairs by the drop policy and keep the first C.
#include "core/model/capacity.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace moefold::model {

int64_t ExpertCapacity(int64_t tokens, int k, int num_experts, float factor) {
  if (tokens == 0) return 0;
  const double c = std::ceil(static_cast<double>(tokens) * k / num_experts * factor);
  return std::max<int64_t>(1, static_cast<int64_t>(c));
}

int64_t CapacityPermutation(const Tensor& ids, const Tensor& weights, int num_experts,
                            int64_t capacity, DropPolicy policy, Tensor* sorted, Tensor* counts) {
  MF_CHECK(ids.rank() == 2 && weights.shape() == ids.shape())
      << "CapacityPermutation: ids " << ids.DebugString() << ", weights " << weights.DebugString();
  const int64_t pairs = ids.numel();
  const int32_t* id = ids.data<int32_t>();
  const float* w = weights.data<float>();
  std::vector<std::vector<int32_t>> per_expert(num_experts);
  for (int64_t p = 0; p < pairs; ++p) {
    MF_CHECK(id[p] >= 0 && id[p] < num_experts) << "expert id " << id[p] << " of " << num_experts;
    per_expert[id[p]].push_back(static_cast<int32_t>(p));  // token order
  }
  std::vector<int32_t> kept;
  kept.reserve(pairs);
  *counts = Tensor::Zeros({num_experts}, DType::kI32);
  for (int e = 0; e < num_experts; ++e) {
    std::vector<int32_t>& list = per_expert[e];
    if (static_cast<int64_t>(list.size()) > capacity) {
      if (policy == DropPolicy::kProbs) {
        // Highest weight first, the earlier pair first among equal weights.
        std::stable_sort(list.begin(), list.end(),
                         [&](int32_t a, int32_t b) { return w[a] > w[b]; });
      }
      list.resize(capacity);
      std::sort(list.begin(), list.end());  // back to token order
    }
    kept.insert(kept.end(), list.begin(), list.end());
    counts->data<int32_t>()[e] = static_cast<int32_t>(list.size());
  }
  *sorted = Tensor::Empty({static_cast<int64_t>(kept.size())}, DType::kI32);
  std::copy(kept.begin(), kept.end(), sorted->data<int32_t>());
  return pairs - static_cast<int64_t>(kept.size());
}

}  // namespace moefold::model
