// The watchdog thread, the heartbeat files and the hang report.
#include "core/train/watchdog.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/flight_recorder.h"
#include "core/train/exit_codes.h"
#include "nlohmann/json.hpp"

namespace moefold::train {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

// One rank's heartbeat file as read back.
struct Beat {
  bool present = false;
  double time_s = 0;
  std::string end;   // "" while running
  json position;
  json current;      // the newest op in flight (null: none)
  json completed;    // the newest op seen complete (null: none)
};

Beat ReadBeat(const std::string& path) {
  Beat b;
  std::ifstream in(path);
  if (!in) return b;
  std::stringstream text;
  text << in.rdbuf();
  const json j = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("time_s") || !j["time_s"].is_number()) return b;
  b.present = true;
  b.time_s = j["time_s"].get<double>();
  if (j.contains("end") && j["end"].is_string()) b.end = j["end"].get<std::string>();
  if (j.contains("position")) b.position = j["position"];
  if (j.contains("ops") && j["ops"].is_array()) {
    for (const json& op : j["ops"]) {
      if (!op.is_object() || !op.contains("completed_s")) continue;
      if (op["completed_s"].get<double>() == 0) {
        b.current = op;
      } else {
        b.completed = op;
      }
    }
  }
  return b;
}

int IntOf(const json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_number() ? j[key].get<int>() : -1;
}

std::string Where(const json& p) {
  std::string out = absl::StrCat("step ", IntOf(p, "step"));
  if (p.is_object() && p.contains("phase") && p["phase"].is_string() &&
      !p["phase"].get<std::string>().empty()) {
    absl::StrAppend(&out, ", ", p["phase"].get<std::string>());
  }
  if (IntOf(p, "micro_batch") >= 0) absl::StrAppend(&out, ", micro-batch ", IntOf(p, "micro_batch"));
  if (IntOf(p, "layer") >= 0) absl::StrAppend(&out, ", layer ", IntOf(p, "layer"));
  return out;
}

std::string OpText(const json& op, double now_s) {
  std::string out = absl::StrCat(op.value("op", std::string("?")), " on group '",
                                 op.value("group", std::string("?")), "'");
  if (IntOf(op, "peer") >= 0) absl::StrAppend(&out, " with rank ", IntOf(op, "peer"));
  absl::StrAppend(&out, " (", op.value("bytes", int64_t{0}), " B, ", Where(op));
  const double completed = op.value("completed_s", 0.0);
  if (completed == 0) {
    absl::StrAppend(&out, absl::StrFormat(", issued %.1f s ago", now_s - op.value("issued_s", 0.0)));
  } else {
    absl::StrAppend(&out, absl::StrFormat(", done %.1f s ago", now_s - completed));
  }
  return out + ")";
}

}  // namespace

absl::StatusOr<std::unique_ptr<Watchdog>> Watchdog::Start(const WatchdogOptions& options) {
  std::error_code error;
  std::filesystem::create_directories(options.dir, error);
  if (error) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot create the flight-record directory ", options.dir, ": ", error.message()));
  }
  std::unique_ptr<Watchdog> w(new Watchdog(options));
  w->WriteHeartbeat("");
  w->thread_ = std::thread([raw = w.get()] { raw->Loop(); });
  return w;
}

Watchdog::Watchdog(const WatchdogOptions& options) : options_(options) {
  if (options_.hang_timeout_s > 0) {
    options_.heartbeat_s = std::min(options_.heartbeat_s, options_.hang_timeout_s / 5);
  }
  options_.heartbeat_s = std::max(options_.heartbeat_s, 0.05);
}

Watchdog::~Watchdog() { Stop(); }

void Watchdog::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Watchdog::Arm(bool armed) {
  rearmed_ = true;
  armed_ = armed;
}

std::string Watchdog::PathOf(int rank) const {
  return absl::StrCat(options_.dir, "/rank", rank, ".json");
}

void Watchdog::WriteHeartbeat(const std::string& end) {
  std::lock_guard<std::mutex> lock(file_mu_);
  json j = json::parse(FlightRecorder::Get().ToJson(options_.rank));
  j["pid"] = static_cast<int64_t>(getpid());
  j["armed"] = armed_.load();
  j["hang_timeout_s"] = options_.hang_timeout_s;
  j["end"] = end;
  // Written aside and renamed: a reader never sees half a file.
  const std::string path = PathOf(options_.rank), temp = path + ".tmp";
  {
    std::ofstream out(temp, std::ios::trunc);
    out << j.dump(1) << "\n";
    if (!out) return;  // a full disk must not end the run; the previous heartbeat stays
  }
  std::error_code error;
  std::filesystem::rename(temp, path, error);
}

void Watchdog::WriteFinal(const std::string& reason) { WriteHeartbeat(reason); }

