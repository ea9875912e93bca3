// SVG chart drawing. Coordinates are computed here in pixels; every number written is finite (a
// NaN in an attribute would make the document invalid), and every text is escaped.
#include "report/svg.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace moefold::report {
namespace {

// Plot area margins in pixels: room for the title and legend above, tick labels left and below.
constexpr double kLeft = 64, kRight = 16, kTop = 44, kBottom = 40;
constexpr size_t kMaxPoints = 1500;  // per line: more only makes the page larger
constexpr char kFont[] = "font-family=\"sans-serif\" font-size=\"11\"";

std::string Px(double v) { return absl::StrFormat("%.1f", std::isfinite(v) ? v : 0.0); }

std::string Open(int width, int height) {
  return absl::StrCat("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"", width, "\" height=\"",
                      height, "\" viewBox=\"0 0 ", width, " ", height, "\" ", kFont,
                      " role=\"img\">");
}

std::string Text(double x, double y, const std::string& text, const std::string& extra = "") {
  return absl::StrCat("<text x=\"", Px(x), "\" y=\"", Px(y), "\"", extra.empty() ? "" : " ", extra,
                      ">", EscapeXml(text), "</text>");
}

std::string Line(double x1, double y1, double x2, double y2, const std::string& style) {
  return absl::StrCat("<line x1=\"", Px(x1), "\" y1=\"", Px(y1), "\" x2=\"", Px(x2), "\" y2=\"",
                      Px(y2), "\" ", style, "/>");
}

std::string Rect(double x, double y, double w, double h, const std::string& fill,
                 const std::string& hover) {
  return absl::StrCat("<rect x=\"", Px(x), "\" y=\"", Px(y), "\" width=\"", Px(std::max(w, 0.0)),
                      "\" height=\"", Px(std::max(h, 0.0)), "\" fill=\"", EscapeXml(fill), "\">",
                      hover.empty() ? "" : absl::StrCat("<title>", EscapeXml(hover), "</title>"),
                      "</rect>");
}

// The title on the first line and the legend entries right-aligned on the second.
std::string Header(const std::string& title, int width,
                   const std::vector<std::pair<std::string, std::string>>& legend) {
  std::string out = Text(kLeft, 16, title, "font-size=\"13\" font-weight=\"bold\"");
  double x = width - kRight;
  for (auto it = legend.rbegin(); it != legend.rend(); ++it) {
    const double text_width = 6.2 * it->first.size();
    x -= text_width;
    out += Text(x, 34, it->first);
    x -= 14;
    out += Rect(x, 25, 10, 10, it->second, "");
    x -= 12;
  }
  return out;
}

bool Finite(double v) { return std::isfinite(v); }

// A linear or log axis from data space to pixels.
struct Axis {
  double lo = 0, hi = 1, px_lo = 0, px_hi = 1;
  bool log = false;
  double operator()(double v) const {
    const double t = log ? (std::log10(v) - lo) / (hi - lo) : (v - lo) / (hi - lo);
    return px_lo + t * (px_hi - px_lo);
  }
};

// Widens [lo, hi] so a flat or empty range still draws.
void Widen(double* lo, double* hi) {
  if (!Finite(*lo) || !Finite(*hi)) {
    *lo = 0;
    *hi = 1;
  } else if (*hi - *lo <= std::abs(*hi) * 1e-9) {
    const double pad = *hi == 0 ? 1 : std::abs(*hi) * 0.1;
    *lo -= pad;
    *hi += pad;
  }
}

std::string Dash(bool dashed) { return dashed ? " stroke-dasharray=\"5,3\"" : ""; }

}  // namespace

std::string EscapeXml(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        // Control characters other than tab and newline are not allowed in XML 1.0.
        if (static_cast<unsigned char>(c) < 0x20 && c != '\n' && c != '\t' && c != '\r') {
          out += ' ';
        } else {
          out += c;
        }
    }
  }
  return out;
}

