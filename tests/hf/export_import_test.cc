// Export → import through Hugging Face files: exact in f32, exactly rounded in bf16, for the
// Mixtral, Qwen2-MoE and GLM-4-MoE families; import into TP/EP/ETP slices gives each rank exactly
// its slice; config.json disagreements, missing tensors and unrepresentable models are refused by
// name, and a failed import changes nothing.
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "configs/moefold.pb.h"
#include "core/hf/export.h"
#include "core/hf/import.h"
#include "core/hf/safetensors.h"
#include "core/model/decoder.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/hf/tiny_models.h"
#include "tests/testing/testing.h"

namespace moefold::hf {
namespace {

using ::testing::HasSubstr;

// A group member that only knows its rank: enough to build a layer's slices (no collective runs).
class RankOnly final : public parallel::Communicator {
 public:
  RankOnly(int rank, int size) : rank_(rank), size_(size), ranks_(size) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  const std::vector<int>& world_ranks() const override { return ranks_; }
  using WorkOr = absl::StatusOr<std::unique_ptr<parallel::Work>>;
  WorkOr AllReduce(Tensor*, const parallel::AllReduceOptions&) override { return No(); }
  WorkOr ReduceScatter(const Tensor&, Tensor*, const parallel::ReduceScatterOptions&) override { return No(); }
  WorkOr AllGather(const Tensor&, Tensor*, const parallel::AllGatherOptions&) override { return No(); }
  WorkOr AllGatherV(const Tensor&, const std::vector<int64_t>&, Tensor*,
                    const parallel::AllGatherOptions&) override { return No(); }
  WorkOr ReduceScatterV(const Tensor&, const std::vector<int64_t>&, Tensor*,
                        const parallel::ReduceScatterVOptions&) override { return No(); }
  WorkOr AllToAllV(const Tensor&, const std::vector<int64_t>&, Tensor*, const std::vector<int64_t>&,
                   const parallel::AllToAllOptions&) override { return No(); }
  WorkOr Broadcast(Tensor*, const parallel::BroadcastOptions&) override { return No(); }
  WorkOr Send(const Tensor&, int, const parallel::PointToPointOptions&) override { return No(); }
  WorkOr Recv(Tensor*, int, const parallel::PointToPointOptions&) override { return No(); }
  WorkOr Barrier(const parallel::BarrierOptions&) override { return No(); }

