// Intake (docs/protocol.md): decides one received job and acts on the decision: forward,
// refuse, throttle or hold. Thread-safe; called from the subscription's delivery thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>

#include "countersign/config.hpp"
#include "countersign/events.hpp"
#include "countersign/message.hpp"
#include "countersign/ordered_pipeline.hpp"
#include "countersign/receipt.hpp"
#include "countersign/record.hpp"
#include "countersign/services.hpp"
#include "countersign/work_pool.hpp"

namespace countersign {

// What a JetStream intake does with the ingress message once the decision is made.
enum class IngressAck {
  ack,   // the decision is durable (forwarded and confirmed, held, or refused for good)
  nak,   // not decided (store or target unavailable, or throttled): deliver again later
  term,  // can never be taken (too large): do not redeliver
};

class IngressReuse;

// Where a job came from when it was read from an ingress stream (JetStream intake mode).
struct IngressPosition {
  std::string stream;
  std::uint64_t sequence = 0;
  // When the stream stored it (ns since the Unix epoch), and the epoch of its forward id (0: the
  // plain countersign-in:<stream>:<sequence>; see countersign/ingress_reuse.hpp).
  std::int64_t stored_ns = 0;
  std::uint64_t epoch = 0;
  // The stream's recorded regressions: asked again when the target stream calls a forward a
  // duplicate. nullptr: none kept (the plain id always).
  IngressReuse* reuse = nullptr;
};

// What intake did with one job (for the caller's metrics and for tests).
struct IntakeOutcome {
  Outcome status = Outcome::unroutable;  // allowed, denied, throttled, approval_required,
                                         // conflict, too_large, unavailable, unroutable,
                                         // bad_request; queued: a hold handed to the hold pool
                                         // (its reply, events and metrics follow from there)
  int code = 0;
  std::string rule;
  std::string approval_id;
  bool forwarded = false;
  bool replied = false;
  IngressAck ack = IngressAck::ack;
  std::chrono::milliseconds redeliver_after{0};  // with nak: the delay to ask for
};

class Intake {
 public:
  // `replies`: where answers to producers go (default: services.publisher). Give it a
  // connection that sends at once (send_asap) while forwards keep the batching one.
  // `hold_pool`: when set, core intake does not wait for a hold's KV create: onJob returns
  // "queued" and the reply, events and metrics follow when the store answers (createAsync); a
  // repeated id is checked on the pool (keyed by approval id). Wait for the store's creates,
  // then drain the pool, before the services go away. JetStream intake always holds in line
  // (its ack waits for the outcome).
  // `hold_events`: where `held` events go (default: services.events). Give it the sink of the
  // send-at-once connection: the event then goes out just before the answer, without waking a
  // flusher.
  // `receipt_pipeline`: when set, core intake signs the receipts of allowed jobs on its threads
  // (in parallel) and forwards them from there in exactly the order they arrived: onJob returns
  // "queued" and the forward, its `allowed` event, reply and metrics follow in the pipeline.
  // Drain the pipeline after the routes' subscriptions and before the services go away.
  // JetStream intake always forwards in line (its ack waits for the outcome).
  explicit Intake(Services services, Publisher* replies = nullptr, WorkPool* hold_pool = nullptr,
                  EventSink* hold_events = nullptr, OrderedPipeline* receipt_pipeline = nullptr);
  // Core intake: `message.reply` is the producer's reply subject.
  // JetStream intake (`ingress` set): the caller has cleared `message.reply` (it was the ack
  // subject); forwards wait for the PubAck of to_stream and carry a dedup id derived from the
  // ingress position when the job has none, so a redelivery after a crash is deduplicated.
  IntakeOutcome onJob(const RouteConfig& route, Message&& message,
                      const IngressPosition* ingress = nullptr);
  // A core route's job that arrived while more than concurrency.intake_bytes waited: answered
  // 503 {"status":"unavailable","reason":"overloaded","retryable":true} where a reply subject
  // allows it, without looking further; counted as decision "unavailable", rule "overloaded".
  IntakeOutcome overloaded(const RouteConfig& route, Message&& message);
  // Told of every record this intake created, with its deadline (nullopt: none): lets the
  // process's replayer skip reading it. Set before the first job arrives.
  using HeldCallback =
      std::function<void(std::string_view id, std::optional<std::chrono::system_clock::time_point>)>;
  void onHeld(HeldCallback callback) { on_held_ = std::move(callback); }

 private:
  struct Job;
  struct PendingHold;
  void count(const IntakeOutcome& outcome);
  // Answers a hold from the outcome of its record's create.
  IntakeOutcome settle(const Job& job, const ApprovalRecord& record, Result<std::uint64_t> created);
  IntakeOutcome decide(const RouteConfig& route, Message&& message, const IngressPosition* ingress);
  // Reads the untrusted headers and picks where to answer.
  void receive(Job& job) const;
  IntakeOutcome forward(Job& job, const Rule* rule, const JobView& view);
  // What the receipt of an allowed job says (its job hash read from `view` and the headers it is
  // forwarded with).
  receipt::Claims allowedClaims(const Job& job, std::string_view rule, const JobView& view,
                                const Headers& headers) const;
  // Hands a core route's allowed job to the receipt pipeline: signed there in parallel with
  // others, then forwarded in arrival order. Returns the "queued" outcome.
  IntakeOutcome signInPipeline(Job& job, const Rule* matched, Headers&& headers, receipt::Claims&& claims,
                               std::string&& job_id);
  // Publishes an allowed job with its headers (followed by the rule's forward headers).
  Result<PublishAck> publishJob(const Job& job, const Rule* matched, const Headers& headers, Delivery delivery);
  // After the forward's publish: emits `allowed` and answers the producer, or refuses the job.
  IntakeOutcome settleForward(const Job& job, const Rule* matched, const Result<PublishAck>& sent,
                              const std::string& job_id);
  IntakeOutcome hold(Job& job, const JobView& view, const Policy& policy, const Rule& rule);
  // The 503 "overloaded" answer (not counted: the caller counts the outcome it returns).
  IntakeOutcome answerOverloaded(const Job& job);
  // `view`: the policy's view of the job when it exists (its payload parse is reused).
  IntakeOutcome refuse(const Job& job, Outcome status, int code, std::string body,
                       const Event& event, const JobView* view = nullptr);
  bool reply(const Job& job, Outcome status, const std::string& body);
  static std::string jobIdForEvent(const Job& job, const Headers& headers, const JobView* view = nullptr);

  Services s_;
  Publisher& replies_;
  EventSink& hold_events_;
  ReplyGuard guard_;
  WorkPool* hold_pool_ = nullptr;
  OrderedPipeline* receipt_pipeline_ = nullptr;
  HeldCallback on_held_;
  // Bytes of held records whose create is in flight (core intake): at most
  // concurrency.intake_bytes (or one record); a hold beyond it is answered 503 overloaded.
  std::mutex inflight_mutex_;
  std::int64_t inflight_bytes_ = 0;
};

}  // namespace countersign
