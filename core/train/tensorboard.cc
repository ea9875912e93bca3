// TensorBoard event files (see tensorboard.h): TFRecord framing over the Event messages of
// tensorboard_event.proto. Integers in the framing are little-endian, written byte by byte so the
// file does not depend on the host's byte order.
#include "core/train/tensorboard.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "core/file_io.h"
#include "core/status.h"
#include "core/train/crc32c.h"
#include "core/train/tensorboard_event.pb.h"
#include "nlohmann/json.hpp"

namespace moefold::train {
namespace {

constexpr char kFileVersion[] = "brain.Event:2";
constexpr size_t kHeaderBytes = 8 + 4;  // length, masked CRC of the length
constexpr size_t kFooterBytes = 4;      // masked CRC of the data

void PutLittleEndian(uint64_t value, int bytes, std::string* out) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
}

uint64_t GetLittleEndian(absl::string_view bytes) {
  uint64_t value = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    value |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  }
  return value;
}

double UnixSeconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string HostName() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

// metrics.jsonl keys and their tags; the part before the first '/' is TensorBoard's chart group.
struct TagName {
  const char* key;
  const char* tag;
};
constexpr TagName kTagNames[] = {
    {"loss", "loss/total"},
    {"lm_loss", "loss/lm"},
    {"weighted_lm_loss", "loss/weighted_lm"},
    {"aux_loss", "loss/aux"},
    {"z_loss", "loss/z"},
    {"eval_loss", "eval/loss"},
    {"eval_ppl", "eval/ppl"},
    {"test_loss", "test/loss"},
    {"test_ppl", "test/ppl"},
    {"grad_norm", "grad_norm"},
    {"lr", "lr"},
    {"mfu", "mfu"},
    {"peak_tflops", "throughput/peak_tflops"},
    {"tokens", "throughput/tokens"},
    {"tokens_per_s", "throughput/tokens_per_s"},
    {"tokens_per_s_per_device", "throughput/tokens_per_s_per_device"},
    {"model_tflops_per_s", "throughput/model_tflops_per_s"},
    {"step_time_s", "time/step_s"},
    {"data_s", "time/data_s"},
    {"model_s", "time/model_s"},
    {"forward_s", "time/forward_s"},
    {"backward_s", "time/backward_s"},
    {"update_s", "time/update_s"},
    {"rank_step_time_s", "ranks/step_time_s"},
    {"rank_device_peak_bytes", "ranks/device_peak_bytes"},
    {"host_peak_bytes", "memory/host_peak_bytes"},
    {"device_peak_bytes", "memory/device_peak_bytes"},
    {"dispatch_bytes", "comm/dispatch_bytes"},
    {"grad_bytes_sent", "comm/grad_bytes_sent"},
    {"grad_bytes_uncompressed", "comm/grad_bytes_uncompressed"},
    {"expert_load_max_over_mean", "experts/load_max_over_mean"},
    {"tokens_dropped", "experts/tokens_dropped"},
    {"reweight_normaliser", "reweight/normaliser"},
    {"reweight_max_ratio", "reweight/max_ratio"},
    {"checkpoint_stall_s", "checkpoint/stall_s"},
    {"skipped", "skipped"},
};

std::string TagFor(const std::string& key) {
  for (const TagName& name : kTagNames) {
    if (key == name.key) return name.tag;
  }
  return key;
}

// A number or a boolean as a double; false for anything else (null, string, array, object).
bool ScalarValue(const nlohmann::ordered_json& value, double* out) {
  if (value.is_boolean()) {
    *out = value.get<bool>() ? 1.0 : 0.0;
    return true;
  }
  if (value.is_number()) {
    *out = value.get<double>();
    return true;
  }
  return false;
}

// "comm_s": {"ep": x} → "comm/ep_s"; "comm_exposed_s" → "comm/ep_exposed_s"; otherwise "key/sub".
std::string MemberTag(const std::string& key, const std::string& member) {
  if (key == "comm_s") return absl::StrCat("comm/", member, "_s");
  if (key == "comm_exposed_s") return absl::StrCat("comm/", member, "_exposed_s");
  return absl::StrCat(TagFor(key), "/", member);
}

}  // namespace

TensorBoardWriter::~TensorBoardWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

absl::StatusOr<std::unique_ptr<TensorBoardWriter>> TensorBoardWriter::Open(
    const std::string& run_dir) {
  const std::string dir = (std::filesystem::path(run_dir) / "tb").string();
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) {
    return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", error.message()));
  }
  const double now = UnixSeconds();
  const std::string path =
      absl::StrCat(dir, "/events.out.tfevents.", static_cast<int64_t>(now), ".", HostName());
  std::FILE* file = std::fopen(path.c_str(), "ab");
  if (file == nullptr) return ErrnoStatus("cannot open", path);
  std::unique_ptr<TensorBoardWriter> writer(new TensorBoardWriter(path, file));
  tensorboard::Event event;
  event.set_wall_time(now);
  event.set_file_version(kFileVersion);
  MF_RETURN_IF_ERROR(writer->WriteRecord(event.SerializeAsString()));
  return writer;
}

