// The effective config as YAML for logs and run directories. Written by reflection, so new fields
// appear without code changes; the output parses back to the same message.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "configs/config_loader.h"
#include "configs/yaml_json.h"

namespace moefold::config {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

// Fewest significant digits that read back to the same value ("0.0003", not "0.000300000014").
template <typename T>
std::string ShortestNumber(T value, int max_digits) {
  if (std::isnan(value)) return ".nan";
  if (std::isinf(value)) return value > 0 ? ".inf" : "-.inf";
  char buffer[64];
  for (int digits = 1; digits <= max_digits; ++digits) {
    std::snprintf(buffer, sizeof(buffer), "%.*g", digits, static_cast<double>(value));
    T back;
    if constexpr (std::is_same_v<T, float>) {
      back = std::strtof(buffer, nullptr);  // one rounding, as the parser does
    } else {
      back = std::strtod(buffer, nullptr);
    }
    if (back == value) break;
  }
  // %g turns 10000 into "1e+04"; whole numbers read better written out.
  if (std::strchr(buffer, 'e') != nullptr && value == std::trunc(value) &&
      std::fabs(value) < 1e15) {
    std::snprintf(buffer, sizeof(buffer), "%.0f", static_cast<double>(value));
  }
  return buffer;
}

std::string ScalarText(const Message& message, const FieldDescriptor* field, int index) {
  const Reflection* r = message.GetReflection();
  const bool rep = field->is_repeated();
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      return absl::StrCat(rep ? r->GetRepeatedInt32(message, field, index)
                              : r->GetInt32(message, field));
    case FieldDescriptor::CPPTYPE_INT64:
      return absl::StrCat(rep ? r->GetRepeatedInt64(message, field, index)
                              : r->GetInt64(message, field));
    case FieldDescriptor::CPPTYPE_UINT32:
      return absl::StrCat(rep ? r->GetRepeatedUInt32(message, field, index)
                              : r->GetUInt32(message, field));
    case FieldDescriptor::CPPTYPE_UINT64:
      return absl::StrCat(rep ? r->GetRepeatedUInt64(message, field, index)
                              : r->GetUInt64(message, field));
    case FieldDescriptor::CPPTYPE_FLOAT:
      return ShortestNumber(
          rep ? r->GetRepeatedFloat(message, field, index) : r->GetFloat(message, field), 9);
    case FieldDescriptor::CPPTYPE_DOUBLE:
      return ShortestNumber(
          rep ? r->GetRepeatedDouble(message, field, index) : r->GetDouble(message, field), 17);
    case FieldDescriptor::CPPTYPE_BOOL:
      return (rep ? r->GetRepeatedBool(message, field, index) : r->GetBool(message, field))
                 ? "true"
                 : "false";
    case FieldDescriptor::CPPTYPE_STRING:
      return JsonQuote(rep ? r->GetRepeatedString(message, field, index)
                           : r->GetString(message, field));
    case FieldDescriptor::CPPTYPE_ENUM:
      return (rep ? r->GetRepeatedEnum(message, field, index) : r->GetEnum(message, field))->name();
    case FieldDescriptor::CPPTYPE_MESSAGE:
      break;
  }
  return "";
}

void AppendMessage(const Message& message, int indent, std::string* out) {
  const Reflection* r = message.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  r->ListFields(message, &fields);  // set fields, in field-number order
  const std::string pad(indent, ' ');
  for (const FieldDescriptor* field : fields) {
    absl::StrAppend(out, pad, field->name(), ":");
    if (field->is_repeated()) {
      if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
        out->push_back('\n');
        for (int i = 0; i < r->FieldSize(message, field); ++i) {
          absl::StrAppend(out, pad, "  -\n");
          AppendMessage(r->GetRepeatedMessage(message, field, i), indent + 4, out);
        }
        continue;
      }
      std::vector<std::string> items;
      for (int i = 0; i < r->FieldSize(message, field); ++i) {
        items.push_back(ScalarText(message, field, i));
      }
      absl::StrAppend(out, " [", absl::StrJoin(items, ", "), "]\n");
    } else if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      const Message& child = r->GetMessage(message, field);
      std::vector<const FieldDescriptor*> child_fields;
      child.GetReflection()->ListFields(child, &child_fields);
      if (child_fields.empty()) {
        out->append(" {}\n");
      } else {
        out->push_back('\n');
        AppendMessage(child, indent + 2, out);
      }
    } else {
      absl::StrAppend(out, " ", ScalarText(message, field, 0), "\n");
    }
  }
}

}  // namespace

std::string ConfigToYaml(const ExperimentConfig& config) {
  std::string out;
  AppendMessage(config, 0, &out);
  return out;
}

}  // namespace moefold::config
