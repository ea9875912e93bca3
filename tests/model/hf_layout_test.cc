// The fused QKV and gate/up layouts against the Hugging Face tensors they stand for: rows land
// where the attention and SwiGLU code reads them, and import ∘ export is the identity.
#include "core/model/hf_layout.h"

#include <map>

#include "gtest/gtest.h"
#include "ops/gemm.h"
#include "tests/testing/testing.h"

namespace moefold::model {
namespace {

ModelSpec Spec() {
  ModelSpec spec;
  spec.hidden = 8;
  spec.num_heads = 6;
  spec.num_kv_heads = 2;  // r = 3 query heads per KV head
  spec.head_dim = 4;
  return spec;
}

Tensor Iota(const Shape& shape) {
  Tensor t = Tensor::Empty(shape, DType::kF32);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = static_cast<float>(i);
  return t;
}

std::map<std::string, Tensor> ByName(const std::vector<HfTensor>& tensors) {
  std::map<std::string, Tensor> out;
  for (const HfTensor& t : tensors) out[t.name] = t.value;
  return out;
}

TEST(HfLayoutTest, QkvGroupsSplitIntoQueryKeyAndValueHeads) {
  const ModelSpec spec = Spec();
  const int64_t d = spec.head_dim, h = spec.hidden;
  const Tensor fused = Iota({2, 5 * d, h});  // G = 2 groups of (3 query heads, key, value)
  auto hf = ByName(ToHuggingFace("model.layers.1.self_attn.qkv_proj.weight", fused, spec));
  ASSERT_EQ(hf.size(), 3u);
  const Tensor& q = hf.at("model.layers.1.self_attn.q_proj.weight");
  const Tensor& k = hf.at("model.layers.1.self_attn.k_proj.weight");
  const Tensor& v = hf.at("model.layers.1.self_attn.v_proj.weight");
  EXPECT_EQ(q.shape(), Shape({6 * d, h}));
  EXPECT_EQ(k.shape(), Shape({2 * d, h}));
  // Query head 4 = group 1's second head: fused rows (1·5 + 1)·D onwards.
  EXPECT_EQ(q.data<float>()[4 * d * h], fused.data<float>()[(5 + 1) * d * h]);
  // Key head 1 = group 1's block 3; value head 0 = group 0's block 4.
  EXPECT_EQ(k.data<float>()[1 * d * h + 3], fused.data<float>()[(5 + 3) * d * h + 3]);
  EXPECT_EQ(v.data<float>()[7], fused.data<float>()[4 * d * h + 7]);
}

TEST(HfLayoutTest, FusedQkvGemmEqualsTheSeparateProjections) {
  const ModelSpec spec = Spec();
  const int64_t d = spec.head_dim, h = spec.hidden, t = 3;
  const Tensor fused = testing::RandomNormal({2, 5 * d, h}, 1);
  auto hf = ByName(ToHuggingFace("m.self_attn.qkv_proj.weight", fused, spec));
  const Tensor x = testing::RandomNormal({t, h}, 2);
  Tensor y = Tensor::Empty({t, 10 * d}, DType::kF32);
  ops::LinearForward(x, fused.Reshape({10 * d, h}), &y, CpuStream());
  Tensor q = Tensor::Empty({t, 6 * d}, DType::kF32);
  ops::LinearForward(x, hf.at("m.self_attn.q_proj.weight"), &q, CpuStream());
  // Query head 5 (group 1, third head) sits at fused columns (1·5 + 2)·D.
  for (int64_t row = 0; row < t; ++row) {
    for (int64_t j = 0; j < d; ++j) {
      EXPECT_FLOAT_EQ(q.data<float>()[row * 6 * d + 5 * d + j],
                      y.data<float>()[row * 10 * d + 7 * d + j]);
    }
  }
}

TEST(HfLayoutTest, GateUpSplitsPerExpert) {
  const ModelSpec spec = Spec();
  const Tensor dense = Iota({2, 3, 4});
  auto hf = ByName(ToHuggingFace("model.layers.0.mlp.gate_up_proj.weight", dense, spec));
  ASSERT_EQ(hf.size(), 2u);
  EXPECT_EQ(hf.at("model.layers.0.mlp.gate_proj.weight").data<float>()[0], 0.0f);
  EXPECT_EQ(hf.at("model.layers.0.mlp.up_proj.weight").data<float>()[0], 12.0f);

  const Tensor experts = Iota({3, 2, 3, 4});
  hf = ByName(ToHuggingFace("model.layers.0.mlp.experts.gate_up_proj.weight", experts, spec));
  ASSERT_EQ(hf.size(), 6u);
  EXPECT_EQ(hf.at("model.layers.0.mlp.experts.2.up_proj.weight").data<float>()[1], 61.0f);
  EXPECT_EQ(hf.at("model.layers.0.mlp.experts.1.gate_proj.weight").shape(), Shape({3, 4}));

  hf = ByName(ToHuggingFace("model.layers.0.mlp.experts.down_proj.weight", Iota({3, 4, 3}), spec));
  EXPECT_EQ(hf.at("model.layers.0.mlp.experts.1.down_proj.weight").data<float>()[0], 12.0f);
}

TEST(HfLayoutTest, ImportInvertsExport) {
  const ModelSpec spec = Spec();
  const int64_t d = spec.head_dim, h = spec.hidden;
  const std::vector<std::pair<std::string, Shape>> params = {
      {"model.layers.0.self_attn.qkv_proj.weight", {2, 5 * d, h}},
      {"model.layers.0.mlp.gate_up_proj.weight", {2, 6, h}},
      {"model.layers.0.mlp.experts.gate_up_proj.weight", {4, 2, 6, h}},
      {"model.layers.0.mlp.experts.down_proj.weight", {4, h, 6}},
      {"model.norm.weight", {h}}};
  for (const auto& [name, shape] : params) {
    const Tensor value = testing::RandomNormal(shape, 7);
    const auto hf = ByName(ToHuggingFace(name, value, spec));
    auto lookup = [&](const std::string& n) -> absl::StatusOr<Tensor> {
      auto it = hf.find(n);
      if (it == hf.end()) return absl::NotFoundError(n);
      return it->second;
    };
    absl::StatusOr<Tensor> back = FromHuggingFace(name, shape, spec, lookup);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->ToVector(), value.ToVector()) << name;
  }
}

TEST(HfLayoutTest, ImportNamesAMisshapenTensor) {
  const ModelSpec spec = Spec();
  auto lookup = [](const std::string&) -> absl::StatusOr<Tensor> {
    return Tensor::Zeros({3, 3}, DType::kF32);
  };
  absl::StatusOr<Tensor> r =
      FromHuggingFace("model.layers.0.mlp.gate_up_proj.weight", {2, 6, 8}, spec, lookup);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("model.layers.0.mlp.gate_proj.weight"), std::string::npos)
      << r.status();
}

}  // namespace
}  // namespace moefold::model
