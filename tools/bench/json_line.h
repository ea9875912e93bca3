// The benchmarks' output format: one JSON object per line, {"bench": name, ...fields}, flushed at
// once so a run that dies part way keeps every figure it printed. No CUDA: the CPU-only step
// benchmark uses it too.
#pragma once

#include <string>

namespace moefold::bench {

// One JSON object per line: {"bench": name, ...fields}. Fields are preformatted "key": value;
// a non-finite number is written as null.
class JsonLine {
 public:
  explicit JsonLine(const std::string& bench);
  JsonLine& Add(const std::string& key, double value);
  JsonLine& Add(const std::string& key, const std::string& value);
  void Print();

 private:
  std::string text_;
};

}  // namespace moefold::bench
