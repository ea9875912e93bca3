// The report's second half: memory per rank against the plan, expert load, stragglers, and the
// run's config, layout and environment as written at its start.
#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "report/analysis.h"
#include "report/format.h"
#include "report/sections.h"
#include "report/svg.h"
#include "yaml-cpp/yaml.h"

namespace moefold::report {
namespace {

// A JSON value as table text: strings as they are, numbers and the rest as JSON.
std::string Text(const Json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "—";
  if (v.is_number_float()) return absl::StrFormat("%.6g", v.get<double>());
  return v.dump();
}

// The plan's memory estimate of `rank` (null when absent).
Json PlanMemory(const RunData& run, size_t rank) {
  if (!run.plan.is_object() || !run.plan.contains("memory")) return nullptr;
  const Json& memory = run.plan["memory"];
  return memory.is_array() && rank < memory.size() ? memory[rank] : Json();
}

// "[0 1] [2 3] ..." for a kind's rank lists, the first 16 groups.
std::string Groups(const Json& lists) {
  std::vector<std::string> groups;
  for (const auto& group : lists) {
    if (groups.size() == 16) {
      groups.push_back(absl::StrCat("… (", lists.size(), " groups)"));
      break;
    }
    std::vector<std::string> ranks;
    for (const auto& r : group) ranks.push_back(Text(r));
    groups.push_back(absl::StrCat("[", absl::StrJoin(ranks, " "), "]"));
  }
  return absl::StrJoin(groups, " ");
}

}  // namespace

std::string Section(const std::string& id, const std::string& title, const std::string& body) {
  return absl::StrCat("<section id=\"", id, "\"><h2>", EscapeXml(title), "</h2>", body,
                      "</section>\n");
}

std::string ConfigValue(const RunData& run, const std::string& path) {
  if (run.config_yaml.empty()) return "";
  try {
    YAML::Node node = YAML::Load(run.config_yaml);
    for (const absl::string_view key : absl::StrSplit(path, '.')) {
      const std::string name(key);
      if (!node.IsMap() || !node[name]) return "";
      node = node[name];
    }
    return node.IsScalar() ? node.as<std::string>() : "";
  } catch (const YAML::Exception&) {
    return "";  // an unreadable config.yaml: the figures it would give are "not recorded"
  }
}

int WorldSize(const RunData& run) {
  if (run.run_info.is_object() && run.run_info.contains("world_size") &&
      run.run_info["world_size"].is_number_integer()) {
    return std::max(1, run.run_info["world_size"].get<int>());
  }
  if (run.plan.is_object() && run.plan.contains("mapping") &&
      run.plan["mapping"].value("world", 0) > 0) {
    return run.plan["mapping"]["world"].get<int>();
  }
  size_t world = 0;
  for (const StepRecord& s : run.steps) {
    world = std::max({world, s.rank_step_time_s.size(), s.rank_device_peak_bytes.size()});
  }
  return static_cast<int>(world);
}

std::string MemorySection(const RunData& run) {
  const std::vector<double> peaks = RankPeakBytes(run.steps);
  size_t ranks = peaks.size();
  if (run.plan.is_object() && run.plan.contains("memory") && run.plan["memory"].is_array()) {
    ranks = std::max(ranks, run.plan["memory"].size());
  }
  if (ranks == 0) {
    return Section("memory", "Memory per rank",
                   NotRecorded("not recorded: no device peaks in the metrics, no plan.json"));
  }
  BarChart chart{.title = "Peak memory per rank against the plan",
                 .value_label = "GiB",
                 .grouped = true,
                 .unit = " GiB"};
  chart.segments = {{"plan estimate", "#bab0ac", {}}, {"measured peak", "#4e79a7", {}}};
  std::vector<std::vector<std::string>> rows;
  for (size_t r = 0; r < ranks; ++r) {
    const double peak = r < peaks.size() ? peaks[r] : kNotRecorded;
    const Json plan = PlanMemory(run, r);
    const double estimate =
        plan.is_object() && plan.contains("total_bytes") && plan["total_bytes"].is_number()
            ? plan["total_bytes"].get<double>()
            : kNotRecorded;
    chart.categories.push_back(absl::StrCat("rank ", r));
    chart.segments[0].values.push_back(estimate / (1024.0 * 1024 * 1024));
    chart.segments[1].values.push_back(peak / (1024.0 * 1024 * 1024));
    rows.push_back({absl::StrCat(r), FormatBytes(peak), FormatBytes(estimate),
                    std::isfinite(peak) && estimate > 0 ? FormatPercent(peak / estimate, 0) : "—"});
  }
  std::string body =
      "<p>The measured peak is the device allocator's high-water mark over the run (on the CPU, "
      "the host allocator's); the estimate is <code>moefold plan</code>'s for the same rank "
      "(parameters, gradients, optimizer state, activations in flight).</p><div class=\"charts\">";
  body += HtmlTable({"rank", "measured peak", "plan estimate", "measured ÷ estimate"}, rows,
                    {true, true, true, true});
  body += RenderBarChart(chart) + "</div>";
  if (peaks.size() == 1 && ranks > 1) {
    body += "<p><small>Only rank 0's peak was recorded (no rank_device_peak_bytes).</small></p>";
  }
  return Section("memory", "Memory per rank", body);
}

std::string ExpertsSection(const RunData& run) {
  size_t layers = 0, experts = 0;
  for (const StepRecord& s : run.steps) {
    layers = std::max(layers, s.expert_tokens.size());
    for (const auto& row : s.expert_tokens) experts = std::max(experts, row.size());
  }
  if (layers == 0 || experts == 0) {
    return Section("experts", "Experts", NotRecorded("not recorded (a dense model, or no steps)"));
  }
  std::string body = absl::StrCat(
      "<p>Tokens routed to each expert relative to an even share (1 = every expert of the layer "
      "gets the same; red = overloaded, blue = underused), per MoE layer over steps.</p>"
      "<div class=\"charts\">");
  // The page stays small for large models: at most 60 columns (about 4096 cells per map), with
  // consecutive steps averaged, and at most kMaxMaps layers, evenly spread from first to last.
  constexpr size_t kMaxMaps = 8;
  const size_t n = run.steps.size();
  const size_t columns = std::clamp<size_t>(4096 / experts, 8, 60);
  const size_t per_column = (n + columns - 1) / columns;
  std::vector<size_t> shown;
  for (size_t i = 0; i < std::min(layers, kMaxMaps); ++i) {
    shown.push_back(layers <= kMaxMaps ? i : i * (layers - 1) / (kMaxMaps - 1));
  }
  for (const size_t layer : shown) {
    Heatmap map{.title = absl::StrCat("MoE layer ", layer), .x_label = "step", .y_label = "expert"};
    map.values.assign(experts, {});
    map.scale_label = "÷ even";
    for (size_t e = 0; e < experts; ++e) map.row_labels.push_back(absl::StrCat(e));
    for (size_t start = 0; start < n; start += per_column) {
      const size_t end = std::min(n, start + per_column);
      map.column_labels.push_back(absl::StrCat(run.steps[start].step));
      std::vector<double> sum(experts, 0);
      int counted = 0;
      for (size_t i = start; i < end; ++i) {
        const auto& tokens = run.steps[i].expert_tokens;
        if (layer >= tokens.size() || tokens[layer].size() != experts) continue;
        double total = 0;
        for (double t : tokens[layer]) total += std::isfinite(t) ? t : 0;
        if (total <= 0) continue;
        for (size_t e = 0; e < experts; ++e) sum[e] += tokens[layer][e] / (total / experts);
        ++counted;
      }
      for (size_t e = 0; e < experts; ++e) {
        map.values[e].push_back(counted > 0 ? sum[e] / counted : kNotRecorded);
      }
    }
    map.width = 560;
    map.height = std::min(360, 80 + 14 * static_cast<int>(experts));
    body += RenderHeatmap(map);
  }
  body += "</div>";
  if (shown.size() < layers) {
    absl::StrAppend(&body, "<p><small>", shown.size(), " of ", layers,
                    " MoE layers shown, evenly spread; the table has them all.</small></p>");
  }
  // Every layer's imbalance over the last 10 steps: the largest expert's load over the mean.
  std::vector<std::vector<std::string>> rows;
  for (size_t layer = 0; layer < layers; ++layer) {
    std::vector<double> ratios;
    for (size_t i = n > 10 ? n - 10 : 0; i < n; ++i) {
      const auto& tokens = run.steps[i].expert_tokens;
      if (layer >= tokens.size() || tokens[layer].empty()) continue;
      double total = 0, top = 0;
      for (double t : tokens[layer]) {
        if (!std::isfinite(t)) continue;
        total += t;
        top = std::max(top, t);
      }
      if (total > 0) ratios.push_back(top / (total / tokens[layer].size()));
    }
    rows.push_back({absl::StrCat(layer), FormatNumber(Median(ratios))});
  }
  body += "<h3>Load imbalance per MoE layer (median of the last 10 steps)</h3>" +
          HtmlTable({"MoE layer", "busiest expert ÷ mean"}, rows, {true, true});
  double dropped = 0;
  bool recorded = false;
  for (const StepRecord& s : run.steps) {
    if (std::isfinite(s.tokens_dropped)) dropped += s.tokens_dropped, recorded = true;
  }
  if (!recorded) {
    body += NotRecorded("dropped tokens: not recorded");
  } else if (dropped == 0) {
    body +=
        "<p id=\"tokens-dropped\">No token was dropped (dropless routing, or every expert "
        "within its capacity).</p>";
  } else {
    LineChart chart{.title = "Tokens dropped per step", .x_label = "step", .y_label = "tokens"};
    Series series{"dropped", {}, {}, "#e15759"};
    for (const StepRecord& s : run.steps) {
      series.x.push_back(static_cast<double>(s.step));
      series.y.push_back(s.tokens_dropped);
    }
    chart.series.push_back(std::move(series));
    chart.y_from_zero = true;
    absl::StrAppend(&body, "<p id=\"tokens-dropped\">", FormatCount(dropped),
                    " tokens dropped over the run (over capacity).</p>", RenderLineChart(chart));
  }
  return Section("experts", "Experts", body);
}

std::string StragglersSection(const RunData& run) {
  const std::vector<double> medians = RankMedianStepTimes(run.steps);
  if (medians.empty()) {
    return Section("stragglers", "Stragglers",
                   NotRecorded("not recorded: the metrics have no per-rank step times "
                               "(rank_step_time_s)"));
  }
  size_t slowest = 0, fastest = 0;
  for (size_t r = 0; r < medians.size(); ++r) {
    if (medians[r] > medians[slowest]) slowest = r;
    if (medians[r] < medians[fastest]) fastest = r;
  }
  std::string body = absl::StrCat(
      "<p>The slowest rank is <b id=\"slowest-rank\">rank ", slowest, "</b>: median step ",
      FormatSeconds(medians[slowest]), " against ", FormatSeconds(medians[fastest]),
      " for the fastest (rank ", fastest, ", ",
      FormatPercent(medians[fastest] > 0 ? medians[slowest] / medians[fastest] - 1 : kNotRecorded),
      " slower). A rank much slower than the rest holds every other rank at each collective.</p>");
  BarChart chart{.title = "Median step time per rank", .value_label = "seconds", .unit = " s"};
  chart.segments.push_back({"median step time", "#4e79a7", {}});
  std::vector<std::vector<std::string>> rows;
  for (size_t r = 0; r < medians.size(); ++r) {
    chart.categories.push_back(absl::StrCat(r));
    chart.segments[0].values.push_back(medians[r]);
    rows.push_back({absl::StrCat(r), FormatSeconds(medians[r])});
  }
  body += "<div class=\"charts\">" + RenderBarChart(chart) +
          HtmlTable({"rank", "median step time"}, rows, {true, true}) + "</div>";
  return Section("stragglers", "Stragglers", body);
}

std::string ConfigSection(const RunData& run) {
  if (run.config_yaml.empty()) {
    return Section("config", "Config", NotRecorded("config.yaml: not recorded"));
  }
  const size_t lines = std::count(run.config_yaml.begin(), run.config_yaml.end(), '\n');
  return Section(
      "config", "Config",
      absl::StrCat("<details><summary>config.yaml, fully resolved (", lines,
                   " lines)</summary><pre>", EscapeXml(run.config_yaml), "</pre></details>"));
}

std::string LayoutSection(const RunData& run) {
  if (!run.plan.is_object() || !run.plan.contains("mapping")) {
    return Section("layout", "Layout", NotRecorded("plan.json: not recorded"));
  }
  const Json& mapping = run.plan["mapping"];
  std::string body;
  std::vector<std::string> header = {"world", "order"};
  std::vector<std::string> row = {Text(mapping.value("world", Json())),
                                  Text(mapping.value("order", Json()))};
  const Json sizes = mapping.value("sizes", Json::object());
  for (const auto& [name, size] : sizes.items()) {
    header.push_back(name);
    row.push_back(Text(size));
  }
  body += HtmlTable(header, {row});
  for (const char* mesh : {"attention", "moe"}) {
    if (!mapping.contains(mesh) || !mapping[mesh].is_object()) continue;
    std::vector<std::vector<std::string>> rows;
    for (const auto& [kind, lists] : mapping[mesh].items()) rows.push_back({kind, Groups(lists)});
    absl::StrAppend(&body, "<h3>", mesh == std::string("moe") ? "MoE" : "Attention",
                    " mesh groups</h3>", HtmlTable({"group kind", "ranks"}, rows));
  }
  if (run.plan.contains("memory") && run.plan["memory"].is_array()) {
    std::vector<std::vector<std::string>> rows;
    for (size_t r = 0; r < run.plan["memory"].size(); ++r) {
      const Json& m = run.plan["memory"][r];
      auto bytes = [&](const char* key) {
        return m.contains(key) && m[key].is_number() ? FormatBytes(m[key].get<double>()) : "—";
      };
      rows.push_back({absl::StrCat(r), Text(m.value("stage", Json())),
                      FormatCount(m.value("parameters", 0.0)), bytes("parameter_bytes"),
                      bytes("gradient_bytes"), bytes("optimizer_bytes"), bytes("activation_bytes"),
                      bytes("total_bytes"), FormatPercent(m.value("bubble_fraction", 0.0)),
                      Text(m.value("schedule", Json()))});
    }
    body += "<h3>Memory estimate per rank</h3>";
    body += HtmlTable({"rank", "stage", "parameters", "weights", "gradients", "optimizer",
                       "activations", "total", "bubble", "schedule"},
                      rows, {true, true, true, true, true, true, true, true, true, false});
  }
  return Section("layout", "Layout", body);
}

std::string EnvironmentSection(const RunData& run) {
  std::string body;
  if (!run.run_info.is_object()) {
    body += NotRecorded("run.json: not recorded");
  } else {
    const Json& info = run.run_info;
    std::vector<std::vector<std::string>> rows;
    if (info.contains("command") && info["command"].is_array()) {
      std::vector<std::string> argv;
      for (const auto& a : info["command"]) argv.push_back(Text(a));
      rows.push_back({"command", absl::StrJoin(argv, " ")});
    }
    for (const char* key : {"start_utc", "world_size", "layout", "peak_tflops", "peak_source",
                            "model_flops_per_token"}) {
      if (info.contains(key)) rows.push_back({key, Text(info[key])});
    }
    if (info.contains("params") && info["params"].is_object()) {
      for (const auto& [key, value] : info["params"].items()) {
        rows.push_back({"parameters (" + key + ")",
                        FormatCount(value.is_number() ? value.get<double>() : kNotRecorded)});
      }
    }
    const Json env = info.value("environment", Json::object());
    for (const auto& [key, value] : env.items()) {
      if (key != "devices") rows.push_back({key, Text(value)});
    }
    body += HtmlTable({}, rows);
    if (env.contains("devices") && env["devices"].is_array() && !env["devices"].empty()) {
      std::vector<std::vector<std::string>> devices;
      for (size_t i = 0; i < env["devices"].size(); ++i) {
        const Json& d = env["devices"][i];
        const Json memory = d.value("memory_bytes", Json());
        devices.push_back({absl::StrCat(i), Text(d.value("name", Json())),
                           memory.is_number() ? FormatBytes(memory.get<double>()) : "—",
                           Text(d.value("driver", Json()))});
      }
      body += "<h3>Devices</h3>" +
              HtmlTable({"#", "name", "memory", "driver"}, devices, {true, false, true, false});
    }
  }
  if (run.summary.is_object()) {
    std::vector<std::vector<std::string>> rows;
    for (const auto& [key, value] : run.summary.items()) {
      if (!value.is_structured()) rows.push_back({key, Text(value)});
    }
    body += "<h3>Summary (summary.json)</h3>" + HtmlTable({}, rows);
  }
  return Section("environment", "Environment", body);
}

}  // namespace moefold::report