std::vector<double> NiceTicks(double low, double high, int count) {
  Widen(&low, &high);
  const double raw = (high - low) / std::max(count - 1, 1);
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  // The round step nearest the raw one (so the count is about right either way).
  const double ratio = raw / magnitude;
  const double step = magnitude * (ratio < 1.5 ? 1 : ratio < 3 ? 2 : ratio < 7 ? 5 : 10);
  std::vector<double> ticks;
  // Multiples of the step by integer count: no drift from adding the step again and again.
  for (double k = std::ceil(low / step - 1e-9); k * step <= high + step * 1e-9; k += 1) {
    ticks.push_back(k * step + 0.0);  // + 0.0: -0 becomes 0 (no "-0" label)
  }
  return ticks;
}

std::string FormatTick(double v) {
  if (!Finite(v)) return "–";
  const double a = std::abs(v);
  if (a >= 1e9) return absl::StrFormat("%.4gG", v / 1e9);
  if (a >= 1e6) return absl::StrFormat("%.4gM", v / 1e6);
  if (a >= 1e4) return absl::StrFormat("%.4gk", v / 1e3);
  return absl::StrFormat("%.4g", v);
}

std::string RenderLineChart(const LineChart& c) {
  double x_lo = INFINITY, x_hi = -INFINITY, y_lo = INFINITY, y_hi = -INFINITY;
  for (const Series& s : c.series) {
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!Finite(s.x[i]) || !Finite(s.y[i]) || (c.log_y && s.y[i] <= 0)) continue;
      x_lo = std::min(x_lo, s.x[i]);
      x_hi = std::max(x_hi, s.x[i]);
      y_lo = std::min(y_lo, s.y[i]);
      y_hi = std::max(y_hi, s.y[i]);
    }
  }
  for (const auto& [y, label] : c.reference_lines) {
    if (!Finite(y) || (c.log_y && y <= 0)) continue;
    y_lo = std::min(y_lo, y);
    y_hi = std::max(y_hi, y);
  }
  if (c.y_from_zero && !c.log_y) y_lo = std::min(y_lo, 0.0);
  Widen(&x_lo, &x_hi);
  Widen(&y_lo, &y_hi);

  Axis x{x_lo, x_hi, kLeft, c.width - kRight};
  Axis y;
  std::vector<double> y_ticks;
  if (c.log_y) {
    y.log = true;
    y.lo = std::floor(std::log10(y_lo));
    y.hi = std::max(std::ceil(std::log10(y_hi)), y.lo + 1);
    // Decades; over two decades or fewer also 2× and 5×, so the axis has enough labels.
    for (double e = y.lo; e <= y.hi; e += 1) {
      y_ticks.push_back(std::pow(10.0, e));
      if (y.hi - y.lo <= 2 && e < y.hi) {
        y_ticks.push_back(2 * std::pow(10.0, e));
        y_ticks.push_back(5 * std::pow(10.0, e));
      }
    }
  } else {
    y_ticks = NiceTicks(y_lo, y_hi, 5);
    y.lo = std::min(y_lo, y_ticks.front());
    y.hi = std::max(y_hi, y_ticks.back());
  }
  y.px_lo = c.height - kBottom;
  y.px_hi = kTop;

  std::vector<std::pair<std::string, std::string>> legend;
  for (const Series& s : c.series) legend.emplace_back(s.name, s.color);
  if (!c.markers.empty()) legend.emplace_back(c.marker_label, "#d62728");
  std::string out = Open(c.width, c.height) + Header(c.title, c.width, legend);

  // Grid and ticks.
  for (double t : y_ticks) {
    out += Line(kLeft, y(t), c.width - kRight, y(t), "stroke=\"#e5e5e5\"");
    out += Text(kLeft - 6, y(t) + 4, FormatTick(t), "text-anchor=\"end\"");
  }
  for (double t : NiceTicks(x_lo, x_hi, 7)) {
    if (t < x_lo || t > x_hi) continue;
    out += Line(x(t), c.height - kBottom, x(t), c.height - kBottom + 4, "stroke=\"#444\"");
    out += Text(x(t), c.height - kBottom + 16, FormatTick(t), "text-anchor=\"middle\"");
  }
  out += Line(kLeft, c.height - kBottom, c.width - kRight, c.height - kBottom, "stroke=\"#444\"");
  out += Line(kLeft, kTop, kLeft, c.height - kBottom, "stroke=\"#444\"");
  out += Text((kLeft + c.width - kRight) / 2, c.height - 6, c.x_label, "text-anchor=\"middle\"");
  out += Text(14, (kTop + c.height - kBottom) / 2, c.y_label,
              absl::StrCat("text-anchor=\"middle\" transform=\"rotate(-90 14 ",
                           Px((kTop + c.height - kBottom) / 2), ")\""));

  for (double m : c.markers) {
    if (!Finite(m)) continue;
    out += absl::StrCat(
        "<g>",
        Line(x(m), kTop, x(m), c.height - kBottom, "stroke=\"#d62728\" stroke-opacity=\"0.6\""),
        "<title>", EscapeXml(absl::StrCat(c.marker_label, ": ", FormatTick(m))), "</title></g>");
  }
  for (const auto& [value, label] : c.reference_lines) {
    if (!Finite(value) || (c.log_y && value <= 0)) continue;
    out += Line(kLeft, y(value), c.width - kRight, y(value),
                "stroke=\"#555\" stroke-dasharray=\"6,4\"");
    // Above the line, or below it when the line runs along the top of the plot.
    const double label_y = y(value) - kTop < 14 ? y(value) + 13 : y(value) - 4;
    out += Text(c.width - kRight - 4, label_y, label, "text-anchor=\"end\" fill=\"#333\"");
  }
  for (const Series& s : c.series) {
    std::string path;
    bool pen_down = false;
    int points = 0;
    const size_t n = std::min(s.x.size(), s.y.size());
    // Long runs: every stride-th point (and the last), about kMaxPoints in all.
    const size_t stride = std::max<size_t>(1, (n + kMaxPoints - 1) / kMaxPoints);
    for (size_t i = 0; i < n; ++i) {
      if (i % stride != 0 && i + 1 != n) continue;
      if (!Finite(s.x[i]) || !Finite(s.y[i]) || (c.log_y && s.y[i] <= 0)) {
        pen_down = false;
        continue;
      }
      absl::StrAppend(&path, pen_down ? " L" : " M", Px(x(s.x[i])), " ", Px(y(s.y[i])));
      pen_down = true;
      ++points;
    }
    if (points == 0) continue;
    out += absl::StrCat("<path d=\"", path, "\" fill=\"none\" stroke=\"", EscapeXml(s.color),
                        "\" stroke-width=\"1.6\"", Dash(s.dashed), "/>");
    // Few points: a dot each, with its value on hover.
    if (points <= 40) {
      for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
        if (!Finite(s.x[i]) || !Finite(s.y[i]) || (c.log_y && s.y[i] <= 0)) continue;
        out += absl::StrCat("<circle cx=\"", Px(x(s.x[i])), "\" cy=\"", Px(y(s.y[i])),
                            "\" r=\"2.5\" fill=\"", EscapeXml(s.color), "\"><title>",
                            EscapeXml(absl::StrCat(s.name, " at ", FormatTick(s.x[i]), ": ",
                                                   absl::StrFormat("%.6g", s.y[i]))),
                            "</title></circle>");
      }
    }
  }
  return out + "</svg>";
}

