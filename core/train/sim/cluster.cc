// Cluster descriptions: YAML (yaml-cpp) → Cluster, every problem reported at once.
#include "core/train/sim/cluster.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/file_io.h"
#include "core/status.h"
#include "yaml-cpp/yaml.h"

#ifndef MOEFOLD_SOURCE_DIR
#define MOEFOLD_SOURCE_DIR "."
#endif

namespace moefold::sim {

absl::StatusOr<Curve> Curve::Create(std::vector<std::pair<double, double>> points) {
  if (points.empty()) return absl::InvalidArgumentError("a curve needs at least one point");
  for (size_t i = 0; i < points.size(); ++i) {
    const auto [x, y] = points[i];
    if (!(x > 0)) return absl::InvalidArgumentError(absl::StrCat("curve point ", i, ": x ", x, " must be > 0"));
    if (!(y > 0 && y <= 1)) {
      return absl::InvalidArgumentError(absl::StrCat("curve point ", i, ": y ", y, " must be in (0, 1]"));
    }
    if (i > 0 && !(x > points[i - 1].first)) {
      return absl::InvalidArgumentError(absl::StrCat("curve point ", i, ": x ", x,
                                                     " does not increase (previous ",
                                                     points[i - 1].first, ")"));
    }
  }
  Curve c;
  c.points_ = std::move(points);
  return c;
}

double Curve::At(double x) const {
  if (points_.empty()) return 1.0;
  if (!(x > points_.front().first)) return points_.front().second;
  if (x >= points_.back().first) return points_.back().second;
  size_t i = 1;
  while (points_[i].first < x) ++i;
  const auto [x0, y0] = points_[i - 1];
  const auto [x1, y1] = points_[i];
  const double t = std::log(x / x0) / std::log(x1 / x0);
  return y0 + t * (y1 - y0);
}

namespace {

// Reads fields of one mapping, remembering what was asked for so unknown keys can be reported.
class Section {
 public:
  Section(const YAML::Node& node, std::string path, std::vector<std::string>* problems)
      : node_(node), path_(std::move(path)), problems_(problems) {
    if (node_ && !node_.IsMap()) problems_->push_back(absl::StrCat(path_, " must be a mapping"));
  }
  ~Section() {
    if (!node_ || !node_.IsMap()) return;
    for (const auto& kv : node_) {
      if (!kv.first.IsScalar()) {
        problems_->push_back(absl::StrCat(path_.empty() ? "top level" : path_,
                                          ": a key that is not a plain name (line ",
                                          kv.first.Mark().line + 1, ")"));
        continue;
      }
      const std::string& key = kv.first.Scalar();
      if (!known_.count(key)) {
        problems_->push_back(absl::StrCat("unknown key '", Key(key), "' (line ",
                                          kv.first.Mark().line + 1, ")"));
      }
    }
  }
  std::string Key(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }
  YAML::Node Child(const std::string& key) {
    known_.insert(key);
    return node_ && node_.IsMap() ? node_[key] : YAML::Node();
  }
  double Number(const std::string& key, bool positive = true) {
    YAML::Node n = Child(key);
    if (!n) {
      problems_->push_back(absl::StrCat("missing '", Key(key), "'"));
      return 0;
    }
    try {
      const double v = n.as<double>();
      if (positive && !(v > 0)) problems_->push_back(absl::StrCat(Key(key), " = ", v, " must be > 0"));
      return v;
    } catch (const YAML::Exception&) {
      problems_->push_back(absl::StrCat(Key(key), " is not a number (line ", n.Mark().line + 1, ")"));
      return 0;
    }
  }
  Curve CurveAt(const std::string& key) {
    YAML::Node n = Child(key);
    if (!n) {
      problems_->push_back(absl::StrCat("missing '", Key(key), "' (a list of [x, fraction] pairs)"));
      return Curve();
    }
    std::vector<std::pair<double, double>> points;
    try {
      for (const auto& p : n) points.emplace_back(p[0].as<double>(), p[1].as<double>());
    } catch (const YAML::Exception&) {
      problems_->push_back(absl::StrCat(Key(key), " must be a list of [x, fraction] pairs (line ",
                                        n.Mark().line + 1, ")"));
      return Curve();
    }
    auto curve = Curve::Create(std::move(points));
    if (!curve.ok()) {
      problems_->push_back(absl::StrCat(Key(key), ": ", curve.status().message()));
      return Curve();
    }
    return *curve;
  }