 private:
  static absl::Status No() { return absl::UnimplementedError("RankOnly has no collectives"); }
  int rank_, size_;
  std::string name_ = "fake";
  std::vector<int> ranks_;
};

model::ModelSpec MixtralLike() { return *TinyFamilySpec("mixtral"); }
model::ModelSpec Qwen2MoeLike() { return *TinyFamilySpec("qwen2_moe"); }
model::ModelSpec Glm4MoeLike() { return *TinyFamilySpec("glm4_moe"); }

config::ExperimentConfig Config() {
  config::ExperimentConfig c;
  c.mutable_train()->set_seq_len(32);
  return c;
}

// One rank's parameters of `spec` at tp/ep/etp coordinates, initialised from `seed`.
struct Rank {
  RankOnly tp, ep, etp;
  ParameterSet params;
  std::unique_ptr<model::Decoder> decoder;
  Rank(const model::ModelSpec& spec, uint64_t seed, int tp_rank = 0, int tp_size = 1, int ep_rank = 0,
       int ep_size = 1, int etp_rank = 0, int etp_size = 1)
      : tp(tp_rank, tp_size), ep(ep_rank, ep_size), etp(etp_rank, etp_size) {
    model::ModelParallel mp;
    if (tp_size > 1) mp.tp = &tp;
    if (ep_size > 1) mp.experts.ep = &ep;
    if (etp_size > 1) mp.experts.etp = &etp;
    decoder = std::make_unique<model::Decoder>(spec, mp, &params, model::DecoderStage{});
    params.Initialize(seed);
  }
};

bool SameBits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

class ExportImportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("mf_hf_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Out(const std::string& sub = "hf") const { return (dir_ / sub).string(); }

  std::filesystem::path dir_;
};

void ExpectExactRoundTrip(const model::ModelSpec& spec, const std::string& family, const std::string& dir) {
  Rank full(spec, 11);
  ExportOptions options;
  options.family = family;
  ASSERT_OK(ExportHuggingFace(full.params, spec, Config(), dir, options));
  Rank back(spec, 99);
  ASSERT_OK(ImportHuggingFace(dir, spec, Config(), &back.params));
  for (size_t i = 0; i < full.params.params().size(); ++i) {
    EXPECT_TRUE(SameBits(back.params.params()[i]->value, full.params.params()[i]->value))
        << full.params.params()[i]->name;
  }
  // config.json names the family; its files hold exactly the family's tensors.
  std::ifstream in(dir + "/config.json");
  const nlohmann::json cfg = nlohmann::json::parse(in);
  EXPECT_EQ(cfg["model_type"], family);
  absl::StatusOr<SafetensorsDir> files = SafetensorsDir::Open(dir);
  ASSERT_OK(files);
  std::vector<std::string> expected;
  for (const auto& [name, shape] : ExpectedTensors(spec, *ParseFamily(family))) expected.push_back(name);
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(files->Names(), expected);
}

TEST_F(ExportImportTest, MixtralRoundTripIsBitExact) {
  ExpectExactRoundTrip(MixtralLike(), "mixtral", Out());
  absl::StatusOr<SafetensorsDir> files = SafetensorsDir::Open(Out());
  ASSERT_OK(files);
  EXPECT_TRUE(files->Contains("model.layers.1.block_sparse_moe.experts.3.w2.weight"));
  EXPECT_TRUE(files->Contains("model.layers.0.block_sparse_moe.gate.weight"));
  EXPECT_TRUE(files->Contains("lm_head.weight"));
}

TEST_F(ExportImportTest, Qwen2MoeRoundTripIsBitExact) {
  ExpectExactRoundTrip(Qwen2MoeLike(), "qwen2_moe", Out());
  absl::StatusOr<SafetensorsDir> files = SafetensorsDir::Open(Out());
  ASSERT_OK(files);
  EXPECT_TRUE(files->Contains("model.layers.0.mlp.gate_proj.weight"));  // dense layer 0
  EXPECT_TRUE(files->Contains("model.layers.1.mlp.experts.2.up_proj.weight"));
  EXPECT_TRUE(files->Contains("model.layers.1.mlp.shared_expert_gate.weight"));
  EXPECT_FALSE(files->Contains("lm_head.weight"));  // tied
}

TEST_F(ExportImportTest, Glm4MoeRoundTripIsBitExact) {
  ExpectExactRoundTrip(Glm4MoeLike(), "glm4_moe", Out());
  absl::StatusOr<SafetensorsDir> files = SafetensorsDir::Open(Out());
  ASSERT_OK(files);
  EXPECT_TRUE(files->Contains("model.layers.2.mlp.shared_experts.down_proj.weight"));
  EXPECT_TRUE(files->Contains("model.layers.1.mlp.gate.e_score_correction_bias"));
}

TEST_F(ExportImportTest, AutoPicksTheFamilyThatFits) {
  EXPECT_EQ(*ChooseFamily(MixtralLike(), "auto"), Family::kMixtral);
  EXPECT_EQ(*ChooseFamily(Qwen2MoeLike(), "auto"), Family::kQwen2Moe);
  EXPECT_EQ(*ChooseFamily(Glm4MoeLike(), "auto"), Family::kGlm4Moe);
}

TEST_F(ExportImportTest, Bf16ExportIsTheRoundedMasterWeights) {
  const model::ModelSpec spec = MixtralLike();
  Rank full(spec, 12);
  ExportOptions options;
  options.dtype = DType::kBF16;
  ASSERT_OK(ExportHuggingFace(full.params, spec, Config(), Out(), options));
  absl::StatusOr<SafetensorsDir> files = SafetensorsDir::Open(Out());
  ASSERT_OK(files);
  absl::StatusOr<Tensor> norm = files->Read("model.norm.weight");
  ASSERT_OK(norm);
  EXPECT_EQ(norm->dtype(), DType::kBF16);
  Rank back(spec, 98);
  ASSERT_OK(ImportHuggingFace(Out(), spec, Config(), &back.params));
  for (size_t i = 0; i < full.params.params().size(); ++i) {
    const Tensor rounded = full.params.params()[i]->value.To(DType::kBF16).To(DType::kF32);
    EXPECT_TRUE(SameBits(back.params.params()[i]->value, rounded)) << full.params.params()[i]->name;
  }
}

TEST_F(ExportImportTest, ShardedExportWritesAnIndexAndImportsTheSame) {
  const model::ModelSpec spec = Qwen2MoeLike();
  Rank full(spec, 13);
  ExportOptions options;
  options.max_shard_bytes = 8192;
  ASSERT_OK(ExportHuggingFace(full.params, spec, Config(), Out(), options));
  EXPECT_TRUE(std::filesystem::exists(Out() + "/model.safetensors.index.json"));
  EXPECT_FALSE(std::filesystem::exists(Out() + "/model.safetensors"));
  std::ifstream in(Out() + "/model.safetensors.index.json");
  const nlohmann::json index = nlohmann::json::parse(in);
  int64_t bytes = 0;
  for (const auto& p : full.params.params()) bytes += p->value.nbytes();
  bytes += spec.hidden * 4;  // the shared expert gate of the MoE layer (1, H)
  EXPECT_EQ(index["metadata"]["total_size"].get<int64_t>(), bytes);
  std::set<std::string> files;
  for (const auto& [name, file] : index["weight_map"].items()) files.insert(file.get<std::string>());
  EXPECT_GT(files.size(), 2u);
  Rank back(spec, 97);
  ASSERT_OK(ImportHuggingFace(Out(), spec, Config(), &back.params));
  for (size_t i = 0; i < full.params.params().size(); ++i) {
    EXPECT_TRUE(SameBits(back.params.params()[i]->value, full.params.params()[i]->value));
  }
}

// Each rank of a TP 2 × EP 2 (and ETP 2) layout imports exactly its slice: the values that the
// same layout's own initialisation gives (core/parameter.h: a shard is its slice of the whole).
TEST_F(ExportImportTest, ImportIntoTpEpEtpSlicesGivesEachRankItsSlice) {
  for (const model::ModelSpec& spec : {MixtralLike(), Qwen2MoeLike(), Glm4MoeLike()}) {
    std::filesystem::remove_all(Out());
    Rank full(spec, 14);
    ASSERT_OK(ExportHuggingFace(full.params, spec, Config(), Out(), ExportOptions{}));
    for (int etp : {1, 2}) {
      for (int tp_rank = 0; tp_rank < 2; ++tp_rank) {
        for (int ep_rank = 0; ep_rank < 2; ++ep_rank) {
          const int etp_rank = etp == 2 ? tp_rank : 0;
          Rank sliced(spec, 14, tp_rank, 2, ep_rank, 2, etp_rank, etp);
          Rank imported(spec, 96, tp_rank, 2, ep_rank, 2, etp_rank, etp);
          ASSERT_OK(ImportHuggingFace(Out(), spec, Config(), &imported.params));
          ASSERT_EQ(sliced.params.params().size(), imported.params.params().size());
          for (size_t i = 0; i < sliced.params.params().size(); ++i) {
            EXPECT_TRUE(SameBits(imported.params.params()[i]->value, sliced.params.params()[i]->value))
                << sliced.params.params()[i]->name << " tp " << tp_rank << " ep " << ep_rank
                << " etp " << etp;
          }
        }
      }
    }
  }
}

TEST_F(ExportImportTest, ConfigMismatchNamesBothValues) {
  const model::ModelSpec spec = MixtralLike();
  Rank full(spec, 15);
  ASSERT_OK(ExportHuggingFace(full.params, spec, Config(), Out(), ExportOptions{}));
  model::ModelSpec other = spec;
  other.moe.num_experts = 8;
  other.norm_eps = 1e-6f;
  Rank target(other, 1);
  const std::vector<float> before = target.params.params()[0]->value.ToVector();
  const absl::Status s = ImportHuggingFace(Out(), other, Config(), &target.params);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  const std::string m(s.message());
  EXPECT_THAT(m, HasSubstr("config.json num_local_experts 4 != model.moe.num_experts 8"));
  EXPECT_THAT(m, HasSubstr("config.json rms_norm_eps 1e-05 != model.norm_eps 1e-06"));
  EXPECT_EQ(target.params.params()[0]->value.ToVector(), before);
  // A sequence longer than the model's positions, and another family's routing.
  config::ExperimentConfig longer = Config();
  longer.mutable_train()->set_seq_len(64);
  EXPECT_THAT(std::string(ImportHuggingFace(Out(), spec, longer, &target.params).message()),
              HasSubstr("max_position_embeddings 32 < train.seq_len 64"));
  model::ModelSpec sigmoid = spec;
  sigmoid.moe.topk.score = ops::ScoreFunction::kSigmoid;
  EXPECT_THAT(std::string(ImportHuggingFace(Out(), sigmoid, Config(), &target.params).message()),
              HasSubstr("Mixtral routes by softmax"));
}

TEST_F(ExportImportTest, MissingTensorNamesItAndLoadsNothing) {
  const model::ModelSpec spec = MixtralLike();
  Rank full(spec, 16);
  ASSERT_OK(ExportHuggingFace(full.params, spec, Config(), Out(), ExportOptions{}));
  // Rewrite model.safetensors without one expert's down projection.
  const std::string path = Out() + "/model.safetensors";
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(path);
  ASSERT_OK(file);
  const std::string gone = "model.layers.1.block_sparse_moe.experts.3.w2.weight";
  std::vector<std::pair<std::string, Tensor>> kept;
  for (const auto& [name, e] : file->entries()) {
    if (name != gone) kept.push_back({name, *file->Read(name)});
  }
  ASSERT_OK(WriteSafetensors(path, kept, {{"format", "pt"}}));
  Rank target(spec, 2);
  std::vector<std::vector<float>> before;
  for (const auto& p : target.params.params()) before.push_back(p->value.ToVector());
  const absl::Status s = ImportHuggingFace(Out(), spec, Config(), &target.params);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), HasSubstr("no tensor '" + gone + "' in model.safetensors"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("model.layers.1.mlp.experts.down_proj.weight expert 3"));
  for (size_t i = 0; i < before.size(); ++i) {
    EXPECT_EQ(target.params.params()[i]->value.ToVector(), before[i]) << "partial load";
  }
  // A rank holding experts 0..1 of EP 2 never reads expert 3: its import succeeds.
  Rank first_half(spec, 3, 0, 1, 0, 2);
  EXPECT_OK(ImportHuggingFace(Out(), spec, Config(), &first_half.params));
}

TEST_F(ExportImportTest, WrongShapeAndDTypeNameFileAndTensor) {
  const model::ModelSpec spec = MixtralLike();
  Rank full(spec, 17);
  ASSERT_OK(ExportHuggingFace(full.params, spec, Config(), Out(), ExportOptions{}));
  const std::string path = Out() + "/model.safetensors";
  auto rewrite = [&](const std::string& name, const Tensor& value) {
    absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(path);
    ASSERT_OK(file);
    std::vector<std::pair<std::string, Tensor>> all;
    for (const auto& [n, e] : file->entries()) all.push_back({n, n == name ? value : *file->Read(n)});
    if (file->Find(name) == nullptr) all.push_back({name, value});
    ASSERT_OK(WriteSafetensors(path, all, {{"format", "pt"}}));
  };
  rewrite("model.norm.weight", Tensor::Zeros({spec.hidden + 1}, DType::kF32));
  Rank target(spec, 4);
  std::string m(ImportHuggingFace(Out(), spec, Config(), &target.params).message());
  EXPECT_THAT(m, HasSubstr(path + ": tensor 'model.norm.weight' has shape [17], the experiment needs [16]"));
  rewrite("model.norm.weight", Tensor::Zeros({spec.hidden}, DType::kI32));
  m = std::string(ImportHuggingFace(Out(), spec, Config(), &target.params).message());
  EXPECT_THAT(m, HasSubstr(path + ": tensor 'model.norm.weight' is I32"));
  rewrite("model.norm.weight", Tensor::Zeros({spec.hidden}, DType::kF32));
  rewrite("model.layers.0.self_attn.q_proj.bias", Tensor::Zeros({16}, DType::kF32));
  m = std::string(ImportHuggingFace(Out(), spec, Config(), &target.params).message());
  EXPECT_THAT(m, HasSubstr("tensor 'model.layers.0.self_attn.q_proj.bias' has no place"));
}

TEST_F(ExportImportTest, UnrepresentableModelsAreRefusedByName) {
  model::ModelSpec spec = MixtralLike();
  spec.moe.num_shared_experts = 1;  // softmax routing with an ungated shared expert: no family
  const absl::Status s = ChooseFamily(spec, "auto").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("mixtral: model.moe.num_shared_experts"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("qwen2_moe: model.moe.num_shared_experts"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("glm4_moe: model.moe.score_function"));
  spec = Glm4MoeLike();
  spec.moe.expert_bias = true;
  spec.moe.topk.num_groups = 2;
  spec.moe.topk.group_topk = 2;  // top_k 2 / 2 groups = 1 per group: GLM scores groups by 2
  const std::string m(ChooseFamily(spec, "glm4_moe").status().message());
  EXPECT_THAT(m, HasSubstr("model.moe.expert_bias"));
  EXPECT_THAT(m, HasSubstr("model.moe.num_groups"));
  EXPECT_THAT(std::string(ChooseFamily(Qwen2MoeLike(), "mixtral").status().message()),
              HasSubstr("dense layers [0]"));
  // A pipeline stage (no head) cannot be exported: the parameters lack tensors.
  const model::ModelSpec mixtral = MixtralLike();
  ParameterSet stage;
  model::Decoder decoder(mixtral, model::ModelParallel{}, &stage,
                         model::DecoderStage{.first_layer = 0, .last_layer = 1, .embedding = true, .head = false});
  EXPECT_THAT(std::string(ExportHuggingFace(stage, mixtral, Config(), Out(), ExportOptions{}).message()),
              HasSubstr("lack model.layers.1.input_layernorm.weight"));
}

TEST_F(ExportImportTest, FamilyNaming) {
  EXPECT_EQ(ToFamilyName(Family::kMixtral, "model.layers.3.mlp.experts.5.gate_proj.weight"),
            "model.layers.3.block_sparse_moe.experts.5.w1.weight");
  EXPECT_EQ(ToFamilyName(Family::kMixtral, "model.layers.3.mlp.experts.5.up_proj.weight"),
            "model.layers.3.block_sparse_moe.experts.5.w3.weight");
  EXPECT_EQ(ToFamilyName(Family::kMixtral, "model.layers.3.mlp.experts.5.down_proj.weight"),
            "model.layers.3.block_sparse_moe.experts.5.w2.weight");
  EXPECT_EQ(ToFamilyName(Family::kMixtral, "model.layers.0.mlp.gate.weight"),
            "model.layers.0.block_sparse_moe.gate.weight");
  EXPECT_EQ(ToFamilyName(Family::kQwen2Moe, "model.layers.0.mlp.gate.weight"),
            "model.layers.0.mlp.gate.weight");
}

}  // namespace
}  // namespace moefold::hf
