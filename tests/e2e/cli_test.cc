// End to end through the moefold binary: the quick start's loss falls on the built-in corpus, the
// metrics file has every documented key, and bad input ends with a message naming the problem.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"

namespace {

struct Result {
  int exit_code;
  std::string output;
};

Result RunMoefold(const std::string& args) {
  const std::string command = std::string(MOEFOLD_BINARY) + " " + args + " 2>&1";
  Result r{-1, ""};
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return r;
  char buffer[4096];
  while (fgets(buffer, sizeof(buffer), pipe) != nullptr) r.output += buffer;
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::vector<std::string> ReadLines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

double JsonNumber(const std::string& line, const std::string& key) {
  const size_t at = line.find("\"" + key + "\": ");
  if (at == std::string::npos) return NAN;
  return std::stod(line.substr(at + key.size() + 4));
}

TEST(CliTest, QuickStartLossFallsClearlyOnTheBuiltinCorpus) {
  const std::string run_dir = "build/test-runs/quickstart";
  std::filesystem::remove_all(run_dir);
  const Result r = RunMoefold("train --config configs/tiny_moe.yaml --set train.steps=" +
                       std::to_string(QUICKSTART_TEST_STEPS) +
                       " --set data.cache_dir=build/test-data --run-dir " + run_dir);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("moefold summary"), std::string::npos) << r.output;
  const auto lines = ReadLines(run_dir + "/metrics.jsonl");
  ASSERT_EQ(lines.size(), static_cast<size_t>(QUICKSTART_TEST_STEPS));
  for (const char* key : {"step", "loss", "lm_loss", "aux_loss", "grad_norm", "lr", "tokens",
                          "tokens_per_s", "step_time_s", "skipped"}) {
    EXPECT_NE(lines[0].find(std::string("\"") + key + "\""), std::string::npos) << key;
  }
  const double first = JsonNumber(lines.front(), "lm_loss");
  double last = 0;
  for (size_t i = lines.size() - 5; i < lines.size(); ++i) last += JsonNumber(lines[i], "lm_loss") / 5;
  EXPECT_GT(first, 5.0) << "an untrained byte model starts near ln 257 = 5.55";
  EXPECT_LT(last, 3.0) << "mean lm_loss of the last 5 steps";
  EXPECT_GT(JsonNumber(lines.back(), "aux_loss"), 0.0);
}

TEST(CliTest, HelpListsTheCommands) {
  const Result r = RunMoefold("--help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* command : {"train", "plan", "prep-data"}) {
    EXPECT_NE(r.output.find(command), std::string::npos) << command;
  }
  EXPECT_EQ(RunMoefold("train --help").exit_code, 0);
  EXPECT_EQ(RunMoefold("prep-data --help").exit_code, 0);
}

TEST(CliTest, BadInputNamesTheProblem) {
  Result r = RunMoefold("train --config configs/does_not_exist.yaml");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("does_not_exist.yaml"), std::string::npos) << r.output;

  r = RunMoefold("train --config configs/tiny_moe.yaml --set model.hiden_size=4");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("hiden_size"), std::string::npos) << r.output;

  r = RunMoefold("train --config configs/tiny_moe.yaml --set model.num_heads=3");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("num_heads"), std::string::npos) << r.output;

  r = RunMoefold("train --config configs/tiny_moe.yaml --bogus 1");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--bogus"), std::string::npos) << r.output;

  r = RunMoefold("frobnicate");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("frobnicate"), std::string::npos);
}

TEST(CliTest, PrepDataWritesADatasetAndRefusesAMissingInput) {
  const std::string dir = "build/test-runs/prep";
  std::filesystem::create_directories(dir);
  { std::ofstream(dir + "/in.txt") << "hello world\n\nsecond line\n"; }
  Result r = RunMoefold("prep-data --input " + dir + "/in.txt --output " + dir + "/out");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("2 documents"), std::string::npos) << r.output;
  EXPECT_TRUE(std::filesystem::exists(dir + "/out.idx"));
  r = RunMoefold("prep-data --input " + dir + "/missing.txt --output " + dir + "/out2");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("missing.txt"), std::string::npos) << r.output;
}

}  // namespace
