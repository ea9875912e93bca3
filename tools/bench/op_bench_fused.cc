// The fused FP8 producers (ops/fp8_fused.h) against the unfused composition they replace, on the
// CPU (default) or a GPU: JSON lines with the median wall time of each (the stream synchronised
// after every run) and their ratio. Unfused is the op into its bf16 output, then the quantiser
// that reads that output again (CastTransposeAmax with the transposed codes where the training
// step wants them, or QuantizeBlockwise in 1×128 tiles); fused writes the same bf16 output (the
// training step keeps it) and the same codes in one pass.
//   op_bench_fused [--device cpu|cuda] [--reps N] [--tokens T] [--hidden H] [--ffn F]
//   (nothing here asserts a time)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/tensor.h"
#include "launch/args.h"
#include "ops/activation.h"
#include "ops/fp8.h"
#include "ops/fp8_fused.h"
#include "ops/norm.h"
#include "tools/bench/bench_line.h"

namespace moefold::bench {
namespace {

struct Options {
  std::string device = "cpu";
  int reps = 5;
  int64_t tokens = 1024, hidden = 1024, ffn = 2816;
};

double MedianMs(const std::function<void()>& fn, Stream& stream, int reps) {
  fn();  // warm-up (allocations, caches)
  stream.Synchronize();
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    const auto start = std::chrono::steady_clock::now();
    fn();
    stream.Synchronize();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                     .count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// Normal values in bf16 on `device` (generated on the host).
Tensor Random(const Shape& shape, uint64_t seed, const Device& device) {
  std::vector<float> v(static_cast<size_t>(shape[0] * shape[1]));
  uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
  for (float& x : v) {  // a sum of uniforms: close enough to normal for a benchmark
    float sum = 0;
    for (int k = 0; k < 4; ++k) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      sum += static_cast<float>(state >> 40) / static_cast<float>(1 << 24) - 0.5f;
    }
    x = sum;
  }
  return Tensor::FromVector(v, shape).To(DType::kBF16).To(device);
}

void Report(const std::string& name, const Options& o, const std::string& shape, double fused,
            double unfused) {
  BenchLine(name)
      .Add("device", o.device)
      .Add("shape", shape)
      .Add("fused_ms", fused)
      .Add("unfused_ms", unfused)
      .Add("speedup", unfused / fused)
      .Add("reps", o.reps)
      .Print();
}

void CheckOk(const absl::Status& status) { MF_CHECK(status.ok()) << status; }

// One producer both ways: per tensor (E4M3 codes, amax; with `transposed` also the padded
// transposed codes) and in 1×128 tiles. `produce(out)` is the unfused op; `fused(q, out)` the
// fused one; the output is (m, n).
void BenchBothWays(const std::string& name, const Options& o, int64_t m, int64_t n, DType format,
                   bool transposed, const std::function<void(Tensor*)>& produce,
                   const std::function<absl::Status(const ops::Fp8Quantize&, Tensor*)>& fused) {
  const Device device = o.device == "cpu" ? Device::Cpu() : Device::Cuda(0);
  Stream& stream = DefaultStream(device);
  const int64_t m_pad = (m + 127) / 128 * 128;
  Tensor out = Tensor::Empty({m, n}, DType::kBF16, device);
  Tensor codes = Tensor::Empty({m, n}, format, device);
  Tensor codes_t = Tensor::Empty({n, m}, format, device);
  Tensor codes_t_pad = Tensor::Empty({n, m_pad}, format, device);
  Tensor amax = Tensor::Zeros({1}, DType::kF32, device);
  Tensor scale = Tensor::FromVector({1.0f}, {1}).To(device);
  Tensor scale_inv = Tensor::Empty({m, n / 128}, DType::kF32, device);
  const std::string shape = absl::StrCat(m, "x", n);
  // Per tensor.
  const double unfused_pt = MedianMs(
      [&] {
        produce(&out);
        ops::CastTransposeAmax(out, scale, &codes, transposed ? &codes_t : nullptr, &amax, stream);
      },
      stream, o.reps);
  ops::Fp8Quantize q{.scale = &scale, .codes = &codes, .amax = &amax};
  if (transposed) q.codes_t = &codes_t_pad;
  const double fused_pt = MedianMs([&] { CheckOk(fused(q, &out)); }, stream, o.reps);
  Report(name + (transposed ? "_per_tensor_transposed" : "_per_tensor"), o, shape, fused_pt,
         unfused_pt);
  // 1×128 tiles.
  const double unfused_tiles = MedianMs(
      [&] {
        produce(&out);
        CheckOk(ops::QuantizeBlockwise(out, ops::kFp8ActivationTile, {}, &codes, &scale_inv,
                                       stream));
      },
      stream, o.reps);
  const ops::Fp8Quantize qt{.codes = &codes, .scale_inv = &scale_inv};
  const double fused_tiles = MedianMs([&] { CheckOk(fused(qt, &out)); }, stream, o.reps);
  Report(name + "_tiles", o, shape, fused_tiles, unfused_tiles);
}

void Run(const Options& o) {
  const Device device = o.device == "cpu" ? Device::Cpu() : Device::Cuda(0);
  Stream& stream = DefaultStream(device);
  const int64_t t = o.tokens, h = o.hidden, f = o.ffn;
  const Tensor x = Random({t, h}, 1, device);
  const Tensor w = Random({1, h}, 2, device).Reshape({h});
  Tensor rstd = Tensor::Empty({t}, DType::kF32, device);
  BenchBothWays(
      "rmsnorm_fp8", o, t, h, DType::kFp8E4M3, false,
      [&](Tensor* y) { ops::RmsNormForward(x, w, 1e-5f, y, &rstd, stream); },
      [&](const ops::Fp8Quantize& q, Tensor* y) {
        return ops::RmsNormFp8(x, w, 1e-5f, q, y, &rstd, stream);
      });
  const Tensor residual = Random({t, h}, 5, device);
  Tensor sum = Tensor::Empty({t, h}, DType::kBF16, device);
  BenchBothWays(
      "add_rmsnorm_fp8", o, t, h, DType::kFp8E4M3, false,
      [&](Tensor* y) { ops::AddRmsNormForward(x, residual, w, 1e-5f, &sum, y, &rstd, stream); },
      [&](const ops::Fp8Quantize& q, Tensor* y) {
        return ops::AddRmsNormFp8(x, residual, w, 1e-5f, q, &sum, y, &rstd, stream);
      });
  const Tensor gate_up = Random({t, 2 * f}, 3, device);
  BenchBothWays(
      "swiglu_fp8", o, t, f, DType::kFp8E4M3, false,
      [&](Tensor* act) { ops::SwiGluForward(gate_up, act, stream); },
      [&](const ops::Fp8Quantize& q, Tensor* act) { return ops::SwiGluFp8(gate_up, q, act, stream); });
  const Tensor d_act = Random({t, f}, 4, device);
  BenchBothWays(
      "swiglu_backward_fp8", o, t, 2 * f, DType::kFp8E5M2, true,
      [&](Tensor* d_gate_up) { ops::SwiGluBackward(gate_up, d_act, d_gate_up, stream); },
      [&](const ops::Fp8Quantize& q, Tensor* d_gate_up) {
        return ops::SwiGluBackwardFp8(gate_up, d_act, q, d_gate_up, stream);
      });
}

}  // namespace
}  // namespace moefold::bench