absl::Status TensorBoardWriter::WriteScalars(int64_t step,
                                             const std::vector<TensorBoardScalar>& scalars) {
  if (!started_) {
    tensorboard::Event start;
    start.set_wall_time(UnixSeconds());
    start.set_step(step);
    start.mutable_session_log()->set_status(tensorboard::SessionLog::START);
    MF_RETURN_IF_ERROR(WriteRecord(start.SerializeAsString()));
    started_ = true;
  }
  tensorboard::Event event;
  event.set_wall_time(UnixSeconds());
  event.set_step(step);
  tensorboard::Summary* summary = event.mutable_summary();
  for (const auto& [tag, value] : scalars) {
    tensorboard::Summary::Value* v = summary->add_value();
    v->set_tag(tag);
    v->set_simple_value(static_cast<float>(value));
  }
  return WriteRecord(event.SerializeAsString());
}

absl::Status TensorBoardWriter::WriteRecord(const std::string& data) {
  const std::string record = FrameTfRecord(data);
  errno = 0;
  if (std::fwrite(record.data(), 1, record.size(), file_) != record.size() ||
      std::fflush(file_) != 0) {
    return ErrnoStatus("cannot write", path_);
  }
  return absl::OkStatus();
}

std::string FrameTfRecord(absl::string_view data) {
  std::string record;
  record.reserve(kHeaderBytes + data.size() + kFooterBytes);
  PutLittleEndian(data.size(), 8, &record);
  PutLittleEndian(MaskCrc32c(Crc32c(record)), 4, &record);
  record.append(data.data(), data.size());
  PutLittleEndian(MaskCrc32c(Crc32c(data)), 4, &record);
  return record;
}

std::vector<TensorBoardScalar> TensorBoardScalars(const JsonLine& metrics_line) {
  // JsonLine prints doubles with enough digits to read back the same double.
  const auto json = nlohmann::ordered_json::parse(metrics_line.Dump());
  std::vector<TensorBoardScalar> scalars;
  double value = 0;
  for (const auto& [key, item] : json.items()) {
    if (key == "step") continue;
    if (ScalarValue(item, &value)) {
      scalars.emplace_back(TagFor(key), value);
    } else if (item.is_object()) {
      for (const auto& [member, sub] : item.items()) {
        if (ScalarValue(sub, &value)) scalars.emplace_back(MemberTag(key, member), value);
      }
    } else if (item.is_array()) {
      for (size_t i = 0; i < item.size(); ++i) {
        if (ScalarValue(item[i], &value))
          scalars.emplace_back(absl::StrCat(TagFor(key), "/", i), value);
      }
    }
  }
  return scalars;
}

absl::StatusOr<std::vector<TensorBoardEvent>> ReadTensorBoardEvents(const std::string& path) {
  MF_ASSIGN_OR_RETURN(std::string bytes, ReadWholeFile(path));
  const absl::string_view file(bytes);
  std::vector<TensorBoardEvent> events;
  size_t offset = 0;
  while (offset < file.size()) {
    const std::string where = absl::StrCat(path, ": record ", events.size(), " at byte ", offset);
    if (file.size() - offset < kHeaderBytes) {
      return absl::DataLossError(absl::StrCat(where, ": truncated header"));
    }
    const absl::string_view length_bytes = file.substr(offset, 8);
    if (GetLittleEndian(file.substr(offset + 8, 4)) != MaskCrc32c(Crc32c(length_bytes))) {
      return absl::DataLossError(absl::StrCat(where, ": the length's CRC32C does not match"));
    }
    const uint64_t length = GetLittleEndian(length_bytes);
    if (file.size() - offset - kHeaderBytes < kFooterBytes ||
        length > file.size() - offset - kHeaderBytes - kFooterBytes) {
      return absl::DataLossError(
          absl::StrCat(where, ": truncated (", length, " bytes of data announced)"));
    }
    const absl::string_view data = file.substr(offset + kHeaderBytes, length);
    if (GetLittleEndian(file.substr(offset + kHeaderBytes + length, 4)) !=
        MaskCrc32c(Crc32c(data))) {
      return absl::DataLossError(absl::StrCat(where, ": the data's CRC32C does not match"));
    }
    tensorboard::Event event;
    if (!event.ParseFromArray(data.data(), static_cast<int>(data.size()))) {
      return absl::DataLossError(absl::StrCat(where, ": not an Event"));
    }
    TensorBoardEvent& decoded = events.emplace_back();
    decoded.wall_time = event.wall_time();
    decoded.step = event.step();
    decoded.file_version = event.file_version();
    decoded.session_start = event.session_log().status() == tensorboard::SessionLog::START;
    for (const auto& v : event.summary().value())
      decoded.scalars.emplace_back(v.tag(), v.simple_value());
    offset += kHeaderBytes + length + kFooterBytes;
  }
  return events;
}

std::vector<std::string> TensorBoardEventFiles(const std::string& run_dir) {
  std::vector<std::string> files;
  std::error_code error;
  const auto dir = std::filesystem::path(run_dir) / "tb";
  for (const auto& entry : std::filesystem::directory_iterator(dir, error)) {
    if (entry.is_regular_file() &&
        entry.path().filename().string().rfind("events.out.tfevents.", 0) == 0) {
      files.push_back(entry.path().string());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace moefold::train
