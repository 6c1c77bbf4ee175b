#include "countersign/faults.hpp"

#include <csignal>
#include <cstdlib>
#include <string>

namespace countersign {

void crashPoint([[maybe_unused]] std::string_view name) {
#ifdef COUNTERSIGN_FAULTS
  static const std::string target = [] {
    const char* value = std::getenv("COUNTERSIGN_CRASH_AT");
    return std::string(value ? value : "");
  }();
  if (!target.empty() && target == name) {
    std::raise(SIGKILL);
  }
#endif
}

}  // namespace countersign
