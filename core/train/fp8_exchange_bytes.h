// What the FP8 exchanges move, from the config alone, for the estimates that count their bytes
// (the memory plan's saved tensors, `moefold plan --predict`'s collectives): the sequence-parallel
// all-gathers of core/model/fp8_gather.h and the token dispatch of core/model/fp8_dispatch.h.
#pragma once

#include "configs/moefold.pb.h"

namespace moefold::train {

// Whether the sequence-parallel gathers in front of the projections move 1-byte codes: a
// per-tensor recipe (delayed, current) with precision.fp8_gather.
bool Fp8GathersCodes(const config::ExperimentConfig& config);

// Bytes a value of the rows the FP8 dispatch sends towards the experts (and saves there): a code
// and the scales' share — one f32 a row under current, one per 128-value tile under blockwise,
// none under delayed; 0 where no FP8 dispatch runs (no recipe, or precision.fp8_dispatch off).
double Fp8DispatchBytesPerValue(const config::ExperimentConfig& config);

}  // namespace moefold::train
