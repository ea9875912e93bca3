// TensorBoard event files: CRC32C test vectors, TFRecord framing byte for byte against bytes
// TensorBoard's own Python writer produced, writer → reader round trips, detection of every kind
// of damage, the metrics → tag mapping, and a trainer run whose event file matches metrics.jsonl.
#include "core/train/tensorboard.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "absl/strings/escaping.h"
#include "checkpoint/directory.h"
#include "core/train/crc32c.h"
#include "core/train/tensorboard_event.pb.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/testing.h"
#include "tests/train/trainer_testing.h"

namespace moefold::train {
namespace {

std::string FreshDir(const std::string& name) {
  const std::string dir = "build/test-runs/tensorboard-" + name;
  std::filesystem::remove_all(dir);
  return dir;
}

std::string ReadBytes(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(file), {});
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// The standard CRC32C check value and the iSCSI test vectors (32 bytes of 0x00, 0xFF,
// 0..31, 31..0).
TEST(Crc32cTest, KnownVectors) {
  EXPECT_EQ(Crc32c(""), 0u);
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(Crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(Crc32c(std::string(32, '\xFF')), 0x62A8AB43u);
  std::string ascending, descending;
  for (int i = 0; i < 32; ++i) {
    ascending.push_back(static_cast<char>(i));
    descending.push_back(static_cast<char>(31 - i));
  }
  EXPECT_EQ(Crc32c(ascending), 0x46DD794Eu);
  EXPECT_EQ(Crc32c(descending), 0x113FDB5Cu);
}

TEST(Crc32cTest, ContinuingEqualsOnePass) {
  EXPECT_EQ(Crc32c("6789", Crc32c("12345")), Crc32c("123456789"));
}

TEST(Crc32cTest, MaskRotatesAndOffsets) {
  EXPECT_EQ(MaskCrc32c(0), 0xa282ead8u);
  EXPECT_EQ(MaskCrc32c(0x00008000u), 0xa282ead9u);  // bit 15 rotates to bit 0
  EXPECT_EQ(MaskCrc32c(0x00000001u), 0xa282ead8u + 0x00020000u);
}

// Bytes from TensorBoard's Python RecordWriter (tensorboard.summary.writer.record_writer) and
// its event_pb2: the framing and our Event's field numbers agree with TensorBoard's.
TEST(TfRecordTest, MatchesTensorBoardsWriterByteForByte) {
  EXPECT_EQ(absl::BytesToHexString(FrameTfRecord("moefold")),
            "0700000000000000bbd79f116d6f65666f6c64056de6ef");
  tensorboard::Event event;
  event.set_wall_time(1.5);
  event.set_step(7);
  auto* lm = event.mutable_summary()->add_value();
  lm->set_tag("loss/lm");
  lm->set_simple_value(2.5f);
  auto* lr = event.mutable_summary()->add_value();
  lr->set_tag("lr");
  lr->set_simple_value(0.0f);  // a zero is still written (the oneof has presence)
  EXPECT_EQ(absl::BytesToHexString(FrameTfRecord(event.SerializeAsString())),
            "2800000000000000ff70164a09000000000000f83f10072a1b0a0e0a076c6f73732f6c6d15000020400a"
            "090a026c7215000000001ea08a54");
}

TEST(TensorBoardWriterTest, RoundTrip) {
  const std::string dir = FreshDir("round-trip");
  auto writer = TensorBoardWriter::Open(dir);
  ASSERT_OK(writer);
  const std::string path = (*writer)->path();
  EXPECT_EQ(std::filesystem::path(path).parent_path().string(), dir + "/tb");
  EXPECT_EQ(std::filesystem::path(path).filename().string().rfind("events.out.tfevents.", 0), 0u);
  for (int64_t step = 0; step < 3; ++step) {
    ASSERT_OK((*writer)->WriteScalars(step, {{"loss/lm", 3.0 - step}, {"lr", 1e-3 * step}}));
  }
  // Every step is flushed: the file is whole while the writer is still open.
  auto events = ReadTensorBoardEvents(path);
  ASSERT_OK(events);
  ASSERT_EQ(events->size(), 5u);
  EXPECT_EQ((*events)[0].file_version, "brain.Event:2");
  EXPECT_TRUE((*events)[0].scalars.empty());
  EXPECT_GT((*events)[0].wall_time, 1.5e9);  // seconds since the epoch, after 2017
  EXPECT_TRUE((*events)[1].session_start);   // at the first step written
  EXPECT_EQ((*events)[1].step, 0);
  EXPECT_TRUE((*events)[1].scalars.empty());
  for (int64_t step = 0; step < 3; ++step) {
    const TensorBoardEvent& e = (*events)[step + 2];
    EXPECT_EQ(e.step, step);
    EXPECT_TRUE(e.file_version.empty());
    EXPECT_FALSE(e.session_start);
    EXPECT_GE(e.wall_time, (*events)[0].wall_time);
    ASSERT_EQ(e.scalars.size(), 2u);
    EXPECT_EQ(e.scalars[0].first, "loss/lm");
    EXPECT_EQ(e.scalars[0].second, static_cast<float>(3.0 - step));
    EXPECT_EQ(e.scalars[1].first, "lr");
    EXPECT_EQ(e.scalars[1].second, static_cast<float>(1e-3 * step));
  }
  EXPECT_EQ(TensorBoardEventFiles(dir), std::vector<std::string>{path});
}

// A flipped byte in each part of a record (length, its CRC, data, data CRC) and a cut file are
// all reported as DataLoss naming the record.
TEST(TensorBoardWriterTest, DamageIsDetected) {
  const std::string dir = FreshDir("damage");
  std::string path;
  {
    auto writer = TensorBoardWriter::Open(dir);
    ASSERT_OK(writer);
    path = (*writer)->path();
    ASSERT_OK((*writer)->WriteScalars(5, {{"grad_norm", 0.75}}));
  }
  const std::string good = ReadBytes(path);
  auto events = ReadTensorBoardEvents(path);
  ASSERT_OK(events);
  ASSERT_EQ(events->size(), 3u);  // version, start, step 5
  // The last record starts where the first two (the version and the start) end.
  size_t start = 0;
  for (int record = 0; record < 2; ++record) {
    uint64_t length = 0;
    for (int i = 7; i >= 0; --i)
      length = (length << 8) | static_cast<unsigned char>(good[start + i]);
    start += 8 + 4 + length + 4;
  }
  const size_t length = good.size() - start - 16;
  const std::map<std::string, size_t> offsets = {{"length", start + 1},
                                                 {"length crc", start + 9},
                                                 {"data", start + 12 + length / 2},
                                                 {"data crc", good.size() - 2}};
  for (const auto& [part, offset] : offsets) {
    std::string bad = good;
    bad[offset] ^= 0x10;
    WriteBytes(path, bad);
    auto read = ReadTensorBoardEvents(path);
    EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss) << part << ": " << read.status();
    EXPECT_NE(read.status().message().find("record 2 at byte"), std::string::npos) << read.status();
  }
  for (size_t cut : {good.size() - 1, start + 5, start + 12 + length}) {
    WriteBytes(path, good.substr(0, cut));
    auto read = ReadTensorBoardEvents(path);
    EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss) << "cut at " << cut;
  }
  WriteBytes(path, good);
  EXPECT_OK(ReadTensorBoardEvents(path));
}

TEST(TensorBoardScalarsTest, MetricsKeysBecomeTags) {
  JsonLine comm, exposed;
  comm.Add("ep", 0.25).Add("dp-cp", 0.5);
  exposed.Add("ep", 0.125);
  JsonLine line;
  line.Add("step", 9)
      .Add("loss", 2.0)
      .Add("lm_loss", 1.75)
      .Add("aux_loss", 0.125)
      .Add("z_loss", 0.0)
      .Add("grad_norm", 0.5)
      .Add("lr", 3e-4)
      .Add("mfu", std::nan(""))  // unknown: written as null, left out
      .Add("tokens_per_s", 1000.0)
      .Add("step_time_s", 0.25)
      .Add("device_peak_bytes", int64_t{1} << 40)
      .Add("rank_step_time_s", std::vector<double>{0.25, 0.5})
      .Add("expert_tokens", std::vector<std::vector<int64_t>>{{1, 2}, {3, 4}})
      .Add("comm_s", comm)
      .Add("comm_exposed_s", exposed)
      .Add("checkpoint_stall_s", 0.0)
      .Add("layout", "tp 2")
      .Add("skipped", true)
      .Add("brand_new_key", 4.0);
  const std::vector<TensorBoardScalar> expected = {
      {"loss/total", 2.0},
      {"loss/lm", 1.75},
      {"loss/aux", 0.125},
      {"loss/z", 0.0},
      {"grad_norm", 0.5},
      {"lr", 3e-4},
      {"throughput/tokens_per_s", 1000.0},
      {"time/step_s", 0.25},
      {"memory/device_peak_bytes", static_cast<double>(int64_t{1} << 40)},
      {"ranks/step_time_s/0", 0.25},
      {"ranks/step_time_s/1", 0.5},
      {"comm/ep_s", 0.25},
      {"comm/dp-cp_s", 0.5},
      {"comm/ep_exposed_s", 0.125},
      {"checkpoint/stall_s", 0.0},
      {"skipped", 1.0},
      {"brand_new_key", 4.0}};
  EXPECT_EQ(TensorBoardScalars(line), expected);
}

// A second-long run of a small model with logging.tensorboard, checkpoints under RUN_DIR/ckpt.
config::ExperimentConfig SmallRun(const std::string& run_dir, int steps) {
  return TinyMoeConfig(
      {"model.hidden_size=32", "model.num_layers=2", "model.num_heads=4", "model.num_kv_heads=2",
       "model.ffn_hidden_size=64", "model.moe.num_experts=4", "model.moe.top_k=2",
       "model.moe.expert_ffn_hidden_size=32", "train.seq_len=16", "train.global_batch_size=4",
       "train.micro_batch_size=4", "train.steps=" + std::to_string(steps),
       "optimizer.warmup_steps=1", "data.cache_dir=build/test-data", "logging.tensorboard=true",
       "checkpoint.dir=" + run_dir + "/ckpt", "checkpoint.every=2"});
}

absl::Status Train(const std::string& run_dir, int steps, bool resume) {
  TrainerOptions options;
  options.run_dir = run_dir;
  options.print_progress = false;
  options.resume = resume;
  MF_ASSIGN_OR_RETURN(auto trainer, Trainer::Create(SmallRun(run_dir, steps), options));
  return trainer->Run().status();
}

// The trainer with logging.tensorboard writes one event per step whose scalars are
// metrics.jsonl's values at f32.
TEST(TensorBoardTrainerTest, EventFileMatchesMetricsJsonl) {
  const std::string run_dir = FreshDir("trainer");
  ASSERT_OK(Train(run_dir, 3, /*resume=*/false));
  const std::vector<std::string> files = TensorBoardEventFiles(run_dir);
  ASSERT_EQ(files.size(), 1u);
  auto events = ReadTensorBoardEvents(files[0]);
  ASSERT_OK(events);
  ASSERT_EQ(events->size(), 5u);
  EXPECT_EQ((*events)[0].file_version, "brain.Event:2");
  EXPECT_TRUE((*events)[1].session_start);

  std::ifstream metrics(run_dir + "/metrics.jsonl");
  std::string text;
  for (size_t step = 0; step < 3; ++step) {
    ASSERT_TRUE(std::getline(metrics, text));
    const auto line = nlohmann::json::parse(text);
    const TensorBoardEvent& event = (*events)[step + 2];
    EXPECT_EQ(event.step, line["step"].get<int64_t>());
    std::map<std::string, float> scalars(event.scalars.begin(), event.scalars.end());
    EXPECT_EQ(scalars.size(), event.scalars.size()) << "a tag appears twice";
    const std::map<std::string, std::string> keys = {
        {"loss/total", "loss"},
        {"loss/lm", "lm_loss"},
        {"loss/aux", "aux_loss"},
        {"loss/z", "z_loss"},
        {"grad_norm", "grad_norm"},
        {"lr", "lr"},
        {"throughput/tokens_per_s", "tokens_per_s"},
        {"time/step_s", "step_time_s"},
        {"memory/device_peak_bytes", "device_peak_bytes"},
        {"checkpoint/stall_s", "checkpoint_stall_s"},
        {"experts/tokens_dropped", "tokens_dropped"}};
    for (const auto& [tag, key] : keys) {
      ASSERT_TRUE(scalars.count(tag)) << tag;
      EXPECT_EQ(scalars[tag], line[key].get<float>()) << tag << " at step " << step;
    }
    for (const auto& [kind, seconds] : line["comm_s"].items()) {
      EXPECT_EQ(scalars["comm/" + kind + "_s"], seconds.get<float>()) << kind;
    }
    // Every number of the line is there: top-level numbers and booleans, and per-kind times.
    size_t numbers = 0;
    for (const auto& [key, value] : line.items()) {
      if (key == "step") continue;
      if (value.is_number() || value.is_boolean()) ++numbers;
      if (value.is_object()) numbers += value.size();
      if (value.is_array() && !value.empty() && value[0].is_number()) numbers += value.size();
    }
    EXPECT_EQ(scalars.size(), numbers);
  }
}

// What TensorBoard shows of a run directory: its files in name order, a SessionLog START at step
// s drops every value read before it at step s or later, a later value replaces an earlier one.
std::map<std::string, std::map<int64_t, float>> Shown(const std::string& run_dir) {
  std::map<std::string, std::map<int64_t, float>> shown;
  for (const std::string& file : TensorBoardEventFiles(run_dir)) {
    auto events = ReadTensorBoardEvents(file);
    MF_CHECK(events.ok()) << events.status();
    for (const TensorBoardEvent& event : *events) {
      if (event.session_start) {
        for (auto& [tag, steps] : shown) steps.erase(steps.lower_bound(event.step), steps.end());
      }
      for (const auto& [tag, value] : event.scalars) shown[tag][event.step] = value;
    }
  }
  return shown;
}

// A run resumed from an older checkpoint redoes steps 2 and 3: metrics.jsonl holds them twice
// (the later lines count) and the resumed events start with a restart at step 2, so what
// TensorBoard shows is one value per step, the later one.
TEST(TensorBoardTrainerTest, ResumedRunRestartsAtItsCheckpoint) {
  const std::string run_dir = FreshDir("resume");
  ASSERT_OK(Train(run_dir, 4, /*resume=*/false));
  std::filesystem::remove_all(run_dir + "/ckpt/" + checkpoint::StepDirName(4));
  ASSERT_OK(Train(run_dir, 4, /*resume=*/true));

  std::vector<nlohmann::json> lines;
  std::ifstream metrics(run_dir + "/metrics.jsonl");
  for (std::string text; std::getline(metrics, text);) lines.push_back(nlohmann::json::parse(text));
  ASSERT_EQ(lines.size(), 6u);  // steps 0 1 2 3, then 2 3 again
  int starts = 0;
  for (const std::string& file : TensorBoardEventFiles(run_dir)) {
    auto events = ReadTensorBoardEvents(file);
    ASSERT_OK(events);
    for (const TensorBoardEvent& event : *events) {
      if (!event.session_start) continue;
      EXPECT_EQ(event.step, starts == 0 ? 0 : 2);
      ++starts;
    }
  }
  EXPECT_EQ(starts, 2);
  const auto shown = Shown(run_dir);
  ASSERT_TRUE(shown.count("loss/lm"));
  const std::map<int64_t, float>& lm = shown.at("loss/lm");
  ASSERT_EQ(lm.size(), 4u);
  for (size_t i : {0, 1, 4, 5}) {
    const int64_t step = lines[i]["step"].get<int64_t>();
    EXPECT_EQ(lm.at(step), lines[i]["lm_loss"].get<float>()) << "step " << step;
    EXPECT_EQ(shown.at("time/step_s").at(step), lines[i]["step_time_s"].get<float>())
        << "step " << step;
  }
}

}  // namespace
}  // namespace moefold::train
