// Inline SVG charts for the HTML report, drawn by hand: a line chart (axes, ticks, legend, marked
// x positions, labelled horizontal reference lines, optional log y), stacked or grouped bars, and a
// heatmap with its colour scale. Each chart is one standalone, well-formed XML document (an
// <svg xmlns=...> element) that an HTML page can inline as is; it uses no ids, so any number of
// charts can share a page, and hover text comes from <title> elements (no script).
//
//   LineChart chart{.title = "Loss", .x_label = "step", .y_label = "nats/token"};
//   chart.series.push_back({"lm loss", steps, losses, "#1f77b4"});
//   std::string svg = RenderLineChart(chart);
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace moefold::report {

struct Series {
  std::string name{};
  std::vector<double> x{}, y{};  // same length; a non-finite y breaks the line
  std::string color{};           // any CSS colour
  bool dashed = false;
};

// A series of more than 1500 points is drawn through every k-th point (and the last) to keep the
// page small.
struct LineChart {
  std::string title{}, x_label{}, y_label{};
  std::vector<Series> series{};
  std::vector<double> markers{};  // x positions drawn as red vertical lines (e.g. skipped steps)
  std::string marker_label{};     // their legend entry
  std::vector<std::pair<double, std::string>> reference_lines{};  // horizontal, labelled
  bool log_y = false;        // base-10 axis; values ≤ 0 are left out
  bool y_from_zero = false;  // the y axis includes 0 (linear axes only)
  int width = 560, height = 260;
};

struct BarSegment {
  std::string name{};
  std::string color{};
  std::vector<double> values{};  // one per category; negative and non-finite values draw nothing
};

struct BarChart {
  std::string title{}, value_label{};
  std::vector<std::string> categories{};  // one bar (or group) each
  std::vector<BarSegment> segments{};
  bool grouped = false;     // segments side by side instead of stacked
  bool horizontal = false;  // categories down the y axis, values along x
  std::string unit{};       // appended to the values in hover text ("s", " GiB")
  int width = 560, height = 260;
};

struct Heatmap {
  std::string title{}, x_label{}, y_label{};
  std::vector<std::vector<double>> values{};  // (rows, columns); non-finite cells are grey
  std::vector<std::string> row_labels{};      // one per row
  std::vector<std::string> column_labels{};   // one per column; a few are shown as ticks
  // Colours run blue (low) → white (mid) → red (high); values are clamped to [low, high].
  double low = 0, mid = 1, high = 2;
  std::string scale_label{};  // what the colour means
  int width = 560, height = 200;
};

std::string RenderLineChart(const LineChart& chart);
std::string RenderBarChart(const BarChart& chart);
std::string RenderHeatmap(const Heatmap& heatmap);

// About `count` evenly spaced round values (multiples of 1, 2 or 5 × 10^k) within [low, high].
std::vector<double> NiceTicks(double low, double high, int count);
// A short tick label: "0.25", "1.5k", "2M", "3e-05".
std::string FormatTick(double value);
// `text` with &, <, >, " and ' escaped, for XML and HTML text and attributes.
std::string EscapeXml(const std::string& text);

}  // namespace moefold::report
