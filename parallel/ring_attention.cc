// Ring attention on the attention ops: chunk-major working copies, per-hop block attention with an
// online-softmax merge, and a backward whose dK/dV travel one hop behind their K/V.
//
// Layout: the layer's (B, 2·c, H, D) tensors are rearranged once into chunk-major (2, B, c, H, D)
// (ops::SwapLeadingDims), so each chunk is a contiguous (B, c, H, D) tensor the block ops take, and
// the K/V block that travels is one tensor (4, B, c, Hkv, D) in the activation dtype: k's chunks,
// then v's. Partial outputs, the dQ sum and the travelling dK/dV are f32, rounded once at the end:
// with bf16 activations the ring then rounds exactly where the single-rank attention does.
#include "parallel/ring_attention.h"

#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "core/status.h"
#include "ops/attention.h"
#include "ops/elementwise.h"

namespace moefold::parallel {
namespace {

constexpr int kKvTag = 11, kGradTag = 12;

struct Dims {
  int64_t batch, seq, chunk, q_heads, kv_heads, head_dim;
};

Dims CheckArgs(const Tensor& q, const Tensor& k, const Tensor& v, const char* op) {
  MF_CHECK_EQ(q.rank(), 4) << op << ": q " << q.DebugString();
  MF_CHECK_EQ(k.rank(), 4) << op << ": k " << k.DebugString();
  const Dims d{q.dim(0), q.dim(1), q.dim(1) / 2, q.dim(2), k.dim(2), q.dim(3)};
  MF_CHECK(d.batch > 0 && d.seq > 0 && d.seq % 2 == 0)
      << op << ": the local sequences hold two equal chunks each, got q " << q.DebugString();
  MF_CHECK(k.shape() == (Shape{d.batch, d.seq, d.kv_heads, d.head_dim}) && v.shape() == k.shape())
      << op << ": k " << k.DebugString() << " and v " << v.DebugString() << " for q "
      << q.DebugString();
  return d;
}

// The global chunk index of local chunk `half` (0 or 1) of CP rank `rank`.
int Chunk(int rank, int half, int cp) { return half == 0 ? rank : 2 * cp - 1 - rank; }

// Element i of the leading dimension, as a tensor of the remaining dimensions (shares storage).
Tensor Part(const Tensor& t, int64_t i) {
  return t.Slice(i, i + 1).Reshape(Shape(t.shape().begin() + 1, t.shape().end()));
}

// A working tensor on the stream's device, released only after the stream's work on it.
Tensor Temp(const Shape& shape, DType dtype, const Stream& stream) {
  Tensor t = Tensor::Empty(shape, dtype, stream.device());
  t.RecordStream(stream);
  return t;
}

// x (B, 2·c, H, D) → chunk-major into (2, B, c, H, D) `out` (converted to out's dtype), and back.
void ToChunks(const Tensor& x, Tensor* out, Stream& stream) {
  Tensor dst = out->Reshape({2, x.dim(0), x.numel() / (2 * x.dim(0))});
  ops::SwapLeadingDims(x.Reshape({x.dim(0), 2, x.numel() / (2 * x.dim(0))}), &dst, stream);
}
void FromChunks(const Tensor& x, Tensor* out, Stream& stream) {
  Tensor dst = out->Reshape({out->dim(0), 2, out->numel() / (2 * out->dim(0))});
  ops::SwapLeadingDims(x.Reshape({2, out->dim(0), x.numel() / (2 * out->dim(0))}), &dst, stream);
}
// lse (B, H, 2·c) ↔ chunk-major (2, B, H, c): the same swap over (B·H, 2, c).
void LseToChunks(const Tensor& lse, Tensor* out, Stream& stream) {
  const int64_t rows = lse.dim(0) * lse.dim(1), c = lse.dim(2) / 2;
  Tensor dst = out->Reshape({2, rows, c});
  ops::SwapLeadingDims(lse.Reshape({rows, 2, c}), &dst, stream);
}
void LseFromChunks(const Tensor& chunks, Tensor* lse, Stream& stream) {
  const int64_t rows = lse->dim(0) * lse->dim(1), c = lse->dim(2) / 2;
  Tensor dst = lse->Reshape({rows, 2, c});
  ops::SwapLeadingDims(chunks.Reshape({2, rows, c}), &dst, stream);
}

// One ring shift in flight: a tensor to the next member, its like from the previous one.
class Shift {
 public:
  // NCCL runs a member's point-to-point calls one after another on its stream and a send may wait
  // for its receive: even members send first and odd ones receive first, so every first send meets
  // a posted receive and the ring never waits on itself (any size, odd ones too).
  static absl::StatusOr<Shift> Start(Communicator& cp, const Tensor& send, Tensor* recv, int tag) {
    const int next = (cp.rank() + 1) % cp.size(), prev = (cp.rank() + cp.size() - 1) % cp.size();
    Shift shift;
    if (cp.rank() % 2 == 0) {
      MF_ASSIGN_OR_RETURN(shift.send_, cp.Send(send, next, {.tag = tag}));
      MF_ASSIGN_OR_RETURN(shift.recv_, cp.Recv(recv, prev, {.tag = tag}));
    } else {
      MF_ASSIGN_OR_RETURN(shift.recv_, cp.Recv(recv, prev, {.tag = tag}));
      MF_ASSIGN_OR_RETURN(shift.send_, cp.Send(send, next, {.tag = tag}));
    }
    return shift;
  }

