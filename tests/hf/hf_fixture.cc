// The moefold side of the Python reference checks (tools/python/hf_reference_check.py and
// hf_logits_check.py): writes tiny exports of each family, reads a safetensors file written by
// Python, and runs moefold's forward from an exported directory.
//   hf_fixture export OUT_DIR                 OUT_DIR/{mixtral,qwen2_moe,glm4_moe}_{f32,bf16},
//                                             OUT_DIR/mixtral_sharded (index + shards)
//   hf_fixture read FILE                      one JSON object: name -> {dtype, shape, values}
//   hf_fixture logits FAMILY HF_DIR OUT_JSON  {"tokens": [[..]], "logits": [[[..]]]} (f32, CPU)
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>

#include "configs/moefold.pb.h"
#include "core/hf/export.h"
#include "core/hf/import.h"
#include "core/hf/safetensors.h"
#include "core/model/decoder.h"
#include "core/status.h"
#include "nlohmann/json.hpp"
#include "tests/hf/tiny_models.h"

namespace moefold::hf {
namespace {

constexpr int kSeqLen = 16;
constexpr int kBatch = 2;

absl::StatusOr<model::ModelSpec> Spec(const std::string& family) { return TinyFamilySpec(family); }

config::ExperimentConfig Config() {
  config::ExperimentConfig c;
  c.mutable_train()->set_seq_len(kSeqLen);
  return c;
}

absl::Status Export(const std::string& out) {
  for (const std::string family : {"mixtral", "qwen2_moe", "glm4_moe"}) {
    MF_ASSIGN_OR_RETURN(const model::ModelSpec spec, Spec(family));
    ParameterSet params;
    model::Decoder decoder(spec, model::ModelParallel{}, &params);
    params.Initialize(5);
    for (const DType dtype : {DType::kF32, DType::kBF16}) {
      ExportOptions options{.dtype = dtype, .family = family};
      MF_RETURN_IF_ERROR(ExportHuggingFace(params, spec, Config(), out + "/" + family + "_" +
                                                                       std::string(DTypeName(dtype)),
                                           options));
    }
    if (family == "mixtral") {
      ExportOptions options{.max_shard_bytes = 16384, .family = family};
      MF_RETURN_IF_ERROR(ExportHuggingFace(params, spec, Config(), out + "/mixtral_sharded", options));
    }
  }
  return absl::OkStatus();
}

absl::Status Read(const std::string& path) {
  MF_ASSIGN_OR_RETURN(const SafetensorsFile file, SafetensorsFile::Open(path));
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [name, e] : file.entries()) {
    MF_ASSIGN_OR_RETURN(const Tensor t, file.Read(name));
    out[name] = {{"dtype", SafetensorsDTypeName(t.dtype())}, {"shape", t.shape()}, {"values", t.ToVector()}};
  }
  std::cout << out.dump() << "\n";
  return absl::OkStatus();
}

absl::Status Logits(const std::string& family, const std::string& dir, const std::string& out_path) {
  MF_ASSIGN_OR_RETURN(const model::ModelSpec spec, Spec(family));
  ParameterSet params;
  model::Decoder decoder(spec, model::ModelParallel{}, &params);
  MF_RETURN_IF_ERROR(ImportHuggingFace(dir, spec, Config(), &params));
  model::MicroBatch batch;
  batch.tokens = Tensor::Empty({kBatch, kSeqLen}, DType::kI32);
  batch.targets = Tensor::Empty({kBatch, kSeqLen}, DType::kI32);
  batch.positions = Tensor::Empty({kSeqLen}, DType::kI32);
  nlohmann::json tokens = nlohmann::json::array();
  for (int b = 0; b < kBatch; ++b) {
    std::vector<int> row;
    for (int s = 0; s < kSeqLen; ++s) {
      const int id = (b * 131 + s * 17 + 3) % spec.vocab;  // a fixed, varied batch
      batch.tokens.data<int32_t>()[b * kSeqLen + s] = id;
      batch.targets.data<int32_t>()[b * kSeqLen + s] = (id + 1) % spec.vocab;
      row.push_back(id);
    }
    tokens.push_back(row);
  }
  for (int s = 0; s < kSeqLen; ++s) batch.positions.data<int32_t>()[s] = s;
  model::StepContext ctx{&CpuStream()};
  ctx.ResetDeviceSums();
  model::Decoder::Saved saved;
  MF_ASSIGN_OR_RETURN(const model::ForwardStats stats, decoder.Forward(ctx, batch, &saved));
  (void)stats;
  const std::vector<float> logits = saved.logits.ToVector();  // (B·S, V)
  nlohmann::json l = nlohmann::json::array();
  for (int b = 0; b < kBatch; ++b) {
    nlohmann::json seq = nlohmann::json::array();
    for (int s = 0; s < kSeqLen; ++s) {
      const float* row = logits.data() + (b * kSeqLen + s) * spec.vocab;
      seq.push_back(std::vector<float>(row, row + spec.vocab));
    }
    l.push_back(seq);
  }
  std::ofstream(out_path) << nlohmann::json{{"tokens", tokens}, {"logits", l}}.dump() << "\n";
  return absl::OkStatus();
}

}  // namespace
}  // namespace moefold::hf

int main(int argc, char** argv) {
  using namespace moefold::hf;
  const std::string mode = argc > 1 ? argv[1] : "";
  absl::Status status;
  if (mode == "export" && argc == 3) {
    status = Export(argv[2]);
  } else if (mode == "read" && argc == 3) {
    status = Read(argv[2]);
  } else if (mode == "logits" && argc == 5) {
    status = Logits(argv[2], argv[3], argv[4]);
  } else {
    std::fprintf(stderr, "usage: hf_fixture export OUT_DIR | read FILE | logits FAMILY HF_DIR OUT_JSON\n");
    return 2;
  }
  if (!status.ok()) {
    std::fprintf(stderr, "hf_fixture: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
