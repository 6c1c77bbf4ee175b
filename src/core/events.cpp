#include "countersign/events.hpp"

#include <future>
#include <memory>

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

std::string_view toString(EventOrigin origin) {
  switch (origin) {
    case EventOrigin::verified: return "verified";
    case EventOrigin::unsigned_event: return "unsigned";
    case EventOrigin::unknown_key: return "unknown_key";
    case EventOrigin::bad_signature: return "bad_signature";
    case EventOrigin::not_checked: return "not_checked";
  }
  return "bad_signature";
}

void EventVerifier::trust(const nkeys::PublicKey& key) { keys_.emplace(nkeys::encodePublicKey(key), key); }

std::vector<std::string> EventVerifier::keys() const {
  std::vector<std::string> out;
  for (const auto& [text, key] : keys_) out.push_back(text);
  return out;
}

EventOrigin EventVerifier::check(std::string_view body, const std::string* signature, const std::string* key) const {
  if (signature == nullptr || key == nullptr) return EventOrigin::unsigned_event;
  if (keys_.empty()) return EventOrigin::not_checked;
  const auto trusted = keys_.find(*key);
  if (trusted == keys_.end()) return EventOrigin::unknown_key;
  const auto raw = nkeys::base64UrlDecode(*signature);
  if (!raw || !nkeys::verify(trusted->second, body, *raw)) return EventOrigin::bad_signature;
  return EventOrigin::verified;
}

void RecentlySigned::add(std::string_view body) { addHash(json::sha256Hex(body)); }

void RecentlySigned::addHash(std::string hash) {
  const std::lock_guard lock(mutex_);
  if (!hashes_.insert(hash).second) return;
  order_.push_back(std::move(hash));
  if (order_.size() > capacity_) {
    hashes_.erase(order_.front());
    order_.pop_front();
  }
}

bool RecentlySigned::contains(std::string_view body) const {
  const std::string hash = json::sha256Hex(body);
  const std::lock_guard lock(mutex_);
  return hashes_.contains(hash);
}

std::optional<std::string> markedEvent(std::string_view body, EventOrigin origin, std::uint64_t stream_seq) {
  auto doc = json::parseStrict(body);
  if (!doc || !doc->IsObject()) return std::nullopt;
  doc->RemoveMember("signature_check");
  doc->RemoveMember("stream_seq");
  auto& alloc = doc->GetAllocator();
  const std::string_view word = toString(origin);
  doc->AddMember("signature_check", rapidjson::Value(word.data(), static_cast<rapidjson::SizeType>(word.size()), alloc),
                 alloc);
  if (stream_seq > 0) doc->AddMember("stream_seq", rapidjson::Value(static_cast<std::uint64_t>(stream_seq)), alloc);
  return json::toString(*doc);
}

EventSink::EventSink(Publisher& publisher, const Clock& clock, Logger& log, EventOptions options)
    : publisher_(publisher), clock_(clock), log_(log), options_(std::move(options)) {
  if (options_.chained && options_.signer != nullptr && !options_.sign_on_caller) {
    signing_ = std::make_unique<WorkPool>(1, options_.signer_queue, options_.signer_name);
  }
}

EventSink::~EventSink() { signing_.reset(); }  // runs what is queued, then joins

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

void EventSink::send(const std::string& subject, Headers& headers, const std::string& payload, bool durable,
                     std::string_view event, std::string_view approval_id) {
  OutMessage out{.subject = subject, .reply = {}, .headers = headers.empty() ? nullptr : &headers,
                 .payload = payload};
  auto sent = publisher_.publish(out, durable ? Delivery::jetstream : Delivery::core,
                                 std::chrono::milliseconds(5000));
  if (!sent) {
    log_.warn("event not published",
              {{"event", event}, {"approval_id", approval_id}, {"error", sent.error().message}});
  }
}

void EventSink::emit(const Event& e) {
  if (e.event == EventKind::allowed && !options_.allowed_events) return;
  const std::string_view kind = wireName(e.event);
  std::string subject = options_.prefix;
  subject += ".events.";
  subject += kind;
  subject += '.';
  subject += e.topic.empty() ? std::string_view("_") : e.topic;
  const bool durable = options_.durable_decisions && decisive(e.event) && !e.confirmed_by_next;

  std::string payload;
  Headers headers;
  if (!options_.chained) {
    payload = body(e, 0, {});
    send(subject, headers, payload, durable, kind, e.approval_id);
    return;
  }
  // Drawn outside the chain's lock.
  const std::string nonce =
      options_.msg_id_nonces != nullptr ? "-" + options_.msg_id_nonces->newId().substr(0, 16) : std::string();
  std::shared_ptr<std::promise<void>> published;
  std::future<void> done;
  std::string body_hash;  // SHA-256 of the body: the next event's `prev`, and what signed_bodies keeps
  {
    // The chain's order is the seq order, fixed here; publishes may reach the stream in
    // another order (verification sorts by seq).
    const std::lock_guard lock(chain_mutex_);
    const std::uint64_t seq = ++seq_;
    payload = body(e, seq, prev_);
    body_hash = json::sha256Hex(payload);
    prev_ = "sha256:" + body_hash;
    std::string id(e.approval_id.empty() ? std::string_view("-") : e.approval_id);
    id += ':';
    id += kind;
    id += ':';
    id += options_.chain_id;
    id += '-';
    id += std::to_string(seq);
    id += nonce;
    headers.emplace_back("Nats-Msg-Id", std::move(id));
    if (signing_ != nullptr) {
      // Queued in seq order (under the chain's lock); signed and published on the signing thread.
      if (durable) {
        published = std::make_shared<std::promise<void>>();
        done = published->get_future();
      }
      auto task = [this, subject = std::move(subject), headers = std::move(headers), payload = std::move(payload),
                   durable, kind, approval_id = std::string(e.approval_id), published,
                   body_hash = std::move(body_hash)]() mutable {
        headers.emplace_back(std::string(kEventSignatureHeader),
                             nkeys::base64UrlEncode(options_.signer->sign(payload)));
        headers.emplace_back(std::string(kEventKeyHeader), options_.signer->encodedPublicKey());
        if (options_.signed_bodies != nullptr) options_.signed_bodies->addHash(std::move(body_hash));
        send(subject, headers, payload, durable, kind, approval_id);
        if (published) published->set_value();
      };
      if (durable || options_.backpressure) {
        signing_->submit({}, std::move(task));
      } else {
        signing_->post({}, std::move(task));
      }
    }
  }
  if (signing_ == nullptr) {
    // Unsigned, or signed here on the caller's thread (sign_on_caller), outside the chain's lock.
    if (options_.signer != nullptr) {
      headers.emplace_back(std::string(kEventSignatureHeader), nkeys::base64UrlEncode(options_.signer->sign(payload)));
      headers.emplace_back(std::string(kEventKeyHeader), options_.signer->encodedPublicKey());
      if (options_.signed_bodies != nullptr) options_.signed_bodies->addHash(std::move(body_hash));
    }
    send(subject, headers, payload, durable, kind, e.approval_id);
  } else if (durable) {
    done.wait();  // a decisive event is confirmed (or its failure logged) before emit returns
  }
}

}  // namespace countersign
