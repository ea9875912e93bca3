// `--set a.b.c=value`: one field set by dotted path through protobuf reflection. Every error names
// the override as written, so a typo on the command line is easy to find.
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "configs/config_loader.h"
#include "configs/field_lookup.h"

namespace moefold::config {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

absl::Status BadValue(absl::string_view assignment, absl::string_view path, absl::string_view value,
                      absl::string_view expected) {
  return absl::InvalidArgumentError(absl::StrCat("override '", assignment, "': '", value,
                                                 "' is not ", expected, " (", path, ")"));
}

// Sets a singular scalar field, or appends to a repeated one, from `value`.
absl::Status SetScalar(Message* message, const FieldDescriptor* field, absl::string_view value,
                       absl::string_view assignment, absl::string_view path) {
  const Reflection* r = message->GetReflection();
  const bool repeated = field->is_repeated();
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32: {
      int32_t v;
      if (!absl::SimpleAtoi(value, &v)) return BadValue(assignment, path, value, "an int32");
      repeated ? r->AddInt32(message, field, v) : r->SetInt32(message, field, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_INT64: {
      int64_t v;
      if (!absl::SimpleAtoi(value, &v)) return BadValue(assignment, path, value, "an int64");
      repeated ? r->AddInt64(message, field, v) : r->SetInt64(message, field, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_UINT32: {
      uint32_t v;
      if (absl::StartsWith(value, "-") || !absl::SimpleAtoi(value, &v)) {
        return BadValue(assignment, path, value, "a uint32");
      }
      repeated ? r->AddUInt32(message, field, v) : r->SetUInt32(message, field, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_UINT64: {
      uint64_t v;
      if (absl::StartsWith(value, "-") || !absl::SimpleAtoi(value, &v)) {
        return BadValue(assignment, path, value, "a uint64");
      }
      repeated ? r->AddUInt64(message, field, v) : r->SetUInt64(message, field, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_FLOAT: {
      float v;
      if (!absl::SimpleAtof(value, &v)) return BadValue(assignment, path, value, "a number");
      repeated ? r->AddFloat(message, field, v) : r->SetFloat(message, field, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_DOUBLE: {
      double v;
      if (!absl::SimpleAtod(value, &v)) return BadValue(assignment, path, value, "a number");
      repeated ? r->AddDouble(message, field, v) : r->SetDouble(message, field, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_BOOL: {
      bool v;
      if (!absl::SimpleAtob(value, &v)) {
        return BadValue(assignment, path, value, "a bool (true/false)");
      }
      repeated ? r->AddBool(message, field, v) : r->SetBool(message, field, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_STRING: {
      std::string v(value);
      if (v.size() >= 2 && (v.front() == '"' || v.front() == '\'') && v.back() == v.front()) {
        v = v.substr(1, v.size() - 2);
      }
      repeated ? r->AddString(message, field, v) : r->SetString(message, field, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_ENUM: {
      const auto* enum_value = field->enum_type()->FindValueByName(std::string(value));
      if (enum_value == nullptr) {
        std::vector<std::string> names;
        for (int i = 0; i < field->enum_type()->value_count(); ++i) {
          names.push_back(field->enum_type()->value(i)->name());
        }
        return BadValue(assignment, path, value,
                        absl::StrCat("one of ", absl::StrJoin(names, ", ")));
      }
      repeated ? r->AddEnum(message, field, enum_value) : r->SetEnum(message, field, enum_value);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_MESSAGE:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("override '", assignment, "': ", path, " is a section, not a value"));
}

// `map.KEY=value` (parts[i] names the map): sets one entry of a map with string keys and scalar
// values, replacing the key's value when it is there.
absl::Status SetMapEntry(Message* message, const FieldDescriptor* field,
                         const std::vector<absl::string_view>& parts, size_t i,
                         absl::string_view value, absl::string_view assignment,
                         const std::string& walked) {
  const FieldDescriptor* key_field = field->message_type()->map_key();
  const FieldDescriptor* value_field = field->message_type()->map_value();
  if (i + 2 != parts.size()) {
    return absl::InvalidArgumentError(absl::StrCat("override '", assignment, "': ", walked,
                                                   " is a map; set one entry (", walked,
                                                   ".KEY=value)"));
  }
  if (key_field->cpp_type() != FieldDescriptor::CPPTYPE_STRING ||
      value_field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
    return absl::InvalidArgumentError(absl::StrCat(
        "override '", assignment, "': ", walked, " is not a map of names to values"));
  }
  const std::string key(parts[i + 1]);
  const Reflection* r = message->GetReflection();
  Message* entry = nullptr;
  for (int j = 0; j < r->FieldSize(*message, field) && entry == nullptr; ++j) {
    Message* e = r->MutableRepeatedMessage(message, field, j);
    if (e->GetReflection()->GetString(*e, key_field) == key) entry = e;
  }
  if (entry == nullptr) {
    entry = r->AddMessage(message, field);
    entry->GetReflection()->SetString(entry, key_field, key);
  }
  return SetScalar(entry, value_field, value, assignment, absl::StrCat(walked, ".", key));
}

}  // namespace

absl::Status ApplyOverride(ExperimentConfig* config, absl::string_view assignment) {
  const size_t eq = assignment.find('=');
  if (eq == absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "override '", assignment, "': expected key=value with a dotted key, e.g. train.steps=10"));
  }
  const absl::string_view path = absl::StripAsciiWhitespace(assignment.substr(0, eq));
  const absl::string_view value = absl::StripAsciiWhitespace(assignment.substr(eq + 1));
  const std::vector<absl::string_view> parts = absl::StrSplit(path, '.');

  // Work on a copy so a failed override leaves `config` untouched (no half-set list, no empty
  // section created on the way to a typo).
  ExperimentConfig updated = *config;
  Message* message = &updated;
  std::string walked;
  for (size_t i = 0; i < parts.size(); ++i) {
    const Descriptor& section = *message->GetDescriptor();
    const FieldDescriptor* field = FindConfigField(section, parts[i]);
    if (field == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("override '", assignment, "': unknown field '", parts[i], "' in ",
                       walked.empty() ? "the experiment" : walked, DidYouMean(section, parts[i])));
    }
    walked = walked.empty() ? field->name() : absl::StrCat(walked, ".", field->name());
    if (field->is_map()) {
      absl::Status s = SetMapEntry(message, field, parts, i, value, assignment, walked);
      if (s.ok()) *config = std::move(updated);
      return s;
    }
    const bool is_section =
        field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE && !field->is_repeated();
    if (i + 1 < parts.size()) {
      if (!is_section) {
        return absl::InvalidArgumentError(
            absl::StrCat("override '", assignment, "': ", walked, " is a value, not a section"));
      }
      message = message->GetReflection()->MutableMessage(message, field);
      continue;
    }
    if (is_section) {
      return absl::InvalidArgumentError(absl::StrCat(
          "override '", assignment, "': ", walked, " is a section; set one of its fields (", walked,
          ".", field->message_type()->field(0)->name(), "=...)"));
    }
    if (!field->is_repeated()) {
      absl::Status s = SetScalar(message, field, value, assignment, walked);
      if (s.ok()) *config = std::move(updated);
      return s;
    }
    // Repeated: "a,b,c" (brackets allowed) replaces the list; "" clears it.
    absl::string_view list = value;
    if (absl::StartsWith(list, "[") && absl::EndsWith(list, "]")) {
      list = list.substr(1, list.size() - 2);
    }
    message->GetReflection()->ClearField(message, field);
    if (!absl::StripAsciiWhitespace(list).empty()) {
      for (absl::string_view item : absl::StrSplit(list, ',')) {
        absl::Status s =
            SetScalar(message, field, absl::StripAsciiWhitespace(item), assignment, walked);
        if (!s.ok()) return s;
      }
    }
    *config = std::move(updated);
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat("override '", assignment, "': empty key"));
}

}  // namespace moefold::config
