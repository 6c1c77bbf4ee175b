// Redaction of payload fields before a payload leaves countersign in an event or a get/show.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace countersign {

inline constexpr std::string_view kRedacted = "[REDACTED]";

// Replaces the value at each dotted path ("card.number"; a numeric segment indexes an array)
// with "[REDACTED]" and returns compact JSON. A path that is missing is skipped. A payload that
// is not strict JSON cannot be redacted field by field: it is replaced whole by "[REDACTED]"
// when any path is configured, and returned as is when none is.
std::string redactPayload(std::string_view payload, const std::vector<std::string>& paths);

}  // namespace countersign
