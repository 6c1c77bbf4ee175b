// Crash points for fault tests: with COUNTERSIGN_CRASH_AT=<name> in the environment, the process
// dies (SIGKILL on itself, like a power cut of the process) when it reaches that point. Compiled
// only into countersign-faults, the binary the fault tests run (-DCOUNTERSIGN_FAULTS=ON, the
// default, builds it); the shipped countersign has the no-op and not even the variable name.
// Points: after_hold_before_ack, after_approve_cas, after_publish_before_released.
#pragma once

#include <string_view>

namespace countersign {

void crashPoint(std::string_view name);

}  // namespace countersign
