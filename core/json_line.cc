// JsonLine on nlohmann::ordered_json.
#include "core/json_line.h"

#include <cmath>

#include "nlohmann/json.hpp"

namespace moefold {

JsonLine::JsonLine()
    : json_(std::make_unique<nlohmann::ordered_json>(nlohmann::ordered_json::object())) {}
JsonLine::~JsonLine() = default;
JsonLine::JsonLine(const JsonLine& other)
    : json_(std::make_unique<nlohmann::ordered_json>(*other.json_)) {}
JsonLine& JsonLine::operator=(const JsonLine& other) {
  *json_ = *other.json_;
  return *this;
}

namespace {

nlohmann::ordered_json Number(double value) {
  return std::isfinite(value) ? nlohmann::ordered_json(value) : nlohmann::ordered_json(nullptr);
}

}  // namespace

JsonLine& JsonLine::Add(absl::string_view key, double value) {
  (*json_)[std::string(key)] = Number(value);
  return *this;
}

JsonLine& JsonLine::Add(absl::string_view key, int64_t value) {
  (*json_)[std::string(key)] = value;
  return *this;
}

JsonLine& JsonLine::Add(absl::string_view key, bool value) {
  (*json_)[std::string(key)] = value;
  return *this;
}

JsonLine& JsonLine::Add(absl::string_view key, absl::string_view value) {
  (*json_)[std::string(key)] = std::string(value);
  return *this;
}

JsonLine& JsonLine::Add(absl::string_view key, const std::vector<double>& values) {
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (double v : values) list.push_back(Number(v));
  (*json_)[std::string(key)] = std::move(list);
  return *this;
}

JsonLine& JsonLine::Add(absl::string_view key, const std::vector<std::vector<int64_t>>& rows) {
  (*json_)[std::string(key)] = rows;
  return *this;
}

JsonLine& JsonLine::Add(absl::string_view key, const JsonLine& object) {
  (*json_)[std::string(key)] = *object.json_;
  return *this;
}

JsonLine& JsonLine::Add(absl::string_view key, const std::vector<int64_t>& values) {
  (*json_)[std::string(key)] = values;
  return *this;
}

JsonLine& JsonLine::Add(absl::string_view key, const std::vector<std::string>& values) {
  (*json_)[std::string(key)] = values;
  return *this;
}

JsonLine& JsonLine::Add(absl::string_view key, const std::vector<JsonLine>& objects) {
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const JsonLine& o : objects) list.push_back(*o.json_);
  (*json_)[std::string(key)] = std::move(list);
  return *this;
}

namespace {

// The library's compact form without spaces; these lines keep ", " between elements and ": " after
// keys, as every reader of the files written so far saw them.
std::string Spaced(const nlohmann::ordered_json& value) {
  if (value.is_object()) {
    std::string out = "{";
    for (auto it = value.begin(); it != value.end(); ++it) {
      if (it != value.begin()) out += ", ";
      out += nlohmann::ordered_json(it.key()).dump() + ": " + Spaced(it.value());
    }
    return out + "}";
  }
  if (value.is_array()) {
    std::string out = "[";
    for (size_t i = 0; i < value.size(); ++i) {
      if (i > 0) out += ", ";
      out += Spaced(value[i]);
    }
    return out + "]";
  }
  return value.dump();
}

}  // namespace

std::string JsonLine::Dump() const { return Spaced(*json_); }

void JsonLine::Print(std::FILE* file) const {
  std::fprintf(file, "%s\n", Dump().c_str());
  std::fflush(file);
}

}  // namespace moefold
