// The SVG charts: round ticks, short labels, escaping, and well-formed documents whatever the data
// (empty, flat, NaN, one point, log axis with zeros).
#include "report/svg.h"

#include <cmath>

#include "gtest/gtest.h"
#include "tests/report/report_testing.h"

namespace moefold::report {
namespace {

using testing::XmlError;

TEST(SvgTest, NiceTicksAreRoundAndWithinTheRange) {
  EXPECT_EQ(NiceTicks(0, 10, 6), (std::vector<double>{0, 2, 4, 6, 8, 10}));
  EXPECT_EQ(NiceTicks(0, 39, 7), (std::vector<double>{0, 5, 10, 15, 20, 25, 30, 35}));
  const std::vector<double> fractions = NiceTicks(0.3, 0.92, 4);
  ASSERT_EQ(fractions.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(fractions[i], 0.4 + 0.2 * i, 1e-12);
  const std::vector<double> flat = NiceTicks(5, 5, 5);
  EXPECT_GE(flat.size(), 2u);
  EXPECT_LE(flat.front(), 5);
  EXPECT_GE(flat.back(), 5);
}

TEST(SvgTest, TickLabelsAreShort) {
  EXPECT_EQ(FormatTick(0.25), "0.25");
  EXPECT_EQ(FormatTick(1500), "1500");
  EXPECT_EQ(FormatTick(25000), "25k");
  EXPECT_EQ(FormatTick(2e6), "2M");
  EXPECT_EQ(FormatTick(3e-5), "3e-05");
  EXPECT_EQ(FormatTick(NAN), "–");
}

TEST(SvgTest, EscapesMarkupAndControlCharacters) {
  EXPECT_EQ(EscapeXml("a<b>&\"'\x01"), "a&lt;b&gt;&amp;&quot;&#39; ");
}

TEST(SvgTest, ChartsAreWellFormedWhateverTheData) {
  LineChart line{.title = "loss <&>", .x_label = "step", .y_label = "nats"};
  EXPECT_EQ(XmlError(RenderLineChart(line)), "");  // no series at all
  line.series.push_back({"a", {0, 1, 2, 3}, {1, NAN, 2, INFINITY}, "#123456"});
  line.series.push_back({"flat", {0, 1}, {5, 5}, "red", true});
  line.series.push_back({"one", {4}, {7}, "blue"});
  line.markers = {1, NAN};
  line.marker_label = "skipped";
  line.reference_lines = {{6, "peak"}, {NAN, "none"}};
  const std::string svg = RenderLineChart(line);
  EXPECT_EQ(XmlError(svg), "") << svg;
  EXPECT_EQ(svg.find("nan"), std::string::npos);
  EXPECT_NE(svg.find("loss &lt;&amp;&gt;"), std::string::npos);
  line.log_y = true;
  line.series.push_back({"zeros", {0, 1}, {0, -1}, "green"});
  EXPECT_EQ(XmlError(RenderLineChart(line)), "");

  BarChart bars{.title = "bars", .value_label = "s"};
  EXPECT_EQ(XmlError(RenderBarChart(bars)), "");
  bars.categories = {"a", "b", "c"};
  bars.segments = {{"x", "#111", {1, NAN, -2}}, {"y", "#222", {0.5}}};
  EXPECT_EQ(XmlError(RenderBarChart(bars)), "");
  bars.grouped = true;
  EXPECT_EQ(XmlError(RenderBarChart(bars)), "");
  bars.horizontal = true;
  EXPECT_EQ(XmlError(RenderBarChart(bars)), "");

  Heatmap heat{.title = "experts", .x_label = "step", .y_label = "expert"};
  EXPECT_EQ(XmlError(RenderHeatmap(heat)), "");
  heat.values = {{0.5, 1, 2.5}, {NAN, 1.5}};
  heat.row_labels = {"0", "1"};
  heat.column_labels = {"0", "1", "2"};
  const std::string map = RenderHeatmap(heat);
  EXPECT_EQ(XmlError(map), "");
  EXPECT_NE(map.find("not recorded"), std::string::npos);  // the NaN cell's hover text
}

}  // namespace
}  // namespace moefold::report
