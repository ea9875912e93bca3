// `moefold launch [--max-restarts K] [--restart-delay S] [--run-dir DIR] -- COMMAND...`: runs the
// training command (typically `mpirun -np N moefold train ...`) and, when it fails, runs it again
// with --resume from the newest complete checkpoint, up to K times. Each restart is a line of
// RUN_DIR/restarts.jsonl: the cause, the steps lost (logged after the checkpoint), the delay and
// the time until the restarted job finished its first step.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "checkpoint/directory.h"
#include "configs/config_loader.h"
#include "core/json_line.h"
#include "core/train/exit_codes.h"
#include "launch/args.h"
#include "launch/commands.h"

namespace moefold::launch {
namespace {

constexpr char kLaunchHelp[] =
    "usage: moefold launch [--max-restarts K] [--restart-delay S] [--run-dir DIR] -- COMMAND...\n"
    "\n"
    "  --max-restarts K   restarts after a failure before giving up (default 3)\n"
    "  --restart-delay S  seconds to wait before each restart (default 5)\n"
    "  --run-dir DIR      the run directory (default: the --run-dir of COMMAND)\n"
    "  COMMAND...         the training job, e.g. mpirun -np 8 moefold train --config F\n"
    "                     --run-dir DIR (checkpoint.dir must be set to resume)\n"
    "\n"
    "Runs COMMAND and supervises it: when it exits non-zero (a rank died, the watchdog ended a\n"
    "hang, an error), runs it again with --resume, which continues from the newest complete\n"
    "checkpoint, up to K times. Each restart is logged to RUN_DIR/restarts.jsonl with its cause,\n"
    "the steps lost and the time to resume. A job stopped by SIGTERM/SIGINT (exit code 75) is not\n"
    "restarted; SIGTERM or SIGINT to the launcher is passed to the job's processes (they save a\n"
    "checkpoint and stop) and ends the supervision. Exits with the job's last exit code.\n";

// SIGTERM / SIGINT to the launcher: how many arrived.
volatile sig_atomic_t stop_signal = 0;
void OnStop(int) { stop_signal = stop_signal + 1; }

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Every descendant of `root` (from /proc): the job's processes under mpirun.
std::vector<pid_t> Descendants(pid_t root) {
  std::vector<std::pair<pid_t, pid_t>> parent_of;  // (pid, ppid)
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", error)) {
    pid_t pid = 0;
    if (!absl::SimpleAtoi(entry.path().filename().string(), &pid)) continue;
    std::ifstream in(entry.path() / "stat");
    std::string stat;
    std::getline(in, stat);
    // "pid (comm) state ppid ...": comm may hold spaces, so parse after the last ')'.
    const size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    char state = 0;
    int ppid = 0;
    if (std::sscanf(stat.c_str() + close + 1, " %c %d", &state, &ppid) == 2) {
      parent_of.emplace_back(pid, ppid);
    }
  }
  std::vector<pid_t> out = {root};
  for (size_t i = 0; i < out.size(); ++i) {
    for (const auto& [pid, ppid] : parent_of) {
      if (ppid == out[i]) out.push_back(pid);
    }
  }
  out.erase(out.begin());
  return out;
}

// "--run-dir DIR" or "--run-dir=DIR" in the command.
std::string RunDirOf(const std::vector<std::string>& command) {
  for (size_t i = 0; i < command.size(); ++i) {
    if (command[i] == "--run-dir" && i + 1 < command.size()) return command[i + 1];
    if (command[i].rfind("--run-dir=", 0) == 0) return command[i].substr(10);
  }
  return "";
}

// The last "step" logged in RUN_DIR/metrics.jsonl (-1: none) and, in *lines, how many lines
// the file has.
int64_t LastLoggedStep(const std::string& run_dir, int64_t* lines = nullptr) {
  std::ifstream in(run_dir + "/metrics.jsonl");
  int64_t last = -1;
  if (lines != nullptr) *lines = 0;
  for (std::string line; std::getline(in, line);) {
    if (lines != nullptr) ++*lines;
    const size_t at = line.find("\"step\": ");
    int64_t step = 0;
    if (at != std::string::npos &&
        absl::SimpleAtoi(line.substr(at + 8, line.find_first_of(",}", at + 8) - at - 8), &step)) {
      last = step;
    }
  }
  return last;
}

// The run's checkpoint.dir from RUN_DIR/config.yaml (written by rank 0 at the start; "" if none).
std::string CheckpointDirOf(const std::string& run_dir) {
  auto config = config::LoadConfigFile(run_dir + "/config.yaml", {});
  return config.ok() ? config->checkpoint().dir() : "";
}

// The step of the newest complete checkpoint under `root` and its directory (-1: none).
std::pair<int64_t, std::string> NewestCheckpoint(const std::string& root) {
  if (root.empty()) return {-1, ""};
  const std::optional<std::string> dir = checkpoint::FindLatestComplete(root);
  if (!dir) return {-1, ""};
  const std::string name = std::filesystem::path(*dir).filename().string();
  int64_t step = -1;
  if (name.rfind("step-", 0) == 0 && absl::SimpleAtoi(name.substr(5), &step)) return {step, *dir};
  return {-1, *dir};
}

std::string Cause(int status) {
  if (WIFSIGNALED(status)) {
    return absl::StrCat("killed by signal ", WTERMSIG(status), " (", strsignal(WTERMSIG(status)),
                        ")");
  }
  const int code = WEXITSTATUS(status);
  if (code == train::kExitHang) return absl::StrCat("exit code ", code, " (hang detected)");
  if (code > 128) {
    return absl::StrCat("exit code ", code, " (a process ended by signal ", code - 128, ", ",
                        strsignal(code - 128), ")");
  }
  return absl::StrCat("exit code ", code);
}

int ExitCode(int status) {
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

// What a restart's line records until the restarted job's first step (or its end).
struct PendingRestart {
  JsonLine line;
  int64_t logged_lines = 0;  // metrics.jsonl's lines when the job failed: the restarted job's
                             // first step is the first line beyond them
  double failed_at = 0;      // when the failed job ended
};

void WriteRestart(const std::string& run_dir, PendingRestart* pending, double time_to_resume) {
  pending->line.Add("time_to_resume_s", time_to_resume);
  std::ofstream out(run_dir + "/restarts.jsonl", std::ios::app);
  out << pending->line.Dump() << "\n";
}

}  // namespace

int LaunchCommand(const std::vector<std::string>& args) {
  if (!args.empty() && (args[0] == "--help" || args[0] == "-h")) {
    std::fputs(kLaunchHelp, stdout);
    return 0;
  }
  std::vector<std::string> own = args, command;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--") {
      own.assign(args.begin(), args.begin() + i);
      command.assign(args.begin() + i + 1, args.end());
      break;
    }
  }
  auto parsed = ParseArgs(own, {{"max-restarts", "restart-delay", "run-dir"}, {}, {}}, "launch");
  if (!parsed.ok()) return Fail("launch", std::string(parsed.status().message()), 2);
  if (command.empty()) return Fail("launch", "expected -- COMMAND... (see --help)", 2);
  int max_restarts = 3;
  double delay_s = 5;
  if (!absl::SimpleAtoi(parsed->Get("max-restarts", "3"), &max_restarts) || max_restarts < 0 ||
      max_restarts > 1000000) {
    return Fail("launch", "--max-restarts takes a whole number >= 0", 2);
  }
  if (!absl::SimpleAtod(parsed->Get("restart-delay", "5"), &delay_s) || !(delay_s >= 0) ||
      delay_s > 86400) {
    return Fail("launch", "--restart-delay takes seconds in [0, 86400]", 2);
  }
  const std::string run_dir = parsed->Get("run-dir", RunDirOf(command));
  if (run_dir.empty()) {
    return Fail("launch",
                "the run directory is unknown: pass --run-dir DIR to the train command (or to "
                "launch), so restarts.jsonl and the checkpoints can be found",
                2);
  }
  std::error_code error;
  std::filesystem::create_directories(run_dir, error);

  struct sigaction action;
  std::memset(&action, 0, sizeof(action));
  action.sa_handler = OnStop;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);

  std::optional<PendingRestart> pending;
  int status = 0;
  for (int attempt = 0;; ++attempt) {
    std::vector<std::string> argv = command;
    if (attempt > 0 && std::find(argv.begin(), argv.end(), "--resume") == argv.end()) {
      argv.push_back("--resume");
    }
    std::fprintf(stderr, "moefold launch: %s%s\n", attempt == 0 ? "" : "restart: ",
                 absl::StrJoin(argv, " ").c_str());
    std::fflush(stderr);
    const pid_t child = fork();
    if (child < 0) return Fail("launch", absl::StrCat("fork: ", std::strerror(errno)));
    if (child == 0) {
      signal(SIGTERM, SIG_DFL);
      signal(SIGINT, SIG_DFL);
      std::vector<char*> c_argv;
      for (std::string& a : argv) c_argv.push_back(a.data());
      c_argv.push_back(nullptr);
      execvp(c_argv[0], c_argv.data());
      std::fprintf(stderr, "moefold launch: cannot run %s: %s\n", c_argv[0], std::strerror(errno));
      _exit(127);
    }
    // Wait, passing a stop request on to the job's processes (not to mpirun, which would kill
    // them at once), and watching for the restarted job's first step.
    int forwarded = 0;
    for (;;) {
      const pid_t done = waitpid(child, &status, WNOHANG);
      if (done == child) break;
      // Each request goes on to the ranks: the first asks them to save and stop, a second ends
      // them at once (core/train/preemption.h).
      while (forwarded < stop_signal) {
        for (pid_t pid : Descendants(child)) kill(pid, SIGTERM);
        ++forwarded;
      }
      int64_t lines = 0;
      LastLoggedStep(run_dir, &lines);
      if (pending && lines > pending->logged_lines) {
        WriteRestart(run_dir, &*pending, Now() - pending->failed_at);
        pending.reset();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    const double ended_at = Now();
    if (pending) {
      // The restarted job never logged a step.
      WriteRestart(run_dir, &*pending, -1);
      pending.reset();
    }
    const int code = ExitCode(status);
    if (code == 0) return 0;
    if (stop_signal != 0 || code == train::kExitPreempted) {
      std::fprintf(stderr, "moefold launch: the job stopped (%s); not restarting\n",
                   Cause(status).c_str());
      return code;
    }
    if (attempt >= max_restarts) {
      std::fprintf(stderr, "moefold launch: the job failed (%s); giving up after %d restart(s)\n",
                   Cause(status).c_str(), max_restarts);
      return code;
    }
    const std::string ck_root = CheckpointDirOf(run_dir);
    const auto [ck_step, ck_dir] = NewestCheckpoint(ck_root);
    int64_t logged_lines = 0;
    const int64_t steps_done = LastLoggedStep(run_dir, &logged_lines) + 1;
    const int64_t resume_step = std::max<int64_t>(ck_step, 0);
    const int64_t lost = std::max<int64_t>(0, steps_done - resume_step);
    std::fprintf(stderr,
                 "moefold launch: the job failed (%s) after %lld step(s); restart %d of %d from "
                 "%s, %lld step(s) lost, in %g s\n",
                 Cause(status).c_str(), static_cast<long long>(steps_done), attempt + 1,
                 max_restarts,
                 ck_dir.empty() ? "the start (no complete checkpoint)" : ck_dir.c_str(),
                 static_cast<long long>(lost), delay_s);
    std::fflush(stderr);
    pending.emplace();
    pending->line.Add("restart", attempt + 1)
        .Add("cause", Cause(status))
        .Add("exit_code", code)
        .Add("steps_done", steps_done)
        .Add("checkpoint", ck_dir)
        .Add("resume_step", resume_step)
        .Add("steps_lost", lost)
        .Add("restart_delay_s", delay_s);
    pending->logged_lines = logged_lines;
    pending->failed_at = ended_at;
    std::this_thread::sleep_for(std::chrono::duration<double>(delay_s));
    if (stop_signal != 0) return code;
  }
}

}  // namespace moefold::launch
