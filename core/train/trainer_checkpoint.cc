// Saving and restoring the trainer (docs/ARCHITECTURE.md §11). A checkpoint holds, per tensor, the
// slices ranks held (boxes, see checkpoint/box.h), written once: of the ranks holding identical
// copies (data-parallel replicas, TP-replicated norms) only the first writes; ZeRO-1 moments are
// written as each rank's owned chunks. Loading asks the reader for this rank's slices, so a
// checkpoint loads under any layout. Per-rank EF21 state is kept only when the layout is unchanged.
#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "checkpoint/box.h"
#include "checkpoint/directory.h"
#include "checkpoint/files.h"
#include "checkpoint/reader.h"
#include "core/train/trainer.h"
#include "core/train/trainer_state.h"
#include "google/protobuf/util/message_differencer.h"

namespace moefold::train {
namespace fs = std::filesystem;
using checkpoint::BoxRange;
using checkpoint::HostPiece;

namespace {

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

int RankIn(const parallel::Communicator* comm) { return comm == nullptr ? 0 : comm->rank(); }

// The minimum of `value` over every rank (the value itself on one rank): how the ranks agree on a
// save's outcome.
absl::StatusOr<int> MinOverRanks(const TrainerOptions& options, int value) {
  if (options.groups == nullptr) return value;
  Tensor t = Tensor::FromVector({static_cast<float>(value)}, {1});
  MF_RETURN_IF_ERROR(
      parallel::WaitFor(options.groups->world().AllReduce(&t, {.op = parallel::ReduceOp::kMin})));
  return static_cast<int>(t.ToVector()[0]);
}

int WorldRank(const TrainerOptions& options) {
  return options.groups == nullptr ? 0 : options.groups->world().rank();
}

checkpoint::Layout LayoutOf(const config::ExperimentConfig& config, int world_size) {
  const auto& p = config.parallel();
  checkpoint::Layout l;
  l.set_world_size(world_size);
  l.set_tp(p.tp());
  l.set_cp(p.cp());
  l.set_dp(world_size / (p.tp() * p.cp() * p.pp()));
  l.set_pp(p.pp());
  l.set_virtual_stages(p.virtual_stages());
  l.set_etp(p.etp());
  l.set_ep(p.ep());
  l.set_zero1(p.zero1() && world_size > 1);
  l.set_sequence_parallel(p.sequence_parallel());
  l.set_compute_dtype(config.precision().compute_dtype());
  return l;
}

// The box of a 1-D tensor of n elements (state tensors that are not parameters).
BoxRange WholeVector(int64_t n) {
  BoxRange box;
  box.offset = {0};
  box.shape = {n};
  box.flat_begin = 0;
  box.flat_end = n;
  return box;
}

checkpoint::Piece PieceMeta(const std::string& tensor, const std::string& kind,
                            const BoxRange& box) {
  checkpoint::Piece p;
  p.set_tensor(tensor);
  p.set_kind(kind);
  for (int64_t o : box.offset) p.add_box_offset(o);
  for (int64_t s : box.shape) p.add_box_shape(s);
  p.set_flat_begin(box.flat_begin);
  p.set_flat_end(box.flat_end);
  return p;
}

checkpoint::TensorInfo Info(const std::string& name, const Shape& global_shape) {
  checkpoint::TensorInfo info;
  info.set_name(name);
  for (int64_t d : global_shape) info.add_global_shape(d);
  return info;
}

std::string Ef21Name(int rank, size_t bucket, const char* which) {
  return absl::StrCat("ef21.rank", rank, ".bucket", bucket, ".", which);
}

// The settings a resumed run may not change: what defines the model, the data and its order, and
// the batch (the sample order depends on it). Everything else may change — the layout (a reshard),
// the number of steps (extending a run), the device, logging, optimizer hyper-parameters.
std::string IncompatibleSettings(const config::ExperimentConfig& saved,
                                 const config::ExperimentConfig& now) {
  auto normalise = [](const config::ExperimentConfig& c) {
    config::ExperimentConfig out;
    *out.mutable_model() = c.model();
    out.mutable_model()->clear_init_from();  // the weights now come from the checkpoint
    // Neither changes what is computed.
    out.mutable_model()->mutable_moe()->clear_dispatch_chunks();
    *out.mutable_data() = c.data();
    out.mutable_data()->clear_cache_dir();
    out.mutable_train()->set_seq_len(c.train().seq_len());
    out.mutable_train()->set_global_batch_size(c.train().global_batch_size());
    out.mutable_train()->set_seed(c.train().seed());
    *out.mutable_reweighting() = c.reweighting();
    return out;
  };
  google::protobuf::util::MessageDifferencer diff;
  std::string report;
  diff.ReportDifferencesToString(&report);
  if (diff.Compare(normalise(saved), normalise(now))) return "";
  return report;
}

}  // namespace

absl::Status Trainer::BeginSave(int64_t steps_done) {
  State& st = *state_;
  MF_RETURN_IF_ERROR(FinishSave());
  const auto start = std::chrono::steady_clock::now();
  const std::string root = st.config.checkpoint().dir();
  const int rank = WorldRank(st.options);
  const std::string tmp = checkpoint::TempStepDir(root, steps_done);
  // Rank 0 makes a fresh directory (a leftover of an interrupted save of this step goes); the
  // ranks write only once it exists.
  int ok = 1;
  std::string why;
  if (rank == 0) {
    std::error_code ec;
    fs::create_directories(root, ec);
    if (!ec) fs::remove_all(tmp, ec);
    if (!ec) fs::create_directories(tmp, ec);
    if (ec) {
      ok = 0;
      why = absl::StrCat("cannot create checkpoint directory ", tmp, ": ", ec.message());
    }
  }
  MF_ASSIGN_OR_RETURN(const int all_ok, MinOverRanks(st.options, ok));
  if (all_ok == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "checkpoint save of step ", steps_done, " failed: ",
        why.empty() ? absl::StrCat("rank 0 could not create ", tmp) : why,
        " (the previous checkpoint is intact)"));
  }

  // Host copies of everything this rank writes, taken now (pinned memory for device tensors, one
  // wait at the end), so training may change the originals while the files are written.
  std::vector<HostPiece> pieces;
  std::vector<checkpoint::TensorInfo> tensors;
  const bool on_device = !st.device.is_cpu();
  auto add = [&](const std::string& tensor, const std::string& kind, const BoxRange& box,
                 const Tensor& values) {
    HostPiece piece;
    piece.meta = PieceMeta(tensor, kind, box);
    const Tensor flat = values.Reshape({values.numel()});
    if (on_device) {
      piece.values = Tensor::EmptyPinned({flat.numel()}, DType::kF32);
      piece.values.CopyFromAsync(flat, *st.stream);
    } else {
      piece.values = flat.Clone();
    }
    pieces.push_back(std::move(piece));
  };
  const RankGroups& g = st.groups;
  const int tp_rank = RankIn(g.model.tp), dp_cp_rank = RankIn(g.sync.dp_cp);
  const int tp_cp_dp_rank = RankIn(g.sync.tp_cp_dp), edp_rank = RankIn(g.sync.edp);
  // Whether this rank holds the first of the identical copies of a parameter (or of a whole
  // unsharded optimizer state), and whether it is on the first copy outside the ZeRO-1 group.
  auto first_copy = [&](GradReduction reduction) {
    switch (reduction) {
      case GradReduction::kDenseDataCp: return dp_cp_rank == 0;
      case GradReduction::kReplicatedDataCp: return dp_cp_rank == 0 && tp_rank == 0;
      case GradReduction::kDenseDataCpTp: return tp_cp_dp_rank == 0;
      case GradReduction::kExpertData: return edp_rank == 0;
      case GradReduction::kTiedCopy: return false;  // the first stage's embedding is saved
    }
    return false;
  };
  auto outside_zero_group_first = [&](GradReduction reduction) {
    return reduction == GradReduction::kReplicatedDataCp ? tp_rank == 0
                                                         : reduction != GradReduction::kTiedCopy;
  };
  const auto& params = st.params.params();
  for (size_t i = 0; i < params.size(); ++i) {
    const Parameter& p = *params[i];
    if (p.reduction == GradReduction::kTiedCopy) continue;
    tensors.push_back(Info(p.name, p.sharding.global_shape));
    if (!first_copy(p.reduction)) continue;
    const BoxRange box = checkpoint::ParameterBox(p);
    add(p.name, "param", box, p.value);
    if (st.optimizer) {
      add(p.name, "exp_avg", box, st.optimizer->m(static_cast<int64_t>(i)));
      add(p.name, "exp_avg_sq", box, st.optimizer->v(static_cast<int64_t>(i)));
    }
  }
  if (st.sharded_optimizer) {
    // Each owned chunk of a bucket, cut at its parameters' boundaries (padding is not saved).
    auto& buffers = st.params.flat_buffers();
    for (size_t b = 0; b < st.sharded_optimizer->num_buckets(); ++b) {
      const parallel::GradBucket& bucket = st.sync->buckets()[b];
      const FlatBuffer& buffer = buffers[bucket.buffer];
      if (!outside_zero_group_first(buffer.reduction)) continue;
      const int64_t lo = st.sharded_optimizer->shard_begin(b);
      const int64_t hi = lo + st.sharded_optimizer->m(b).numel();
      for (const FlatSegment& seg : buffer.segments) {
        const int64_t a = std::max(lo, seg.offset), e = std::min(hi, seg.offset + seg.numel);
        if (a >= e) continue;
        BoxRange box = checkpoint::ParameterBox(*seg.param);
        box.flat_begin = a - seg.offset;
        box.flat_end = e - seg.offset;
        add(seg.param->name, "exp_avg", box, st.sharded_optimizer->m(b).Slice(a - lo, e - lo));
        add(seg.param->name, "exp_avg_sq", box,
            st.sharded_optimizer->v(b).Slice(a - lo, e - lo));
      }
    }
  }
  // The aux-loss-free expert bias: every rank keeps the same, the first of each stage writes it.
  for (auto& chunk : st.chunks) {
    for (model::MoeLayer* layer : chunk->moe_layers()) {
      const Tensor& bias = layer->expert_bias();
      if (!bias.defined() || bias.numel() == 0) continue;
      const std::string name = layer->prefix() + ".gate.expert_bias";
      tensors.push_back(Info(name, bias.shape()));
      if (tp_cp_dp_rank == 0) add(name, "state", WholeVector(bias.numel()), bias);
    }
  }
  // The delayed FP8 recipe's histories and scales per projection: the same on every rank of a
  // stage (EndStep reduced them), the first of each stage writes them.
  if (st.fp8 != nullptr) {
    for (const auto& [name, t] : st.fp8->SaveState()) {
      tensors.push_back(Info(name, {t.numel()}));
      if (tp_cp_dp_rank == 0) add(name, "state", WholeVector(t.numel()), t);
    }
  }
  // EF21: every rank's own estimates (meaningful only to the same rank of the same layout).
  auto& buckets = st.sync->buckets();
  for (size_t b = 0; b < buckets.size(); ++b) {
    const parallel::GradBucket& bucket = buckets[b];
    if (!bucket.h.defined() || bucket.h.numel() == 0) continue;
    for (const auto& [which, t] : {std::pair<const char*, const Tensor*>{"h", &bucket.h},
                                   std::pair<const char*, const Tensor*>{"s", &bucket.s}}) {
      const std::string name = Ef21Name(rank, b, which);
      tensors.push_back(Info(name, {t->numel()}));
      add(name, which == std::string("h") ? "ef21_h" : "ef21_s", WholeVector(t->numel()), *t);
    }
  }
  if (on_device) st.stream->Synchronize();

  checkpoint::TrainerScalars& s = st.pending.scalars;
  s = checkpoint::TrainerScalars();
  s.set_optimizer_steps(st.sharded_optimizer ? st.sharded_optimizer->step_count()
                                             : st.optimizer->step_count());
  s.set_loss_ema(st.loss_ema);
  s.set_ema_steps(st.ema_steps);
  const optim::ReweightingState& rw = st.reweighter->state();
  s.set_reweight_has_range(rw.has_range);
  s.set_reweight_range_min(rw.range_min);
  s.set_reweight_range_max(rw.range_max);
  s.set_reweight_last_step(rw.last_step);
  s.set_consumed_samples(steps_done * st.config.train().global_batch_size());
  s.set_init_seed(st.config.train().seed());
  s.set_data_seed(st.config.data().seed());
  s.set_lr_schedule_steps(st.schedule.total_steps);
  s.set_lr(optim::LearningRate(st.schedule, std::max<int64_t>(steps_done - 1, 0)));

  std::function<absl::Status()> inject;
  if (st.options.checkpoint_fault_step == steps_done) {
    const std::string fault = st.options.checkpoint_fault;
    inject = [fault, rank]() -> absl::Status {
      if (fault == "kill") {
        std::fprintf(stderr, "[rank %d] injected: killed while writing a checkpoint\n", rank);
        std::raise(SIGKILL);
      }
      return absl::InternalError("injected checkpoint write failure");
    };
  }
  st.writer.Start(tmp, rank, std::move(pieces), std::move(tensors),
                  st.config.checkpoint().async(), std::move(inject));
  st.pending.active = true;
  st.pending.step = steps_done;
  st.pending.tmp_dir = tmp;
  st.checkpoint_stall_s += SecondsSince(start);
  return absl::OkStatus();
}

