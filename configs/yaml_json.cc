// Walks a yaml-cpp tree and writes JSON, typing scalars by their YAML form (and by the schema for
// string fields). Key positions are recorded on the way for error messages.
#include "configs/yaml_json.h"

#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "yaml-cpp/yaml.h"

namespace moefold::config {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;

std::string Where(absl::string_view source, const YAML::Mark& mark) {
  return absl::StrCat(source, ":", mark.line + 1, ":", mark.column + 1);
}

bool IsDigits(absl::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

// True for scalars the author wrote as text: quoted ("1") or tagged !!str.
bool IsExplicitString(const YAML::Node& node) {
  const std::string& tag = node.Tag();
  return tag == "!" || tag == "tag:yaml.org,2002:str" || tag == "!!str";
}

std::string ScalarToJson(const YAML::Node& node, bool force_string) {
  const std::string& text = node.Scalar();
  if (force_string || IsExplicitString(node)) return JsonQuote(text);
  const std::string lower = absl::AsciiStrToLower(text);
  if (lower == "true" || lower == "false") return lower;
  if (lower == ".inf" || lower == "+.inf") return "\"Infinity\"";
  if (lower == "-.inf") return "\"-Infinity\"";
  if (lower == ".nan") return "\"NaN\"";
  std::string number = JsonNumber(text);
  return number.empty() ? JsonQuote(text) : number;
}

class Converter {
 public:
  explicit Converter(absl::string_view source) : source_(source) {}

  absl::Status Value(const YAML::Node& node, const FieldDescriptor* field, const std::string& path,
                     std::string* out) {
    // An alias inside its own anchor (&a [*a]) makes the tree infinite, and nested aliases make it
    // exponentially large: both end here with an error instead of a stack overflow or a hang.
    if (depth_ >= kMaxDepth || out->size() > kMaxJsonBytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          Where(source_, node.Mark()), ": '", path, "' is nested more than ", kMaxDepth,
          " levels deep or expands beyond ", kMaxJsonBytes >> 20,
          " MiB (an alias that contains itself?)"));
    }
    ++depth_;
    absl::Status status = TypedValue(node, field, path, out);
    --depth_;
    return status;
  }

  absl::Status TypedValue(const YAML::Node& node, const FieldDescriptor* field,
                          const std::string& path, std::string* out) {
    switch (node.Type()) {
      case YAML::NodeType::Map:
        return Map(
            node,
            field != nullptr && field->message_type() != nullptr ? field->message_type() : nullptr,
            path, out);
      case YAML::NodeType::Sequence:
        return Sequence(node, field, path, out);
      case YAML::NodeType::Scalar:
        out->append(
            ScalarToJson(node, field != nullptr && field->type() == FieldDescriptor::TYPE_STRING));
        return absl::OkStatus();
      case YAML::NodeType::Null:
      case YAML::NodeType::Undefined:
        out->append("null");
        return absl::OkStatus();
    }
    return absl::OkStatus();
  }

  absl::Status Map(const YAML::Node& node, const Descriptor* section, const std::string& path,
                   std::string* out) {
    out->push_back('{');
    std::set<std::string> seen;
    bool first = true;
    for (const auto& entry : node) {
      const YAML::Node& key = entry.first;
      if (!key.IsScalar()) {
        return absl::InvalidArgumentError(
            absl::StrCat(Where(source_, key.Mark()), ": a key must be a plain name",
                         path.empty() ? "" : absl::StrCat(" (inside '", path, "')")));
      }
      const std::string name = key.Scalar();
      const std::string key_path = path.empty() ? name : absl::StrCat(path, ".", name);
      if (!seen.insert(name).second) {
        return absl::InvalidArgumentError(
            absl::StrCat(Where(source_, key.Mark()), ": duplicate key '", key_path, "'"));
      }
      positions_[key_path] = {key.Mark().line + 1, key.Mark().column + 1};
      // A null value means "not set here": the default stays.
      if (entry.second.IsNull()) continue;
      const FieldDescriptor* field = section != nullptr ? section->FindFieldByName(name) : nullptr;
      // Protobuf's JSON parser would also take "hiddenSize"; one spelling keeps files greppable.
      if (section != nullptr && field == nullptr) {
        if (const FieldDescriptor* camel = section->FindFieldByCamelcaseName(name);
            camel != nullptr && camel->name() != name) {
          return absl::InvalidArgumentError(absl::StrCat(Where(source_, key.Mark()), ": key '",
                                                         key_path, "': write it as '",
                                                         camel->name(), "'"));
        }
      }
      if (!first) out->push_back(',');
      first = false;
      out->append(JsonQuote(name));
      out->push_back(':');
      if (absl::Status s = Value(entry.second, field, key_path, out); !s.ok()) return s;
    }
    out->push_back('}');
    return absl::OkStatus();
  }

