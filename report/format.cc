// Formatting of the report's numbers and tables.
#include "report/format.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "report/svg.h"

namespace moefold::report {

std::string FormatSeconds(double s) {
  if (!std::isfinite(s)) return "—";
  if (std::abs(s) < 1e-3) return absl::StrFormat("%.1f µs", s * 1e6);
  if (std::abs(s) < 1) return absl::StrFormat("%.1f ms", s * 1e3);
  return absl::StrFormat("%.3g s", s);
}

std::string FormatBytes(double b) {
  if (!std::isfinite(b)) return "—";
  if (b < 1024) return absl::StrFormat("%.0f B", b);
  if (b < 1024.0 * 1024) return absl::StrFormat("%.1f KiB", b / 1024);
  if (b < 1024.0 * 1024 * 1024) return absl::StrFormat("%.1f MiB", b / (1024.0 * 1024));
  return absl::StrFormat("%.2f GiB", b / (1024.0 * 1024 * 1024));
}

std::string FormatCount(double n) {
  if (!std::isfinite(n)) return "—";
  const double a = std::abs(n);
  if (a < 1e3) return absl::StrFormat("%.0f", n);
  if (a < 1e6) return absl::StrFormat("%.3g k", n / 1e3);
  if (a < 1e9) return absl::StrFormat("%.3g M", n / 1e6);
  return absl::StrFormat("%.3g G", n / 1e9);
}

std::string FormatPercent(double f, int decimals) {
  if (!std::isfinite(f)) return "—";
  return absl::StrFormat("%.*f%%", decimals, f * 100);
}

std::string FormatLoss(double loss) {
  return std::isfinite(loss) ? absl::StrFormat("%.4f", loss) : "—";
}

std::string FormatNumber(double v) { return std::isfinite(v) ? absl::StrFormat("%.4g", v) : "—"; }

std::string HtmlTable(const std::vector<std::string>& header,
                      const std::vector<std::vector<std::string>>& rows,
                      const std::vector<bool>& numeric) {
  auto cell = [&](const char* tag, size_t column, const std::string& text) {
    const bool right = column < numeric.size() && numeric[column];
    return absl::StrCat("<", tag, right ? " class=\"num\"" : "", ">", EscapeXml(text), "</", tag,
                        ">");
  };
  std::string out = "<table>";
  if (!header.empty()) {
    out += "<thead><tr>";
    for (size_t k = 0; k < header.size(); ++k) out += cell("th", k, header[k]);
    out += "</tr></thead>";
  }
  out += "<tbody>";
  for (const auto& row : rows) {
    out += "<tr>";
    for (size_t k = 0; k < row.size(); ++k) out += cell("td", k, row[k]);
    out += "</tr>";
  }
  return out + "</tbody></table>";
}

std::string NotRecorded(const std::string& text) {
  return absl::StrCat("<p class=\"missing\">", EscapeXml(text), "</p>");
}

}  // namespace moefold::report
