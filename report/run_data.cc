// Tolerant readers of the run directory's files: what is missing or malformed becomes a note.
#include "report/run_data.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace moefold::report {
namespace {

namespace fs = std::filesystem;

double Number(const Json& object, const char* key) {
  const auto it = object.find(key);
  if (it == object.end() || !it->is_number()) return kNotRecorded;
  return it->get<double>();
}

std::map<std::string, double> NumberMap(const Json& object, const char* key) {
  std::map<std::string, double> values;
  const auto it = object.find(key);
  if (it == object.end() || !it->is_object()) return values;
  for (const auto& [name, value] : it->items()) {
    if (value.is_number()) values[name] = value.get<double>();
  }
  return values;
}

std::vector<double> NumberList(const Json& value) {
  std::vector<double> values;
  if (!value.is_array()) return values;
  for (const auto& v : value) values.push_back(v.is_number() ? v.get<double>() : kNotRecorded);
  return values;
}

std::vector<double> NumberList(const Json& object, const char* key) {
  const auto it = object.find(key);
  return it == object.end() ? std::vector<double>() : NumberList(*it);
}

// Reads the whole file into `text`; false when it cannot be opened.
bool ReadText(const fs::path& path, std::string* text) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream buffer;
  buffer << in.rdbuf();
  *text = buffer.str();
  return true;
}

// Each line of a JSON-lines file that parses as an object; the rest become notes.
std::vector<Json> ReadJsonLines(const fs::path& path, std::vector<std::string>* notes) {
  std::vector<Json> objects;
  std::ifstream in(path);
  if (!in) return objects;
  int bad = 0;
  int number = 0;
  for (std::string line; std::getline(in, line);) {
    ++number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    Json object = Json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (object.is_object()) {
      objects.push_back(std::move(object));
    } else if (bad++ == 0) {
      // A run killed mid-write leaves a torn last line; name the first bad line only.
      notes->push_back(absl::StrCat(path.filename().string(), " line ", number,
                                    " is not a JSON object (skipped)"));
    }
  }
  if (bad > 1) {
    notes->push_back(absl::StrCat(path.filename().string(), ": ", bad, " unreadable lines in all"));
  }
  return objects;
}

Json ReadJsonFile(const fs::path& path, std::vector<std::string>* notes) {
  std::string text;
  if (!ReadText(path, &text)) return nullptr;
  Json value = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) {
    notes->push_back(absl::StrCat(path.filename().string(), " is not valid JSON (ignored)"));
    return nullptr;
  }
  return value;
}

ProfileRecord ProfileRecordFromJson(const Json& line) {
  ProfileRecord p;
  p.step = line.value("step", int64_t{0});
  p.step_ms = Number(line, "step_ms");
  p.unattributed_ms = Number(line, "unattributed_ms");
  // Families are the "<family>_ms" keys (their "_calls" beside them); "_layer_ms" are per layer.
  constexpr absl::string_view kMs = "_ms", kLayerMs = "_layer_ms";
  for (const auto& [key, value] : line.items()) {
    if (!value.is_number() || key == "step_ms" || key == "unattributed_ms") continue;
    const absl::string_view k(key);
    if (k.size() > kMs.size() && k.substr(k.size() - kMs.size()) == kMs &&
        !(k.size() > kLayerMs.size() && k.substr(k.size() - kLayerMs.size()) == kLayerMs)) {
      const std::string family(k.substr(0, k.size() - kMs.size()));
      p.family_ms[family] = value.get<double>();
      p.family_calls[family] = Number(line, (family + "_calls").c_str());
    }
  }
  return p;
}

}  // namespace

