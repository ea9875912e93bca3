// Writes one rank's part of a checkpoint in a background thread: its shard file (the pieces'
// values, each checksummed) and its record (the pieces' metadata, or the error), both crash-safe.
// The training thread hands over host copies taken at the step boundary and goes on; the next
// save, or the end of the run, waits for this one.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "checkpoint/checkpoint.pb.h"
#include "core/tensor.h"

namespace moefold::checkpoint {

// One piece to write: its metadata (tensor, kind, box and flat range; rank, offset and checksum
// are filled in when written) and its values, a host f32 tensor of flat_end − flat_begin elements.
struct HostPiece {
  Piece meta;
  Tensor values;
};

class AsyncShardWriter {
 public:
  AsyncShardWriter() = default;
  AsyncShardWriter(const AsyncShardWriter&) = delete;
  AsyncShardWriter& operator=(const AsyncShardWriter&) = delete;
  ~AsyncShardWriter();  // waits for a write in progress

  // Starts writing `pieces` as DIR/rank-NNNNN.bin and DIR/rank-NNNNN.record (`tensors`: the global
  // shapes of the tensors written). With `background` false the write happens here. `inject`
  // (tests) runs between the shard and the record; it may fail the write or kill the process.
  void Start(const std::string& dir, int rank, std::vector<HostPiece> pieces,
             std::vector<TensorInfo> tensors, bool background,
             std::function<absl::Status()> inject = nullptr);
  bool busy() const { return thread_.joinable(); }
  bool done() const { return done_.load(); }  // the last Start has finished (or none started)
  // Waits for the write in progress; its result (OK when none was started).
  absl::Status Wait();

 private:
  absl::Status Write(const std::string& dir, int rank, std::vector<HostPiece>& pieces,
                     const std::vector<TensorInfo>& tensors,
                     const std::function<absl::Status()>& inject);

  std::thread thread_;
  std::atomic<bool> done_{true};
  absl::Status status_;
};

}  // namespace moefold::checkpoint
