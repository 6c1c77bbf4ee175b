#include "countersign/events.hpp"

#include "json_writer.hpp"

namespace countersign {

EventSink::EventSink(Publisher& publisher, const Clock& clock, Logger& log, std::string prefix,
                     bool allowed_events)
    : publisher_(publisher),
      clock_(clock),
      log_(log),
      prefix_(std::move(prefix)),
      allowed_events_(allowed_events) {}

std::string EventSink::body(const Event& e) const {
  detail::JsonObjectWriter w;
  w.field("event", e.event)
      .optional("approval_id", e.approval_id)
      .optional("topic", e.topic)
      .optional("subject", e.subject)
      .optional("rule", e.rule)
      .optional("job_hash", e.job_hash)
      .optional("policy_snapshot", e.policy_snapshot)
      .field("actor", e.actor.empty() ? std::string_view("countersign") : e.actor)
      .optional("reason", e.reason)
      .field("at", formatRfc3339(clock_.now()));
  return w.finish();
}

void EventSink::emit(const Event& e) {
  if (e.event == "allowed" && !allowed_events_) return;
  std::string subject = prefix_;
  subject += ".events.";
  subject += e.event;
  subject += '.';
  subject += e.topic.empty() ? std::string_view("_") : e.topic;
  const std::string payload = body(e);
  OutMessage out{.subject = subject, .reply = {}, .headers = nullptr, .payload = payload};
  auto sent = publisher_.publish(out, Delivery::core, std::chrono::milliseconds(0));
  if (!sent) {
    log_.warn("event not published",
              {{"event", e.event}, {"approval_id", e.approval_id}, {"error", sent.error().message}});
  }
}

}  // namespace countersign
