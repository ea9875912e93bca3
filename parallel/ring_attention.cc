// Ring attention: online-softmax forward and dK/dV-circulating backward over the CP group.
#include "parallel/ring_attention.h"

#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"

namespace moefold::parallel {
namespace {

// K, V (and their gradients) of one rank travel together as one tensor with their positions packed
// into a float row each (positions are small integers, exact in f32).
struct Block {
  Tensor kv;  // (2 or 4, B, S, Hkv, D) f32: k, v[, d_k, d_v]
  Tensor pos;  // (S) f32
};

absl::Status PassAlong(Communicator& cp, Block* block) {
  if (cp.size() == 1) return absl::OkStatus();
  const int next = (cp.rank() + 1) % cp.size(), prev = (cp.rank() + cp.size() - 1) % cp.size();
  Block incoming{Tensor::Empty(block->kv.shape(), DType::kF32),
                 Tensor::Empty(block->pos.shape(), DType::kF32)};
  auto recv_kv = cp.Recv(&incoming.kv, prev, {.tag = 11});
  auto recv_pos = cp.Recv(&incoming.pos, prev, {.tag = 12});
  auto send_kv = cp.Send(block->kv, next, {.tag = 11});
  auto send_pos = cp.Send(block->pos, next, {.tag = 12});
  MF_RETURN_IF_ERROR(WaitFor(std::move(send_kv)));
  MF_RETURN_IF_ERROR(WaitFor(std::move(send_pos)));
  MF_RETURN_IF_ERROR(WaitFor(std::move(recv_kv)));
  MF_RETURN_IF_ERROR(WaitFor(std::move(recv_pos)));
  *block = std::move(incoming);
  return absl::OkStatus();
}

// This rank's block: k and v in slots 0 and 1; `slots` = 4 adds zeroed dK and dV for backward.
Block MakeBlock(const Tensor& k, const Tensor& v, const Tensor& positions, int64_t slots) {
  Block block{Tensor::Zeros({slots, k.dim(0), k.dim(1), k.dim(2), k.dim(3)}, DType::kF32),
              Tensor::Empty({positions.numel()}, DType::kF32)};
  block.kv.Slice(0, 1).Reshape(k.shape()).CopyFrom(k);
  block.kv.Slice(1, 2).Reshape(v.shape()).CopyFrom(v);
  for (int64_t i = 0; i < positions.numel(); ++i) {
    block.pos.data<float>()[i] = static_cast<float>(positions.data<int32_t>()[i]);
  }
  return block;
}

}  // namespace

Tensor ContextParallelPositions(int64_t seq_len, int cp, int rank) {
  MF_CHECK_EQ(seq_len % (2 * cp), 0) << "seq_len " << seq_len << " not divisible by 2·cp " << 2 * cp;
  const int64_t chunk = seq_len / (2 * cp);
  Tensor p = Tensor::Empty({2 * chunk}, DType::kI32);
  for (int64_t i = 0; i < chunk; ++i) {
    p.data<int32_t>()[i] = static_cast<int32_t>(rank * chunk + i);
    p.data<int32_t>()[chunk + i] = static_cast<int32_t>((2 * cp - 1 - rank) * chunk + i);
  }
  return p;
}

absl::Status RingAttentionForward(const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& positions, float scale, Communicator& cp,
                                  Tensor* out, Tensor* lse) {
  const int64_t b = q.dim(0), s = q.dim(1), hq = q.dim(2), d = q.dim(3), hkv = k.dim(2);
  const int64_t group = hq / hkv;
  const int64_t kv_size = b * s * hkv * d;
  Block block = MakeBlock(k, v, positions, 2);
  // Online softmax state per (batch, head, query): running max m, sum l and the accumulator.
  std::vector<float> m(b * hq * s, -INFINITY), l(b * hq * s, 0.0f), acc(b * hq * s * d, 0.0f);
  const float* qp = q.data<float>();
  const int32_t* qpos = positions.data<int32_t>();
  for (int hop = 0; hop < cp.size(); ++hop) {
    const float* kp = block.kv.data<float>();
    const float* vp = kp + kv_size;
    const float* kpos = block.pos.data<float>();
    for (int64_t bi = 0; bi < b; ++bi) {
      for (int64_t h = 0; h < hq; ++h) {
        const int64_t kh = h / group;
        for (int64_t i = 0; i < s; ++i) {
          const float* qi = qp + ((bi * s + i) * hq + h) * d;
          const int64_t state = (bi * hq + h) * s + i;
          std::vector<float> scores(s, -INFINITY);
          float block_max = -INFINITY;
          for (int64_t j = 0; j < s; ++j) {
            if (kpos[j] > static_cast<float>(qpos[i])) continue;  // causal by global position
            const float* kj = kp + ((bi * s + j) * hkv + kh) * d;
            float dot = 0;
            for (int64_t e = 0; e < d; ++e) dot += qi[e] * kj[e];
            scores[j] = dot * scale;
            block_max = std::max(block_max, scores[j]);
          }
          if (block_max == -INFINITY) continue;  // nothing visible in this block
          const float m_new = std::max(m[state], block_max);
          const float correction = std::exp(m[state] - m_new);
          float* a = acc.data() + state * d;
          for (int64_t e = 0; e < d; ++e) a[e] *= correction;
          l[state] *= correction;
          for (int64_t j = 0; j < s; ++j) {
            if (scores[j] == -INFINITY) continue;
            const float p = std::exp(scores[j] - m_new);
            l[state] += p;
            const float* vj = vp + ((bi * s + j) * hkv + kh) * d;
            for (int64_t e = 0; e < d; ++e) a[e] += p * vj[e];
          }
          m[state] = m_new;
        }
      }
    }
    if (hop + 1 < cp.size()) MF_RETURN_IF_ERROR(PassAlong(cp, &block));
  }
  for (int64_t bi = 0; bi < b; ++bi) {
    for (int64_t h = 0; h < hq; ++h) {
      for (int64_t i = 0; i < s; ++i) {
        const int64_t state = (bi * hq + h) * s + i;
        float* o = out->data<float>() + ((bi * s + i) * hq + h) * d;
        for (int64_t e = 0; e < d; ++e) o[e] = acc[state * d + e] / l[state];
        lse->data<float>()[state] = m[state] + std::log(l[state]);
      }
    }
  }
  return absl::OkStatus();
}

absl::Status RingAttentionBackward(const Tensor& q, const Tensor& k, const Tensor& v,
                                   const Tensor& positions, const Tensor& out, const Tensor& lse,
                                   const Tensor& d_out, float scale, Communicator& cp, Tensor* d_q,
                                   Tensor* d_k, Tensor* d_v) {
  const int64_t b = q.dim(0), s = q.dim(1), hq = q.dim(2), d = q.dim(3), hkv = k.dim(2);
  const int64_t group = hq / hkv;
  const int64_t kv_size = b * s * hkv * d;
  Block block = MakeBlock(k, v, positions, 4);
  d_q->SetZero();
  // D_i = ⟨dO_i, O_i⟩ per query and head.
  std::vector<float> delta(b * hq * s, 0.0f);
  for (int64_t bi = 0; bi < b; ++bi) {
    for (int64_t i = 0; i < s; ++i) {
      for (int64_t h = 0; h < hq; ++h) {
        const int64_t at = ((bi * s + i) * hq + h) * d;
        float sum = 0;
        for (int64_t e = 0; e < d; ++e) sum += d_out.data<float>()[at + e] * out.data<float>()[at + e];
        delta[(bi * hq + h) * s + i] = sum;
      }
    }
  }
  const int32_t* qpos = positions.data<int32_t>();
  // CP hops: compute against the visiting block, then pass it (with its dK/dV) on; the last hop
  // brings every block home.
  for (int hop = 0; hop < cp.size(); ++hop) {
    float* kp = block.kv.data<float>();
    float* vp = kp + kv_size;
    float* dkp = vp + kv_size;
    float* dvp = dkp + kv_size;
    const float* kpos = block.pos.data<float>();
    for (int64_t bi = 0; bi < b; ++bi) {
      for (int64_t h = 0; h < hq; ++h) {
        const int64_t kh = h / group;
        for (int64_t i = 0; i < s; ++i) {
          const int64_t state = (bi * hq + h) * s + i;
          const float* qi = q.data<float>() + ((bi * s + i) * hq + h) * d;
          const float* doi = d_out.data<float>() + ((bi * s + i) * hq + h) * d;
          float* dqi = d_q->data<float>() + ((bi * s + i) * hq + h) * d;
          for (int64_t j = 0; j < s; ++j) {
            if (kpos[j] > static_cast<float>(qpos[i])) continue;
            const int64_t kv_at = ((bi * s + j) * hkv + kh) * d;
            float dot = 0, dp = 0;
            for (int64_t e = 0; e < d; ++e) {
              dot += qi[e] * kp[kv_at + e];
              dp += doi[e] * vp[kv_at + e];
            }
            const float p = std::exp(dot * scale - lse.data<float>()[state]);
            const float ds = p * (dp - delta[state]) * scale;
            for (int64_t e = 0; e < d; ++e) {
              dvp[kv_at + e] += p * doi[e];
              dqi[e] += ds * kp[kv_at + e];
              dkp[kv_at + e] += ds * qi[e];
            }
          }
        }
      }
    }
    MF_RETURN_IF_ERROR(PassAlong(cp, &block));
  }
  d_k->CopyFrom(block.kv.Slice(2, 3).Reshape(k.shape()));
  d_v->CopyFrom(block.kv.Slice(3, 4).Reshape(v.shape()));
  return absl::OkStatus();
}

}  // namespace moefold::parallel
