// Implementation of JsonLine.
#include "tools/bench/json_line.h"

#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace moefold::bench {

JsonLine::JsonLine(const std::string& bench) : text_(absl::StrCat("{\"bench\": \"", bench, "\"")) {}

JsonLine& JsonLine::Add(const std::string& key, double value) {
  // JSON has no NaN or infinity: a figure that could not be measured is null.
  absl::StrAppend(&text_, ", \"", key, "\": ",
                  std::isfinite(value) ? absl::StrFormat("%.6g", value) : std::string("null"));
  return *this;
}

JsonLine& JsonLine::Add(const std::string& key, const std::string& value) {
  // Error messages carry quotes and newlines: escape what JSON requires.
  std::string escaped;
  for (const char c : value) {
    if (c == '"' || c == '\\') {
      escaped += '\\';
      escaped += c;
    } else if (c == '\n') {
      escaped += "\\n";
    } else if (static_cast<unsigned char>(c) < 0x20) {
      escaped += absl::StrFormat("\\u%04x", static_cast<int>(c));
    } else {
      escaped += c;
    }
  }
  absl::StrAppend(&text_, ", \"", key, "\": \"", escaped, "\"");
  return *this;
}

void JsonLine::Print() {
  std::printf("%s}\n", text_.c_str());
  std::fflush(stdout);
}

}  // namespace moefold::bench