 private:
  YAML::Node node_;
  std::string path_;
  std::vector<std::string>* problems_;
  std::set<std::string> known_;
};

std::filesystem::path ClusterDir(bool source_tree) {
  return source_tree ? std::filesystem::path(MOEFOLD_SOURCE_DIR) / "configs/clusters"
                     : std::filesystem::path("configs/clusters");
}

}  // namespace

absl::StatusOr<Cluster> ParseCluster(absl::string_view yaml, absl::string_view source) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", e.what()));
  }
  if (!root.IsMap()) return absl::InvalidArgumentError(absl::StrCat(source, ": not a mapping"));
  std::vector<std::string> problems;
  Cluster c;
  {
    Section top(root, "", &problems);
    YAML::Node name = top.Child("name");
    c.name = name && name.IsScalar() ? name.Scalar() : "";
    const double gpus = top.Number("gpus_per_node");
    c.gpus_per_node = static_cast<int>(gpus);
    if (gpus != c.gpus_per_node) problems.push_back("gpus_per_node must be a whole number");
    c.pcie_gbps = top.Number("pcie_gbps");
    c.dropless_imbalance = top.Number("dropless_imbalance");
    if (c.dropless_imbalance < 1) problems.push_back("dropless_imbalance must be >= 1");
    {
      Section peak(top.Child("peak_tflops"), "peak_tflops", &problems);
      c.bf16_tflops = peak.Number("bf16");
      c.fp8_tflops = peak.Number("fp8");
    }
    {
      Section hbm(top.Child("hbm"), "hbm", &problems);
      c.hbm_gib = hbm.Number("gib");
      c.hbm_gbps = hbm.Number("gbps");
    }
    {
      Section link(top.Child("nvlink"), "nvlink", &problems);
      c.nvlink_gbps = link.Number("gbps");
      c.nvlink_latency_us = link.Number("latency_us", false);
    }
    {
      Section link(top.Child("internode"), "internode", &problems);
      c.internode_gbps = link.Number("gbps");
      c.internode_latency_us = link.Number("latency_us", false);
    }
    {
      Section eff(top.Child("efficiency"), "efficiency", &problems);
      c.gemm_efficiency = eff.CurveAt("gemm");
      c.attention_efficiency = eff.Number("attention");
      c.memory_efficiency = eff.Number("memory");
      c.ring_intra = eff.CurveAt("ring_intra");
      c.ring_inter = eff.CurveAt("ring_inter");
      c.all_to_all_intra = eff.CurveAt("all_to_all_intra");
      c.all_to_all_inter = eff.CurveAt("all_to_all_inter");
      if (c.attention_efficiency > 1 || c.memory_efficiency > 1) {
        problems.push_back("efficiency.attention and efficiency.memory must be in (0, 1]");
      }
    }
  }
  if (!problems.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ":\n- ", absl::StrJoin(problems, "\n- ")));
  }
  return c;
}

std::vector<std::string> KnownClusters() {
  std::set<std::string> names;
  for (bool source_tree : {false, true}) {
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(ClusterDir(source_tree), ec)) {
      if (entry.path().extension() == ".yaml") names.insert(entry.path().stem().string());
    }
  }
  return {names.begin(), names.end()};
}

absl::StatusOr<Cluster> LoadCluster(const std::string& name_or_path) {
  std::vector<std::filesystem::path> candidates;
  if (absl::StrContains(name_or_path, '/') || absl::EndsWith(name_or_path, ".yaml")) {
    candidates.push_back(name_or_path);
  } else {
    for (bool source_tree : {false, true}) {
      candidates.push_back(ClusterDir(source_tree) / (name_or_path + ".yaml"));
    }
  }
  for (const auto& path : candidates) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) continue;
    MF_ASSIGN_OR_RETURN(const std::string text, ReadWholeFile(path.string()));
    return ParseCluster(text, path.string());
  }
  return absl::NotFoundError(absl::StrCat("unknown cluster '", name_or_path, "': no file ",
                                          candidates.front().string(), "; known clusters: ",
                                          absl::StrJoin(KnownClusters(), ", ")));
}

}  // namespace moefold::sim
