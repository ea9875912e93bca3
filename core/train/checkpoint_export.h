// `moefold export`: the model of a checkpoint (saved under any layout) as a Hugging Face directory.
// The one-rank model is rebuilt from the checkpoint's own config and its parameters read whole
// through the resharding reader, so the export needs no ranks and no training data.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "core/hf/export.h"

namespace moefold::train {

// `checkpoint`: a step directory (with manifest.pb) or a checkpoint directory, whose newest
// complete checkpoint is taken. Returns the step directory exported. Errors: no complete
// checkpoint, a model no Hugging Face family represents (hf::CheckExportable's reasons, before
// anything is read), a missing or corrupted shard (named), an I/O error writing `out_dir`.
absl::StatusOr<std::string> ExportCheckpoint(const std::string& checkpoint,
                                             const std::string& out_dir,
                                             const hf::ExportOptions& options);

}  // namespace moefold::train
