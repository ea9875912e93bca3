// The two benchmark configs load, validate on one GPU rank, and have the sizes their headers give
// (≈2.5 B / ≈0.8 B active for mixtral_mini, ≈2.7 B for finegrained_mini).
#include <cstdint>
#include <string>

#include "configs/config_loader.h"
#include "configs/validate.h"
#include "tests/testing/testing.h"

namespace moefold::config {
namespace {

struct Sizes {
  double total, active;
};

// Untied embedding and head, GQA attention, SwiGLU experts and the router; every layer MoE.
Sizes Count(const ExperimentConfig& c) {
  const ModelConfig& m = c.model();
  const double h = m.hidden_size(), d = h / m.num_heads(), v = m.vocab_size();
  const double e = m.moe().num_experts(), k = m.moe().top_k(), f = m.moe().expert_ffn_hidden_size();
  const double attention = h * d * (2 * m.num_heads() + 2 * m.num_kv_heads());
  const double per_layer_fixed = attention + h * e + 2 * h;
  const double experts = e * 3 * h * f;
  Sizes s;
  s.total = 2 * v * h + h + m.num_layers() * (per_layer_fixed + experts);
  s.active = 2 * v * h + h + m.num_layers() * (per_layer_fixed + k / e * experts);
  return s;
}

TEST(BenchConfigsTest, MixtralMini) {
  auto c = LoadConfigFile("configs/bench/mixtral_mini.yaml", {});
  ASSERT_OK(c);
  EXPECT_OK(Validate(*c, 1));
  EXPECT_EQ(c->train().device(), "cuda");
  EXPECT_EQ(c->precision().compute_dtype(), "bf16");
  EXPECT_EQ(c->train().seq_len(), 4096);
  EXPECT_EQ(CountMoeLayers(*c), 16);
  const Sizes s = Count(*c);
  EXPECT_NEAR(s.total / 1e9, 2.5, 0.05);
  EXPECT_NEAR(s.active / 1e9, 0.85, 0.06);
}

TEST(BenchConfigsTest, FinegrainedMini) {
  auto c = LoadConfigFile("configs/bench/finegrained_mini.yaml", {});
  ASSERT_OK(c);
  EXPECT_OK(Validate(*c, 1));
  EXPECT_EQ(c->train().device(), "cuda");
  EXPECT_EQ(c->precision().compute_dtype(), "bf16");
  EXPECT_EQ(CountMoeLayers(*c), 12);
  EXPECT_EQ(c->model().moe().num_experts(), 64);
  EXPECT_EQ(c->model().moe().top_k(), 8);
  EXPECT_NEAR(Count(*c).total / 1e9, 2.7, 0.05);
}

}  // namespace
}  // namespace moefold::config