void Watchdog::Loop() {
  int64_t last_progress = FlightRecorder::Get().progress();
  Clock::time_point last_change = Clock::now();
  const auto period = std::chrono::duration<double>(options_.heartbeat_s);
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    wake_.wait_for(lock, period, [&] { return stop_; });
    if (stop_) break;
    lock.unlock();
    WriteHeartbeat("");
    const int64_t progress = FlightRecorder::Get().progress();
    const Clock::time_point now = Clock::now();
    if (progress != last_progress || rearmed_.exchange(false)) {
      last_progress = progress;
      last_change = now;
    }
    const double stalled = std::chrono::duration<double>(now - last_change).count();
    if (armed_ && options_.hang_timeout_s > 0 && stalled > options_.hang_timeout_s) {
      Hang(stalled);
    }
    lock.lock();
  }
}

std::string Watchdog::Report(const std::string& dir, int world_size, int reporter, double now_s,
                             double stale_s, double stalled_s, std::string* stuck_ranks) {
  std::vector<Beat> beats;
  for (int r = 0; r < world_size; ++r) {
    beats.push_back(ReadBeat(absl::StrCat(dir, "/rank", r, ".json")));
  }
  // A rank that found the hang itself ("hang") is alive; one that ended otherwise is gone.
  auto silent = [&](const Beat& b) {
    return !b.present || (!b.end.empty() && b.end != "hang") || now_s - b.time_s > stale_s;
  };
  // Silent ranks first; else the ranks not waiting in a communication op (busy elsewhere while
  // the others wait for them); else every rank waits in one: all are named.
  std::vector<int> stuck;
  for (int r = 0; r < world_size; ++r) {
    if (silent(beats[r])) stuck.push_back(r);
  }
  if (stuck.empty()) {
    for (int r = 0; r < world_size; ++r) {
      if (beats[r].current.is_null()) stuck.push_back(r);
    }
  }
  if (stuck.empty()) {
    for (int r = 0; r < world_size; ++r) stuck.push_back(r);
  }
  std::vector<std::string> names;
  for (int r : stuck) names.push_back(absl::StrCat(r));
  *stuck_ranks = absl::StrJoin(names, ", ");
  std::string out = absl::StrFormat(
      "hang: rank %d made no progress for %.1f s (train.hang_timeout_s); stuck: rank%s %s\n",
      reporter, stalled_s, stuck.size() > 1 ? "s" : "", *stuck_ranks);
  for (int r = 0; r < world_size; ++r) {
    const Beat& b = beats[r];
    const bool is_stuck = std::find(stuck.begin(), stuck.end(), r) != stuck.end();
    absl::StrAppend(&out, "  rank ", r, is_stuck ? " [stuck]" : "", ": ");
    if (!b.present) {
      absl::StrAppend(&out, "no heartbeat file (never started, or another run directory)\n");
      continue;
    }
    if (!b.end.empty() && b.end != "hang") {
      absl::StrAppend(&out, "ended (", b.end, ") ");
    } else if (now_s - b.time_s > stale_s) {
      absl::StrAppend(&out, absl::StrFormat(
                                "no heartbeat for %.1f s (stopped, frozen or dead); as of then: ",
                                now_s - b.time_s));
    }
    absl::StrAppend(&out, Where(b.position), "; ");
    if (b.current.is_null()) {
      absl::StrAppend(&out, "no communication op in flight");
    } else {
      absl::StrAppend(&out, "current: ", OpText(b.current, now_s));
    }
    if (!b.completed.is_null()) {
      absl::StrAppend(&out, "; last completed: ", OpText(b.completed, now_s));
    }
    absl::StrAppend(&out, "\n");
  }
  absl::StrAppend(&out, "  flight records: ", dir, "/rank{R}.json\n");
  return out;
}

void Watchdog::Hang(double stalled_s) {
  WriteHeartbeat("hang");
  const double stale_s = std::max(3 * options_.heartbeat_s, options_.hang_timeout_s / 2);
  // The lowest rank with a live heartbeat prints the report; the other live ranks give it time
  // to, then end the job themselves should it not have.
  int reporter = options_.rank;
  const double now = FlightRecorder::Now();
  for (int r = 0; r < options_.rank; ++r) {
    const Beat b = ReadBeat(PathOf(r));
    if (b.present && now - b.time_s <= stale_s && (b.end.empty() || b.end == "hang")) {
      reporter = r;
      break;
    }
  }
  if (reporter == options_.rank) {
    std::string stuck;
    const std::string report =
        Report(options_.dir, options_.world_size, options_.rank, now, stale_s, stalled_s, &stuck);
    std::fprintf(stderr, "[rank %d] moefold train: %s", options_.rank, report.c_str());
    std::fflush(stderr);
  } else {
    std::fprintf(stderr, "[rank %d] moefold train: no progress for %.1f s; rank %d reports\n",
                 options_.rank, stalled_s, reporter);
    std::fflush(stderr);
    std::this_thread::sleep_for(std::chrono::duration<double>(3 * options_.heartbeat_s + 1));
  }
  if (options_.end_job) options_.end_job(kExitHang);
  std::_Exit(kExitHang);
}

}  // namespace moefold::train
