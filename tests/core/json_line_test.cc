// JsonLine: fields in order, strings escaped, non-finite numbers as null, lists of numbers and of
// rows, and the ", " / ": " spacing the files have always had.
#include "core/json_line.h"

#include <cmath>

#include "gtest/gtest.h"

namespace moefold {
namespace {

TEST(JsonLineTest, FieldsInOrderWithEveryValueKind) {
  JsonLine line;
  line.Add("step", int64_t{3})
      .Add("loss", 2.5)
      .Add("skipped", false)
      .Add("name", "a \"quoted\"\nline")
      .Add("ratios", std::vector<double>{1.0, NAN, 0.25})
      .Add("tokens", std::vector<std::vector<int64_t>>{{1, 2}, {3}});
  EXPECT_EQ(line.Dump(),
            "{\"step\": 3, \"loss\": 2.5, \"skipped\": false, \"name\": \"a \\\"quoted\\\"\\nline\", "
            "\"ratios\": [1.0, null, 0.25], \"tokens\": [[1, 2], [3]]}");
}

TEST(JsonLineTest, NonFiniteNumbersAreNull) {
  JsonLine line;
  line.Add("nan", NAN).Add("inf", INFINITY).Add("tiny", 1e-300);
  EXPECT_EQ(line.Dump(), "{\"nan\": null, \"inf\": null, \"tiny\": 1e-300}");
}

TEST(JsonLineTest, CopiesAreIndependent) {
  JsonLine a;
  a.Add("x", 1);
  JsonLine b = a;
  b.Add("y", 2);
  EXPECT_EQ(a.Dump(), "{\"x\": 1}");
  EXPECT_EQ(b.Dump(), "{\"x\": 1, \"y\": 2}");
  a = b;
  EXPECT_EQ(a.Dump(), b.Dump());
}

TEST(JsonLineTest, ALaterValueReplacesTheKeyInPlace) {
  JsonLine line;
  line.Add("a", 1).Add("b", 2).Add("a", 3);
  EXPECT_EQ(line.Dump(), "{\"a\": 3, \"b\": 2}");
}

}  // namespace
}  // namespace moefold
