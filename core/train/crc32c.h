// CRC32C (Castagnoli): the checksum of TFRecord framing, which TensorBoard's event files use. A
// small table-driven software version: Debian ships no C/C++ library for it and abseil 20220623
// predates absl/crc. Event files are written once per step, so speed does not matter here.
//
//   uint32_t crc = Crc32c("123456789");      // 0xE3069283
//   uint32_t stored = MaskCrc32c(crc);       // what a TFRecord stores
#pragma once

#include <cstdint>

#include "absl/strings/string_view.h"

namespace moefold::train {

// CRC-32C of `data`: reflected polynomial 0x82F63B78, initial value and final xor 0xFFFFFFFF.
// `crc` continues an earlier Crc32c over the bytes before `data` (0 starts afresh).
uint32_t Crc32c(absl::string_view data, uint32_t crc = 0);

// The TFRecord mask of a CRC: ((crc >> 15) | (crc << 17)) + 0xa282ead8 (mod 2^32). Records store
// masked CRCs so that a CRC of data that itself holds CRCs stays well distributed.
uint32_t MaskCrc32c(uint32_t crc);

}  // namespace moefold::train
