// Crash points for fault tests: with COUNTERSIGN_CRASH_AT=<name> in the environment, the process
// dies (SIGKILL on itself, like a power cut of the process) when it reaches that point. Compiled
// in only with -DCOUNTERSIGN_FAULTS=ON (the default for test builds); a no-op otherwise.
// Points: after_hold_before_ack, after_approve_cas, after_publish_before_released.
#pragma once

#include <string_view>

namespace countersign {

void crashPoint(std::string_view name);

}  // namespace countersign
