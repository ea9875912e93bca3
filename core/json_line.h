// One JSON object per line — metrics.jsonl, profile.jsonl, the benchmarks' output — built with
// nlohmann::json (fields in the order added, strings escaped by the library, non-finite numbers
// written as null), so the tree has one JSON writer.
//
//   JsonLine line;
//   line.Add("step", step).Add("loss", loss).Add("expert_tokens", counts);
//   std::string text = line.Dump();   // {"step": 3, "loss": 2.5, ...}
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "nlohmann/json_fwd.hpp"

namespace moefold {

class JsonLine {
 public:
  JsonLine();
  ~JsonLine();
  JsonLine(const JsonLine& other);
  JsonLine& operator=(const JsonLine& other);

  JsonLine& Add(absl::string_view key, double value);  // NaN and ±inf become null
  JsonLine& Add(absl::string_view key, int64_t value);
  JsonLine& Add(absl::string_view key, int value) { return Add(key, static_cast<int64_t>(value)); }
  JsonLine& Add(absl::string_view key, bool value);
  JsonLine& Add(absl::string_view key, absl::string_view value);
  JsonLine& Add(absl::string_view key, const char* value) {
    return Add(key, absl::string_view(value));
  }
  JsonLine& Add(absl::string_view key, const std::string& value) {
    return Add(key, absl::string_view(value));
  }
  JsonLine& Add(absl::string_view key, const std::vector<double>& values);
  JsonLine& Add(absl::string_view key, const std::vector<std::vector<int64_t>>& rows);
  JsonLine& Add(absl::string_view key, const JsonLine& object);  // a nested object
  JsonLine& Add(absl::string_view key, const std::vector<int64_t>& values);
  JsonLine& Add(absl::string_view key, const std::vector<std::string>& values);
  JsonLine& Add(absl::string_view key, const std::vector<JsonLine>& objects);  // array of objects

  // The object on one line, fields separated by ", " and keys from values by ": ".
  std::string Dump() const;
  // Dump() and a newline to `file`, flushed at once so a run that dies keeps every line written.
  void Print(std::FILE* file = stdout) const;

 private:
  std::unique_ptr<nlohmann::ordered_json> json_;
};

}  // namespace moefold