  absl::Status Sequence(const YAML::Node& node, const FieldDescriptor* field,
                        const std::string& path, std::string* out) {
    out->push_back('[');
    for (size_t i = 0; i < node.size(); ++i) {
      if (i > 0) out->push_back(',');
      const std::string element_path = absl::StrCat(path, "[", i, "]");
      positions_[element_path] = {node[i].Mark().line + 1, node[i].Mark().column + 1};
      if (absl::Status s = Value(node[i], field, element_path, out); !s.ok()) return s;
    }
    out->push_back(']');
    return absl::OkStatus();
  }

  std::map<std::string, std::pair<int, int>> TakePositions() { return std::move(positions_); }

 private:
  static constexpr int kMaxDepth = 32;  // the schema nests 3 levels
  static constexpr size_t kMaxJsonBytes = size_t{16} << 20;
  std::string source_;
  std::map<std::string, std::pair<int, int>> positions_;
  int depth_ = 0;
};

}  // namespace

std::string JsonQuote(absl::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += absl::StrFormat("\\u%04x", static_cast<unsigned char>(c));
        } else {
          out.push_back(c);
        }
    }
  }
  out.push_back('"');
  return out;
}

std::string JsonNumber(absl::string_view text) {
  // YAML 1.2 core: [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?
  absl::string_view rest = text;
  std::string sign;
  if (!rest.empty() && (rest[0] == '-' || rest[0] == '+')) {
    if (rest[0] == '-') sign = "-";
    rest.remove_prefix(1);
  }
  absl::string_view exponent;
  if (size_t e = rest.find_first_of("eE"); e != absl::string_view::npos) {
    exponent = rest.substr(e + 1);
    rest = rest.substr(0, e);
    absl::string_view digits = exponent;
    if (!digits.empty() && (digits[0] == '-' || digits[0] == '+')) digits.remove_prefix(1);
    if (!IsDigits(digits)) return "";
  }
  absl::string_view integer = rest, fraction;
  bool has_point = false;
  if (size_t dot = rest.find('.'); dot != absl::string_view::npos) {
    has_point = true;
    integer = rest.substr(0, dot);
    fraction = rest.substr(dot + 1);
  }
  if (integer.empty() && fraction.empty()) return "";
  if (!integer.empty() && !IsDigits(integer)) return "";
  if (!fraction.empty() && !IsDigits(fraction)) return "";
  if (has_point && integer.empty() && fraction.empty()) return "";
  // JSON forbids leading zeros, a bare point and a leading '+'.
  while (integer.size() > 1 && integer[0] == '0') integer.remove_prefix(1);
  std::string out = absl::StrCat(sign, integer.empty() ? "0" : integer);
  if (!fraction.empty()) absl::StrAppend(&out, ".", fraction);
  if (!exponent.empty()) absl::StrAppend(&out, "e", exponent);
  return out;
}

absl::StatusOr<YamlJson> YamlToJson(absl::string_view yaml, absl::string_view source,
                                    const Descriptor* schema) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::ParserException& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(Where(source, e.mark), ": YAML syntax error: ", e.msg));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": cannot read YAML: ", e.what()));
  }
  YamlJson doc;
  if (root.IsNull() || !root.IsDefined()) {
    doc.json = "{}";
    return doc;
  }
  if (!root.IsMap()) {
    return absl::InvalidArgumentError(
        absl::StrCat(Where(source, root.Mark()),
                     ": the top level must be a mapping of sections (model:, train:, ...)"));
  }
  Converter converter(source);
  try {
    if (absl::Status s = converter.Map(root, schema, "", &doc.json); !s.ok()) return s;
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": cannot read YAML: ", e.what()));
  }
  doc.positions = converter.TakePositions();
  return doc;
}

}  // namespace moefold::config
