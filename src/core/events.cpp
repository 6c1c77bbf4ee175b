#include "countersign/events.hpp"

#include "countersign/json.hpp"
#include "countersign/redact.hpp"
#include "json_writer.hpp"

namespace countersign {
namespace {

bool decisive(EventKind event) {
  switch (event) {
    case EventKind::approved:
    case EventKind::rejected:
    case EventKind::released:
    case EventKind::replayed:
    case EventKind::expired:
    case EventKind::release_unknown:
      return true;
    default:
      return false;
  }
}

}  // namespace

EventSink::EventSink(Publisher& publisher, const Clock& clock, Logger& log, EventOptions options)
    : publisher_(publisher), clock_(clock), log_(log), options_(std::move(options)) {}

std::string EventSink::body(const Event& e, std::uint64_t seq, std::string_view prev) const {
  detail::JsonObjectWriter w;
  w.field("event", wireName(e.event))
      .optional("approval_id", e.approval_id)
      .optional("job_id", e.job_id)
      .optional("topic", e.topic)
      .optional("subject", e.subject)
      .optional("rule", e.rule)
      .optional("job_hash", e.job_hash)
      .optional("policy_snapshot", e.policy_snapshot)
      .field("actor", e.actor.empty() ? std::string_view("countersign") : e.actor)
      .optional("reason", e.reason)
      .field("at", formatRfc3339(clock_.now()));
  if (options_.include_payload && !e.payload.empty()) {
    if (json::parseStrict(e.payload)) {
      w.field("payload", redactPayload(e.payload, options_.redact));
    } else if (options_.redact.empty()) {
      w.field("payload_b64", json::base64Encode(e.payload));
    } else {
      w.field("payload", kRedacted);  // bytes cannot be redacted field by field
    }
  }
  if (seq > 0) {
    w.field("chain", options_.chain_id).field("seq", seq).field("prev", prev);
  }
  return w.finish();
}

void EventSink::emit(const Event& e) {
  if (e.event == EventKind::allowed && !options_.allowed_events) return;
  std::string subject = options_.prefix;
  subject += ".events.";
  subject += wireName(e.event);
  subject += '.';
  subject += e.topic.empty() ? std::string_view("_") : e.topic;

  std::string payload;
  Headers headers;
  if (options_.chained) {
    std::uint64_t seq = 0;
    {
      // The chain's order is the seq order, fixed here; publishes may reach the stream in
      // another order (verification sorts by seq).
      const std::lock_guard lock(chain_mutex_);
      seq = ++seq_;
      payload = body(e, seq, prev_);
      prev_ = "sha256:" + json::sha256Hex(payload);
    }
    std::string id(e.approval_id.empty() ? std::string_view("-") : e.approval_id);
    id += ':';
    id += wireName(e.event);
    id += ':';
    id += options_.chain_id;
    id += '-';
    id += std::to_string(seq);
    if (options_.msg_id_nonces != nullptr) {
      id += '-';
      id += options_.msg_id_nonces->newId().substr(0, 16);
    }
    headers.emplace_back("Nats-Msg-Id", std::move(id));
  } else {
    payload = body(e, 0, {});
  }
  const bool durable = options_.durable_decisions && decisive(e.event) && !e.confirmed_by_next;
  OutMessage out{.subject = subject, .reply = {}, .headers = headers.empty() ? nullptr : &headers,
                 .payload = payload};
  auto sent = publisher_.publish(out, durable ? Delivery::jetstream : Delivery::core,
                                 std::chrono::milliseconds(5000));
  if (!sent) {
    log_.warn("event not published",
              {{"event", wireName(e.event)}, {"approval_id", e.approval_id}, {"error", sent.error().message}});
  }
}

}  // namespace countersign
