// The step prediction's pieces against hand calculations and against the rest of moefold: the
// FLOPs of every layer add up to the trainer's own count (core/train/flops.h), the parameters per
// stage to the memory plan's, the bubble follows each schedule, the step is the sum of its parts,
// the all-to-all moves routed tokens × top-k × hidden bf16 values, and every knob moves the
// prediction the way it must.
#include "core/train/sim/predict.h"

#include <cmath>

#include "configs/config_loader.h"
#include "configs/validate.h"
#include "core/train/flops.h"
#include "core/train/memory_plan.h"
#include "gtest/gtest.h"
#include "parallel/pipeline_schedule.h"
#include "tests/testing/testing.h"

namespace moefold::sim {
namespace {

config::ExperimentConfig Config(std::vector<std::string> overrides) {
  auto c = config::LoadConfigFile("configs/tiny_moe.yaml", overrides);
  MF_CHECK(c.ok()) << c.status();
  return *c;
}

Cluster H100() {
  auto c = LoadCluster("h100_sxm_ib400");
  MF_CHECK(c.ok()) << c.status();
  return *c;
}

Prediction PredictOk(const config::ExperimentConfig& c, int world,
                     const PredictOptions& options = {}) {
  auto p = Predict(c, world, H100(), options);
  MF_CHECK(p.ok()) << p.status();
  return *p;
}

// Σ over layers (+ head) of one rank's FLOPs × the ranks sharing its tokens (tp · cp) equals the
// trainer's count for the micro-batch, family by family.
void ExpectFlopsMatchTrainer(const config::ExperimentConfig& c, int world) {
  const Prediction p = PredictOk(c, world);
  const SimContext& ctx = p.ctx;
  std::map<std::string, double> ours;
  auto add = [&](const LayerCost& layer, double times) {
    for (const OpTime& op : layer.ops) ours[op.family] += op.flops * times;
  };
  for (bool moe : ctx.spec.moe_layer) add(CostLayer(ctx, H100(), moe), 1);
  add(CostHead(ctx, H100()), 1);
  const double tokens = static_cast<double>(ctx.micro) * ctx.seq;
  for (const auto& [family, per_token] :
       train::TrainingFlopsPerTokenByFamily(ctx.spec, ctx.seq)) {
    EXPECT_NEAR(ours[family] * ctx.tp * ctx.cp, per_token * tokens, 1e-9 * per_token * tokens)
        << family << " " << p.layout;
  }
}

TEST(PredictTest, FlopsPerLayerEqualTheTrainersCount) {
  ExpectFlopsMatchTrainer(Config({}), 1);
  ExpectFlopsMatchTrainer(Config({"parallel.tp=2", "parallel.ep=2", "parallel.etp=2"}), 4);
  ExpectFlopsMatchTrainer(Config({"parallel.cp=2", "parallel.sequence_parallel=true",
                                  "parallel.tp=2", "parallel.ep=4"}), 8);
  ExpectFlopsMatchTrainer(Config({"model.moe.num_shared_experts=1", "parallel.tp=2"}), 2);
}

TEST(PredictTest, StageParametersEqualTheMemoryPlan) {
  for (const auto& [overrides, world] :
       std::vector<std::pair<std::vector<std::string>, int>>{
           {{}, 1},
           {{"parallel.pp=2", "parallel.tp=2", "parallel.ep=2"}, 8},
           {{"parallel.pp=2", "parallel.virtual_stages=2", "parallel.ep=4",
             "train.global_batch_size=16", "train.micro_batch_size=1"}, 8},
           {{"model.tie_embeddings=true", "parallel.pp=4", "parallel.etp=2",
             "model.moe.num_shared_experts=1"}, 8}}) {
    const config::ExperimentConfig c = Config(overrides);
    const Prediction p = PredictOk(c, world);
    const auto& par = c.parallel();
    auto mapping = parallel::Mapping::Create(
        world, {.tp = par.tp(), .cp = par.cp(), .dp = par.dp(), .pp = par.pp(), .etp = par.etp(),
                .ep = par.ep(), .order = par.order()});
    ASSERT_OK(mapping);
    for (const StageTime& s : p.stages) {
      int rank = 0;
      while (mapping->attention_coords(rank).pp != s.stage) ++rank;
      auto m = train::EstimateMemory(c, *mapping, rank);
      ASSERT_OK(m);
      EXPECT_EQ(s.dense_parameters + s.expert_parameters, m->parameters)
          << p.layout << " stage " << s.stage;
    }
  }
}

TEST(PredictTest, BubbleOfEachSchedule) {
  // pp 4, 8 micro-batches per pipeline (global 16 = micro 1 × dp 2 × 8).
  const std::vector<std::string> base = {"parallel.pp=4", "train.micro_batch_size=1",
                                         "train.global_batch_size=16"};
  for (const char* schedule : {"1f1b", "afab", "interleaved"}) {
    std::vector<std::string> o = base;
    o.push_back(absl::StrCat("parallel.schedule=", schedule));
    const int chunks = std::string(schedule) == "interleaved" ? 2 : 1;
    o.push_back(absl::StrCat("parallel.virtual_stages=", chunks));
    if (chunks > 1) {  // 4 layers over 8 virtual stages do not split: use 8 layers
      o.push_back("model.num_layers=8");
    }
    const Prediction p = PredictOk(Config(o), 8);
    double slowest = 0;
    for (const StageTime& s : p.stages) slowest = std::max(slowest, s.Total());
    EXPECT_EQ(p.ctx.num_micro, 8);
    EXPECT_NEAR(p.pipeline_seconds, 8 * slowest, 1e-15);
    EXPECT_NEAR(p.bubble_seconds, 3 * slowest / chunks, 1e-15) << schedule;
    // The same fraction the memory plan reports: (pp − 1) / (chunks · m + pp − 1).
    EXPECT_NEAR(p.bubble_seconds / (p.bubble_seconds + p.pipeline_seconds),
                parallel::BubbleFraction(4, 8, chunks), 1e-12);
  }
  EXPECT_EQ(PredictOk(Config({}), 1).bubble_seconds, 0);  // no pipeline, no bubble
}

TEST(PredictTest, StepIsTheSumOfItsParts) {
  const config::ExperimentConfig c =
      Config({"parallel.tp=2", "parallel.pp=2", "parallel.ep=2", "parallel.zero1=true"});
  const Prediction p = PredictOk(c, 8);
  EXPECT_NEAR(p.step_seconds, p.pipeline_seconds + p.bubble_seconds + p.dp_exposed_seconds +
                                  p.optimizer_seconds + p.data_seconds, 1e-15);
  EXPECT_NEAR(p.tokens_per_s, 8.0 * 128 / p.step_seconds, 1e-6);
  EXPECT_NEAR(p.flops_per_token, train::TrainingFlopsPerToken(p.ctx.spec, 128), 1e-6);
  EXPECT_NEAR(p.model_tflops_per_gpu, p.flops_per_token * p.tokens_per_s / 8 / 1e12, 1e-9);
  EXPECT_NEAR(p.mfu, p.model_tflops_per_gpu / 989.5, 1e-12);
  EXPECT_LE(p.dp_exposed_seconds, p.dp_seconds);
  // The memory reported is the memory plan's, for the stage that needs most.
  auto mapping = parallel::Mapping::Create(8, {.tp = 2, .pp = 2, .etp = 1, .ep = 2});
  ASSERT_OK(mapping);
  int64_t most = 0;
  for (int r = 0; r < 8; ++r) most = std::max(most, train::EstimateMemory(c, *mapping, r)->total_bytes);
  EXPECT_EQ(p.memory.total_bytes, most);
  EXPECT_TRUE(p.fits);
}

TEST(PredictTest, AllToAllMovesRoutedTokensTimesTopK) {
  // ep 4 with tp 2 (SP): each rank routes 4·128 / 2 = 256 tokens × top-2 × hidden 128 × 2 bytes.
  const std::vector<std::string> o = {"parallel.tp=2", "parallel.sequence_parallel=true",
                                      "parallel.ep=4", "train.global_batch_size=16",
                                      "model.moe.force_balanced_routing=true"};
  const Prediction p = PredictOk(Config(o), 8);
  const LayerCost& moe = p.layer_kinds[1];
  ASSERT_EQ(moe.kind, "moe");
  int found = 0;
  for (const CommTime& c : moe.comms) {
    if (c.group != "ep") continue;
    ++found;
    EXPECT_EQ(c.kind, Collective::kAllToAll);
    EXPECT_DOUBLE_EQ(c.bytes, 256.0 * 2 * 128 * 2);
    EXPECT_EQ(c.count, 2);       // forward and backward
    EXPECT_FALSE(c.inter_node);  // ranks 0-7 share a node
  }
  EXPECT_EQ(found, 2);  // dispatch and combine
  // Dropless routing: the busiest rank's rows, the cluster's imbalance (1.2) over the mean.
  std::vector<std::string> dropless = o;
  dropless.back() = "model.moe.force_balanced_routing=false";
  EXPECT_DOUBLE_EQ(PredictOk(Config(dropless), 8).layer_kinds[1].comms.back().bytes,
                   1.2 * 256 * 2 * 128 * 2);
  // The same EP group spread over nodes (a cluster of 2-GPU nodes) crosses the network.
  Cluster small = H100();
  small.gpus_per_node = 2;
  auto spread = Predict(Config(o), 8, small);
  ASSERT_OK(spread);
  EXPECT_TRUE(spread->layer_kinds[1].comms.back().inter_node);
  EXPECT_GT(spread->step_seconds, p.step_seconds);
}

// Bytes of the first comm of `layer` named `name` (0 when absent).
double CommBytes(const LayerCost& layer, const std::string& name) {
  for (const CommTime& c : layer.comms) {
    if (c.name == name) return c.bytes;
  }
  return 0;
}

TEST(PredictTest, Fp8ExchangesMoveCodes) {
  // tp 2 with SP, ep 4, balanced: each rank holds 4·128 / 2 = 256 tokens of hidden 128.
  const std::vector<std::string> o = {"parallel.tp=2", "parallel.sequence_parallel=true",
                                      "parallel.ep=4", "train.global_batch_size=16",
                                      "model.moe.force_balanced_routing=true"};
  auto with = [&](std::vector<std::string> more) {
    more.insert(more.begin(), o.begin(), o.end());
    return PredictOk(Config(more), 8).layer_kinds[1];
  };
  const double gather = 512.0 * 128;  // the gathered (T, H) elements of one block
  // bf16: 2 bytes per element; the per-tensor recipes gather 1-byte codes; blockwise gathers
  // bf16 (its weight gradient's tiles run along the tokens, across ranks); off: bf16 again.
  EXPECT_DOUBLE_EQ(CommBytes(with({}), "block inputs (SP gather)"), 2 * gather);
  EXPECT_DOUBLE_EQ(CommBytes(with({"precision.fp8_recipe=delayed"}), "block inputs (SP gather)"),
                   gather);
  EXPECT_DOUBLE_EQ(CommBytes(with({"precision.fp8_recipe=current"}), "block inputs (SP gather)"),
                   gather);
  // Blockwise needs 128-wide projections per TP rank: a 256-wide model, compared with itself.
  const std::vector<std::string> wide = {
      "model.hidden_size=256",       "model.num_heads=8",
      "model.num_kv_heads=8",        "model.head_dim=32",
      "model.ffn_hidden_size=256",   "model.moe.expert_ffn_hidden_size=128",
      "model.moe.shared_expert_ffn_hidden_size=256"};
  std::vector<std::string> blockwise = wide;
  blockwise.push_back("precision.fp8_recipe=blockwise");
  EXPECT_DOUBLE_EQ(CommBytes(with(blockwise), "block inputs (SP gather)"),
                   CommBytes(with(wide), "block inputs (SP gather)"));
  EXPECT_DOUBLE_EQ(CommBytes(with(wide), "block inputs (SP gather)"), 2 * 2 * gather);
  EXPECT_DOUBLE_EQ(CommBytes(with({"precision.fp8_recipe=delayed", "precision.fp8_gather=false"}),
                             "block inputs (SP gather)"),
                   2 * gather);
  // The forward dispatch and the combine's backward move codes (and current's row scales, one
  // f32 per 128 elements here); the dispatch's backward and the combine the activation dtype.
  const double pairs = 256.0 * 2 * 128;
  const LayerCost current = with({"precision.fp8_recipe=current"});
  EXPECT_DOUBLE_EQ(CommBytes(current, "dispatch (FP8 codes)"), pairs * (1 + 4.0 / 128));
  EXPECT_DOUBLE_EQ(CommBytes(current, "combine backward (FP8 codes)"), pairs * (1 + 4.0 / 128));
  EXPECT_DOUBLE_EQ(CommBytes(current, "dispatch backward"), pairs * 2);
  EXPECT_DOUBLE_EQ(CommBytes(current, "combine"), pairs * 2);
  EXPECT_DOUBLE_EQ(
      CommBytes(with({"precision.fp8_recipe=delayed"}), "dispatch (FP8 codes)"), pairs);
  EXPECT_DOUBLE_EQ(CommBytes(with({"precision.fp8_recipe=delayed", "precision.fp8_dispatch=false"}),
                             "dispatch"),
                   pairs * 2);
  auto step = [&](std::vector<std::string> more) {
    more.insert(more.begin(), o.begin(), o.end());
    return PredictOk(Config(more), 8).step_seconds;
  };
  EXPECT_LT(step({"precision.fp8_recipe=delayed"}),
            step({"precision.fp8_recipe=delayed", "precision.fp8_gather=false",
                  "precision.fp8_dispatch=false"}));
}

TEST(PredictTest, KnobsMoveThePrediction) {
  const std::vector<std::string> base = {"parallel.ep=4", "train.global_batch_size=8",
                                         "train.micro_batch_size=2", "train.seq_len=4096",
                                         "model.hidden_size=1024", "model.num_heads=8",
                                         "model.num_kv_heads=8", "model.moe.expert_ffn_hidden_size=2048",
                                         "precision.compute_dtype=bf16"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> o = base;
    o.insert(o.end(), extra.begin(), extra.end());
    return PredictOk(Config(o), 4);
  };
  const Prediction keep = with({});
  const Prediction recompute = with({"memory.activation_policy=recompute"});
  EXPECT_GT(recompute.step_seconds, keep.step_seconds);
  EXPECT_EQ(recompute.flops_per_token, keep.flops_per_token);  // recomputation not counted
  EXPECT_LT(with({"precision.fp8_recipe=current"}).step_seconds, keep.step_seconds);
  EXPECT_GT(with({"precision.compute_dtype=f32"}).step_seconds, keep.step_seconds);
  // Padding every expert to capacity 2 doubles the expert rows.
  const Prediction padded = with({"model.moe.capacity_factor=2", "model.moe.pad_to_capacity=true"});
  EXPECT_DOUBLE_EQ(padded.ctx.expert_load, 2);
  EXPECT_GT(padded.step_seconds, keep.step_seconds);
  EXPECT_EQ(with({"model.moe.force_balanced_routing=true"}).ctx.expert_load, 1);
  EXPECT_EQ(keep.ctx.routing, "dropless");
  // Pipelining the dispatch over expert chunks hides part of the exchange.
  EXPECT_LT(with({"model.moe.dispatch_chunks=2"}).layer_kinds[1].Exposed(),
            with({"model.moe.dispatch_chunks=1"}).layer_kinds[1].Exposed());
  // EF21 with int8 moves about a quarter of the gradient bytes.
  const Prediction ef = with({"compression.method=ef21", "compression.compressor=int8",
                              "parallel.ep=1"});
  const Prediction plain = with({"parallel.ep=1"});
  EXPECT_LT(ef.step_comms[0].bytes, 0.3 * plain.step_comms[0].bytes);
  // Swapping everything over a slow host link costs exposed copies.
  Cluster slow = H100();
  slow.pcie_gbps = 0.5;
  std::vector<std::string> o = base;
  o.push_back("memory.activation_policy=swap");
  o.push_back("memory.swap_fraction=1");
  auto swapped = Predict(Config(o), 4, slow);
  ASSERT_OK(swapped);
  EXPECT_GT(swapped->step_seconds, keep.step_seconds);
}

TEST(PredictTest, RefusesLayoutsThatDoNotDivide) {
  auto p = Predict(Config({"parallel.tp=2", "parallel.pp=4"}), 6, H100());
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string msg(p.status().message());
  EXPECT_NE(msg.find("world 6 % (tp 2 × cp 1 × pp 4 = 8) = 6"), std::string::npos) << msg;
  auto bad = Predict(Config({}), 1, H100(), {.dispatcher = "magic"});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("magic"), std::string::npos);
}

TEST(PredictTest, TextAndJsonNameEveryPart) {
  const Prediction p = PredictOk(Config({"parallel.tp=2", "parallel.ep=2", "parallel.pp=2",
                                         "parallel.sequence_parallel=true"}), 8);
  const std::string text = FormatPrediction(p);
  for (const char* part : {"model TFLOP/s per GPU", "MFU", "bubble", "optimizer", "expert_gemm",
                           "all_to_all", "intra-node", "exposed", "memory per rank"}) {
    EXPECT_NE(text.find(part), std::string::npos) << part << "\n" << text;
  }
  const std::string json = PredictionJson(p).Dump();
  for (const char* key : {"\"step_seconds\"", "\"mfu\"", "\"layers\"", "\"exposed_seconds\"",
                          "\"memory\"", "\"bubble_seconds\""}) {
    EXPECT_NE(json.find(key), std::string::npos) << key;
  }
}

}  // namespace
}  // namespace moefold::sim
