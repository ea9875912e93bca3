// Sample run directories and XML checks for the report tests.
#include "tests/report/report_testing.h"

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xpath.h>
#include <libxml/xpathInternals.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace moefold::report::testing {
namespace {

void Write(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

void WriteLines(const std::string& path, const std::vector<nlohmann::json>& lines) {
  std::string text;
  for (const auto& line : lines) text += line.dump() + "\n";
  Write(path, text);
}

struct DocDeleter {
  void operator()(xmlDoc* doc) const { xmlFreeDoc(doc); }
};
using Doc = std::unique_ptr<xmlDoc, DocDeleter>;

Doc Parse(const std::string& xml) {
  return Doc(xmlReadMemory(xml.data(), static_cast<int>(xml.size()), "page.xml", "utf-8",
                           XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING));
}

// Element nodes matching an XPath over the page; the XHTML namespace is bound to "h".
std::vector<xmlNode*> Select(xmlDoc* doc, const std::string& xpath) {
  std::vector<xmlNode*> nodes;
  xmlXPathContext* context = xmlXPathNewContext(doc);
  xmlXPathRegisterNs(context, BAD_CAST "h", BAD_CAST "http://www.w3.org/1999/xhtml");
  xmlXPathObject* result = xmlXPathEvalExpression(BAD_CAST xpath.c_str(), context);
  if (result != nullptr && result->nodesetval != nullptr) {
    for (int i = 0; i < result->nodesetval->nodeNr; ++i) {
      nodes.push_back(result->nodesetval->nodeTab[i]);
    }
  }
  xmlXPathFreeObject(result);
  xmlXPathFreeContext(context);
  return nodes;
}

}  // namespace

std::vector<nlohmann::json> WriteSampleRun(const std::string& dir, const SampleOptions& o) {
  namespace fs = std::filesystem;
  fs::remove_all(dir);
  fs::create_directories(dir);
  const int layers = 2, experts = 4;
  std::vector<nlohmann::json> lines;
  for (int step = 0; step < o.steps; ++step) {
    const bool skipped =
        std::find(o.skipped_steps.begin(), o.skipped_steps.end(), step) != o.skipped_steps.end();
    const double lm = 5.5 * std::exp(-step / 12.0) + 2.0 + 0.01 * (step % 3);
    const double step_time = 0.120 + 0.002 * (step % 5) + (step == 0 ? 0.2 : 0);
    nlohmann::json line = {{"step", step},
                           {"loss", lm + 0.03},
                           {"lm_loss", lm},
                           {"aux_loss", 0.03 - 0.0002 * step},
                           {"z_loss", 0.0},
                           {"grad_norm", skipped ? 1e9 : 2.0 / (1 + step)},
                           {"lr", 1e-3 * std::min(1.0, (step + 1) / 5.0)},
                           {"tokens", 4096 * (step + 1)},
                           {"tokens_per_s", 4096 / step_time},
                           {"step_time_s", step_time},
                           {"data_s", 0.002},
                           {"model_s", 0.095},
                           {"update_s", 0.012},
                           {"comm_s", {{"dp-cp", 0.020}, {"edp", 0.015}, {"ep", 0.008}}},
                           {"comm_exposed_s", {{"dp-cp", 0.004}, {"edp", 0.003}, {"ep", 0.006}}},
                           {"tokens_dropped", o.dropped_per_step * (step % 2)},
                           {"device_peak_bytes", 3.0e9},
                           {"checkpoint_stall_s", 0.0},
                           {"skipped", skipped}};
    nlohmann::json expert_tokens = nlohmann::json::array();
    for (int l = 0; l < layers; ++l) {
      nlohmann::json row = nlohmann::json::array();
      for (int e = 0; e < experts; ++e) row.push_back(2048 + (e - 1.5) * (40 - step) * (l + 1));
      expert_tokens.push_back(row);
    }
    line["expert_tokens"] = expert_tokens;
    if (o.lead_keys) {
      line["peak_tflops"] = 989.0;
      line["mfu"] = 0.21 + 0.001 * (step % 4);
      line["tokens_per_s_per_device"] = 4096 / step_time / o.world;
      line["forward_s"] = 0.030;
      line["backward_s"] = 0.055;
      nlohmann::json times = nlohmann::json::array(), peaks = nlohmann::json::array();
      for (int r = 0; r < o.world; ++r) {
        // Rank 2 is the straggler.
        times.push_back(step_time * (r == 2 ? 1.15 : 1.0) + 0.001 * r);
        peaks.push_back(3.0e9 + 1.0e8 * r);
      }
      line["rank_step_time_s"] = times;
      line["rank_device_peak_bytes"] = peaks;
    }
    if (o.verify_every > 0 && (step + 1) % o.verify_every == 0) {
      line["verify_s"] = 0.08;
      line["verify_mismatch_ranks"] =
          step == o.mismatch_step ? nlohmann::json::array({o.mismatch_rank})
                                  : nlohmann::json::array();
    }
    lines.push_back(line);
  }
  WriteLines(dir + "/metrics.jsonl", lines);
  std::vector<nlohmann::json> restarts;
  for (int r = 1; r <= o.restarts; ++r) {
    restarts.push_back({{"restart", r},
                        {"cause", "killed by signal 9 (Killed)"},
                        {"exit_code", 137},
                        {"steps_done", 10 * r},
                        {"checkpoint", dir + "/ck/step-0000000" + std::to_string(9 * r)},
                        {"resume_step", 9 * r},
                        {"steps_lost", 1},
                        {"restart_delay_s", 10},
                        {"time_to_resume_s", r == o.restarts ? -1.0 : 4.5}});
  }
  if (!restarts.empty()) WriteLines(dir + "/restarts.jsonl", restarts);
  if (!o.side_files) return lines;

  std::vector<nlohmann::json> profile;
  for (int step : {5, 6}) {
    profile.push_back({{"step", step},
                       {"step_ms", 122.0},
                       {"unattributed_ms", 9.0},
                       {"attention_ms", 30.0},
                       {"attention_calls", 16},
                       {"gemm_ms", 28.0},
                       {"gemm_calls", 22},
                       {"expert_gemm_ms", 25.0},
                       {"expert_gemm_calls", 12},
                       {"router_ms", 2.0},
                       {"router_calls", 4},
                       {"permute_ms", 6.0},
                       {"permute_calls", 8},
                       {"norm_ms", 5.0},
                       {"norm_calls", 18},
                       {"optimizer_ms", 11.0},
                       {"optimizer_calls", 3},
                       {"communication_ms", 6.0},
                       {"communication_calls", 30},
                       {"embedding_ms", 0.0},
                       {"embedding_calls", 0},
                       {"gemm_layer_ms", {7.0, 7.0, 7.0, 7.0}}});
  }
  WriteLines(dir + "/profile.jsonl", profile);

  nlohmann::json devices = nlohmann::json::array();
  for (int r = 0; r < o.world; ++r) {
    devices.push_back({{"name", "NVIDIA H100 80GB HBM3"},
                       {"memory_bytes", 85520809984},
                       {"driver", "550.54.15"}});
  }
  Write(dir + "/run.json",
        nlohmann::json{{"command", {"moefold", "train", "--config", "configs/sample.yaml"}},
                       {"start_utc", "2026-12-07T10:00:00Z"},
                       {"world_size", o.world},
                       {"layout", "tp 1 × cp 1 × dp 4 × pp 1; etp 1 × ep 2 × edp 2"},
                       {"environment",
                        {{"hostname", "node-1"},
                         {"devices", devices},
                         {"cuda_runtime", "12.4"},
                         {"nccl", "2.21.5"},
                         {"mpi", "Open MPI 4.1.4"},
                         {"compiler", "GCC 12.2"},
                         {"commit", "d9d7783"}}},
                       {"peak_tflops", 989.0},
                       {"peak_source", "table: NVIDIA H100 80GB HBM3"},
                       {"model_flops_per_token", 2.5e10},
                       {"params", {{"total", 2.82e6}, {"active", 1.05e6}}}}
            .dump(2));
  nlohmann::json memory = nlohmann::json::array();
  for (int r = 0; r < o.world; ++r) {
    memory.push_back({{"stage", 0},
                      {"parameters", 2820000},
                      {"parameter_bytes", 11280000},
                      {"gradient_bytes", 11280000},
                      {"optimizer_bytes", 5640000},
                      {"activation_bytes_per_micro", 1.0e9},
                      {"in_flight", 1},
                      {"activation_bytes", 2.9e9},
                      {"total_bytes", 2.93e9},
                      {"bubble_fraction", 0.0},
                      {"schedule", "afab"}});
  }
  Write(dir + "/plan.json",
        nlohmann::json{
            {"mapping",
             {{"world", o.world},
              {"order", "tp-cp-ep-dp-pp"},
              {"sizes",
               {{"tp", 1}, {"cp", 1}, {"dp", 4}, {"pp", 1}, {"etp", 1}, {"ep", 2}, {"edp", 2}}},
              {"attention", {{"dp", {{0, 1, 2, 3}}}, {"tp", {{0}, {1}, {2}, {3}}}}},
              {"moe", {{"ep", {{0, 1}, {2, 3}}}, {"edp", {{0, 2}, {1, 3}}}}}}},
            {"memory", memory}}
            .dump(2));
  Write(dir + "/config.yaml",
        "name: sample_moe\nmodel:\n  hidden_size: 128\n  num_layers: 3\n  moe:\n"
        "    num_experts: 4\n    top_k: 2\ntrain:\n  steps: 30\n  note: \"a <b> & 'c'\"\n");
  Write(dir + "/summary.json",
        nlohmann::json{{"steps", o.steps}, {"skipped", o.skipped_steps.size()}, {"final_loss", 2.1}}
            .dump());
  fs::create_directories(dir + "/trace");
  for (int r = 0; r < o.world; ++r) {
    nlohmann::json events = nlohmann::json::array();
    events.push_back({{"name", "process_name"},
                      {"ph", "M"},
                      {"pid", 4242 + r},
                      {"args", {{"name", "moefold"}}}});
    events.push_back({{"name", "thread_name"},
                      {"ph", "M"},
                      {"pid", 4242 + r},
                      {"tid", 1},
                      {"args", {{"name", "compute"}}}});
    for (int k = 0; k < 3; ++k) {
      events.push_back({{"name", absl::StrCat("layer ", k, " forward")},
                        {"ph", "X"},
                        {"pid", 4242 + r},
                        {"tid", 1},
                        {"ts", 1000 * k},
                        {"dur", 900}});
    }
    Write(absl::StrFormat("%s/trace/rank-%05d.json", dir, r),
          nlohmann::json{{"traceEvents", events}}.dump());
  }
  return lines;
}

std::vector<nlohmann::json> ReadJsonLines(const std::string& path) {
  std::vector<nlohmann::json> lines;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) lines.push_back(nlohmann::json::parse(line));
  }
  return lines;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

