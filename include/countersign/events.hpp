// Decision events on <prefix>.events.<event>.<topic> (docs/protocol.md), and the audit
// trail's hash chain (docs/audit.md).
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "countersign/clock.hpp"
#include "countersign/log.hpp"
#include "countersign/nkeys.hpp"
#include "countersign/publisher.hpp"
#include "countersign/wire_names.hpp"
#include "countersign/work_pool.hpp"

namespace countersign {

struct Event {
  EventKind event = EventKind::held;
  std::string_view approval_id;
  std::string_view job_id;  // the producer's job id (generated for a held job that had none)
  std::string_view topic;
  std::string_view subject;
  std::string_view rule;
  std::string_view job_hash;
  std::string_view policy_snapshot;
  std::string_view actor;
  std::string_view reason;
  std::string_view payload;  // the job's payload; used only with include_payload
  // A decisive event that a later decisive event of the same sink confirms (it follows on the
  // same connection into the same stream, and the server stores them in order): sent without
  // waiting for its own PubAck. The approve path uses it for `approved`, confirmed by `released`.
  bool confirmed_by_next = false;
};

class RecentlySigned;

struct EventOptions {
  std::string prefix = "countersign";
  bool allowed_events = false;
  bool include_payload = false;
  std::vector<std::string> redact;
  // Audit chain: every event carries {"chain": chain_id, "seq": n, "prev": sha256 of the previous
  // event body of this chain}, and Nats-Msg-Id <approval id>:<event>:<chain_id>-<n>.
  bool chained = false;
  std::string chain_id;
  // Decisive events (approved, rejected, released, replayed, expired, release_unknown) are
  // JetStream publishes that wait for the audit stream's PubAck; the others are core publishes
  // (captured by the same stream) so that the intake path never waits for them.
  bool durable_decisions = false;
  // With a chain: a fresh random part for every event's Nats-Msg-Id
  // (<approval id>:<event>:<chain_id>-<n>-<random>), so that nobody can publish an event under
  // the next id first and make the stream drop the real one as a duplicate. A retried publish
  // of the same event keeps its id. nullptr: no random part (tests).
  IdSource* msg_id_nonces = nullptr;
  // With a chain: every event is signed with countersign's own key (Ed25519 over the exact
  // body bytes) and published with the headers Countersign-Event-Signature (base64url) and
  // Countersign-Event-Key (the public nkey), so that `audit verify` can refuse events that no
  // known countersign made. Signing runs on a thread of the sink's own ("cs-<signer_name>-0"),
  // in the chain's order: emit() fixes seq, body and hash and returns, so that the threads
  // answering producers never pay for a signature. A decisive event that waits for its PubAck
  // still waits (for its turn, its signature and its publish). nullptr: unsigned, published by
  // the caller.
  const nkeys::Signer* signer = nullptr;
  std::string signer_name = "sign";
  // With a signer: sign on the thread that emits, right after the chain's lock, and publish from
  // there, instead of on the signing thread. For a sink whose emitters are few and do little
  // else per event (the control connection's: the store's answer thread for `held`, the control
  // threads for decisions): the signature costs them what it would cost the signing thread, and
  // no event waits for a hand-over to that thread (and a decisive one for the hand-back). Events
  // may then reach the stream out of seq order across threads; readers sort by seq. Events
  // of one thread keep their order, so `approved` still precedes its `released`.
  bool sign_on_caller = false;
  // With a signer: every signed body is remembered here (nullptr: nowhere).
  RecentlySigned* signed_bodies = nullptr;
  // Signed events waiting for the signing thread, at most; beyond it emit() waits for room when
  // `backpressure` (a busy intake slows to the signing rate instead of growing memory), and
  // otherwise queues anyway (for callers that must never wait: cnats' PubAck thread).
  std::size_t signer_queue = 16384;
  bool backpressure = false;
};

inline constexpr std::string_view kEventSignatureHeader = "Countersign-Event-Signature";
inline constexpr std::string_view kEventKeyHeader = "Countersign-Event-Key";

// What a reader of the audit stream can say about who made an event, from the two headers above
// and the public keys it trusts (never the key an event names for itself).
enum class EventOrigin {
  verified,       // signed by a trusted key, over exactly these bytes
  unsigned_event, // no signature or no key header: forged, or written before events were signed
  unknown_key,    // signed, by a key the reader does not trust
  bad_signature,  // the trusted key's signature does not match the bytes: altered or forged
  not_checked,    // signed, but the reader trusts no key at all
};
// The wire words: verified, unsigned, unknown_key, bad_signature, not_checked.
std::string_view toString(EventOrigin origin);

// The keys countersign's events may be signed by, and the check of one event. Immutable once
// filled: check() may run on several threads at once.
class EventVerifier {
 public:
  void trust(const nkeys::PublicKey& key);
  bool empty() const { return keys_.empty(); }
  // The trusted keys, encoded ("U..."), sorted.
  std::vector<std::string> keys() const;
  // `signature` and `key`: the header values, nullptr when the header is absent.
  EventOrigin check(std::string_view body, const std::string* signature, const std::string* key) const;

 private:
  std::map<std::string, nkeys::PublicKey, std::less<>> keys_;
};

// The bodies this process signed lately (by SHA-256), so that a reader in the same process (the
// console's live feed) knows its own events without an Ed25519 verification each (about 50 µs,
// as much as a hold costs); anything else is verified. Bounded: the oldest are forgotten.
// Thread-safe.
class RecentlySigned {
 public:
  explicit RecentlySigned(std::size_t capacity = 16384) : capacity_(capacity) {}
  void add(std::string_view body);
  // The same, given the body's SHA-256 (lowercase hex) already computed.
  void addHash(std::string hash);
  bool contains(std::string_view body) const;

 private:
  mutable std::mutex mutex_;
  std::size_t capacity_;
  std::deque<std::string> order_;
  std::unordered_set<std::string> hashes_;
};

// An event read back from the audit stream, with what its signature says.
struct CheckedEvent {
  std::string body;
  EventOrigin origin = EventOrigin::unsigned_event;
};

// For readers that show events: the event's JSON object with "signature_check" set to `origin`
// (replacing a member of that name the body may carry, so that a forged body cannot mark itself)
// and, when given, "stream_seq". nullopt when the body is not a JSON object.
std::optional<std::string> markedEvent(std::string_view body, EventOrigin origin, std::uint64_t stream_seq = 0);

// Thread-safe. An event never fails or blocks a decision beyond its publish.
class EventSink {
 public:
  EventSink(Publisher& publisher, const Clock& clock, Logger& log, EventOptions options);
  // Publishes every event already emitted, then stops the signing thread.
  ~EventSink();
  EventSink(const EventSink&) = delete;
  EventSink& operator=(const EventSink&) = delete;
  void emit(const Event& event);
  bool allowedEvents() const { return options_.allowed_events; }
  // The JSON body of an unchained event (for tests).
  std::string body(const Event& event) const { return body(event, 0, {}); }

 private:
  std::string body(const Event& event, std::uint64_t seq, std::string_view prev) const;
  void send(const std::string& subject, Headers& headers, const std::string& payload, bool durable,
            std::string_view event, std::string_view approval_id);

  Publisher& publisher_;
  const Clock& clock_;
  Logger& log_;
  EventOptions options_;
  std::mutex chain_mutex_;
  std::uint64_t seq_ = 0;
  std::string prev_;
  std::unique_ptr<WorkPool> signing_;  // with a signer: one thread, the chain's order
};

}  // namespace countersign
