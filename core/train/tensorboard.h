// TensorBoard event files: RUN_DIR/tb/events.out.tfevents.<unix_time>.<hostname>, readable by
// `tensorboard --logdir RUN_DIR` with no conversion. Each record is TFRecord-framed (length,
// masked CRC32C of the length, a serialized Event, masked CRC32C of the Event); the first Event
// names the file version, the second marks a (re)start at the first step written, then one Event
// per step holds that step's scalars.
//
//   MF_ASSIGN_OR_RETURN(auto tb, TensorBoardWriter::Open(run_dir));
//   MF_RETURN_IF_ERROR(tb->WriteScalars(step, {{"loss/lm", 2.5}, {"lr", 3e-4}}));
//   MF_RETURN_IF_ERROR(tb->WriteScalars(step, TensorBoardScalars(metrics_line)));
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/json_line.h"

namespace moefold::train {

// Tag and value of one scalar, e.g. {"loss/lm", 2.5}.
using TensorBoardScalar = std::pair<std::string, double>;

class TensorBoardWriter {
 public:
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // Creates RUN_DIR/tb (and parents) and the file events.out.tfevents.<unix_time>.<hostname>
  // there, then writes the file-version record ("brain.Event:2"). A file of that name (a restart
  // within the same second) is appended to. Errors: those of mkdir/fopen/write, naming the path.
  static absl::StatusOr<std::unique_ptr<TensorBoardWriter>> Open(const std::string& run_dir);

  // One Event at `step` with one simple_value per scalar (stored as f32, TensorBoard's type), the
  // current wall time, flushed at once so a run that dies keeps every step written. The first call
  // writes a SessionLog START at `step` before it: TensorBoard then drops what earlier files of the
  // directory logged at `step` or later (a resumed run redoes the steps after its checkpoint; a
  // fresh run in a reused directory starts over), as metrics.jsonl's later lines count.
  absl::Status WriteScalars(int64_t step, const std::vector<TensorBoardScalar>& scalars);

  const std::string& path() const { return path_; }

 private:
  TensorBoardWriter(std::string path, std::FILE* file) : path_(std::move(path)), file_(file) {}
  absl::Status WriteRecord(const std::string& data);

  std::string path_;
  std::FILE* file_;
  bool started_ = false;  // the SessionLog START is written
};

// The scalars of one metrics.jsonl line under TensorBoard tags: numbers and booleans (as 0/1) at
// the top level, named by a fixed table ("lm_loss" → "loss/lm", "step_time_s" → "time/step_s",
// "device_peak_bytes" → "memory/device_peak_bytes", ...; a key the table lacks keeps its name);
// objects of numbers per key ("comm_s": {"ep": x} → "comm/ep_s", "comm_exposed_s" →
// "comm/ep_exposed_s", another object "key/sub"); arrays of numbers per index
// ("rank_step_time_s" → "ranks/step_time_s/0", ...). Left out: "step" (the Event's step), nulls
// (an unknown MFU, a non-finite loss), strings and nested arrays (expert_tokens per layer and
// expert, which the report draws as a heatmap). Tags come in the line's key order.
std::vector<TensorBoardScalar> TensorBoardScalars(const JsonLine& metrics_line);

// One TFRecord: uint64 length of `data`, uint32 masked CRC32C of those 8 bytes, `data`, uint32
// masked CRC32C of `data` (integers little-endian).
std::string FrameTfRecord(absl::string_view data);

// One decoded record of an event file (the reader is for tests and tools).
struct TensorBoardEvent {
  double wall_time = 0;
  int64_t step = 0;
  std::string file_version;    // set on a file-version record, empty otherwise
  bool session_start = false;  // a SessionLog START (a run (re)starts at `step`)
  std::vector<std::pair<std::string, float>> scalars;  // tag, simple_value; in record order
};

// Reads every record of an event file, checking both masked CRC32Cs of each, and decodes the
// Events. Errors: NotFound/PermissionDenied for the file; DataLoss naming the record and its byte
// offset for a truncated record, a CRC mismatch, or an Event that does not parse.
absl::StatusOr<std::vector<TensorBoardEvent>> ReadTensorBoardEvents(const std::string& path);

// The event files under RUN_DIR/tb, sorted by name (so by creation time, then host).
std::vector<std::string> TensorBoardEventFiles(const std::string& run_dir);

}  // namespace moefold::train
