// Preemption: what Slurm and Kubernetes send before they kill a job (SIGTERM; SIGINT from a
// terminal) asks the run to stop at the next step boundary. The handler only sets a flag; the step
// loop agrees on it across ranks (a signal may reach only some of them: Trainer's per-step
// agreement takes the maximum over the world), saves a checkpoint and exits with kExitPreempted
// (core/train/exit_codes.h). A second signal exits at once with 128 + the signal (one within 2 s
// of the first is taken for the same request delivered twice, and ignored).
//
//   InstallPreemptionHandlers();
//   ... if (PreemptionRequested()) ...
#pragma once

namespace moefold::train {

// Installs the SIGTERM and SIGINT handlers (idempotent).
void InstallPreemptionHandlers();
// The signal number that asked this process to stop (0: none yet).
int PreemptionSignal();
inline bool PreemptionRequested() { return PreemptionSignal() != 0; }

}  // namespace moefold::train
