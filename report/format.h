// Number formatting and small HTML builders shared by the report's sections. Every number the
// report shows goes through one of these, so a test can format a figure the same way and find it.
#pragma once

#include <string>
#include <vector>

namespace moefold::report {

std::string FormatSeconds(double seconds);  // "85.3 ms", "1.25 s", "—" when not recorded
std::string FormatBytes(double bytes);      // "512 B", "3.2 MiB", "1.50 GiB"
std::string FormatCount(double count);      // "950", "12.3 k", "1.05 M", "2.10 G"
std::string FormatPercent(double fraction, int decimals = 1);  // 0.123 -> "12.3%"
std::string FormatLoss(double loss);                           // "2.3456" (4 decimals)
std::string FormatNumber(double value);                        // "%.4g", "—" when not recorded

// An HTML table with a header row (none when `header` is empty); cells are text (escaped here).
// `numeric` columns align right.
std::string HtmlTable(const std::vector<std::string>& header,
                      const std::vector<std::vector<std::string>>& rows,
                      const std::vector<bool>& numeric = {});
// "<p class=\"missing\">TEXT</p>": the line a section shows for what the run did not record.
std::string NotRecorded(const std::string& text);

}  // namespace moefold::report
