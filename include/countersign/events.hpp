// Decision events on <prefix>.events.<event>.<topic> (DESIGN.md section 9).
#pragma once

#include <string>
#include <string_view>

#include "countersign/clock.hpp"
#include "countersign/log.hpp"
#include "countersign/publisher.hpp"

namespace countersign {

struct Event {
  std::string_view event;  // allowed, denied, throttled, held, approved, rejected, expired,
                           // released, replayed, conflict, release_unknown
  std::string_view approval_id;
  std::string_view topic;
  std::string_view subject;
  std::string_view rule;
  std::string_view job_hash;
  std::string_view policy_snapshot;
  std::string_view actor;
  std::string_view reason;
};

// Publishes events as core messages (fire and forget: an event never blocks or fails a
// decision). Thread-safe.
class EventSink {
 public:
  EventSink(Publisher& publisher, const Clock& clock, Logger& log, std::string prefix,
            bool allowed_events);
  void emit(const Event& event);
  bool allowedEvents() const { return allowed_events_; }
  // The JSON body of an event, as published (exposed for tests and the audit trail).
  std::string body(const Event& event) const;

 private:
  Publisher& publisher_;
  const Clock& clock_;
  Logger& log_;
  std::string prefix_;
  bool allowed_events_;
};

}  // namespace countersign
