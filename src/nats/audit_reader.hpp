// Reading one approval's events back from the audit stream (the console's timeline).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "countersign/result.hpp"
#include "nats/connection.hpp"

namespace countersign::natsio {

// The JSON bodies of approval `id`'s events, oldest first. Reads backwards from the stream's
// newest message and stops at the approval's first `held` (the start of its story) or after
// `max_scan` messages, whichever comes first; older events of a long-lived approval on a busy
// stream are then left out (`countersign audit ID` reads the whole stream).
Result<std::vector<std::string>> approvalTimeline(Connection& connection, const std::string& stream,
                                                  std::string_view id, std::size_t max_scan);

}  // namespace countersign::natsio