absl::Status Trainer::PollSave(bool wait) {
  State& st = *state_;
  if (!st.pending.active) return absl::OkStatus();
  const auto start = std::chrono::steady_clock::now();
  const int rank = WorldRank(st.options);
  absl::Status local;
  int flag = 0;  // 1 written, 0 still writing, -1 failed
  if (wait || st.writer.done()) {
    local = st.writer.Wait();
    flag = local.ok() ? 1 : -1;
  }
  MF_ASSIGN_OR_RETURN(int agreed, MinOverRanks(st.options, flag));
  if (agreed == 0) {
    st.checkpoint_stall_s += SecondsSince(start);
    return absl::OkStatus();
  }
  // Another rank failed while this one is still writing: finish this rank's part (it is discarded)
  // so the writer is free for the next save and nothing writes into the directory rank 0 removes.
  if (flag == 0) local = st.writer.Wait();
  const int64_t step = st.pending.step;
  const std::string tmp = st.pending.tmp_dir;
  const std::string root = st.config.checkpoint().dir();
  st.pending.active = false;
  std::string failure;
  if (agreed < 0 && local.ok()) {
    // Every rank names the failed ranks and why, from the records they left: under on_error stop
    // the first rank to report ends the job, and that need not be the one that failed.
    const int world = st.options.groups == nullptr ? 1 : st.options.groups->world().size();
    std::vector<std::string> reasons;
    for (int r = 0; r < world; ++r) {
      auto bytes = ReadWholeFile((fs::path(tmp) / checkpoint::RecordName(r)).string());
      checkpoint::RankRecord record;
      if (bytes.ok() && record.ParseFromString(*bytes) && !record.error().empty()) {
        reasons.push_back(absl::StrCat("rank ", r, ": ", record.error()));
      }
    }
    failure = absl::StrJoin(reasons, "; ");
  }
  if (agreed > 0 && rank == 0) {
    // Every rank's files are complete: the manifest makes the checkpoint.
    absl::Status status = [&]() -> absl::Status {
      checkpoint::Manifest manifest;
      manifest.set_format_version(checkpoint::kFormatVersion);
      manifest.set_step(step);
      *manifest.mutable_config() = st.config;
      const int world = st.options.groups == nullptr ? 1 : st.options.groups->world().size();
      *manifest.mutable_layout() = LayoutOf(st.config, world);
      *manifest.mutable_scalars() = st.pending.scalars;
      std::set<std::string> seen;
      for (int r = 0; r < world; ++r) {
        const std::string path = (fs::path(tmp) / checkpoint::RecordName(r)).string();
        MF_ASSIGN_OR_RETURN(const std::string bytes, ReadWholeFile(path));
        checkpoint::RankRecord record;
        if (!record.ParseFromString(bytes)) {
          return absl::DataLossError(absl::StrCat("checkpoint record ", path, " is corrupted"));
        }
        if (!record.error().empty()) {
          return absl::InternalError(absl::StrCat("rank ", r, ": ", record.error()));
        }
        *manifest.add_files() = record.file();
        for (const auto& piece : record.pieces()) *manifest.add_pieces() = piece;
        for (const auto& t : record.tensors()) {
          if (seen.insert(t.name()).second) *manifest.add_tensors() = t;
        }
      }
      MF_RETURN_IF_ERROR(checkpoint::WriteManifest(tmp, manifest));
      const std::string final_dir = checkpoint::StepDir(root, step);
      std::error_code ec;
      fs::remove_all(final_dir, ec);  // a checkpoint of this step from an earlier attempt
      fs::rename(tmp, final_dir, ec);
      if (ec) {
        return absl::InternalError(
            absl::StrCat("cannot rename ", tmp, " to ", final_dir, ": ", ec.message()));
      }
      MF_RETURN_IF_ERROR(FsyncDirectory(root));
      MF_RETURN_IF_ERROR(checkpoint::UpdateLatest(root, checkpoint::StepDirName(step)));
      return checkpoint::Prune(root, st.config.checkpoint().keep_last());
    }();
    if (!status.ok()) failure = std::string(status.message());
  }
  // Everyone learns whether rank 0 completed it.
  MF_ASSIGN_OR_RETURN(const int completed,
                      MinOverRanks(st.options, agreed > 0 && failure.empty() ? 1 : 0));
  st.checkpoint_stall_s += SecondsSince(start);
  if (completed == 1) {
    st.last_checkpoint = checkpoint::StepDir(root, step);
    return absl::OkStatus();
  }
  if (!local.ok()) failure = std::string(local.message());
  if (failure.empty()) failure = "another rank failed to write its part (see its log)";
  if (rank == 0) {
    std::error_code ec;
    fs::remove_all(tmp, ec);  // never mistaken for a checkpoint; the previous one stays
  }
  return absl::DataLossError(absl::StrCat("checkpoint save of step ", step, " failed: ",
                                          failure, " (the previous checkpoint is intact)"));
}

