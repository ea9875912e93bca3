#include "core/train/checkpoint_export.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "checkpoint/box.h"
#include "checkpoint/directory.h"
#include "checkpoint/reader.h"
#include "core/model/decoder.h"
#include "core/train/model_from_config.h"

namespace moefold::train {

absl::StatusOr<std::string> ExportCheckpoint(const std::string& checkpoint,
                                             const std::string& out_dir,
                                             const hf::ExportOptions& options) {
  std::string dir = checkpoint;
  if (!std::filesystem::exists(std::filesystem::path(checkpoint) / checkpoint::kManifestName)) {
    const std::optional<std::string> latest = checkpoint::FindLatestComplete(checkpoint);
    if (!latest) {
      return absl::NotFoundError(
          absl::StrCat(checkpoint, " holds no complete checkpoint (no ", checkpoint::kManifestName,
                       " in it or in a step-N directory under it)"));
    }
    dir = *latest;
  }
  MF_ASSIGN_OR_RETURN(auto reader, checkpoint::CheckpointReader::Open(dir));
  const config::ExperimentConfig& config = reader->manifest().config();
  MF_ASSIGN_OR_RETURN(const model::ModelSpec spec, ModelSpecFromConfig(config));
  MF_RETURN_IF_ERROR(hf::CheckExportable(spec, options).status());
  // The whole model on one rank: every parameter unsharded, read from whichever shards hold it.
  ParameterSet params;
  model::Decoder decoder(spec, model::ModelParallel{}, &params, model::DecoderStage{});
  for (const auto& p : params.params()) {
    const std::vector<int64_t> global(p->sharding.global_shape.begin(),
                                      p->sharding.global_shape.end());
    MF_RETURN_IF_ERROR(reader->Read(p->name, "param", checkpoint::ParameterBox(*p),
                                    p->value.data<float>(), &global));
  }
  MF_RETURN_IF_ERROR(hf::ExportHuggingFace(params, spec, config, out_dir, options));
  return dir;
}

}  // namespace moefold::train
