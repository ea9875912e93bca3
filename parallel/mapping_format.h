// Text renderings of a Mapping for `moefold plan`: both meshes as a table, one rank's groups with
// their purpose, and a JSON object of every group kind's rank lists.
#pragma once

#include <string>

#include "core/json_line.h"

#include "parallel/mapping.h"

namespace moefold::parallel {

// rank | tp cp dp pp | etp ep edp pp, one row per rank (the first 64 ranks, then a note).
std::string FormatMeshTables(const Mapping& mapping);
// Every group of `rank`: kind, members, purpose.
std::string FormatRankGroups(const Mapping& mapping, int rank);
// {"world": W, "order": ..., "sizes": {...}, "attention": {"tp": [[0, 1], ...], ...}, "moe": {...}}
JsonLine MappingToJson(const Mapping& mapping);

}  // namespace moefold::parallel