int main(int argc, char** argv) {
  using namespace moefold;
  static constexpr char kUsage[] =
      "usage: op_bench_fused [--device cpu|cuda] [--reps N] [--tokens T] [--hidden H] [--ffn F]\n";
  const std::vector<std::string> args(argv + 1, argv + argc);
  auto parsed = launch::ParseArgs(args,
                                  {.options = {"device", "reps", "tokens", "hidden", "ffn"},
                                   .repeatable = {},
                                   .flags = {"help"},
                                   .max_positionals = 0,
                                   .program = "op_bench_fused"},
                                  "");
  if (!parsed.ok() || parsed->Has("help")) {
    if (!parsed.ok()) {
      std::fprintf(stderr, "op_bench_fused: %s\n", std::string(parsed.status().message()).c_str());
    }
    std::fputs(kUsage, stderr);
    return parsed.ok() ? 0 : 2;
  }
  bench::Options o;
  o.device = parsed->Get("device", o.device);
  auto number = [&](const char* key, int64_t* value) {
    const std::string text = parsed->Get(key, std::to_string(*value));
    if (!absl::SimpleAtoi(text, value) || *value <= 0) {
      std::fprintf(stderr, "op_bench_fused: --%s %s is not a positive integer\n%s", key,
                   text.c_str(), kUsage);
      std::exit(2);
    }
  };
  int64_t reps = o.reps;
  number("reps", &reps);
  o.reps = static_cast<int>(reps);
  number("tokens", &o.tokens);
  number("hidden", &o.hidden);
  number("ffn", &o.ffn);
  if (o.device != "cpu" && o.device != "cuda") {
    std::fprintf(stderr, "op_bench_fused: --device %s is not cpu or cuda\n%s", o.device.c_str(),
                 kUsage);
    return 2;
  }
  if (o.hidden % 128 != 0 || o.ffn % 128 != 0) {
    std::fprintf(stderr, "op_bench_fused: --hidden and --ffn must be multiples of 128 (tiles)\n");
    return 2;
  }
  bench::Run(o);
  return 0;
}
