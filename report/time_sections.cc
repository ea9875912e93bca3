// The report's first half: the headline, the curves over steps (loss, learning rate, MFU and
// throughput) and where the step time goes (phases, communication, op families, MFU sinks).
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "report/analysis.h"
#include "report/format.h"
#include "report/sections.h"
#include "report/svg.h"

namespace moefold::report {
namespace {

constexpr char kForward[] = "#4e79a7", kBackward[] = "#59a14f", kOptimizer[] = "#edc948",
               kData[] = "#b07aa1", kIdle[] = "#bab0ac";
// Communication per group kind, in the order the kinds first appear.
constexpr const char* kCommColors[] = {"#e15759", "#f28e2b", "#ff9da7", "#9c755f",
                                       "#d37295", "#86bcb6", "#8cd17d", "#f1ce63"};

std::string CommColor(size_t index) { return kCommColors[index % std::size(kCommColors)]; }

std::vector<double> Steps(const RunData& run) {
  std::vector<double> x;
  for (const StepRecord& s : run.steps) x.push_back(static_cast<double>(s.step));
  return x;
}

std::vector<double> Field(const RunData& run, double StepRecord::*field) {
  std::vector<double> y;
  for (const StepRecord& s : run.steps) y.push_back(s.*field);
  return y;
}

bool AnyFinite(const std::vector<double>& values) {
  for (double v : values) {
    if (std::isfinite(v)) return true;
  }
  return false;
}

std::vector<double> SkippedSteps(const RunData& run) {
  std::vector<double> x;
  for (const StepRecord& s : run.steps) {
    if (s.skipped) x.push_back(static_cast<double>(s.step));
  }
  return x;
}

// A chart over steps of the given fields (those the run recorded). Skipped steps are marked and
// left out of the curves: their loss or norm is the outlier that made them skipped, and would
// squash every other step into a flat line.
std::string StepChart(
    const RunData& run, const std::string& title, const std::string& y_label,
    const std::vector<std::tuple<std::string, double StepRecord::*, std::string>>& fields) {
  LineChart chart{.title = title, .x_label = "step", .y_label = y_label};
  for (const auto& [name, field, color] : fields) {
    std::vector<double> x, y;
    for (const StepRecord& s : run.steps) {
      // Unrecorded values are left out (not drawn as gaps): a validation loss exists only on
      // the evaluated steps, and its points join up across the steps between.
      if (s.skipped || !std::isfinite(s.*field)) continue;
      x.push_back(static_cast<double>(s.step));
      y.push_back(s.*field);
    }
    if (AnyFinite(y)) chart.series.push_back({name, std::move(x), std::move(y), color});
  }
  if (chart.series.empty()) return NotRecorded(title + ": not recorded");
  chart.markers = SkippedSteps(run);
  chart.marker_label = "skipped step";
  return RenderLineChart(chart);
}

std::string Dd(const std::string& id, const std::string& value, const std::string& note = "") {
  return absl::StrCat("<dd><span class=\"big\" id=\"", id, "\">", EscapeXml(value), "</span>",
                      note.empty() ? "" : absl::StrCat("<br/><small>", EscapeXml(note), "</small>"),
                      "</dd>");
}

std::string JsonText(const Json& object, const char* key) {
  if (!object.is_object() || !object.contains(key)) return "";
  const Json& v = object[key];
  return v.is_string() ? v.get<std::string>() : v.is_null() ? "" : v.dump();
}

double JsonNumber(const Json& object, const char* key) {
  if (!object.is_object() || !object.contains(key) || !object[key].is_number()) {
    return kNotRecorded;
  }
  return object[key].get<double>();
}

// The peak per device: run.json, else the metrics' peak_tflops.
double PeakTflops(const RunData& run) {
  const double peak = JsonNumber(run.run_info, "peak_tflops");
  return std::isfinite(peak) ? peak : MedianOf(run.steps, &StepRecord::peak_tflops);
}

// Tokens/s per device per step: logged, else the total divided by the world size (the total when
// that is unknown too). `how` says which.
std::vector<double> TokensPerDevice(const RunData& run, std::string* how) {
  std::vector<double> y = Field(run, &StepRecord::tokens_per_s_per_device);
  *how = "median";
  if (AnyFinite(y)) return y;
  y = Field(run, &StepRecord::tokens_per_s);
  const int world = WorldSize(run);
  if (world > 0) {
    for (double& v : y) v /= world;
    *how = "median; total ÷ ranks";
  } else {
    *how = "median, all ranks together (world size not recorded)";
  }
  return y;
}

std::string ModelDescription(const RunData& run) {
  std::vector<std::string> parts;
  const std::string layers = ConfigValue(run, "model.num_layers");
  const std::string hidden = ConfigValue(run, "model.hidden_size");
  const std::string experts = ConfigValue(run, "model.moe.num_experts");
  const std::string top_k = ConfigValue(run, "model.moe.top_k");
  if (!layers.empty()) parts.push_back(layers + " layers");
  if (!hidden.empty()) parts.push_back("hidden " + hidden);
  if (!experts.empty() && experts != "0") {
    parts.push_back(absl::StrCat(experts, " experts, top-", top_k.empty() ? "?" : top_k));
  }
  const Json params = run.run_info.is_object() ? run.run_info.value("params", Json()) : Json();
  const double total = JsonNumber(params, "total"), active = JsonNumber(params, "active");
  if (std::isfinite(total)) {
    parts.push_back(absl::StrCat(FormatCount(total), " parameters",
                                 std::isfinite(active)
                                     ? absl::StrCat(" (", FormatCount(active), " active per token)")
                                     : ""));
  }
  return absl::StrJoin(parts, ", ");
}

std::string Layout(const RunData& run) {
  const std::string layout = JsonText(run.run_info, "layout");
  if (!layout.empty()) return layout;
  if (run.plan.is_object() && run.plan.contains("mapping")) {
    const Json& sizes = run.plan["mapping"].value("sizes", Json::object());
    std::vector<std::string> parts;
    for (const auto& [name, size] : sizes.items()) parts.push_back(name + " " + size.dump());
    return absl::StrJoin(parts, " × ");
  }
  return "";
}

}  // namespace

std::string HeadlineSection(const RunData& run, const std::string& trace_link) {
  const std::string name = ConfigValue(run, "name");
  const int world = WorldSize(run);
  std::string body = absl::StrCat("<div class=\"headline\"><p class=\"lead\">",
                                  EscapeXml(name.empty() ? run.run_dir : name), "</p><dl>");
  const std::string model = ModelDescription(run);
  absl::StrAppend(&body, "<dt>model</dt><dd id=\"model\">",
                  EscapeXml(model.empty() ? "not recorded" : model), "</dd>");
  const std::string layout = Layout(run);
  absl::StrAppend(
      &body, "<dt>layout</dt><dd id=\"layout\">",
      EscapeXml(layout.empty() ? "not recorded" : layout),
      EscapeXml(world == 0 ? "; world size not recorded"
                           : absl::StrCat(" (", world, world == 1 ? " rank)" : " ranks)")),
      "</dd></dl><dl class=\"cards\">");
  int64_t skipped = 0;
  for (const StepRecord& s : run.steps) skipped += s.skipped;
  absl::StrAppend(&body, "<div><dt>steps</dt>",
                  Dd("steps", absl::StrCat(run.steps.size()), absl::StrCat(skipped, " skipped")),
                  "</div>");
  const double first = run.steps.empty() ? kNotRecorded : run.steps.front().lm_loss;
  absl::StrAppend(&body, "<div><dt>final loss</dt>",
                  Dd("final-loss", FormatLoss(FinalLoss(run.steps)),
                     absl::StrCat("LM loss, mean of the last 10 steps; first ", FormatLoss(first))),
                  "</div>");
  const double mfu = MedianOf(run.steps, &StepRecord::mfu);
  const double peak = PeakTflops(run);
  absl::StrAppend(
      &body, "<div><dt>MFU</dt>",
      Dd("mfu", FormatPercent(mfu, 2),
         std::isfinite(peak) ? absl::StrCat("median, of ", FormatNumber(peak), " TFLOP/s")
                             : "not recorded by this run"),
      "</div>");
  std::string how;
  const double tokens = Median(TokensPerDevice(run, &how));
  absl::StrAppend(&body, "<div><dt>tokens/s per device</dt>",
                  Dd("tokens-per-s-per-device", FormatCount(tokens), how), "</div>");
  absl::StrAppend(
      &body, "<div><dt>step time</dt>",
      Dd("step-time", FormatSeconds(MedianOf(run.steps, &StepRecord::step_time_s)), "median"),
      "</div></dl>");
  absl::StrAppend(&body, "<p id=\"where-time-goes\">",
                  EscapeXml(DescribeBreakdown(MeanBreakdown(run.steps))), "</p>");
  const std::vector<Sink> sinks = TopSinks(run, 1);
  if (!sinks.empty()) {
    absl::StrAppend(&body, "<p id=\"top-sink\">Largest sink of MFU: <b>", EscapeXml(sinks[0].name),
                    "</b>, ", FormatPercent(sinks[0].share),
                    " of the step (<a href=\"#ops\">more</a>).</p>");
  }
  if (!trace_link.empty()) {
    absl::StrAppend(&body, "<p>Trace of the traced steps, a track per rank: <a href=\"",
                    EscapeXml(trace_link), "\">", EscapeXml(trace_link),
                    "</a> (open in ui.perfetto.dev or chrome://tracing).</p>");
  }
  return Section("headline", "Run at a glance", body + "</div>");
}

std::string LossSection(const RunData& run) {
  if (run.steps.empty()) return Section("loss", "Loss", NotRecorded("no steps recorded"));
  std::string body = "<div class=\"charts\">";
  body += StepChart(
      run, "Loss", "nats/token",
      {{"loss", &StepRecord::loss, "#4e79a7"},
       {"LM loss", &StepRecord::lm_loss, "#f28e2b"},
       {"validation loss", &StepRecord::eval_loss, "#76b7b2"},
       {"test loss", &StepRecord::test_loss, "#9c755f"}});
  body += StepChart(
      run, "Auxiliary losses", "loss",
      {{"aux loss", &StepRecord::aux_loss, "#59a14f"}, {"z-loss", &StepRecord::z_loss, "#b07aa1"}});
  body += StepChart(run, "Gradient norm (before clipping)", "norm",
                    {{"grad norm", &StepRecord::grad_norm, "#e15759"}});
  body += "</div>";
  const std::vector<double> skipped = SkippedSteps(run);
  body += skipped.empty()
              ? "<p>No step was skipped.</p>"
              : absl::StrCat("<p>", skipped.size(),
                             " skipped step(s) (non-finite or spiking loss or gradient norm), "
                             "marked in red and left out of the curves.</p>");
  return Section("loss", "Loss and gradient norm", body);
}

std::string LearningRateSection(const RunData& run) {
  return Section("learning-rate", "Learning rate",
                 StepChart(run, "Learning rate", "lr", {{"lr", &StepRecord::lr, "#4e79a7"}}));
}

std::string ThroughputSection(const RunData& run) {
  std::string body = "<div class=\"charts\">";
  const double peak = PeakTflops(run);
  std::vector<double> mfu = Field(run, &StepRecord::mfu);
  if (AnyFinite(mfu)) {
    for (double& v : mfu) v *= 100;
    LineChart chart{.title = "MFU", .x_label = "step", .y_label = "% of peak"};
    chart.series.push_back({"MFU", Steps(run), mfu, "#4e79a7"});
    chart.y_from_zero = true;
    const double median = Median(mfu);
    chart.reference_lines.push_back({median, absl::StrCat("median ", FormatNumber(median), "% of ",
                                                          FormatNumber(peak), " TFLOP/s")});
    body += RenderLineChart(chart);
  } else {
    body += NotRecorded("MFU: not recorded by this run");
  }
  std::string how;
  const std::vector<double> tokens = TokensPerDevice(run, &how);
  if (AnyFinite(tokens)) {
    // On a log axis the achieved rate and the rate at 100% MFU fit one chart however far apart.
    LineChart chart{.title = "Tokens/s per device", .x_label = "step", .y_label = "tokens/s"};
    chart.series.push_back({"tokens/s", Steps(run), tokens, "#59a14f"});
    chart.log_y = true;
    const double flops = JsonNumber(run.run_info, "model_flops_per_token");
    if (std::isfinite(peak) && std::isfinite(flops) && flops > 0) {
      chart.reference_lines.push_back(
          {peak * 1e12 / flops, absl::StrCat("100% MFU: ", FormatCount(peak * 1e12 / flops))});
    }
    body += RenderLineChart(chart);
  } else {
    body += NotRecorded("tokens/s: not recorded");
  }
  body += "</div>";
  if (std::isfinite(peak)) {
    const std::string source = JsonText(run.run_info, "peak_source");
    absl::StrAppend(&body,
                    "<p>MFU counts model FLOPs only (active experts, causal attention once, "
                    "no recomputation) against a peak of ",
                    FormatNumber(peak), " TFLOP/s per device",
                    EscapeXml(source.empty() ? "" : " (" + source + ")"), ".</p>");
  }
  return Section("throughput", "MFU and throughput", body);
}

std::string StepTimeSection(const RunData& run, const std::string& trace_link) {
  if (run.steps.empty())
    return Section("step-time", "Where the step time goes", NotRecorded("no steps recorded"));
  const Breakdown mean = MeanBreakdown(run.steps);
  std::vector<std::string> kinds;
  for (const auto& [kind, s] : mean.exposed) kinds.push_back(kind);
  std::string body = absl::StrCat("<p>", EscapeXml(DescribeBreakdown(mean)), "</p>");

  // Per step (consecutive steps averaged into at most 100 bars), stacked: the parts add up to the
  // step time; overlapped communication is hidden under compute and shown in the table only.
  const size_t n = run.steps.size(), per_bar = (n + 99) / 100;
  BarChart bars{.title = "Step time by phase", .value_label = "seconds", .unit = " s"};
  bars.width = 1140;
  std::vector<std::pair<std::string, std::string>> parts = {
      {mean.forward_backward_split ? "forward" : "forward + backward", kForward}};
  if (mean.forward_backward_split) parts.push_back({"backward", kBackward});
  parts.push_back({"optimizer", kOptimizer});
  parts.push_back({"data", kData});
  for (size_t k = 0; k < kinds.size(); ++k) {
    parts.push_back({"exposed " + kinds[k], CommColor(k)});
  }
  parts.push_back({"idle", kIdle});
  for (const auto& [name, color] : parts) bars.segments.push_back({name, color, {}});
  for (size_t start = 0; start < n; start += per_bar) {
    const size_t end = std::min(n, start + per_bar);
    bars.categories.push_back(absl::StrCat(run.steps[start].step));
    std::vector<double> sums(parts.size(), 0);
    for (size_t i = start; i < end; ++i) {
      const Breakdown b = StepBreakdown(run.steps[i]);
      size_t k = 0;
      sums[k++] += b.forward;
      if (mean.forward_backward_split) sums[k++] += b.backward;
      sums[k++] += b.optimizer;
      sums[k++] += b.data;
      for (const std::string& kind : kinds) {
        const auto it = b.exposed.find(kind);
        sums[k++] += it == b.exposed.end() ? 0 : it->second;
      }
      sums[k++] += b.idle;
    }
    for (size_t k = 0; k < parts.size(); ++k) {
      bars.segments[k].values.push_back(sums[k] / (end - start));
    }
  }
  body += RenderBarChart(bars);
  if (per_bar > 1)
    absl::StrAppend(&body, "<p><small>Each bar averages ", per_bar,
                    " consecutive steps.</small></p>");

  // Compute vs communication vs idle, over the mean step.
  auto share = [&](double s) {
    return FormatPercent(mean.step > 0 ? s / mean.step : kNotRecorded);
  };
  body += "<h3>Compute, communication, idle (mean step after the first)</h3>";
  body +=
      HtmlTable({"part", "time per step", "share of the step"},
                {{"compute (forward, backward, optimizer)", FormatSeconds(mean.Compute()),
                  share(mean.Compute())},
                 {"data loading", FormatSeconds(mean.data), share(mean.data)},
                 {"communication the compute waited for (exposed)",
                  FormatSeconds(mean.ExposedTotal()), share(mean.ExposedTotal())},
                 {"idle (no phase accounts for it)", FormatSeconds(mean.idle), share(mean.idle)},
                 {"communication hidden under compute (overlapped)",
                  FormatSeconds(mean.OverlappedTotal()), share(mean.OverlappedTotal())}},
                {false, true, true});
  body += "<h3>Communication per group kind</h3>";
  if (kinds.empty()) {
    body += NotRecorded("no communication recorded (a single rank, or an older run)");
  } else {
    std::vector<std::vector<std::string>> rows;
    for (const std::string& kind : kinds) {
      const double exposed = mean.exposed.at(kind);
      const auto it = mean.overlapped.find(kind);
      const double overlapped = it == mean.overlapped.end() ? 0 : it->second;
      rows.push_back({kind, FormatSeconds(exposed + overlapped), FormatSeconds(exposed),
                      FormatSeconds(overlapped),
                      FormatPercent(exposed + overlapped > 0 ? overlapped / (exposed + overlapped)
                                                             : kNotRecorded)});
    }
    body += HtmlTable(
        {"group kind", "in flight per step", "exposed", "overlapped", "hidden under compute"}, rows,
        {false, true, true, true, true});
  }
  if (!trace_link.empty()) {
    absl::StrAppend(&body, "<p>Per-rank timelines: <a href=\"", EscapeXml(trace_link), "\">",
                    EscapeXml(trace_link), "</a>.</p>");
  }
  return Section("step-time", "Where the step time goes", body);
}

std::string OpsSection(const RunData& run) {
  std::string body;
  const std::vector<Sink> sinks = TopSinks(run, 5);
  body += "<h3>Top sinks of MFU</h3>";
  if (sinks.empty()) {
    body += NotRecorded("not recorded (no step times or profiled steps)");
  } else {
    body += "<ol class=\"sinks\">";
    for (const Sink& s : sinks) {
      absl::StrAppend(&body, "<li><b>", EscapeXml(FormatPercent(s.share)), "</b> ",
                      EscapeXml(s.name), " <small>(", s.source, ")</small></li>");
    }
    body += "</ol>";
  }
  body += "<h3>Per op family (profiled steps)</h3>";
  const std::vector<OpRow> ops = OpTable(run.profiles);
  if (ops.empty()) {
    body += NotRecorded(
        "not recorded: the run profiled no step (set logging.profile_steps, e.g. [5, 6])");
    return Section("ops", "Op families and MFU sinks", body);
  }
  std::vector<std::string> steps;
  for (const ProfileRecord& p : run.profiles) steps.push_back(absl::StrCat(p.step));
  // Achieved TFLOP/s of the families that do the model's FLOPs: run.json's FLOPs per token of
  // the family × tokens per step, over the world's devices (an even split of the work, which a
  // pipeline's stages only approximate), per second of the family's time on rank 0.
  const Json& info = run.run_info;
  const bool have_flops = info.is_object() && info.contains("flops_per_token_by_family") &&
                          info["flops_per_token_by_family"].is_object() &&
                          info.contains("tokens_per_step") && info["tokens_per_step"].is_number();
  const double world = info.is_object() && info.contains("world_size") &&
                               info["world_size"].is_number()
                           ? info["world_size"].get<double>()
                           : 1.0;
  auto achieved = [&](const OpRow& row) -> std::string {
    if (!have_flops || !info["flops_per_token_by_family"].contains(row.family)) return "";
    const Json& f = info["flops_per_token_by_family"][row.family];
    if (!f.is_number() || !(row.ms_per_step > 0)) return "";
    const double flops = f.get<double>() * info["tokens_per_step"].get<double>() / world;
    return absl::StrFormat("%.3g", flops / (row.ms_per_step / 1e3) / 1e12);
  };
  absl::StrAppend(&body, "<p>Steps ", absl::StrJoin(steps, ", "),
                  "; exclusive time per family (a scope inside another counts once). ",
                  have_flops ? "Achieved TFLOP/s per device for the families that do the "
                               "model's FLOPs (run.json's FLOPs per token by family, split "
                               "evenly over the ranks)."
                             : "Achieved TFLOP/s is not recorded: run.json has no FLOPs by family.",
                  "</p>");
  std::vector<std::vector<std::string>> rows;
  BarChart chart{
      .title = "ms per step by op family", .value_label = "ms", .horizontal = true, .unit = " ms"};
  chart.segments.push_back({"ms per step", "#4e79a7", {}});
  for (const OpRow& row : ops) {
    rows.push_back(
        {row.family, absl::StrFormat("%.3f", row.ms_per_step), FormatPercent(row.share),
         row.family == "unattributed" ? "" : absl::StrFormat("%.0f", row.calls_per_step),
         achieved(row)});
    chart.categories.push_back(row.family);
    chart.segments[0].values.push_back(row.ms_per_step);
  }
  chart.height = 60 + 18 * static_cast<int>(ops.size());
  body += "<div class=\"charts\">";
  body += HtmlTable({"op family", "ms per step", "share", "calls per step", "TFLOP/s"}, rows,
                    {false, true, true, true, true});
  body += RenderBarChart(chart) + "</div>";
  return Section("ops", "Op families and MFU sinks", body);
}

}  // namespace moefold::report