  // Polls both (MPI_Test on MPI): an MPI library moves a large message only inside its calls, so
  // polling between the block computations keeps the exchange going while they run.
  void Progress() {
    send_->IsCompleted();
    recv_->IsCompleted();
  }

  // Waits for both; the received tensor may be read afterwards. The wait is the exchange's exposed
  // part, timed as communication when profiling.
  absl::Status Finish(const RingAttentionOptions& options, const Stream& stream) {
    ProfileScope timed(options.profiler, OpFamily::kCommunication, stream, options.layer);
    MF_RETURN_IF_ERROR(send_->Wait());
    return recv_->Wait();
  }

 private:
  std::unique_ptr<Work> send_, recv_;
};

// Waits for the shift in flight, if any, and clears it.
absl::Status Finish(std::optional<Shift>& shift, const RingAttentionOptions& options,
                    const Stream& stream) {
  if (!shift.has_value()) return absl::OkStatus();
  absl::Status status = shift->Finish(options, stream);
  shift.reset();
  return status;
}

// The (my chunk, visiting chunk) pairs a hop computes: key chunk earlier → full, the same chunk →
// causal (the diagonal block), later → nothing to see.
struct BlockPair {
  int q_half, kv_half;
  ops::AttentionMask mask;
};
std::vector<BlockPair> Pairs(int cp, int rank, int owner) {
  std::vector<BlockPair> pairs;
  for (int a = 0; a < 2; ++a) {
    for (int b = 0; b < 2; ++b) {
      const int qc = Chunk(rank, a, cp), kc = Chunk(owner, b, cp);
      if (kc < qc) pairs.push_back({a, b, ops::AttentionMask::kNone});
      if (kc == qc) pairs.push_back({a, b, ops::AttentionMask::kCausal});
    }
  }
  return pairs;
}

// The travelling K/V block (4, B, c, Hkv, D): k's two chunks, then v's; and its parts. The
// travelling dK/dV have the same layout.
Tensor KvBlock(const Dims& d, const Tensor& k, const Tensor& v, Stream& stream) {
  Tensor kv = Temp({4, d.batch, d.chunk, d.kv_heads, d.head_dim}, k.dtype(), stream);
  Tensor k_chunks = kv.Slice(0, 2), v_chunks = kv.Slice(2, 4);
  ToChunks(k, &k_chunks, stream);
  ToChunks(v, &v_chunks, stream);
  return kv;
}
Tensor KChunk(const Tensor& kv, int half) { return Part(kv, half); }
Tensor VChunk(const Tensor& kv, int half) { return Part(kv, 2 + half); }

}  // namespace

Tensor ContextParallelPositions(int64_t seq_len, int cp, int rank) {
  MF_CHECK_EQ(seq_len % (2 * cp), 0)
      << "seq_len " << seq_len << " not divisible by 2·cp " << 2 * cp;
  const int64_t chunk = seq_len / (2 * cp);
  Tensor p = Tensor::Empty({2 * chunk}, DType::kI32);
  for (int64_t i = 0; i < chunk; ++i) {
    p.data<int32_t>()[i] = static_cast<int32_t>(rank * chunk + i);
    p.data<int32_t>()[chunk + i] = static_cast<int32_t>((2 * cp - 1 - rank) * chunk + i);
  }
  return p;
}

absl::Status RingAttentionForward(const Tensor& q, const Tensor& k, const Tensor& v, float scale,
                                  Communicator& cp, Tensor* out, Tensor* lse, Stream& stream,
                                  const RingAttentionOptions& options) {
  const Dims d = CheckArgs(q, k, v, "RingAttentionForward");
  const int size = cp.size(), rank = cp.rank();
  Tensor q_chunks = Temp({2, d.batch, d.chunk, d.q_heads, d.head_dim}, q.dtype(), stream);
  ToChunks(q, &q_chunks, stream);
  Tensor kv = KvBlock(d, k, v, stream);
  Tensor incoming = size > 1 ? Temp(kv.shape(), kv.dtype(), stream) : Tensor();
  // The running result per local chunk and a block's partial, f32.
  Tensor acc_out = Temp({2, d.batch, d.chunk, d.q_heads, d.head_dim}, DType::kF32, stream);
  Tensor acc_lse = Temp({2, d.batch, d.q_heads, d.chunk}, DType::kF32, stream);
  Tensor part_out = Temp(Part(acc_out, 0).shape(), DType::kF32, stream);
  Tensor part_lse = Temp(Part(acc_lse, 0).shape(), DType::kF32, stream);
  bool started[2] = {false, false};
  for (int hop = 0; hop < size; ++hop) {
    const int owner = (rank - hop + size) % size;
    // The next hop's block travels while this one computes.
    std::optional<Shift> shift;
    if (hop + 1 < size) {
      MF_ASSIGN_OR_RETURN(shift, Shift::Start(cp, kv, &incoming, kKvTag));
    }
    for (const BlockPair& pair : Pairs(size, rank, owner)) {
      const Tensor q_block = Part(q_chunks, pair.q_half);
      const Tensor k_block = KChunk(kv, pair.kv_half), v_block = VChunk(kv, pair.kv_half);
      Tensor run_out = Part(acc_out, pair.q_half), run_lse = Part(acc_lse, pair.q_half);
      if (!started[pair.q_half]) {  // the chunk's first block writes its result directly
        ops::AttentionBlockForward(q_block, k_block, v_block, scale, pair.mask, &run_out, &run_lse,
                                   stream);
        started[pair.q_half] = true;
      } else {
        ops::AttentionBlockForward(q_block, k_block, v_block, scale, pair.mask, &part_out,
                                   &part_lse, stream);
        ops::AttentionMerge(run_out, run_lse, part_out, part_lse, &run_out, &run_lse, stream);
      }
      if (shift.has_value()) shift->Progress();
    }
    MF_RETURN_IF_ERROR(Finish(shift, options, stream));
    if (hop + 1 < size) std::swap(kv, incoming);
  }
  // Hop 0 holds both diagonal blocks, so both chunks have started.
  FromChunks(acc_out, out, stream);
  LseFromChunks(acc_lse, lse, stream);
  return absl::OkStatus();
}

absl::Status RingAttentionBackward(const Tensor& q, const Tensor& k, const Tensor& v,
                                   const Tensor& out, const Tensor& lse, const Tensor& d_out,
                                   float scale, Communicator& cp, Tensor* d_q, Tensor* d_k,
                                   Tensor* d_v, Stream& stream,
                                   const RingAttentionOptions& options) {
  const Dims d = CheckArgs(q, k, v, "RingAttentionBackward");
  const int size = cp.size(), rank = cp.rank();
  const Shape q_shape{2, d.batch, d.chunk, d.q_heads, d.head_dim};
  Tensor q_chunks = Temp(q_shape, q.dtype(), stream), out_chunks = Temp(q_shape, q.dtype(), stream);
  Tensor d_out_chunks = Temp(q_shape, q.dtype(), stream);
  Tensor lse_chunks = Temp({2, d.batch, d.q_heads, d.chunk}, DType::kF32, stream);
  ToChunks(q, &q_chunks, stream);
  ToChunks(out, &out_chunks, stream);
  ToChunks(d_out, &d_out_chunks, stream);
  LseToChunks(lse, &lse_chunks, stream);
  Tensor kv = KvBlock(d, k, v, stream);
  Tensor incoming = size > 1 ? Temp(kv.shape(), kv.dtype(), stream) : Tensor();
  Tensor d_q_chunks = Temp(q_shape, DType::kF32, stream);
  d_q_chunks.SetZero(stream);
  // dK/dV of a block in f32: `grads` collects this hop's share, `sending` travels to the next
  // member, `arriving` comes from the previous one (the same block's share of the ranks before).
  Tensor grads = Temp(kv.shape(), DType::kF32, stream);
  Tensor sending = Temp(kv.shape(), DType::kF32, stream);
  Tensor arriving = size > 1 ? Temp(kv.shape(), DType::kF32, stream) : Tensor();
  std::optional<Shift> grad_shift;
  for (int hop = 0; hop < size; ++hop) {
    const int owner = (rank - hop + size) % size;
    std::optional<Shift> kv_shift;
    if (hop + 1 < size) {
      MF_ASSIGN_OR_RETURN(kv_shift, Shift::Start(cp, kv, &incoming, kKvTag));
    }
    grads.SetZero(stream);
    for (const BlockPair& pair : Pairs(size, rank, owner)) {
      const int a = pair.q_half, b = pair.kv_half;
      Tensor d_q_block = Part(d_q_chunks, a);
      Tensor d_k_block = KChunk(grads, b), d_v_block = VChunk(grads, b);
      ops::AttentionBlockBackward(Part(q_chunks, a), KChunk(kv, b), VChunk(kv, b),
                                  Part(out_chunks, a), Part(lse_chunks, a), Part(d_out_chunks, a),
                                  scale, pair.mask, &d_q_block, &d_k_block, &d_v_block, stream);
      if (kv_shift.has_value()) kv_shift->Progress();
      if (grad_shift.has_value()) grad_shift->Progress();
    }
    // The block's dK/dV from the ranks that held it before arrived during the computation.
    if (grad_shift.has_value()) {
      MF_RETURN_IF_ERROR(Finish(grad_shift, options, stream));
      ops::Add(grads, arriving, &grads, stream);
    }
    MF_RETURN_IF_ERROR(Finish(kv_shift, options, stream));
    if (hop + 1 < size) std::swap(kv, incoming);
    std::swap(grads, sending);
    if (size > 1) {
      MF_ASSIGN_OR_RETURN(grad_shift, Shift::Start(cp, sending, &arriving, kGradTag));
    }
  }
  // The last shift brought this rank's own block home with every rank's share.
  MF_RETURN_IF_ERROR(Finish(grad_shift, options, stream));
  const Tensor& home = size > 1 ? arriving : sending;
  FromChunks(d_q_chunks, d_q, stream);
  FromChunks(home.Slice(0, 2), d_k, stream);
  FromChunks(home.Slice(2, 4), d_v, stream);
  return absl::OkStatus();
}

}  // namespace moefold::parallel