StepRecord StepRecordFromJson(const Json& line) {
  StepRecord s;
  s.step = line.value("step", int64_t{0});
  s.loss = Number(line, "loss");
  s.lm_loss = Number(line, "lm_loss");
  s.aux_loss = Number(line, "aux_loss");
  s.z_loss = Number(line, "z_loss");
  s.grad_norm = Number(line, "grad_norm");
  s.lr = Number(line, "lr");
  s.step_time_s = Number(line, "step_time_s");
  s.data_s = Number(line, "data_s");
  s.model_s = Number(line, "model_s");
  s.update_s = Number(line, "update_s");
  s.forward_s = Number(line, "forward_s");
  s.backward_s = Number(line, "backward_s");
  s.checkpoint_stall_s = Number(line, "checkpoint_stall_s");
  s.tokens_per_s = Number(line, "tokens_per_s");
  s.tokens_per_s_per_device = Number(line, "tokens_per_s_per_device");
  s.mfu = Number(line, "mfu");
  s.peak_tflops = Number(line, "peak_tflops");
  s.tokens_dropped = Number(line, "tokens_dropped");
  s.device_peak_bytes = Number(line, "device_peak_bytes");
  s.eval_loss = Number(line, "eval_loss");
  s.test_loss = Number(line, "test_loss");
  const auto skipped = line.find("skipped");
  s.skipped = skipped != line.end() && ((skipped->is_boolean() && skipped->get<bool>()) ||
                                        (skipped->is_number() && skipped->get<double>() != 0));
  s.comm_s = NumberMap(line, "comm_s");
  s.comm_exposed_s = NumberMap(line, "comm_exposed_s");
  const auto experts = line.find("expert_tokens");
  if (experts != line.end() && experts->is_array()) {
    for (const auto& layer : *experts) s.expert_tokens.push_back(NumberList(layer));
  }
  s.verify_s = Number(line, "verify_s");
  s.verify_mismatch_ranks = NumberList(line, "verify_mismatch_ranks");
  s.rank_step_time_s = NumberList(line, "rank_step_time_s");
  s.rank_device_peak_bytes = NumberList(line, "rank_device_peak_bytes");
  return s;
}

absl::StatusOr<RunData> ReadRunDir(const std::string& run_dir) {
  const fs::path dir(run_dir);
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat("run directory ", run_dir, " does not exist"));
  }
  RunData run;
  run.run_dir = run_dir;

  std::map<int64_t, StepRecord> by_step;  // a resumed run logs redone steps again; the last wins
  if (fs::exists(dir / "metrics.jsonl")) {
    for (const auto& line : ReadJsonLines(dir / "metrics.jsonl", &run.notes)) {
      StepRecord s = StepRecordFromJson(line);
      by_step[s.step] = std::move(s);
    }
  } else {
    run.notes.push_back("metrics.jsonl is missing: no per-step figures");
  }
  for (auto& [step, record] : by_step) run.steps.push_back(std::move(record));

  std::map<int64_t, ProfileRecord> profiles;
  for (const auto& line : ReadJsonLines(dir / "profile.jsonl", &run.notes)) {
    ProfileRecord p = ProfileRecordFromJson(line);
    profiles[p.step] = std::move(p);
  }
  for (auto& [step, record] : profiles) run.profiles.push_back(std::move(record));

  run.restarts = ReadJsonLines(dir / "restarts.jsonl", &run.notes);
  run.run_info = ReadJsonFile(dir / "run.json", &run.notes);
  run.plan = ReadJsonFile(dir / "plan.json", &run.notes);
  run.summary = ReadJsonFile(dir / "summary.json", &run.notes);
  ReadText(dir / "config.yaml", &run.config_yaml);

  // trace/rank-NNNNN.json, ordered by the rank number (not the text: rank-10 after rank-9).
  std::vector<std::pair<int64_t, std::string>> traces;
  if (fs::is_directory(dir / "trace", ec)) {
    for (const auto& entry : fs::directory_iterator(dir / "trace", ec)) {
      const std::string name = entry.path().filename().string();
      int64_t rank = 0;
      if (name.rfind("rank-", 0) == 0 && name.size() > 10 &&
          name.substr(name.size() - 5) == ".json" &&
          absl::SimpleAtoi(name.substr(5, name.size() - 10), &rank)) {
        traces.emplace_back(rank, entry.path().string());
      }
    }
  }
  std::sort(traces.begin(), traces.end());
  for (auto& [rank, path] : traces) run.trace_files.push_back(std::move(path));
  return run;
}

}  // namespace moefold::report
