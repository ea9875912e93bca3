// Seeded mutation of valid inputs for the fuzz tests (tests/fuzz/): no fuzzing engine, so the
// harnesses run as ordinary ctest tests under g++ and the sanitizer build (docs/DECISIONS.md). Each
// input is one valid seed changed by 1–4 of: bit flips, truncation, random bytes written, inserted
// or deleted, a chunk duplicated, and — aimed at the formats' numbers and types — an aligned 4- or
// 8-byte word replaced by an extreme integer, a decimal number in text replaced by a huge,
// negative or non-finite one, or a text value replaced by one of another type.
//
//   Mutator mutator(/*seed=*/1);
//   for (int i = 0; i < 10000; ++i) { std::string input = mutator.Mutate(seed); ... }
#pragma once

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace moefold::fuzz {

class Mutator {
 public:
  explicit Mutator(uint64_t seed) : rng_(seed) {}

  std::string Mutate(const std::string& input) {
    std::string s = input;
    const int n = 1 + static_cast<int>(Below(4));
    for (int i = 0; i < n; ++i) MutateOnce(&s);
    return s;
  }

  uint64_t Below(uint64_t n) { return n == 0 ? 0 : rng_() % n; }
  template <typename T>
  const T& Pick(const std::vector<T>& v) { return v[Below(v.size())]; }

 private:
  void MutateOnce(std::string* s) {
    switch (Below(10)) {
      case 0:  // bit flips
      case 1:
        for (uint64_t k = 1 + Below(8); k > 0 && !s->empty(); --k) {
          (*s)[Below(s->size())] ^= static_cast<char>(1u << Below(8));
        }
        break;
      case 2:  // truncation
        s->resize(Below(s->size() + 1));
        break;
      case 3:  // random bytes overwritten
        for (uint64_t k = 1 + Below(16); k > 0 && !s->empty(); --k) {
          (*s)[Below(s->size())] = static_cast<char>(Below(256));
        }
        break;
      case 4: {  // random bytes inserted
        std::string bytes;
        for (uint64_t k = 1 + Below(16); k > 0; --k) bytes += static_cast<char>(Below(256));
        s->insert(Below(s->size() + 1), bytes);
        break;
      }
      case 5:  // a chunk deleted or duplicated
        if (!s->empty()) {
          const size_t at = Below(s->size()), len = 1 + Below(std::min<size_t>(64, s->size() - at));
          if (Below(2)) {
            s->erase(at, len);
          } else {
            s->insert(at, s->substr(at, len));
          }
        }
        break;
      case 6: {  // an aligned binary word replaced by an extreme integer
        static const std::vector<uint64_t> kWords = {
            0, 1, 2, 0x7f, 0x80, 0xff, 0x7fff, 0x8000, 0xffff, 0x7fffffff, 0x80000000,
            0xffffffff, 0x100000000ull, 0x7fffffffffffffffull, 0x8000000000000000ull,
            0xffffffffffffffffull, 0xfffffffffffffffeull, 1ull << 40};
        const size_t width = Below(2) ? 8 : 4;
        if (s->size() >= width) {
          const size_t at = Below(s->size() / width) * width;
          const uint64_t w = Pick(kWords);
          for (size_t b = 0; b < width; ++b) (*s)[at + b] = static_cast<char>(w >> (8 * b));
        }
        break;
      }
      case 7:
      case 8: {  // a decimal number in text replaced by an extreme one
        static const std::vector<std::string> kNumbers = {
            "0", "-1", "-0", "2147483647", "2147483648", "-2147483649", "4294967296",
            "9223372036854775807", "9223372036854775808", "-9223372036854775809",
            "18446744073709551616", "99999999999999999999999999", "1e308", "1e309", "-1e309",
            "nan", "inf", "-inf", "0.5", "1e-45", "0x10", "1_000", ""};
        std::vector<size_t> starts;
        for (size_t i = 0; i < s->size(); ++i) {
          if (std::isdigit(static_cast<unsigned char>((*s)[i])) &&
              (i == 0 || !std::isdigit(static_cast<unsigned char>((*s)[i - 1])))) {
            starts.push_back(i);
          }
        }
        if (!starts.empty()) {
          const size_t at = Pick(starts);
          size_t end = at;
          while (end < s->size() && (std::isdigit(static_cast<unsigned char>((*s)[end])) ||
                                     (*s)[end] == '.' || (*s)[end] == 'e' || (*s)[end] == '-')) {
            ++end;
          }
          s->replace(at, end - at, Pick(kNumbers));
        }
        break;
      }
      default: {  // a text value (after ':' or '=') replaced by one of another type
        static const std::vector<std::string> kValues = {
            " [1, 2]", " {a: 1}", " \"text\"", " true", " ~", " null", " []", " {}", " -",
            " [[[[[[[[1]]]]]]]]", " \"\\u0000\"", " !!binary AAAA", " &a [*a]", " 1: 2",
            "[1,2,3]", "{\"a\": [", "\"\"", " 1e999", ",", ",,", " 'unterminated"};
        std::vector<size_t> colons;
        for (size_t i = 0; i < s->size(); ++i) {
          if ((*s)[i] == ':' || (*s)[i] == '=') colons.push_back(i);
        }
        if (!colons.empty()) {
          const size_t at = Pick(colons) + 1;
          size_t end = at;
          while (end < s->size() && (*s)[end] != '\n' && (*s)[end] != ',' && (*s)[end] != '}') {
            ++end;
          }
          s->replace(at, end - at, Pick(kValues));
        }
        break;
      }
    }
  }

  std::mt19937_64 rng_;
};

}  // namespace moefold::fuzz