std::string RenderBarChart(const BarChart& c) {
  const size_t n = c.categories.size();
  double top = 0;
  for (size_t i = 0; i < n; ++i) {
    double stacked = 0;
    for (const BarSegment& s : c.segments) {
      const double v = i < s.values.size() && Finite(s.values[i]) ? std::max(s.values[i], 0.0) : 0;
      stacked = c.grouped ? std::max(stacked, v) : stacked + v;
    }
    top = std::max(top, stacked);
  }
  const std::vector<double> ticks = NiceTicks(0, top > 0 ? top : 1, 5);
  const double v_hi = std::max(top, ticks.back());

  std::vector<std::pair<std::string, std::string>> legend;
  for (const BarSegment& s : c.segments) legend.emplace_back(s.name, s.color);
  std::string out = Open(c.width, c.height) + Header(c.title, c.width, legend);

  // Value axis and category axis in pixels; horizontal charts swap them and leave room for labels.
  const double left = c.horizontal ? 110 : kLeft;
  const double plot_w = c.width - kRight - left, plot_h = c.height - kBottom - kTop;
  Axis value{0, v_hi, 0, 0};
  if (c.horizontal) {
    value.px_lo = left;
    value.px_hi = c.width - kRight;
  } else {
    value.px_lo = c.height - kBottom;
    value.px_hi = kTop;
  }
  for (double t : ticks) {
    if (c.horizontal) {
      out += Line(value(t), kTop, value(t), c.height - kBottom, "stroke=\"#e5e5e5\"");
      out += Text(value(t), c.height - kBottom + 16, FormatTick(t), "text-anchor=\"middle\"");
    } else {
      out += Line(left, value(t), c.width - kRight, value(t), "stroke=\"#e5e5e5\"");
      out += Text(left - 6, value(t) + 4, FormatTick(t), "text-anchor=\"end\"");
    }
  }
  const double band = (c.horizontal ? plot_h : plot_w) / std::max<size_t>(n, 1);
  const double bar = band * (n > 60 ? 0.95 : 0.75);
  // At most about 14 category labels, evenly spaced.
  const size_t label_every = std::max<size_t>(1, (n + 13) / 14);
  for (size_t i = 0; i < n; ++i) {
    const double start = (c.horizontal ? kTop : left) + band * i + (band - bar) / 2;
    if (i % label_every == 0) {
      if (c.horizontal) {
        out += Text(left - 6, start + bar / 2 + 4, c.categories[i], "text-anchor=\"end\"");
      } else {
        out += Text(start + bar / 2, c.height - kBottom + 16, c.categories[i],
                    "text-anchor=\"middle\"");
      }
    }
    double base = 0;
    const double width = c.grouped ? bar / std::max<size_t>(c.segments.size(), 1) : bar;
    for (size_t k = 0; k < c.segments.size(); ++k) {
      const BarSegment& s = c.segments[k];
      const double v = i < s.values.size() && Finite(s.values[i]) ? std::max(s.values[i], 0.0) : 0;
      if (v <= 0) continue;
      const double from = c.grouped ? 0 : base;
      const double offset = c.grouped ? start + width * k : start;
      const std::string hover =
          absl::StrCat(c.categories[i], " — ", s.name, ": ", absl::StrFormat("%.4g", v), c.unit);
      const double a = value(from), b = value(from + v);
      if (c.horizontal) {
        out += Rect(a, offset, b - a, width, s.color, hover);
      } else {
        out += Rect(offset, b, width, a - b, s.color, hover);
      }
      base += v;
    }
  }
  out += c.horizontal ? Line(left, c.height - kBottom, c.width - kRight, c.height - kBottom,
                             "stroke=\"#444\"")
                      : Line(left, c.height - kBottom, c.width - kRight, c.height - kBottom,
                             "stroke=\"#444\"") +
                            Line(left, kTop, left, c.height - kBottom, "stroke=\"#444\"");
  if (c.horizontal) {
    out +=
        Text((left + c.width - kRight) / 2, c.height - 6, c.value_label, "text-anchor=\"middle\"");
  } else {
    out += Text(14, (kTop + c.height - kBottom) / 2, c.value_label,
                absl::StrCat("text-anchor=\"middle\" transform=\"rotate(-90 14 ",
                             Px((kTop + c.height - kBottom) / 2), ")\""));
  }
  return out + "</svg>";
}

