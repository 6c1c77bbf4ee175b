#include "countersign/result.hpp"

namespace countersign {

std::string_view toString(Errc code) {
  switch (code) {
    case Errc::invalid_argument: return "invalid_argument";
    case Errc::parse_error: return "parse_error";
    case Errc::not_found: return "not_found";
    case Errc::exists: return "exists";
    case Errc::wrong_revision: return "wrong_revision";
    case Errc::too_large: return "too_large";
    case Errc::timeout: return "timeout";
    case Errc::unavailable: return "unavailable";
    case Errc::io: return "io";
    case Errc::internal: return "internal";
  }
  return "unknown";
}

}  // namespace countersign
