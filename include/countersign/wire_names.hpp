// What countersign answers and announces, as values: the status of a reply (the `status` field
// of every JSON answer and the Countersign-Status header) and the kind of a decision event (the
// `event` field and the <prefix>.events.<event>.<topic> subject). Core code passes these enums;
// wireName() is the one place where they become the words clients read (docs/protocol.md).
#pragma once

#include <cstdint>
#include <ostream>
#include <string_view>

namespace countersign {

enum class Outcome : std::uint8_t {
  ok,                 // get, list
  allowed,            // intake: forwarded at once
  denied,             // intake: refused by policy or a rule of the gateway
  throttled,          // intake: over a throttle
  approval_required,  // intake: held for approval
  queued,             // intake: a hold handed to the hold executor (never sent; see IntakeOutcome)
  conflict,
  too_large,
  unavailable,
  unroutable,
  bad_request,
  malformed,  // JetStream intake: a message that is not a job
  not_found,
  expired,
  released,
  already_released,
  approved,
  already_approved,
  rejected,
  already_rejected,
  vote_recorded,
  already_voted,
  unauthenticated,
  forbidden,
};
std::string_view wireName(Outcome outcome);

enum class EventKind : std::uint8_t {
  allowed,
  denied,
  throttled,
  held,
  approved,
  rejected,
  vote,
  escalated,
  expired,
  released,
  replayed,
  conflict,
  release_unknown,
  release_refused,  // the record's or the decision's tag is missing or wrong (docs/security.md)
};
std::string_view wireName(EventKind kind);

// For test failure messages and logs: the wire name.
inline std::ostream& operator<<(std::ostream& out, Outcome outcome) { return out << wireName(outcome); }
inline std::ostream& operator<<(std::ostream& out, EventKind kind) { return out << wireName(kind); }

}  // namespace countersign
