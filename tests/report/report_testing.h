// Helpers of the report tests: a realistic sample run directory (every file and key of the run
// directory contract, several ranks, skipped steps, profiled steps, per-rank traces), and checks of
// the page with libxml2 (the page and each of its SVG charts parse as XML; text by element id).
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace moefold::report::testing {

struct SampleOptions {
  int steps = 30;
  int world = 4;
  std::vector<int> skipped_steps = {7, 19};
  int64_t dropped_per_step = 0;
  bool lead_keys = true;   // mfu, forward_s, rank_step_time_s, ...; false = an older run
  bool side_files = true;  // run.json, plan.json, config.yaml, summary.json, profile.jsonl, trace/
  int verify_every = 0;    // steps with verify_s (train.verify_every); 0 = none
  int mismatch_step = -1;  // a verified step whose re-run differed on mismatch_rank
  int mismatch_rank = 1;
  int restarts = 0;        // lines of restarts.jsonl (moefold launch)
};

// Writes the sample under `dir` (created); returns the metrics lines written.
std::vector<nlohmann::json> WriteSampleRun(const std::string& dir, const SampleOptions& options);

// The lines of a JSON-lines file, parsed.
std::vector<nlohmann::json> ReadJsonLines(const std::string& path);
std::string ReadFile(const std::string& path);

// Parses `xml` as an XML document; "" when well-formed, else libxml2's first error.
std::string XmlError(const std::string& xml);
// Each <svg ...>...</svg> of the page, as text.
std::vector<std::string> SvgBlocks(const std::string& page);
// The text content of the element with id `id` ("<missing>" when there is none).
std::string TextById(const std::string& page, const std::string& id);
// The ids of the page's <section> elements, in order.
std::vector<std::string> SectionIds(const std::string& page);

// What every report page shows, in this order.
const std::vector<std::string>& ExpectedSections();

}  // namespace moefold::report::testing
