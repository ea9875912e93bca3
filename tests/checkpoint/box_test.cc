// CopyOverlap against an element-by-element reference: for random boxes of one global tensor (0-D
// to 4-D) with random flat ranges on both sides, every element of dst's range that src's range holds
// is copied and marked, and nothing else is touched. Also ParameterBox and BoxString.
#include "checkpoint/box.h"

#include <cstdint>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "tests/testing/testing.h"

namespace moefold::checkpoint {
namespace {

// Row-major coordinates of flat index `flat` within `shape`.
std::vector<int64_t> Unflatten(int64_t flat, const std::vector<int64_t>& shape) {
  std::vector<int64_t> coord(shape.size());
  for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
    coord[d] = flat % shape[d];
    flat /= shape[d];
  }
  return coord;
}

// What CopyOverlap must do, one element at a time: dst element i (flat index flat_begin + i of
// dst's box) is at global coordinate offset + local; it is copied when that coordinate lies in
// src's box at a flat index inside src's range.
int64_t ReferenceCopy(const BoxRange& src, const std::vector<float>& src_data, const BoxRange& dst,
                      std::vector<float>* dst_data, std::vector<uint8_t>* covered) {
  int64_t copied = 0;
  for (int64_t i = 0; i < dst.flat_end - dst.flat_begin; ++i) {
    const std::vector<int64_t> local = Unflatten(dst.flat_begin + i, dst.shape);
    int64_t src_flat = 0;
    bool inside = true;
    for (size_t d = 0; d < local.size(); ++d) {
      const int64_t s = local[d] + dst.offset[d] - src.offset[d];
      if (s < 0 || s >= src.shape[d]) {
        inside = false;
        break;
      }
      src_flat = src_flat * src.shape[d] + s;
    }
    if (!inside || src_flat < src.flat_begin || src_flat >= src.flat_end) continue;
    (*dst_data)[i] = src_data[src_flat - src.flat_begin];
    (*covered)[i] = 1;
    ++copied;
  }
  return copied;
}

// A random box inside `global` (each dimension a random sub-interval, sometimes the whole extent)
// with a random flat range: the whole box, a prefix, a suffix, a middle part, or empty.
BoxRange RandomBox(const std::vector<int64_t>& global, std::mt19937& rng) {
  BoxRange box;
  for (int64_t extent : global) {
    std::uniform_int_distribution<int64_t> pick(0, extent - 1);
    int64_t a = pick(rng), b = pick(rng);
    if (a > b) std::swap(a, b);
    if (rng() % 4 == 0) a = 0, b = extent - 1;
    box.offset.push_back(a);
    box.shape.push_back(b - a + 1);
  }
  const int64_t n = box.BoxElements();
  std::uniform_int_distribution<int64_t> cut(0, n);
  int64_t lo = cut(rng), hi = cut(rng);
  if (lo > hi) std::swap(lo, hi);
  switch (rng() % 5) {
    case 0: lo = 0, hi = n; break;
    case 1: lo = 0; break;
    case 2: hi = n; break;
    case 3: break;
    case 4: hi = lo; break;
  }
  box.flat_begin = lo;
  box.flat_end = hi;
  return box;
}

std::vector<float> Values(int64_t n, float base) {
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = base + static_cast<float>(i);
  return v;
}

void ExpectMatchesReference(const BoxRange& src, const BoxRange& dst) {
  const std::vector<float> src_data = Values(src.flat_end - src.flat_begin, 1000.0f);
  const int64_t n = dst.flat_end - dst.flat_begin;
  std::vector<float> got(n, -1.0f), want(n, -1.0f);
  std::vector<uint8_t> got_covered(n, 0), want_covered(n, 0);
  const int64_t copied = CopyOverlap(src, src_data.data(), dst, got.data(), &got_covered);
  const int64_t expected = ReferenceCopy(src, src_data, dst, &want, &want_covered);
  EXPECT_EQ(copied, expected) << "src " << BoxString(src) << " dst " << BoxString(dst);
  EXPECT_EQ(got, want) << "src " << BoxString(src) << " dst " << BoxString(dst);
  EXPECT_EQ(got_covered, want_covered) << "src " << BoxString(src) << " dst " << BoxString(dst);
}

TEST(CopyOverlapTest, MatchesTheElementwiseReferenceOnRandomBoxes) {
  std::mt19937 rng(15);
  const std::vector<std::vector<int64_t>> globals = {
      {1}, {7}, {40}, {5, 6}, {3, 17}, {1, 9}, {4, 3, 5}, {2, 6, 4}, {3, 2, 4, 5}, {2, 3, 1, 6}};
  int64_t total_copied = 0;
  for (const auto& global : globals) {
    for (int trial = 0; trial < 300; ++trial) {
      const BoxRange src = RandomBox(global, rng), dst = RandomBox(global, rng);
      ExpectMatchesReference(src, dst);
      std::vector<float> scratch(dst.flat_end - dst.flat_begin);
      std::vector<uint8_t> covered(scratch.size(), 0);
      total_copied += CopyOverlap(src, Values(src.flat_end - src.flat_begin, 0).data(), dst,
                                  scratch.data(), &covered);
    }
  }
  EXPECT_GT(total_copied, 0) << "the random cases must overlap sometimes";
}

TEST(CopyOverlapTest, ScalarsCopyTheirOneElementUnlessARangeIsEmpty) {
  BoxRange scalar;  // rank 0: one element
  scalar.flat_begin = 0;
  scalar.flat_end = 1;
  EXPECT_EQ(scalar.BoxElements(), 1);
  ExpectMatchesReference(scalar, scalar);
  const float value = 3.5f;
  float out = 0;
  std::vector<uint8_t> covered(1, 0);
  EXPECT_EQ(CopyOverlap(scalar, &value, scalar, &out, &covered), 1);
  EXPECT_EQ(out, 3.5f);
  EXPECT_EQ(covered[0], 1);
  BoxRange empty = scalar;
  empty.flat_end = 0;
  covered[0] = 0;
  EXPECT_EQ(CopyOverlap(empty, &value, scalar, &out, &covered), 0);
  EXPECT_EQ(covered[0], 0);
}

TEST(CopyOverlapTest, ZeroOneShardsOfATensorParallelBoxReassembleIt) {
  // A (6, 8) tensor saved as two TP column halves, each cut by ZeRO-1 into flat ranges that end in
  // the middle of rows; loading as row halves must gather every element from the four pieces.
  const std::vector<float> global = Values(48, 0);
  auto at = [&](int64_t r, int64_t c) { return global[r * 8 + c]; };
  std::vector<BoxRange> pieces;
  std::vector<std::vector<float>> data;
  for (int64_t half = 0; half < 2; ++half) {
    for (auto [lo, hi] : {std::pair<int64_t, int64_t>{0, 13}, {13, 24}}) {
      BoxRange p{.offset = {0, 4 * half}, .shape = {6, 4}, .flat_begin = lo, .flat_end = hi};
      std::vector<float> v;
      for (int64_t f = lo; f < hi; ++f) v.push_back(at(f / 4, 4 * half + f % 4));
      pieces.push_back(p);
      data.push_back(v);
    }
  }
  for (int64_t half = 0; half < 2; ++half) {
    const BoxRange dst{.offset = {3 * half, 0}, .shape = {3, 8}, .flat_begin = 0, .flat_end = 24};
    std::vector<float> out(24, -1);
    std::vector<uint8_t> covered(24, 0);
    int64_t copied = 0;
    for (size_t i = 0; i < pieces.size(); ++i) {
      copied += CopyOverlap(pieces[i], data[i].data(), dst, out.data(), &covered);
    }
    EXPECT_EQ(copied, 24);
    for (int64_t f = 0; f < 24; ++f) {
      EXPECT_EQ(out[f], at(3 * half + f / 8, f % 8)) << "row half " << half << " element " << f;
      EXPECT_EQ(covered[f], 1);
    }
  }
}

TEST(CopyOverlapTest, DisjointBoxesCopyNothing) {
  const BoxRange a{.offset = {0, 0}, .shape = {2, 4}, .flat_begin = 0, .flat_end = 8};
  const BoxRange b{.offset = {2, 0}, .shape = {2, 4}, .flat_begin = 0, .flat_end = 8};
  EXPECT_FALSE(BoxesIntersect(a, b));
  const std::vector<float> src = Values(8, 0);
  std::vector<float> out(8, -1);
  std::vector<uint8_t> covered(8, 0);
  EXPECT_EQ(CopyOverlap(a, src.data(), b, out.data(), &covered), 0);
  EXPECT_EQ(out, std::vector<float>(8, -1));
}

TEST(BoxTest, ParameterBoxPlacesTheTensorAndExpertShard) {
  Parameter p;
  p.value = Tensor::Zeros({2, 3, 4}, DType::kF32);  // experts 4..5 of 8, columns 6..9 of 16
  p.sharding.global_shape = {8, 3, 16};
  p.sharding.expert_dim = 0;
  p.sharding.expert_offset = 4;
  p.sharding.tp_dim = 2;
  p.sharding.tp_begin = 6;
  const BoxRange box = ParameterBox(p);
  EXPECT_EQ(box.offset, (std::vector<int64_t>{4, 0, 6}));
  EXPECT_EQ(box.shape, (std::vector<int64_t>{2, 3, 4}));
  EXPECT_EQ(box.flat_begin, 0);
  EXPECT_EQ(box.flat_end, 24);
  EXPECT_EQ(BoxString(box), "[4:6, 0:3, 6:10] elements 0..24");
}

}  // namespace
}  // namespace moefold::checkpoint
