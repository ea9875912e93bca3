// The exit codes of `moefold train` beyond 0 (done) and 1 (an error, printed), documented in
// README.md; `moefold launch` reads them to decide whether a restart helps.
#pragma once

namespace moefold::train {

// SIGTERM or SIGINT arrived: every rank finished the step, saved a checkpoint (when
// checkpoint.dir is set) and stopped. Resume with --resume. (75: EX_TEMPFAIL of sysexits.h.)
inline constexpr int kExitPreempted = 75;
// The watchdog found a rank stuck (train.hang_timeout_s) and ended the job.
inline constexpr int kExitHang = 76;
// A second SIGTERM / SIGINT: exit at once, nothing saved (128 + the signal, the shell's convention).

}  // namespace moefold::train
