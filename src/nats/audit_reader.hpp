// Reading one approval's events back from the audit stream (the console's timeline).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "countersign/events.hpp"
#include "countersign/result.hpp"
#include "nats/connection.hpp"

namespace countersign::natsio {

// A header's value, nullopt when the message has no such header.
std::optional<std::string> messageHeader(natsMsg* msg, std::string_view name);

// The signature check of an event as received (its body and its two signature headers).
EventOrigin checkEvent(natsMsg* msg, const EventVerifier& verifier);

// Approval `id`'s events, oldest first, each checked against `verifier`'s keys. Reads backwards
// from the stream's newest message and stops at the approval's first verified `held` (the start
// of its story; an unverified one does not end it, so that a forged `held` published later
// cannot hide the real events) or after `max_scan` messages, whichever comes first; older events
// of a long-lived approval on a busy stream are then left out (`countersign audit ID` reads the
// whole stream).
Result<std::vector<CheckedEvent>> approvalTimeline(Connection& connection, const std::string& stream,
                                                   std::string_view id, std::size_t max_scan,
                                                   const EventVerifier& verifier);

}  // namespace countersign::natsio
