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

// Server URLs fit for messages and logs: the password of "user:password@" becomes "***", a
// token ("token@") becomes "***". Handles a comma-separated list of URLs and a password that
// itself contains '@'. Text without credentials is returned as is.
std::string maskUrlCredentials(std::string_view urls);

}  // namespace countersign
