#include "countersign/intake.hpp"

#include <memory>
#include <optional>

#include "countersign/events.hpp"
#include "countersign/governance.hpp"
#include "countersign/ingress_reuse.hpp"
#include "countersign/job.hpp"
#include "countersign/json.hpp"
#include "countersign/receipt.hpp"
#include "countersign/subject.hpp"
#include "json_writer.hpp"

namespace countersign {

using detail::JsonObjectWriter;

struct Intake::Job {
  const RouteConfig& route;
  Message msg;  // Countersign-* headers already removed
  UntrustedHeaders untrusted;
  std::string topic;
  std::string target;
  std::string reply_to;     // where to answer (allowed), or empty
  bool forward_reply = false;  // keep msg.reply on the forwarded job
  std::shared_ptr<const Policy> policy;
  const IngressPosition* ingress = nullptr;  // set in JetStream intake mode
};

namespace {

bool reservedMsgId(const Headers& headers) {
  for (const auto& [name, value] : headers) {
    if (equalsIgnoreCase(name, kMsgIdHeader) &&
        (value.starts_with("countersign:") || value.starts_with("countersign-in:"))) {
      return true;
    }
  }
  return false;
}

// At most this many header lines (values) in one job: beyond it the job is refused (413) before
// policy, hash or record look at them. Documented in docs/protocol.md.
constexpr std::size_t kMaxJobHeaders = 1024;

// Headroom for the headers countersign adds on release (ids, snapshot, hash, approvers) and
// its receipt, which repeats them in base64url with the subjects, plus what grows with the
// subjects and the id (see releaseHeadroom).
constexpr std::size_t kReleaseHeaderHeadroom = 3072;

std::size_t releaseHeadroom(const ApprovalRecord& record) {
  return kReleaseHeaderHeadroom + 2 * (record.subject.size() + record.target.size() + 2 * record.id.size());
}

// The approval id of a job whose id is held already by a job of another route or topic: "h-" and
// 32 hex digits of a SHA-256 over route, topic and job id. The input starts with a byte that is
// never part of a job id (held jobs are UTF-8), so no job id hashes to it, and carries the
// lengths, so no other route, topic and id do.
std::string scopedApprovalId(const ApprovalRecord& record) {
  std::string input = "\xff" "scoped:";
  for (const std::string* part : {&record.route, &record.topic}) {
    input += std::to_string(part->size());
    input += ':';
    input += *part;
  }
  input += record.job_id;
  return "h-" + json::sha256Hex(input).substr(0, 32);
}

}  // namespace

bool Intake::reply(const Job& job, Outcome status, const std::string& body) {
  if (job.reply_to.empty()) return false;
  Headers headers{{"Countersign-Status", std::string(wireName(status))}};
  OutMessage out{.subject = job.reply_to, .reply = {}, .headers = &headers, .payload = body};
  auto sent = replies_.publish(out, Delivery::core, std::chrono::milliseconds(0));
  if (!sent) {
    s_.log.warn("reply not sent", {{"subject", job.msg.subject}, {"error", sent.error().message}});
    return false;
  }
  return true;
}

// The producer's job id for an event about a job that has no record: headers first, the payload
// only when they name none. Empty when the producer gave none. `view`: the policy's view of the
// job, when it exists, so that the payload is parsed once for both.
std::string Intake::jobIdForEvent(const Job& job, const Headers& headers, const JobView* view) {
  auto id = jobIdOf(headers, job.untrusted.job_id, nullptr);
  if (!id) {
    if (view != nullptr) {
      if (const rapidjson::Value* parsed = view->payloadJson(); parsed != nullptr && parsed->IsObject()) {
        id = jobIdOf(headers, job.untrusted.job_id, parsed);
      }
    } else if (auto parsed = json::parseStrict(job.msg.payload); parsed && parsed->IsObject()) {
      id = jobIdOf(headers, job.untrusted.job_id, &*parsed);
    }
  }
  return id ? std::move(*id) : std::string();
}

IntakeOutcome Intake::refuse(const Job& job, Outcome status, int code, std::string body,
                             const Event& event, const JobView* view) {
  std::string job_id;
  Event with_id = event;
  if (with_id.job_id.empty()) {
    job_id = jobIdForEvent(job, job.msg.headers, view);
    with_id.job_id = job_id;
  }
  s_.events.emit(with_id);
  IntakeOutcome outcome{.status = status, .code = code, .rule = std::string(event.rule)};
  outcome.replied = reply(job, status, body);
  return outcome;
}

struct Intake::PendingHold {
  Job job;
  ApprovalRecord record;
  std::string value;
};

Intake::Intake(Services services, Publisher* replies, WorkPool* hold_pool, EventSink* hold_events,
               OrderedPipeline* receipt_pipeline)
    : s_(services), replies_(replies ? *replies : services.publisher),
      hold_events_(hold_events ? *hold_events : services.events), guard_(services.config),
      hold_pool_(hold_pool), receipt_pipeline_(receipt_pipeline) {}

IntakeOutcome Intake::onJob(const RouteConfig& route, Message&& message,
                            const IngressPosition* ingress) {
  IntakeOutcome outcome = decide(route, std::move(message), ingress);
  count(outcome);
  return outcome;
}

void Intake::count(const IntakeOutcome& outcome) {
  if (outcome.status == Outcome::queued) return;  // counted when the hold pool has stored it
  s_.metrics.decision(outcome.status == Outcome::approval_required ? wireName(EventKind::held) : wireName(outcome.status),
                      outcome.rule);
}

void Intake::receive(Job& job) const {
  job.untrusted = stripCountersignHeaders(job.msg.headers);
  if (guard_.allowed(job.msg.reply)) {
    job.reply_to = job.msg.reply;
    job.forward_reply = true;
  } else if (job.msg.reply.empty() && job.untrusted.reply_to && guard_.allowed(*job.untrusted.reply_to)) {
    job.reply_to = *job.untrusted.reply_to;
  }
}

IntakeOutcome Intake::overloaded(const RouteConfig& route, Message&& message) {
  Job job{.route = route, .msg = std::move(message)};
  receive(job);
  IntakeOutcome outcome = answerOverloaded(job);
  count(outcome);
  return outcome;
}

IntakeOutcome Intake::answerOverloaded(const Job& job) {
  JsonObjectWriter w(wireName(Outcome::unavailable), 503);
  w.field("reason", "overloaded").field("retryable", true);
  IntakeOutcome outcome{.status = Outcome::unavailable, .code = 503, .rule = "overloaded"};
  outcome.replied = reply(job, Outcome::unavailable, w.finish());
  return outcome;
}

IntakeOutcome Intake::decide(const RouteConfig& route, Message&& message,
                             const IngressPosition* ingress) {
  Job job{.route = route, .msg = std::move(message)};
  job.ingress = ingress;
  receive(job);

  auto topic = subject::topicOf(route.from, job.msg.subject);
  auto target = topic ? subject::targetFor(route.to, *topic) : std::nullopt;
  if (!topic || !target) {
    // Cannot happen for subjects delivered by the route's own subscription; refuse loudly.
    s_.log.error("job subject does not fit its route", {{"subject", job.msg.subject}, {"route", route.name}});
    return IntakeOutcome{.status = Outcome::unroutable, .code = 500};
  }
  job.topic = std::move(*topic);
  job.target = std::move(*target);

  if (job.msg.headers.size() > kMaxJobHeaders) {
    JsonObjectWriter w(wireName(Outcome::too_large), 413);
    w.field("reason", "too_many_headers")
        .field("max_headers", static_cast<std::uint64_t>(kMaxJobHeaders));
    IntakeOutcome outcome = refuse(job, Outcome::too_large, 413, w.finish(),
                                   Event{.event = EventKind::denied, .topic = job.topic, .subject = job.msg.subject,
                                         .rule = "too_many_headers", .reason = "too_large"});
    outcome.ack = IngressAck::term;
    return outcome;
  }

  if (reservedMsgId(job.msg.headers)) {
    JsonObjectWriter w(wireName(Outcome::denied), 403);
    w.field("rule", "reserved_header").field("reason", "reserved_header");
    return refuse(job, Outcome::denied, 403, w.finish(),
                  Event{.event = EventKind::denied, .topic = job.topic, .subject = job.msg.subject,
                        .rule = "reserved_header", .reason = "reserved_header"});
  }

  job.policy = s_.policy.current();
  const Policy& policy = *job.policy;
  JobView view(job.msg.subject, job.topic, job.msg.headers, job.msg.payload, &route.labels);
  const auto started = s_.clock.steady();
  const Verdict verdict = policy.evaluate(view);
  s_.metrics.observeEvaluation(s_.clock.steady() - started);
  const std::string_view rule_id = verdict.ruleId();

  switch (verdict.decision) {
    case Decision::allow:
      return forward(job, verdict.rule, view);
    case Decision::throttle: {
      const auto admission = s_.throttler.admit(*verdict.rule, view, s_.clock.steady());
      if (admission.admitted) return forward(job, verdict.rule, view);
      JsonObjectWriter w(wireName(Outcome::throttled), 429);
      w.field("rule", rule_id)
          .field("retry_after_ms", static_cast<std::int64_t>(admission.retry_after.count()));
      IntakeOutcome outcome =
          refuse(job, Outcome::throttled, 429, w.finish(),
                 Event{.event = EventKind::throttled, .topic = job.topic, .subject = job.msg.subject,
                       .rule = rule_id, .policy_snapshot = policy.snapshot(), .reason = "rate"},
                 &view);
      // JetStream intake loses nothing: the job comes back after the delay.
      outcome.ack = IngressAck::nak;
      outcome.redeliver_after = admission.retry_after;
      return outcome;
    }
    case Decision::deny: {
      // An indeterminate verdict (a condition that could not be checked) fails closed.
      std::string reason = verdict.indeterminate ? "policy_indeterminate"
                           : verdict.rule == nullptr ? "no_rule_matched"
                           : verdict.rule->reason.empty() ? "policy_denied"
                                                          : verdict.rule->reason;
      JsonObjectWriter w(wireName(Outcome::denied), 403);
      w.field("rule", rule_id).field("reason", reason);
      return refuse(job, Outcome::denied, 403, w.finish(),
                    Event{.event = EventKind::denied, .topic = job.topic, .subject = job.msg.subject,
                          .rule = rule_id, .policy_snapshot = policy.snapshot(), .reason = reason},
                    &view);
    }
    case Decision::require_human:
      if (verdict.rule == nullptr) {
        // default_decision: require_human. Hold under a synthetic rule named "default".
        static const Rule kDefaultRule{.id = "default", .decision = Decision::require_human};
        return hold(job, view, policy, kDefaultRule);
      }
      return hold(job, view, policy, *verdict.rule);
  }
  return IntakeOutcome{.status = Outcome::unroutable, .code = 500};
}

IntakeOutcome Intake::forward(Job& job, const Rule* matched, const JobView& view) {
  const std::string_view rule = matched != nullptr ? std::string_view(matched->id) : "default";
  // The job is not needed in its received form any more: its headers go out with it, followed
  // by the rule's Countersign-* headers (built once with the policy).
  // Read before the headers move on (and before a countersign-in: id is added to them).
  std::string job_id = s_.events.allowedEvents() ? jobIdForEvent(job, job.msg.headers, &view) : std::string();
  Headers headers = std::move(job.msg.headers);
  const std::size_t own_headers = headers.size();
  Delivery delivery = Delivery::core;
  // JetStream intake without the producer's own Nats-Msg-Id: the ingress position is the id
  // (docs/protocol.md, "Forward ids"), so a redelivery is dropped by the target stream.
  bool position_id = false;
  if (job.ingress != nullptr) {
    // Acked only once the forward is confirmed: a PubAck from to_stream, else a flush.
    delivery = job.route.to_stream.empty() ? Delivery::core_flush : Delivery::jetstream;
    bool has_id = false;
    for (const auto& header : headers) has_id = has_id || equalsIgnoreCase(header.first, kMsgIdHeader);
    position_id = !has_id;
  }
  if (job.ingress == nullptr && receipt_pipeline_ != nullptr && s_.receipts != nullptr &&
      s_.config.receipts.allowed) {
    receipt::Claims claims = allowedClaims(job, rule, view, headers);
    return signInPipeline(job, matched, std::move(headers), std::move(claims), std::move(job_id));
  }
  auto publish = [&](std::uint64_t epoch) {
    headers.resize(own_headers);
    if (position_id) {
      headers.emplace_back(std::string(kMsgIdHeader),
                           ingressForwardId(job.ingress->stream, job.ingress->sequence, epoch));
    }
    if (s_.receipts != nullptr && s_.config.receipts.allowed) {
      receipt::addHeaders(headers, *s_.receipts, allowedClaims(job, rule, view, headers));
    }
    return publishJob(job, matched, headers, delivery);
  };
  const std::uint64_t epoch = position_id ? job.ingress->epoch : 0;
  auto sent = publish(epoch);
  if (sent && sent->duplicate && position_id && job.ingress->reuse != nullptr) {
    // Either a redelivery (the same id on purpose), or the ingress stream's sequence went back
    // after a crash and another replica has recorded it since this one last looked: then this
    // job reused a forwarded sequence, and under the id of that regression it is new.
    const std::uint64_t now = job.ingress->reuse->reloadedEpoch(job.ingress->sequence, job.ingress->stored_ns);
    if (now != epoch) {
      s_.log.warn("forward id already used before the ingress stream's sequence went back; forwarding under the "
                  "recorded epoch",
                  {{"stream", job.ingress->stream},
                   {"sequence", std::to_string(job.ingress->sequence)},
                   {"epoch", std::to_string(now)}});
      sent = publish(now);
    }
  }
  return settleForward(job, matched, sent, job_id);
}

IntakeOutcome Intake::signInPipeline(Job& job, const Rule* matched, Headers&& headers, receipt::Claims&& claims,
                                     std::string&& job_id) {
  // Everything the forward needs moves along; the policy (and so `matched`) is kept alive by
  // the job's reference to it.
  struct Pending {
    Job job;
    const Rule* matched;
    Headers headers;
    receipt::Claims claims;
    std::string job_id;
  };
  auto pending = std::make_unique<Pending>(
      Pending{std::move(job), matched, std::move(headers), std::move(claims), std::move(job_id)});
  const std::string rule(matched != nullptr ? std::string_view(matched->id) : "default");
  receipt_pipeline_->submit([this, pending = std::move(pending)]() mutable -> OrderedPipeline::Finish {
    // In parallel with other jobs: the canonical JSON, its Ed25519 signature, base64url.
    std::string made = receipt::make(*s_.receipts, pending->claims);
    // In arrival order, one at a time.
    return [this, pending = std::move(pending), made = std::move(made)]() mutable {
      pending->headers.emplace_back(std::string(receipt::kReceiptHeader), std::move(made));
      pending->headers.emplace_back(std::string(receipt::kReceiptKeyHeader), s_.receipts->encodedPublicKey());
      const auto sent = publishJob(pending->job, pending->matched, pending->headers, Delivery::core);
      count(settleForward(pending->job, pending->matched, sent, pending->job_id));
    };
  });
  return IntakeOutcome{.status = Outcome::queued, .code = 0, .rule = rule};
}

Result<PublishAck> Intake::publishJob(const Job& job, const Rule* matched, const Headers& headers,
                                      Delivery delivery) {
  OutMessage out{.subject = job.target,
                 .reply = job.forward_reply ? std::string_view(job.msg.reply) : std::string_view(),
                 .headers = &headers,
                 .payload = job.msg.payload,
                 .more_headers = &job.policy->forwardHeaders(matched)};
  return s_.publisher.publish(out, delivery, s_.config.release.publish_timeout);
}

IntakeOutcome Intake::settleForward(const Job& job, const Rule* matched, const Result<PublishAck>& sent,
                                    const std::string& job_id) {
  const std::string_view rule = matched != nullptr ? std::string_view(matched->id) : "default";
  if (!sent) {
    if (sent.error().code == Errc::too_large) {
      JsonObjectWriter w(wireName(Outcome::too_large), 413);
      w.field("max_payload", static_cast<std::uint64_t>(s_.publisher.maxPayload()));
      IntakeOutcome outcome = refuse(job, Outcome::too_large, 413, w.finish(),
                                     Event{.event = EventKind::denied, .topic = job.topic, .subject = job.msg.subject,
                                           .rule = rule, .reason = "too_large"});
      outcome.ack = IngressAck::term;
      return outcome;
    }
    s_.log.error("forward failed", {{"subject", job.msg.subject}, {"error", sent.error().message}});
    IntakeOutcome outcome{.status = Outcome::unavailable, .code = 503, .rule = std::string(rule),
                          .ack = IngressAck::nak, .redeliver_after = std::chrono::milliseconds(1000)};
    JsonObjectWriter w(wireName(Outcome::unavailable), 503);
    w.field("retryable", true);
    outcome.replied = reply(job, Outcome::unavailable, w.finish());
    return outcome;
  }
  if (s_.events.allowedEvents()) {
    s_.events.emit(Event{.event = EventKind::allowed, .job_id = job_id, .topic = job.topic, .subject = job.msg.subject,
                         .rule = rule, .policy_snapshot = job.policy->snapshot()});
  }
  // The worker answers the producer itself when the reply subject was forwarded. A producer
  // that asked through Countersign-Reply-To (JetStream intake, or a plain publish) hears it here.
  IntakeOutcome outcome{.status = Outcome::allowed, .code = 200, .rule = std::string(rule), .forwarded = true};
  if (!job.forward_reply && !job.reply_to.empty()) {
    JsonObjectWriter w(wireName(Outcome::allowed), 200);
    w.field("rule", rule);
    outcome.replied = reply(job, Outcome::allowed, w.finish());
  }
  return outcome;
}

receipt::Claims Intake::allowedClaims(const Job& job, std::string_view rule, const JobView& view,
                                      const Headers& headers) const {
  std::string msg_id;
  for (const auto& [name, value] : headers) {
    if (equalsIgnoreCase(name, kMsgIdHeader)) {
      msg_id = value;
      break;
    }
  }
  // The hash leaves out Nats-* headers, so the dedup id added before does not change it.
  return receipt::Claims{.job_hash = jobHash(job.msg.subject, job.target, headers, view.payloadJson(),
                                             job.msg.payload),
                         .policy_snapshot = job.policy->snapshot(),
                         .rule = std::string(rule),
                         .decided_at = formatRfc3339(s_.clock.now()),
                         .subject = job.msg.subject,
                         .target = job.target,
                         .msg_id = std::move(msg_id)};
}

IntakeOutcome Intake::hold(Job& job, const JobView& view, const Policy& policy, const Rule& rule) {
  // The record is JSON and is released as it is stored: bytes that are not UTF-8 in the subject
  // or a header could not be kept exactly, so such a job is refused rather than altered.
  std::string_view bad_field;
  if (!json::isValidUtf8(job.msg.subject)) bad_field = "subject";
  for (const auto& [name, value] : job.msg.headers) {
    if (bad_field.empty() && !(json::isValidUtf8(name) && json::isValidUtf8(value))) bad_field = "headers";
  }
  if (!bad_field.empty()) {
    JsonObjectWriter w(wireName(Outcome::bad_request), 400);
    w.field("field", bad_field).field("reason", "invalid_utf8");
    IntakeOutcome outcome =
        refuse(job, Outcome::bad_request, 400, w.finish(),
               Event{.event = EventKind::denied, .topic = job.topic, .subject = job.msg.subject, .rule = rule.id,
                     .reason = "invalid_utf8"});
    outcome.ack = IngressAck::term;
    return outcome;
  }
  // One parse: the same strict parse decides "JSON or bytes" for the id, the hash and the record.
  const rapidjson::Value* payload_json = view.payloadJson();

  const auto job_id = jobIdOf(job.msg.headers, job.untrusted.job_id, payload_json);
  ApprovalRecord record;
  record.job_id = job_id ? *job_id : s_.ids.newId();
  record.id = approvalIdFor(record.job_id);
  record.route = job.route.name;
  record.subject = job.msg.subject;
  record.target = job.target;
  record.topic = job.topic;
  for (const auto& header : job.msg.headers) {
    if (!isNatsHeader(header.first)) record.headers.push_back(header);
  }
  record.payload = job.msg.payload;
  record.payload_is_json = payload_json != nullptr;
  record.job_hash = jobHash(job.msg.subject, job.target, job.msg.headers, payload_json, job.msg.payload);
  record.policy_snapshot = policy.snapshot();
  record.rule = rule.id;
  record.requester = readRequester(rule.human.requester, view);
  if (rule.human.separation_of_duties && record.requester.empty()) {
    // Whose job it is cannot be told, so nobody could be kept from approving their own: fail closed.
    JsonObjectWriter w(wireName(Outcome::denied), 403);
    w.field("rule", rule.id).field("reason", "requester_missing");
    return refuse(job, Outcome::denied, 403, w.finish(),
                  Event{.event = EventKind::denied, .approval_id = record.id, .topic = job.topic,
                        .subject = job.msg.subject, .rule = rule.id, .reason = "requester_missing"});
  }
  const auto now = s_.clock.now();
  record.created_at = formatRfc3339(now);
  Governance(s_.config.approvers ? &*s_.config.approvers : nullptr).bind(record, rule, now);
  if (rule.human.timeout) {
    record.expires_at = formatRfc3339(now + *rule.human.timeout);
    record.on_timeout = rule.human.on_timeout;
  }

  if (s_.tags != nullptr) record.tag = s_.tags->recordTag(record);
  std::string value = toJson(record);
  const std::size_t max_payload = s_.publisher.maxPayload();
  if (value.size() > max_payload ||
      wireSize(record.headers, record.payload.size()) + releaseHeadroom(record) > max_payload) {
    JsonObjectWriter w(wireName(Outcome::too_large), 413);
    w.field("max_payload", static_cast<std::uint64_t>(max_payload));
    IntakeOutcome outcome =
        refuse(job, Outcome::too_large, 413, w.finish(),
               Event{.event = EventKind::denied, .approval_id = record.id, .job_id = record.job_id, .topic = job.topic,
                     .subject = job.msg.subject, .rule = rule.id, .reason = "too_large"});
    outcome.ack = IngressAck::term;
    return outcome;
  }

  if (hold_pool_ != nullptr && job.ingress == nullptr) {
    // Core intake: the delivery thread does not wait for the KV create; it takes the next job
    // while many creates are in flight. JetStream intake stays in line: its ack waits.
    IntakeOutcome queued{.status = Outcome::queued, .code = 0, .rule = record.rule, .approval_id = record.id};
    // Bounded in bytes as well as in number: a job whose record does not fit beside the creates
    // in flight is answered 503 overloaded at once. Waiting for room here would stop this
    // delivery thread, and the client library drops, unanswered, what then piles up behind it.
    const auto size = static_cast<std::int64_t>(value.size() + record.payload.size());
    {
      const std::lock_guard lock(inflight_mutex_);
      if (inflight_bytes_ != 0 && inflight_bytes_ + size > s_.config.concurrency.intake_bytes) {
        return answerOverloaded(job);
      }
      inflight_bytes_ += size;
    }
    auto pending = std::make_shared<PendingHold>(PendingHold{std::move(job), std::move(record), std::move(value)});
    s_.store.createAsync(pending->record.id, pending->value, [this, pending, size](Result<std::uint64_t> created) {
      {
        const std::lock_guard lock(inflight_mutex_);
        inflight_bytes_ -= size;
      }
      if (!created && created.error().code == Errc::exists) {
        // The id is held already: telling a repeat from a conflict takes reads, which must
        // not wait on the store's answer thread. Handed over without waiting for room: this is
        // the client library's PubAck thread, and every other create's answer waits behind it.
        hold_pool_->post(pending->record.id, [this, pending, created = std::move(created)]() mutable {
          count(settle(pending->job, pending->record, std::move(created)));
        });
        return;
      }
      count(settle(pending->job, pending->record, std::move(created)));
    });
    return queued;
  }
  return settle(job, record, s_.store.create(record.id, value));
}

IntakeOutcome Intake::settle(const Job& job, const ApprovalRecord& record, Result<std::uint64_t> created) {
  if (!created && created.error().code == Errc::exists) {
    auto existing = s_.store.get(record.id);
    auto stored = existing ? parseApprovalRecord(existing->value) : std::unexpected(existing.error());
    if (stored && (stored->route != record.route || stored->topic != record.topic)) {
      // Job ids are unique per route and topic: a job of another route or topic that came first
      // with this id (by chance, or to squat it) neither blocks this one nor takes its approvals.
      // This job is held under an id scoped by its route and topic (the 202 names it).
      if (std::string scoped = scopedApprovalId(record); scoped != record.id) {
        ApprovalRecord moved = record;
        moved.id = std::move(scoped);
        if (s_.tags != nullptr) moved.tag = s_.tags->recordTag(moved);
        s_.log.info("job id held by another route or topic: held under a scoped approval id",
                    {{"job_id", record.job_id}, {"approval_id", moved.id}, {"other_topic", stored->topic}});
        auto again = s_.store.create(moved.id, toJson(moved));
        return settle(job, moved, std::move(again));
      }
    }
    if (stored && stored->job_hash == record.job_hash) {
      // The same job again (a producer retry, or a JetStream redelivery after a crash that may
      // have lost the first `held` event): tell reviewers again while it is undecided, and
      // answer exactly as the first time.
      if (auto decided = s_.store.get(decisionKey(stored->id));
          !decided && decided.error().code == Errc::not_found) {
        hold_events_.emit(Event{.event = EventKind::held, .approval_id = stored->id, .job_id = stored->job_id, .topic = stored->topic,
                             .subject = stored->subject, .rule = stored->rule, .job_hash = stored->job_hash,
                             .policy_snapshot = stored->policy_snapshot, .reason = "redelivered",
                             .payload = stored->payload});
      }
      JsonObjectWriter w(wireName(Outcome::approval_required), 202);
      w.field("approval_id", stored->id)
          .field("job_hash", stored->job_hash)
          .field("policy_snapshot", stored->policy_snapshot)
          .field("rule", stored->rule);
      IntakeOutcome outcome{.status = Outcome::approval_required, .code = 202, .rule = stored->rule,
                            .approval_id = stored->id};
      outcome.replied = reply(job, Outcome::approval_required, w.finish());
      return outcome;
    }
    if (stored || stored.error().code == Errc::parse_error) {
      JsonObjectWriter w(wireName(Outcome::conflict), 409);
      w.field("reason", "id_conflict").field("approval_id", record.id);
      return refuse(job, Outcome::conflict, 409, w.finish(),
                    Event{.event = EventKind::conflict, .approval_id = record.id, .job_id = record.job_id, .topic = job.topic,
                          .subject = job.msg.subject, .rule = record.rule, .job_hash = record.job_hash,
                          .reason = "id_conflict"});
    }
    created = std::unexpected(stored.error());
  }
  if (!created) {
    // Fail closed: nothing forwarded, nothing held; the producer may send again.
    s_.log.error("hold failed", {{"approval_id", record.id}, {"error", created.error().message}});
    IntakeOutcome outcome{.status = Outcome::unavailable, .code = 503, .rule = record.rule, .approval_id = record.id,
                          .ack = IngressAck::nak, .redeliver_after = std::chrono::milliseconds(1000)};
    JsonObjectWriter w(wireName(Outcome::unavailable), 503);
    w.field("retryable", true);
    outcome.replied = reply(job, Outcome::unavailable, w.finish());
    return outcome;
  }

  if (on_held_) {
    // The replayer looks at the record again at its deadline or first escalation step.
    std::chrono::system_clock::time_point held_at;
    if (!parseRfc3339(record.created_at, held_at)) held_at = {};
    on_held_(record.id, nextAttention(record, held_at));
  }
  JsonObjectWriter w(wireName(Outcome::approval_required), 202);
  w.field("approval_id", record.id)
      .field("job_hash", record.job_hash)
      .field("policy_snapshot", record.policy_snapshot)
      .field("rule", record.rule);
  IntakeOutcome outcome{.status = Outcome::approval_required, .code = 202, .rule = record.rule, .approval_id = record.id};
  // The event before the answer: once the producer has the id, an approval may follow at once,
  // and the audit trail must not show it before the hold.
  hold_events_.emit(Event{.event = EventKind::held, .approval_id = record.id, .job_id = record.job_id, .topic = job.topic,
                          .subject = job.msg.subject, .rule = record.rule, .job_hash = record.job_hash,
                          .policy_snapshot = record.policy_snapshot, .payload = record.payload});
  outcome.replied = reply(job, Outcome::approval_required, w.finish());
  return outcome;
}

}  // namespace countersign