std::string XmlError(const std::string& xml) {
  xmlResetLastError();
  Doc doc = Parse(xml);
  if (doc != nullptr) return "";
  const xmlError* error = xmlGetLastError();
  return error != nullptr ? absl::StrCat("line ", error->line, ": ", error->message)
                          : "not well-formed";
}

std::vector<std::string> SvgBlocks(const std::string& page) {
  std::vector<std::string> blocks;
  for (size_t at = page.find("<svg"); at != std::string::npos; at = page.find("<svg", at + 1)) {
    const size_t end = page.find("</svg>", at);
    if (end == std::string::npos) break;
    blocks.push_back(page.substr(at, end + 6 - at));
  }
  return blocks;
}

std::string TextById(const std::string& page, const std::string& id) {
  Doc doc = Parse(page);
  if (doc == nullptr) return "<missing>";
  const std::vector<xmlNode*> nodes = Select(doc.get(), "//*[@id='" + id + "']");
  if (nodes.empty()) return "<missing>";
  xmlChar* text = xmlNodeGetContent(nodes[0]);
  std::string out = text != nullptr ? reinterpret_cast<const char*>(text) : "";
  xmlFree(text);
  return out;
}

std::vector<std::string> SectionIds(const std::string& page) {
  std::vector<std::string> ids;
  Doc doc = Parse(page);
  if (doc == nullptr) return ids;
  for (xmlNode* node : Select(doc.get(), "//h:section")) {
    xmlChar* id = xmlGetProp(node, BAD_CAST "id");
    ids.push_back(id != nullptr ? reinterpret_cast<const char*>(id) : "");
    xmlFree(id);
  }
  return ids;
}

const std::vector<std::string>& ExpectedSections() {
  static const std::vector<std::string> sections = {
      "headline", "loss",    "learning-rate", "throughput", "step-time", "ops",
      "memory",   "experts", "stragglers",    "reliability", "config",   "layout", "environment"};
  return sections;
}

}  // namespace moefold::report::testing