absl::StatusOr<int64_t> Trainer::Resume() {
  const std::string root = state_->config.checkpoint().dir();
  const std::optional<std::string> dir = checkpoint::FindLatestComplete(root);
  if (!dir) {
    if (WorldRank(state_->options) == 0 && state_->options.print_progress) {
      std::printf("  resume: no complete checkpoint in %s, starting from scratch\n", root.c_str());
    }
    return 0;
  }
  return Restore(*dir);
}

absl::StatusOr<int64_t> Trainer::Restore(const std::string& dir) {
  State& st = *state_;
  MF_ASSIGN_OR_RETURN(auto reader, checkpoint::CheckpointReader::Open(dir));
  const checkpoint::Manifest& m = reader->manifest();
  const std::string changed = IncompatibleSettings(m.config(), st.config);
  if (!changed.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "checkpoint ", dir, " was saved by a run with another model or data; these settings "
        "differ (checkpoint → this run):\n", changed));
  }
  if (m.step() > st.config.train().steps()) {
    return absl::FailedPreconditionError(
        absl::StrCat("checkpoint ", dir, " is at step ", m.step(), ", beyond train.steps ",
                     st.config.train().steps()));
  }
  const int world = st.options.groups == nullptr ? 1 : st.options.groups->world().size();
  const int rank = WorldRank(st.options);
  const bool same_layout = google::protobuf::util::MessageDifferencer::Equals(
      m.layout(), LayoutOf(st.config, world));

  auto read_into = [&](const std::string& tensor, const std::string& kind, const BoxRange& box,
                       const std::vector<int64_t>* global_shape, Tensor* dst) -> absl::Status {
    Tensor host = Tensor::Empty({box.flat_end - box.flat_begin}, DType::kF32);
    MF_RETURN_IF_ERROR(reader->Read(tensor, kind, box, host.data<float>(), global_shape));
    dst->Reshape({dst->numel()}).CopyFrom(host);
    return absl::OkStatus();
  };
  const auto& params = st.params.params();
  for (size_t i = 0; i < params.size(); ++i) {
    Parameter& p = *params[i];
    const BoxRange box = checkpoint::ParameterBox(p);
    const std::vector<int64_t> global(p.sharding.global_shape.begin(),
                                      p.sharding.global_shape.end());
    MF_RETURN_IF_ERROR(read_into(p.name, "param", box, &global, &p.value));
    if (st.optimizer) {
      MF_RETURN_IF_ERROR(read_into(p.name, "exp_avg", box, &global,
                                   &st.optimizer->m(static_cast<int64_t>(i))));
      MF_RETURN_IF_ERROR(read_into(p.name, "exp_avg_sq", box, &global,
                                   &st.optimizer->v(static_cast<int64_t>(i))));
    }
  }
  if (st.sharded_optimizer) {
    auto& buffers = st.params.flat_buffers();
    for (size_t b = 0; b < st.sharded_optimizer->num_buckets(); ++b) {
      const FlatBuffer& buffer = buffers[st.sync->buckets()[b].buffer];
      const int64_t lo = st.sharded_optimizer->shard_begin(b);
      const int64_t n = st.sharded_optimizer->m(b).numel();
      // Padding stays zero, as a fresh optimizer has it.
      Tensor m_host = Tensor::Zeros({n}, DType::kF32), v_host = Tensor::Zeros({n}, DType::kF32);
      for (const FlatSegment& seg : buffer.segments) {
        const int64_t a = std::max(lo, seg.offset), e = std::min(lo + n, seg.offset + seg.numel);
        if (a >= e) continue;
        BoxRange box = checkpoint::ParameterBox(*seg.param);
        box.flat_begin = a - seg.offset;
        box.flat_end = e - seg.offset;
        const std::vector<int64_t> global(seg.param->sharding.global_shape.begin(),
                                          seg.param->sharding.global_shape.end());
        MF_RETURN_IF_ERROR(reader->Read(seg.param->name, "exp_avg", box,
                                        m_host.data<float>() + (a - lo), &global));
        MF_RETURN_IF_ERROR(reader->Read(seg.param->name, "exp_avg_sq", box,
                                        v_host.data<float>() + (a - lo), &global));
      }
      st.sharded_optimizer->m(b).CopyFrom(m_host);
      st.sharded_optimizer->v(b).CopyFrom(v_host);
    }
    st.sharded_optimizer->set_step_count(m.scalars().optimizer_steps());
  } else {
    st.optimizer->set_step_count(m.scalars().optimizer_steps());
  }
  st.params.RefreshCompute(*st.stream);
  for (auto& chunk : st.chunks) {
    for (model::MoeLayer* layer : chunk->moe_layers()) {
      const Tensor& bias = layer->expert_bias();
      if (!bias.defined() || bias.numel() == 0) continue;
      Tensor host = Tensor::Empty({bias.numel()}, DType::kF32);
      const std::vector<int64_t> global = {bias.numel()};
      MF_RETURN_IF_ERROR(reader->Read(layer->prefix() + ".gate.expert_bias", "state",
                                      WholeVector(bias.numel()), host.data<float>(), &global));
      layer->set_expert_bias(host);
    }
  }
  // FP8 scaling state; a checkpoint without it (another recipe) leaves the fresh state.
  if (st.fp8 != nullptr) {
    for (const auto& [name, t] : st.fp8->SaveState()) {
      if (reader->FindTensor(name) == nullptr) continue;
      Tensor host = Tensor::Empty(t.shape(), DType::kF32);
      const std::vector<int64_t> global = {t.numel()};
      MF_RETURN_IF_ERROR(reader->Read(name, "state", WholeVector(t.numel()), host.data<float>(),
                                      &global));
      MF_RETURN_IF_ERROR(st.fp8->RestoreState(name, host));
    }
  }
  st.loss_ema = m.scalars().loss_ema();
  st.ema_steps = m.scalars().ema_steps();
  optim::ReweightingState rw;
  rw.has_range = m.scalars().reweight_has_range();
  rw.range_min = m.scalars().reweight_range_min();
  rw.range_max = m.scalars().reweight_range_max();
  rw.last_step = m.scalars().reweight_last_step();
  st.reweighter->set_state(rw);

  // EF21 estimates belong to one rank of one layout; after a layout change the next compressed
  // step anchors (an uncompressed reduction) instead.
  auto& buckets = st.sync->buckets();
  st.sync->ResetState();
  bool ef21_saved = false;
  for (const auto& info : m.tensors()) ef21_saved |= absl::StartsWith(info.name(), "ef21.");
  if (same_layout) {
    for (size_t b = 0; b < buckets.size(); ++b) {
      const std::string h_name = Ef21Name(rank, b, "h"), s_name = Ef21Name(rank, b, "s");
      const checkpoint::TensorInfo* h_info = reader->FindTensor(h_name);
      const checkpoint::TensorInfo* s_info = reader->FindTensor(s_name);
      if (h_info == nullptr || s_info == nullptr) continue;
      const int64_t nh = h_info->global_shape(0), ns = s_info->global_shape(0);
      Tensor h = Tensor::Empty({nh}, DType::kF32), s = Tensor::Empty({ns}, DType::kF32);
      MF_RETURN_IF_ERROR(reader->Read(h_name, "ef21_h", WholeVector(nh), h.data<float>(),
                                      nullptr, rank));
      MF_RETURN_IF_ERROR(reader->Read(s_name, "ef21_s", WholeVector(ns), s.data<float>(),
                                      nullptr, rank));
      buckets[b].h = h.To(st.device, *st.stream);
      buckets[b].s = s.To(st.device, *st.stream);
    }
  }
  st.stream->Synchronize();
  if (rank == 0 && st.options.print_progress) {
    std::printf("  resumed from %s (step %lld%s)%s\n", dir.c_str(),
                static_cast<long long>(m.step()),
                same_layout ? ", same layout" : ", resharded from another layout",
                !same_layout && ef21_saved
                    ? "; EF21 state re-anchored: the next compressed step reduces uncompressed"
                    : "");
    std::fflush(stdout);
  }
  return m.step();
}

}  // namespace moefold::train
