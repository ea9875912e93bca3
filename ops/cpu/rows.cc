// CPU reference of the row gather (byte copies: any row survives bit for bit) and of the block sum
// (f32 accumulator per element, blocks added in order, bf16 rounded once by the emulation).
#include "ops/rows.h"

#include <cstring>

#include "ops/cpu/bf16_emulation.h"
#include "ops/cpu/check.h"

namespace moefold::ops {
namespace {

// GatherRows moves bits: FP8 codes (the FP8 token dispatch) travel as well as f32 and bf16.
void CheckGatherRows(const Tensor& t, const char* op, const char* name) {
  internal::CheckCpu(t, op, name);
  MF_CHECK(t.dtype() == DType::kF32 || t.dtype() == DType::kBF16 ||
           t.dtype() == DType::kFp8E4M3 || t.dtype() == DType::kFp8E5M2)
      << op << ": " << name << " must be f32, bf16 or fp8, got " << t.DebugString();
}

}  // namespace

void GatherRows(const Tensor& x, const Tensor& index, Tensor* out, Stream& stream) {
  MF_RETURN_IF_GPU(x, "GatherRows", cuda::GatherRows(x, index, out, stream));
  constexpr const char* kOp = "GatherRows";
  MF_CHECK(out != nullptr) << kOp << ": output out is null";
  CheckGatherRows(x, kOp, "x");
  internal::CheckRank(x, 2, kOp, "x");
  internal::CheckI32(index, kOp, "index");
  internal::CheckRank(index, 1, kOp, "index");
  CheckGatherRows(*out, kOp, "out");
  internal::CheckDType(*out, x.dtype(), kOp, "out");
  internal::CheckShape(*out, {index.numel(), x.dim(1)}, kOp, "out");
  const int32_t* idx = index.data<int32_t>();
  for (int64_t r = 0; r < index.numel(); ++r) {
    MF_CHECK(idx[r] >= -1 && idx[r] < x.dim(0))
        << kOp << ": index[" << r << "] = " << idx[r] << " is not a row of x " << x.DebugString()
        << " or −1";
  }
  const size_t row_bytes = static_cast<size_t>(x.dim(1)) * DTypeSize(x.dtype());
  if (row_bytes == 0) return;
  const char* src = static_cast<const char*>(x.raw_data());
  char* dst = static_cast<char*>(out->raw_data());
  for (int64_t r = 0; r < index.numel(); ++r) {
    if (idx[r] < 0) {
      std::memset(dst + r * row_bytes, 0, row_bytes);  // all-zero bits are +0 in f32, bf16 and fp8
    } else {
      std::memcpy(dst + r * row_bytes, src + idx[r] * row_bytes, row_bytes);
    }
  }
}

void SumBlocks(const Tensor& blocks, Tensor* out, Stream& stream) {
  constexpr const char* kOp = "SumBlocks";
  // The number of blocks follows from the element counts: checked here, for both devices.
  MF_CHECK(out != nullptr) << kOp << ": output out is null";
  const int64_t m = out->numel();
  MF_CHECK(m == 0 || (blocks.numel() >= m && blocks.numel() % m == 0))
      << kOp << ": blocks " << blocks.DebugString() << " is not a whole number of blocks of out "
      << out->DebugString();
  MF_RETURN_IF_GPU(blocks, kOp, cuda::SumBlocks(blocks, out, stream));
  if (internal::AnyBf16({&blocks, out})) {
    internal::Bf16Emulation emu(kOp);
    emu.SameDType({&blocks, out}, {"blocks", "out"});
    SumBlocks(emu.In(blocks), emu.Out(out), stream);
    emu.RoundBack();
    return;
  }
  internal::CheckF32(blocks, kOp, "blocks");
  internal::CheckF32(*out, kOp, "out");
  if (m == 0) return;
  const int64_t n = blocks.numel() / m;
  const float* b = blocks.data<float>();
  float* o = out->data<float>();
  for (int64_t i = 0; i < m; ++i) {
    float sum = b[i];
    for (int64_t j = 1; j < n; ++j) sum += b[j * m + i];
    o[i] = sum;
  }
}

}  // namespace moefold::ops
