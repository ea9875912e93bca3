// The FP8 exchanges' bytes per value, from the precision config.
#include "core/train/fp8_exchange_bytes.h"

namespace moefold::train {

bool Fp8GathersCodes(const config::ExperimentConfig& config) {
  const config::PrecisionConfig& p = config.precision();
  return (p.fp8_recipe() == "delayed" || p.fp8_recipe() == "current") && p.fp8_gather();
}

double Fp8DispatchBytesPerValue(const config::ExperimentConfig& config) {
  const config::PrecisionConfig& p = config.precision();
  if (p.fp8_recipe() == "none" || !p.fp8_dispatch()) return 0;
  if (p.fp8_recipe() == "current") return 1.0 + 4.0 / config.model().hidden_size();
  if (p.fp8_recipe() == "blockwise") return 1.0 + 4.0 / 128;
  return 1.0;
}

}  // namespace moefold::train
