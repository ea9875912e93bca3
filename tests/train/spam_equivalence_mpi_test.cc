// SPAM and Stable-SPAM are layout-independent: under TP2, ZeRO-1 DP2 and EP2 each tensor's max|g|
// and ‖g‖ are reduced over the ranks holding its pieces, so 12 steps match the single-rank run of
// the same optimizer within tests/train/equivalence.h's f32 tolerances (loss and gradient norm per
// step, every gathered parameter at the end). SPAM resets every 5 steps and clips from the 3rd step
// of a phase, so its reset, ramp and spike clip all run within the 12 steps.
#include <string>
#include <utility>
#include <vector>

#include "tests/testing/testing.h"
#include "tests/train/equivalence.h"

namespace moefold::train {
namespace {

constexpr int kSteps = 12;

const std::vector<std::string> kStableSpam = {"optimizer.name=stable_spam", "checkpoint.dir=",
                                              "checkpoint.every=0"};
const std::vector<std::string> kSpam = {
    "optimizer.name=spam",          "optimizer.spam_reset_interval=5",
    "optimizer.spam_clip_delay=2",  "optimizer.spam_warmup_steps=3",
    "optimizer.spam_theta=2",       "checkpoint.dir=",
    "checkpoint.every=0"};

LayoutCase Layout(const char* name, std::vector<std::string> overrides,
                  std::vector<std::string> model) {
  return {name, 2, std::move(overrides), std::move(model)};
}

class SpamEquivalence : public ::testing::TestWithParam<LayoutCase> {};

TEST_P(SpamEquivalence, MatchesTheSingleRankRun) { ExpectLayoutMatchesOneRank(GetParam(), kSteps); }

INSTANTIATE_TEST_SUITE_P(
    Matrix, SpamEquivalence,
    ::testing::Values(Layout("StableSpamTp2", {"parallel.tp=2"}, kStableSpam),
                      Layout("StableSpamDp2Zero1", {"parallel.dp=2", "parallel.zero1=true"},
                             kStableSpam),
                      Layout("StableSpamEp2", {"parallel.ep=2"}, kStableSpam),
                      Layout("SpamTp2", {"parallel.tp=2"}, kSpam),
                      Layout("SpamDp2Zero1", {"parallel.dp=2", "parallel.zero1=true"}, kSpam)),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace moefold::train
