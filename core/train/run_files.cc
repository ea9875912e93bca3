#include "core/train/run_files.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "configs/config_loader.h"
#include "core/cuda_runtime.h"
#include "core/file_io.h"
#include "core/json_line.h"
#include "core/train/memory_plan.h"
#include "core/train/metrics.h"
#include "parallel/comm_backend.h"
#include "parallel/mapping_format.h"

#ifndef MOEFOLD_COMMIT
#define MOEFOLD_COMMIT "unknown"
#endif

namespace moefold::train {
namespace {

std::string Path(const std::string& dir, const std::string& file) {
  return (std::filesystem::path(dir) / file).string();
}

JsonLine Environment() {
  JsonLine env;
  char host[256] = {0};
  if (gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  env.Add("hostname", std::string(host));
  std::vector<JsonLine> devices;
  int runtime = 0;
  for (int d = 0; d < cuda::DeviceCount(); ++d) {
    auto info = cuda::GetDeviceInfo(d);
    if (!info.ok()) continue;
    JsonLine device;
    device.Add("index", d)
        .Add("name", info->name)
        .Add("memory_bytes", info->memory_bytes)
        .Add("compute_capability", absl::StrCat(info->sm_major, ".", info->sm_minor))
        .Add("driver", absl::StrCat(info->driver_version / 1000, ".",
                                    info->driver_version % 1000 / 10));
    runtime = info->runtime_version;
    devices.push_back(device);
  }
  env.Add("devices", devices);
  env.Add("cuda_runtime", runtime > 0 ? absl::StrCat(runtime / 1000, ".", runtime % 1000 / 10)
                                      : std::string(cuda::BackendBuilt() ? "no GPU" : "not built"));
  env.Add("nccl", parallel::NcclVersion());
  env.Add("mpi", parallel::MpiLibraryVersion());
#ifdef __VERSION__
  env.Add("compiler", std::string(__VERSION__));
#endif
  env.Add("commit", std::string(MOEFOLD_COMMIT));
  env.Add("cpu_cores", static_cast<int64_t>(sysconf(_SC_NPROCESSORS_ONLN)));
  return env;
}

}  // namespace

absl::Status WriteRunFiles(const std::string& run_dir, const config::ExperimentConfig& config,
                           const parallel::Mapping* mapping, const RunInfo& info) {
  std::error_code ec;
  std::filesystem::create_directories(run_dir, ec);
  MF_RETURN_IF_ERROR(WriteFileAtomically(Path(run_dir, "config.yaml"),
                                         config::ConfigToYaml(config)));
  JsonLine run;
  run.Add("command", info.command)
      .Add("start_utc", absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now(), absl::UTCTimeZone()))
      .Add("world_size", info.world_size)
      .Add("layout", info.layout)
      .Add("device", info.device.ToString())
      .Add("compute_dtype", config.precision().compute_dtype())
      .Add("peak_tflops", info.peak.tflops > 0 ? info.peak.tflops : NAN)
      .Add("peak_source", info.peak.source)
      .Add("model_flops_per_token", info.model_flops_per_token)
      .Add("flops_per_token_by_family", JsonObject(info.flops_per_token_by_family))
      .Add("tokens_per_step", info.tokens_per_step)
      .Add("params", JsonLine().Add("total", info.params.total).Add("active", info.params.active))
      .Add("environment", Environment());
  MF_RETURN_IF_ERROR(WriteFileAtomically(Path(run_dir, "run.json"), run.Dump() + "\n"));

  // The plan of this layout: the mapping and every rank's memory estimate.
  absl::StatusOr<parallel::Mapping> one_rank;
  if (mapping == nullptr) {
    one_rank = parallel::Mapping::Create(1, {});
    MF_RETURN_IF_ERROR(one_rank.status());
    mapping = &*one_rank;
  }
  std::vector<JsonLine> memory;
  for (int rank = 0; rank < mapping->world_size(); ++rank) {
    MF_ASSIGN_OR_RETURN(const MemoryEstimate estimate, EstimateMemory(config, *mapping, rank));
    memory.push_back(MemoryEstimateJson(estimate).Add("rank", rank));
  }
  JsonLine plan;
  plan.Add("mapping", parallel::MappingToJson(*mapping)).Add("memory", memory);
  return WriteFileAtomically(Path(run_dir, "plan.json"), plan.Dump() + "\n");
}

absl::Status WriteSummaryJson(const std::string& run_dir, const TrainSummary& s) {
  JsonLine j;
  j.Add("steps", s.steps)
      .Add("skipped_steps", s.skipped_steps)
      .Add("first_loss", s.first_loss)
      .Add("final_loss", s.final_loss)
      .Add("tokens", s.tokens)
      .Add("wall_s", s.wall_s)
      .Add("tokens_per_s", s.tokens_per_s)
      .Add("tokens_per_s_per_device", s.tokens_per_s_per_device)
      .Add("world_size", s.world_size)
      .Add("model_flops_per_token", s.model_flops_per_token)
      .Add("mfu", s.peak_tflops > 0 ? s.mfu : NAN)
      .Add("peak_tflops", s.peak_tflops > 0 ? s.peak_tflops : NAN)
      .Add("peak_source", s.peak_source)
      .Add("median_step_s", s.median_step_s)
      .Add("median_data_s", s.median_data_s)
      .Add("median_forward_s", s.median_forward_s)
      .Add("median_backward_s", s.median_backward_s)
      .Add("median_update_s", s.median_update_s)
      .Add("median_comm_exposed_s", s.median_comm_exposed_s)
      .Add("params", JsonLine().Add("total", s.params.total).Add("active", s.params.active))
      .Add("resumed_from", s.resumed_from)
      .Add("last_checkpoint", s.last_checkpoint)
      .Add("eval_loss", s.eval_loss.value_or(NAN))   // null without evaluation
      .Add("test_loss", s.test_loss.value_or(NAN));
  return WriteFileAtomically(Path(run_dir, "summary.json"), j.Dump() + "\n");
}

}  // namespace moefold::train
