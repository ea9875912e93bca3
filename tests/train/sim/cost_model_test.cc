// The simulator's primitives against hand calculations: curve interpolation, a GEMM's time, where a
// group's ranks sit, the bytes and time of ring collectives and all-to-alls, the node-deduplicated
// dispatch's expected destinations, and cluster files (good, unknown, malformed).
#include "core/train/sim/cost_model.h"

#include <cmath>

#include "core/train/sim/cluster.h"
#include "core/train/sim/layer_costs.h"
#include "gtest/gtest.h"
#include "tests/testing/testing.h"

namespace moefold::sim {
namespace {

Curve MakeCurve(std::vector<std::pair<double, double>> points) {
  auto c = Curve::Create(std::move(points));
  MF_CHECK(c.ok()) << c.status();
  return *c;
}

// Round numbers so every expectation below is a hand calculation.
Cluster TestCluster() {
  Cluster c;
  c.name = "test";
  c.gpus_per_node = 8;
  c.bf16_tflops = 1000;
  c.fp8_tflops = 2000;
  c.hbm_gib = 80;
  c.hbm_gbps = 3000;
  c.nvlink_gbps = 400;
  c.nvlink_latency_us = 2;
  c.internode_gbps = 50;
  c.internode_latency_us = 10;
  c.pcie_gbps = 50;
  c.gemm_efficiency = MakeCurve({{256, 0.5}, {1024, 0.8}});
  c.attention_efficiency = 0.5;
  c.memory_efficiency = 0.5;
  c.ring_intra = MakeCurve({{1 << 20, 0.8}});
  c.ring_inter = MakeCurve({{1 << 20, 0.5}});
  c.all_to_all_intra = MakeCurve({{1 << 20, 0.5}});
  c.all_to_all_inter = MakeCurve({{1 << 10, 0.25}, {1 << 20, 0.5}});
  return c;
}

TEST(CurveTest, InterpolatesInLogXAndClamps) {
  const Curve c = MakeCurve({{100, 0.2}, {10000, 0.6}});
  EXPECT_DOUBLE_EQ(c.At(100), 0.2);
  EXPECT_DOUBLE_EQ(c.At(10000), 0.6);
  EXPECT_NEAR(c.At(1000), 0.4, 1e-12);  // half way in log x
  EXPECT_DOUBLE_EQ(c.At(1), 0.2);
  EXPECT_DOUBLE_EQ(c.At(1e9), 0.6);
  EXPECT_FALSE(Curve::Create({}).ok());
  EXPECT_FALSE(Curve::Create({{100, 0.5}, {100, 0.6}}).ok());  // x must increase
  EXPECT_FALSE(Curve::Create({{100, 1.5}}).ok());              // a fraction
}

TEST(CostModelTest, GemmTimeFromTheCurve) {
  const Cluster c = TestCluster();
  // 4096 × 4096 × 512: the smallest dimension 512 sits half way (in log) between 256 and 1024,
  // so 0.65 of the peak: 2·4096·4096·512 / (1000e12 · 0.65) s.
  const double expected = 2.0 * 4096 * 4096 * 512 / (1000e12 * 0.65);
  EXPECT_NEAR(GemmSeconds(c, 4096, 4096, 512, 1000), expected, expected * 1e-12);
  EXPECT_NEAR(GemmSeconds(c, 4096, 512, 4096, 1000), expected, expected * 1e-12);  // any order
  // Large GEMMs at the top of the curve; FP8 at its own peak.
  EXPECT_NEAR(GemmSeconds(c, 8192, 8192, 8192, 2000), 2.0 * 8192 * 8192 * 8192 / (2000e12 * 0.8),
              1e-12);
  EXPECT_EQ(GemmSeconds(c, 0, 10, 10, 1000), 0);
  EXPECT_NEAR(MemoryBoundSeconds(c, 3e9), 0.002, 1e-15);  // 3 GB at 3000 GB/s × 0.5
}

TEST(CostModelTest, GroupSpans) {
  GroupSpan s = SpanOf({0, 1, 2, 3}, 8);
  EXPECT_EQ(s.size, 4);
  EXPECT_EQ(s.nodes, 1);
  EXPECT_FALSE(s.inter_node());
  s = SpanOf({0, 8, 16, 24}, 8);
  EXPECT_EQ(s.nodes, 4);
  EXPECT_EQ(s.per_node, 1);
  s = SpanOf({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, 8);
  EXPECT_EQ(s.nodes, 2);
  EXPECT_EQ(s.per_node, 8);
}

TEST(CostModelTest, AllToAllBytesAndSpan) {
  const Cluster c = TestCluster();
  // 16 ranks on 2 nodes; each sends 16 MiB: 1 MiB per peer, 7 over NVLink, 8 over the network.
  const double mib = 1 << 20;
  const CollectiveCost cost =
      CollectiveSeconds(c, Collective::kAllToAll, 16 * mib, SpanOf({0, 1, 2, 3, 4, 5, 6, 7, 8, 9,
                                                                    10, 11, 12, 13, 14, 15}, 8));
  EXPECT_DOUBLE_EQ(cost.intra_bytes, 7 * mib);
  EXPECT_DOUBLE_EQ(cost.inter_bytes, 8 * mib);
  const double intra = 7 * mib / (400e9 * 0.5), inter = 8 * mib / (50e9 * 0.5);
  EXPECT_NEAR(cost.seconds, std::max(intra, inter) + 10e-6, 1e-12);
  // Inside one node: all NVLink, NVLink latency.
  const CollectiveCost local =
      CollectiveSeconds(c, Collective::kAllToAll, 8 * mib, SpanOf({0, 1, 2, 3, 4, 5, 6, 7}, 8));
  EXPECT_DOUBLE_EQ(local.inter_bytes, 0);
  EXPECT_NEAR(local.seconds, 7 * mib / (400e9 * 0.5) + 2e-6, 1e-12);
  // A group of one sends nothing.
  EXPECT_EQ(CollectiveSeconds(c, Collective::kAllToAll, mib, SpanOf({3}, 8)).seconds, 0);
}

TEST(CostModelTest, RingCollectives) {
  const Cluster c = TestCluster();
  const double bytes = 64.0 * (1 << 20);
  // All-reduce over 4 GPUs of one node: 2·3/4 of the buffer on the wire, 6 latencies.
  const CollectiveCost ar =
      CollectiveSeconds(c, Collective::kAllReduce, bytes, SpanOf({0, 1, 2, 3}, 8));
  EXPECT_NEAR(ar.seconds, 1.5 * bytes / (400e9 * 0.8) + 6 * 2e-6, 1e-12);
  EXPECT_DOUBLE_EQ(ar.intra_bytes, 1.5 * bytes);
  // Reduce-scatter across 4 nodes: 3/4 on the network at 50 GB/s × 0.5, 3 latencies.
  const CollectiveCost rs =
      CollectiveSeconds(c, Collective::kReduceScatter, bytes, SpanOf({0, 8, 16, 24}, 8));
  EXPECT_NEAR(rs.seconds, 0.75 * bytes / (50e9 * 0.5) + 3 * 10e-6, 1e-12);
  EXPECT_DOUBLE_EQ(rs.inter_bytes, 0.75 * bytes);
}

TEST(CostModelTest, NodeDeduplicatedDestinations) {
  // 8 experts on 2 nodes (4 each), top-2: the other node is hit unless both picks are local,
  // C(4,2)/C(8,2) = 6/28.
  EXPECT_NEAR(RemoteNodesPerToken(8, 2, 2), 1 - 6.0 / 28, 1e-12);
  EXPECT_EQ(RemoteNodesPerToken(8, 2, 1), 0);
  // top-1: each remote node holds the expert with probability 1/nodes.
  EXPECT_NEAR(RemoteNodesPerToken(128, 1, 4), 3 * 0.25, 1e-12);
}

constexpr char kGoodCluster[] = R"(
name: t
gpus_per_node: 4
pcie_gbps: 25
dropless_imbalance: 1.1
peak_tflops: {bf16: 100, fp8: 200}
hbm: {gib: 16, gbps: 900}
nvlink: {gbps: 100, latency_us: 2}
internode: {gbps: 12.5, latency_us: 10}
efficiency:
  gemm: [[128, 0.4], [1024, 0.7]]
  attention: 0.4
  memory: 0.7
  ring_intra: [[1024, 0.2], [1048576, 0.8]]
  ring_inter: [[1024, 0.1], [1048576, 0.7]]
  all_to_all_intra: [[1024, 0.1], [1048576, 0.6]]
  all_to_all_inter: [[1024, 0.1], [1048576, 0.5]]
)";

TEST(ClusterTest, ParsesAFile) {
  auto c = ParseCluster(kGoodCluster, "good.yaml");
  ASSERT_OK(c);
  EXPECT_EQ(c->gpus_per_node, 4);
  EXPECT_DOUBLE_EQ(c->fp8_tflops, 200);
  EXPECT_DOUBLE_EQ(c->internode_gbps, 12.5);
  EXPECT_DOUBLE_EQ(c->gemm_efficiency.At(1024), 0.7);
}

TEST(ClusterTest, NamesEveryProblem) {
  std::string bad = kGoodCluster;
  bad.replace(bad.find("gpus_per_node"), 13, "gpus_per_nod");      // unknown + missing
  bad.replace(bad.find("[1024, 0.7]"), 11, "[64, 0.7]");            // x decreases
  auto c = ParseCluster(bad, "bad.yaml");
  ASSERT_FALSE(c.ok());
  const std::string msg(c.status().message());
  EXPECT_NE(msg.find("unknown key 'gpus_per_nod'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing 'gpus_per_node'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("efficiency.gemm"), std::string::npos) << msg;
  EXPECT_FALSE(ParseCluster("[1, 2]", "list.yaml").ok());
  EXPECT_FALSE(ParseCluster("{[1]: 2}", "odd-key.yaml").ok());        // no crash on odd keys
  EXPECT_FALSE(ParseCluster("name: {a: 1}\ngpus_per_node: [8]", "odd.yaml").ok());
  EXPECT_FALSE(ParseCluster("gpus_per_node: : :", "syntax.yaml").ok());
}

TEST(ClusterTest, LoadsTheShippedClustersAndRefusesUnknownOnes) {
  for (const char* name : {"h100_sxm_ib400", "h800_ib400"}) {
    auto c = LoadCluster(name);
    ASSERT_OK(c);
    EXPECT_EQ(c->name, name);
    EXPECT_EQ(c->gpus_per_node, 8);
    EXPECT_NEAR(c->bf16_tflops, 989.5, 1e-9);
  }
  EXPECT_LT(LoadCluster("h800_ib400")->nvlink_gbps, LoadCluster("h100_sxm_ib400")->nvlink_gbps);
  auto unknown = LoadCluster("h100_pcie_nowhere");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(std::string(unknown.status().message()).find("h100_sxm_ib400"), std::string::npos);
}

}  // namespace
}  // namespace moefold::sim
