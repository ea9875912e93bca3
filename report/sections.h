// The report's sections, each a <section id="..."> of HTML, in the order the page shows them (what
// a newcomer should see first goes first). Internal to report/: report.cc assembles the page.
#pragma once

#include <string>

#include "report/run_data.h"

namespace moefold::report {

// `trace_link`: the merged trace's file name relative to the report ("" = none).
std::string HeadlineSection(const RunData& run, const std::string& trace_link);
std::string LossSection(const RunData& run);
std::string LearningRateSection(const RunData& run);
std::string ThroughputSection(const RunData& run);
std::string StepTimeSection(const RunData& run, const std::string& trace_link);
std::string OpsSection(const RunData& run);
std::string MemorySection(const RunData& run);
std::string ExpertsSection(const RunData& run);
std::string StragglersSection(const RunData& run);
std::string ReliabilitySection(const RunData& run);
std::string ConfigSection(const RunData& run);
std::string LayoutSection(const RunData& run);
std::string EnvironmentSection(const RunData& run);

// <section id="ID"><h2>TITLE</h2>BODY</section>
std::string Section(const std::string& id, const std::string& title, const std::string& body);
// The scalar at dotted `path` of the run's config.yaml as text ("" when absent or unreadable).
std::string ConfigValue(const RunData& run, const std::string& path);
// The world size: run.json, else plan.json, else the longest per-rank list in the metrics; 0 when
// none of them says.
int WorldSize(const RunData& run);

}  // namespace moefold::report