namespace {

// Blue → white → red, the diverging scale of the heatmap.
std::string HeatColor(double v, double low, double mid, double high) {
  if (!Finite(v)) return "#cccccc";
  v = std::clamp(v, low, high);
  const double blue[3] = {49, 99, 187}, white[3] = {247, 247, 247}, red[3] = {200, 40, 40};
  const double* far = v < mid ? blue : red;
  const double t =
      v < mid ? (mid - v) / std::max(mid - low, 1e-12) : (v - mid) / std::max(high - mid, 1e-12);
  int rgb[3];
  for (int k = 0; k < 3; ++k) rgb[k] = static_cast<int>(white[k] + t * (far[k] - white[k]) + 0.5);
  return absl::StrFormat("#%02x%02x%02x", rgb[0], rgb[1], rgb[2]);
}

}  // namespace

std::string RenderHeatmap(const Heatmap& h) {
  const size_t rows = h.values.size();
  size_t cols = 0;
  for (const auto& row : h.values) cols = std::max(cols, row.size());
  // The colour scale takes a strip on the right.
  const double scale_w = 70;
  const double left = 56, plot_w = h.width - left - kRight - scale_w;
  const double top = 28, plot_h = h.height - top - kBottom;
  std::string out =
      Open(h.width, h.height) + Text(left, 16, h.title, "font-size=\"13\" font-weight=\"bold\"");
  const double cw = plot_w / std::max<size_t>(cols, 1), rh = plot_h / std::max<size_t>(rows, 1);
  for (size_t r = 0; r < rows; ++r) {
    for (size_t k = 0; k < h.values[r].size(); ++k) {
      const double v = h.values[r][k];
      const std::string hover =
          absl::StrCat(r < h.row_labels.size() ? h.row_labels[r] : "", ", ",
                       k < h.column_labels.size() ? h.column_labels[k] : "", ": ",
                       Finite(v) ? absl::StrFormat("%.3g", v) : std::string("not recorded"));
      // Cells overlap by a fraction of a pixel so no hairline gaps show between them.
      out += Rect(left + cw * k, top + rh * r, cw + 0.3, rh + 0.3,
                  HeatColor(v, h.low, h.mid, h.high), hover);
    }
  }
  const size_t row_every = std::max<size_t>(1, (rows + 15) / 16);
  for (size_t r = 0; r < rows && r < h.row_labels.size(); r += row_every) {
    out += Text(left - 4, top + rh * (r + 0.5) + 4, h.row_labels[r], "text-anchor=\"end\"");
  }
  const size_t col_every = std::max<size_t>(1, (cols + 7) / 8);
  for (size_t k = 0; k < cols && k < h.column_labels.size(); k += col_every) {
    out += Text(left + cw * (k + 0.5), h.height - kBottom + 14, h.column_labels[k],
                "text-anchor=\"middle\"");
  }
  out += Text(left + plot_w / 2, h.height - 8, h.x_label, "text-anchor=\"middle\"");
  out += Text(12, top + plot_h / 2, h.y_label,
              absl::StrCat("text-anchor=\"middle\" transform=\"rotate(-90 12 ",
                           Px(top + plot_h / 2), ")\""));
  // The scale: ten steps from high (top) to low, labelled at the ends and the middle.
  const double sx = h.width - kRight - scale_w + 14, steps = 10, sh = plot_h / steps;
  for (int i = 0; i < steps; ++i) {
    const double v = h.high - (h.high - h.low) * (i + 0.5) / steps;
    out += Rect(sx, top + sh * i, 12, sh + 0.3, HeatColor(v, h.low, h.mid, h.high), "");
  }
  out += Text(sx + 16, top + 8, absl::StrCat("≥ ", FormatTick(h.high)));
  out += Text(sx + 16, top + plot_h / 2 + 4, FormatTick(h.mid));
  out += Text(sx + 16, top + plot_h, FormatTick(h.low));
  out += Text(sx + 6, h.height - 8, h.scale_label, "text-anchor=\"middle\"");
  return out + "</svg>";
}

}  // namespace moefold::report
