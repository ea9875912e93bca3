#include "checkpoint/shard_writer.h"

#include <filesystem>

#include "checkpoint/directory.h"
#include "checkpoint/files.h"
#include "core/status.h"
#include "core/trace.h"

namespace moefold::checkpoint {

AsyncShardWriter::~AsyncShardWriter() { (void)Wait(); }

void AsyncShardWriter::Start(const std::string& dir, int rank, std::vector<HostPiece> pieces,
                             std::vector<TensorInfo> tensors, bool background,
                             std::function<absl::Status()> inject) {
  MF_CHECK(!busy()) << "a checkpoint write is already in progress";
  done_ = false;
  status_ = absl::OkStatus();
  if (!background) {
    status_ = Write(dir, rank, pieces, tensors, inject);
    done_ = true;
    return;
  }
  thread_ = std::thread([this, dir, rank, pieces = std::move(pieces),
                         tensors = std::move(tensors), inject = std::move(inject)]() mutable {
    status_ = Write(dir, rank, pieces, tensors, inject);
    done_ = true;
  });
}

absl::Status AsyncShardWriter::Wait() {
  if (thread_.joinable()) thread_.join();
  return status_;
}

absl::Status AsyncShardWriter::Write(const std::string& dir, int rank,
                                     std::vector<HostPiece>& pieces,
                                     const std::vector<TensorInfo>& tensors,
                                     const std::function<absl::Status()>& inject) {
  int64_t bytes = 0;
  for (const HostPiece& piece : pieces) bytes += static_cast<int64_t>(piece.values.nbytes());
  // On the trace's checkpoint track (a traced run): the whole write, shard and record.
  TraceSpan span(TraceTrack::kCheckpoint, "checkpoint write",
                 {{"dir", dir}, {"bytes", bytes}, {"pieces", static_cast<int64_t>(pieces.size())}});
  const std::string shard_path = (std::filesystem::path(dir) / ShardName(rank)).string();
  const std::string record_path = (std::filesystem::path(dir) / RecordName(rank)).string();
  RankRecord record;
  absl::Status status = [&]() -> absl::Status {
    ShardFileWriter writer;
    MF_RETURN_IF_ERROR(writer.Open(shard_path));
    for (HostPiece& piece : pieces) {
      int64_t offset = 0;
      uint64_t hash = 0;
      MF_RETURN_IF_ERROR(writer.Append(piece.values.raw_data(), piece.values.nbytes(), &offset,
                                       &hash));
      piece.meta.set_rank(rank);
      piece.meta.set_byte_offset(offset);
      piece.meta.set_xxh3(hash);
      *record.add_pieces() = piece.meta;
      piece.values = Tensor();  // the host copy is no longer needed
    }
    MF_ASSIGN_OR_RETURN(ShardFile file, writer.Finish());
    file.set_rank(rank);
    *record.mutable_file() = file;
    for (const TensorInfo& t : tensors) *record.add_tensors() = t;
    if (inject) MF_RETURN_IF_ERROR(inject());
    return absl::OkStatus();
  }();
  if (!status.ok()) {
    // Tell rank 0 (best effort: the same disk may refuse this too; then the record is missing and
    // rank 0 learns of the failure through the ranks' agreement on the outcome).
    RankRecord failed;
    failed.set_error(std::string(status.message()));
    (void)WriteFileAtomically(record_path, failed.SerializeAsString());
    return status;
  }
  return WriteFileAtomically(record_path, record.SerializeAsString());
}

}  // namespace moefold::checkpoint
