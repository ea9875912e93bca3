// Field look-up by name and "did you mean" suggestions (Levenshtein distance over field names).
#include "configs/field_lookup.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace moefold::config {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;

int EditDistance(absl::string_view a, absl::string_view b) {
  std::vector<int> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = static_cast<int>(j);
  for (size_t i = 1; i <= a.size(); ++i) {
    int diagonal = row[0];
    row[0] = static_cast<int>(i);
    for (size_t j = 1; j <= b.size(); ++j) {
      const int substitute = diagonal + (a[i - 1] == b[j - 1] ? 0 : 1);
      diagonal = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, substitute});
    }
  }
  return row[b.size()];
}

}  // namespace

const FieldDescriptor* FindConfigField(const Descriptor& section, absl::string_view name) {
  return section.FindFieldByName(std::string(name));
}

std::string DidYouMean(const Descriptor& section, absl::string_view name) {
  std::string best;
  int best_distance = 3;  // suggest only close names
  for (int i = 0; i < section.field_count(); ++i) {
    const std::string& candidate = section.field(i)->name();
    int distance = EditDistance(name, candidate);
    const bool contains =
        name.size() >= 3 && (absl::string_view(candidate).find(name) != absl::string_view::npos ||
                             name.find(candidate) != absl::string_view::npos);
    if (contains) distance = std::min(distance, 2);
    if (distance < best_distance) {
      best_distance = distance;
      best = candidate;
    }
  }
  return best.empty() ? "" : absl::StrCat(" (did you mean '", best, "'?)");
}

const Descriptor* FindSection(const Descriptor& root, absl::string_view section_path) {
  const Descriptor* section = &root;
  if (section_path.empty()) return section;
  for (absl::string_view part : absl::StrSplit(section_path, '.')) {
    const FieldDescriptor* field = FindConfigField(*section, part);
    if (field == nullptr || field->is_repeated() ||
        field->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) {
      return nullptr;
    }
    section = field->message_type();
  }
  return section;
}

}  // namespace moefold::config
