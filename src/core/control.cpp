#include "countersign/control.hpp"

#include <utility>

#include <algorithm>
#include <array>

#include "countersign/faults.hpp"
#include "countersign/job.hpp"
#include "countersign/json.hpp"
#include "countersign/redact.hpp"
#include "countersign/subject.hpp"
#include "countersign/trim_memory.hpp"
#include "json_writer.hpp"

namespace countersign {

using detail::JsonObjectWriter;

namespace {

constexpr int kMaxListLimit = 1000;

ControlReply reply(Outcome status, int code, JsonObjectWriter& w, std::string_view reason = {}) {
  return ControlReply{status, code, w.finish(), std::string(reason)};
}

JsonObjectWriter start(Outcome status, int code) { return JsonObjectWriter(wireName(status), code); }

ControlReply badRequest(std::string_view field, std::string_view reason) {
  auto w = start(Outcome::bad_request, 400);
  w.field("field", field).field("reason", reason);
  return reply(Outcome::bad_request, 400, w);
}

ControlReply notFound(std::string_view id) {
  auto w = start(Outcome::not_found, 404);
  w.field("approval_id", id);
  return reply(Outcome::not_found, 404, w);
}

ControlReply conflict(std::string_view id, std::string_view reason) {
  auto w = start(Outcome::conflict, 409);
  w.field("approval_id", id).field("reason", reason);
  return reply(Outcome::conflict, 409, w, reason);
}

// The store did not confirm: the outcome of this call is unknown, nothing was published by it.
ControlReply lockBusy(std::string_view id) {
  auto w = start(Outcome::conflict, 409);
  w.field("approval_id", id).field("reason", "lock_busy").field("retryable", true);
  return reply(Outcome::conflict, 409, w, "lock_busy");
}

ControlReply refused(Refusal refusal, std::string_view id) {
  auto w = start(statusOf(refusal), httpCode(refusal));
  w.field("reason", toString(refusal)).field("approval_id", id);
  return reply(statusOf(refusal), httpCode(refusal), w, toString(refusal));
}

// Reviewers may name a job by its approval id or by its original job id.
std::string normaliseId(std::string_view id) {
  if (isValidApprovalId(id)) return std::string(id);  // includes the h-<32 hex> form
  return approvalIdFor(id);
}

// Recomputes the job hash from the record's stored bytes (the integrity check at approve time).
std::string recomputeHash(const ApprovalRecord& record, bool& payload_ok) {
  payload_ok = true;
  if (record.payload_is_json) {
    auto parsed = json::parseStrict(record.payload);
    if (!parsed) {
      payload_ok = false;
      return {};
    }
    return jobHash(record.subject, record.target, record.headers, &*parsed, record.payload);
  }
  return jobHash(record.subject, record.target, record.headers, nullptr, record.payload);
}

bool pastDeadline(const ApprovalRecord& record, std::chrono::system_clock::time_point now) {
  if (record.expires_at.empty()) return false;
  std::chrono::system_clock::time_point deadline;
  if (!parseRfc3339(record.expires_at, deadline)) return false;
  return now >= deadline;
}

}  // namespace

std::string_view toString(ControlOp op) {
  switch (op) {
    case ControlOp::approve: return "approve";
    case ControlOp::reject: return "reject";
    case ControlOp::get: return "get";
    case ControlOp::list: return "list";
  }
  return "get";
}

std::optional<ControlOp> parseControlOp(std::string_view text) {
  for (const auto op : {ControlOp::approve, ControlOp::reject, ControlOp::get, ControlOp::list}) {
    if (toString(op) == text) return op;
  }
  return std::nullopt;
}

Control::Control(Services services, Releaser& releaser)
    : s_(services),
      releaser_(releaser),
      guard_(services.config),
      governance_(services.config.approvers ? &*services.config.approvers : nullptr) {}

ControlReply Control::onRequest(ControlOp op, const Message& request) {
  ControlReply reply_to_send = decideRequest(op, request.payload);
  answer(request, reply_to_send);
  if (reply_to_send.after) std::exchange(reply_to_send.after, nullptr)();
  return reply_to_send;
}

void Control::answer(const Message& request, const ControlReply& reply_to_send) {
  if (guard_.allowed(request.reply)) {
    Headers headers{{"Countersign-Status", std::string(wireName(reply_to_send.status))}};
    OutMessage out{.subject = request.reply, .reply = {}, .headers = &headers, .payload = reply_to_send.body};
    auto sent = s_.publisher.publish(out, Delivery::core, std::chrono::milliseconds(0));
    if (!sent) s_.log.warn("control reply not sent", {{"error", sent.error().message}});
  } else if (!request.reply.empty()) {
    s_.log.warn("control reply subject not allowed", {{"reply", request.reply}});
  }
}

ControlReply Control::operatorRelease(std::string_view body) {
  auto parsed = json::parseStrict(body);
  if (!parsed || !parsed->IsObject()) return badRequest("body", "not a JSON object");
  auto text = [&](const char* name) -> std::optional<std::string> {
    const auto it = parsed->FindMember(name);
    if (it == parsed->MemberEnd() || !it->value.IsString()) return std::nullopt;
    return std::string(it->value.GetString(), it->value.GetStringLength());
  };
  const auto raw_id = text("id");
  if (!raw_id || raw_id->empty()) return badRequest("id", "required string");
  const auto who = text("operator");
  if (!who || who->empty()) return badRequest("operator", "required string");
  const auto mode = text("mode");
  if (!mode || (*mode != "force" && *mode != "mark_released")) {
    return badRequest("mode", "expected force or mark_released");
  }
  const std::string id = normaliseId(*raw_id);
  auto entry = s_.store.get(id);
  if (!entry) return entry.error().code == Errc::not_found ? notFound(id) : lockBusy(id);
  auto record = parseApprovalRecord(entry->value);
  if (!record) return conflict(id, "job_changed");
  auto decided = s_.store.get(decisionKey(id));
  if (!decided) return decided.error().code == Errc::not_found ? conflict(id, "not_approved") : lockBusy(id);
  auto decision = parseDecisionRecord(decided->value);
  if (!decision || decision->decision != FinalDecision::approved) return conflict(id, "not_approved");
  if (s_.store.get(releasedKey(id))) {
    auto w = start(Outcome::already_released, 200);
    w.field("approval_id", id);
    return reply(Outcome::already_released, 200, w);
  }
  const std::string by = "operator:" + *who;
  if (*mode == "mark_released") {
    const std::string now = formatRfc3339(s_.clock.now());
    const ReleasedRecord released{.at = now, .msg_id = "", .stream = "", .sequence = 0, .by = by};
    auto created = s_.store.create(releasedKey(id), toJson(released));
    if (!created) {
      if (created.error().code != Errc::exists) return lockBusy(id);
      auto w = start(Outcome::already_released, 200);
      w.field("approval_id", id);
      return reply(Outcome::already_released, 200, w);
    }
    (void)updateRecord(s_.store, id, [&](ApprovalRecord& r) {
      r.state = ApprovalState::released;
      r.released_at = now;
      return true;
    });
    s_.events.emit(Event{.event = EventKind::released, .approval_id = id, .job_id = record->job_id, .topic = record->topic,
                         .subject = record->subject, .rule = record->rule, .job_hash = record->job_hash,
                         .policy_snapshot = decision->policy_snapshot, .actor = by,
                         .reason = "marked_released"});
    auto w = start(Outcome::released, 200);
    w.field("approval_id", id).field("published", false);
    return reply(Outcome::released, 200, w);
  }
  // force: claim the next replay attempt so no replayer publishes at the same time.
  auto keys = s_.store.groupKeys(id);
  if (!keys) return lockBusy(id);
  const std::string claim_prefix = id + "/replay/";
  int claims = 0;
  for (const auto& key : *keys) claims += key.starts_with(claim_prefix) ? 1 : 0;
  if (!s_.store.create(replayKey(id, claims + 1), by)) return lockBusy(id);
  const ReleaseOutcome outcome = releaser_.release(*record, *decision, by);
  if (!outcome.published) {
    auto w = start(Outcome::unavailable, 503);
    w.field("approval_id", id).field("retryable", true);
    if (outcome.error) w.field("error", outcome.error->message);
    return reply(Outcome::unavailable, 503, w);
  }
  auto w = start(Outcome::released, 200);
  w.field("approval_id", id).field("published", true).field("msg_id", outcome.msg_id);
  return reply(Outcome::released, 200, w);
}

ControlReply Control::handle(const ControlRequest& request) {
  ControlReply answer = decideRequest(request);
  if (answer.after) std::exchange(answer.after, nullptr)();
  return answer;
}

ControlReply Control::handle(ControlOp op, std::string_view body) {
  ControlReply answer = decideRequest(op, body);
  if (answer.after) std::exchange(answer.after, nullptr)();
  return answer;
}

ControlReply Control::decideRequest(ControlOp op, std::string_view body) {
  auto request = parseControlRequest(op, body);
  if (!request) return std::move(request.error());
  return decideRequest(*request);
}

std::expected<ControlRequest, ControlReply> parseControlRequest(ControlOp op, std::string_view body) {
  // An empty body is an empty request (useful for `list`).
  auto parsed = json::parseStrict(body.empty() ? std::string_view("{}") : body);
  if (!parsed) return std::unexpected(badRequest("body", "not a JSON object: " + parsed.error().message));
  if (!parsed->IsObject()) return std::unexpected(badRequest("body", "not a JSON object"));
  const rapidjson::Value& doc = *parsed;

  ControlRequest request;
  request.op = op;
  auto readString = [&](const char* name, std::string& out, bool required) -> std::optional<ControlReply> {
    const auto it = doc.FindMember(name);
    if (it == doc.MemberEnd() || it->value.IsNull()) {
      if (required) return badRequest(name, "required");
      return std::nullopt;
    }
    if (!it->value.IsString()) return badRequest(name, "expected a string");
    out.assign(it->value.GetString(), it->value.GetStringLength());
    if (required && out.empty()) return badRequest(name, "must not be empty");
    return std::nullopt;
  };
  auto readOptional = [&](const char* name, std::optional<std::string>& out) -> std::optional<ControlReply> {
    std::string value;
    const auto it = doc.FindMember(name);
    if (it == doc.MemberEnd() || it->value.IsNull()) return std::nullopt;
    if (auto error = readString(name, value, false)) return error;
    out = std::move(value);
    return std::nullopt;
  };
#define COUNTERSIGN_TRY(call) \
  if (auto error = (call)) return std::unexpected(std::move(*error))

  if (op != ControlOp::list) {
    COUNTERSIGN_TRY(readString("id", request.id, true));
    if (request.id.size() > 1024) return std::unexpected(badRequest("id", "longer than 1024 bytes"));
  }
  const bool decides = op == ControlOp::approve || op == ControlOp::reject;
  if (decides) {
    COUNTERSIGN_TRY(readString("approver", request.approver, true));
    COUNTERSIGN_TRY(readString("reason", request.reason, false));
    COUNTERSIGN_TRY(readOptional("job_hash", request.job_hash));
    COUNTERSIGN_TRY(readOptional("policy_snapshot", request.policy_snapshot));
    const bool has_signature = doc.HasMember("signature") || doc.HasMember("key");
    if (has_signature) {
      RequestSignature sig;
      COUNTERSIGN_TRY(readString("signature", sig.signature, true));
      COUNTERSIGN_TRY(readString("key", sig.key, true));
      COUNTERSIGN_TRY(readString("action", sig.action, true));
      COUNTERSIGN_TRY(readString("at", sig.at, true));
      COUNTERSIGN_TRY(readString("via", sig.via, false));
      // What a signature binds must be in the signed text.
      if (!request.job_hash) return std::unexpected(badRequest("job_hash", "required in a signed request"));
      if (!request.policy_snapshot) {
        return std::unexpected(badRequest("policy_snapshot", "required in a signed request"));
      }
      rapidjson::Document unsigned_part;
      unsigned_part.CopyFrom(doc, unsigned_part.GetAllocator());
      unsigned_part.RemoveMember("signature");
      sig.signed_text = json::canonicalize(unsigned_part);
      request.signature = std::move(sig);
    }
  }
  if (op == ControlOp::list) {
    std::string state;
    COUNTERSIGN_TRY(readString("state", state, false));
    if (!state.empty()) {
      request.state = parseApprovalState(state);
      if (!request.state) {
        return std::unexpected(
            badRequest("state", "expected one of pending, approved, released, rejected, expired, release_unknown"));
      }
    }
    if (const auto it = doc.FindMember("limit"); it != doc.MemberEnd() && !it->value.IsNull()) {
      if (!it->value.IsInt()) return std::unexpected(badRequest("limit", "expected an integer"));
      request.limit = it->value.GetInt();
      if (request.limit < 1 || request.limit > kMaxListLimit) {
        return std::unexpected(badRequest("limit", "expected 1 to 1000"));
      }
    }
    COUNTERSIGN_TRY(readString("after", request.after, false));
    COUNTERSIGN_TRY(readString("topic", request.topic, false));
  }
#undef COUNTERSIGN_TRY
  return request;
}

ControlReply Control::decideRequest(const ControlRequest& given) {
  ControlRequest request_copy;
  const ControlRequest* request = &given;
  if (given.op != ControlOp::list && normaliseId(given.id) != given.id) {
    request_copy = given;
    request_copy.id = normaliseId(given.id);
    request = &request_copy;
  }
  switch (request->op) {
    case ControlOp::approve: return counted(approve(*request));
    case ControlOp::reject: return counted(reject(*request));
    case ControlOp::get: return get(*request);
    case ControlOp::list: return list(*request);
  }
  return badRequest("op", "unknown");
}

ControlReply Control::counted(ControlReply answer) {
  if (answer.code == 409 || answer.code == 401 || answer.code == 403) {
    // Conflicts count by their reason (snapshot_changed, job_changed, lock_busy, ...).
    s_.metrics.approval(answer.reason.empty() ? std::string_view("conflict") : std::string_view(answer.reason));
  } else {
    s_.metrics.approval(wireName(answer.status));
  }
  return answer;
}

ControlReply Control::fromDecision(ControlOp op, const std::string& id, const DecisionRecord& decision) {
  if (s_.tags != nullptr && !s_.tags->decisionValid(id, decision)) {
    // A <id>/decision that countersign did not write (made by hand in the bucket): not an answer.
    s_.log.error("decision not written by countersign: not believed", {{"approval_id", id}, {"by", decision.by}});
    return conflict(id, "decision_not_trusted");
  }
  if (decision.decision == FinalDecision::expired) {
    // Every 410 names the deadline (the record's; the decision's time if it cannot be read).
    std::string expires_at = decision.at;
    if (auto entry = s_.store.get(id)) {
      if (auto record = parseApprovalRecord(entry->value); record && !record->expires_at.empty()) {
        expires_at = record->expires_at;
      }
    }
    auto w = start(Outcome::expired, 410);
    w.field("approval_id", id).field("expires_at", expires_at).field("decided_at", decision.at);
    return reply(Outcome::expired, 410, w);
  }
  const bool same = (op == ControlOp::approve) == (decision.decision == FinalDecision::approved);
  if (!same) {
    return conflict(id, decision.decision == FinalDecision::approved ? "already_approved" : "already_rejected");
  }
  const Outcome status =
      decision.decision == FinalDecision::approved ? Outcome::already_approved : Outcome::already_rejected;
  auto w = start(status, 200);
  w.field("approval_id", id).field("decided_by", decision.by).field("decided_at", decision.at);
  if (decision.decision == FinalDecision::approved) {
    w.field("released", s_.store.get(releasedKey(id)).has_value());
  }
  return reply(status, 200, w);
}

std::optional<ControlReply> Control::answerFromDecision(ControlOp op, const std::string& id) {
  // A decision that exists answers every later call, whatever the record says.
  auto existing = s_.store.get(decisionKey(id));
  if (!existing) {
    if (existing.error().code == Errc::not_found) return std::nullopt;
    return lockBusy(id);
  }
  auto parsed = parseDecisionRecord(existing->value);
  if (!parsed) return conflict(id, "job_changed");
  return fromDecision(op, id, *parsed);
}

std::optional<ControlReply> Control::decide(ControlOp op, const std::string& id, DecisionRecord& decision) {
  auto created = s_.store.create(decisionKey(id), decisionValue(s_, id, decision));
  if (created) return std::nullopt;  // this call decided
  if (created.error().code != Errc::exists) {
    s_.log.warn("decision not confirmed by the store", {{"approval_id", id}, {"error", created.error().message}});
    return lockBusy(id);
  }
  auto winner = s_.store.get(decisionKey(id));
  if (!winner) return lockBusy(id);
  auto parsed = parseDecisionRecord(winner->value);
  if (!parsed) {
    s_.log.error("unreadable decision", {{"approval_id", id}, {"error", parsed.error().message}});
    return conflict(id, "job_changed");
  }
  return fromDecision(op, id, *parsed);
}

ControlReply Control::expire(const ApprovalRecord& record) {
  DecisionRecord decision{.decision = FinalDecision::expired, .by = "countersign",
                                .at = formatRfc3339(s_.clock.now()), .reason = "timeout",
                                .policy_snapshot = record.policy_snapshot, .job_hash = record.job_hash};
  if (auto answered = decide(ControlOp::approve, record.id, decision)) return *answered;
  markDecided(s_.store, record.id, ApprovalState::expired, decision);
  s_.events.emit(Event{.event = EventKind::expired, .approval_id = record.id, .job_id = record.job_id, .topic = record.topic,
                       .subject = record.subject, .rule = record.rule, .job_hash = record.job_hash,
                       .policy_snapshot = record.policy_snapshot, .reason = "timeout"});
  auto w = start(Outcome::expired, 410);
  w.field("approval_id", record.id).field("expires_at", record.expires_at);
  return reply(Outcome::expired, 410, w);
}

ControlReply Control::jobChanged(const ApprovalRecord& record, std::string_view detail) {
  s_.log.warn("approval refused: job changed", {{"approval_id", record.id}, {"detail", detail}});
  s_.events.emit(Event{.event = EventKind::conflict, .approval_id = record.id, .job_id = record.job_id, .topic = record.topic,
                       .subject = record.subject, .rule = record.rule, .job_hash = record.job_hash,
                       .policy_snapshot = record.policy_snapshot, .reason = "job_changed"});
  return conflict(record.id, "job_changed");
}

ControlReply Control::snapshotChanged(const ApprovalRecord& record, const Policy& policy) {
  s_.events.emit(Event{.event = EventKind::conflict, .approval_id = record.id, .job_id = record.job_id, .topic = record.topic,
                       .subject = record.subject, .rule = record.rule, .job_hash = record.job_hash,
                       .policy_snapshot = record.policy_snapshot, .reason = "snapshot_changed"});
  const RouteConfig* route = routeFor(s_.config, record);
  JobView view(record.subject, record.topic, record.headers, record.payload,
               route ? &route->labels : nullptr);
  const Verdict verdict = policy.evaluate(view);
  if (verdict.decision == Decision::deny) {
    DecisionRecord decision{.decision = FinalDecision::rejected, .by = "countersign",
                                  .at = formatRfc3339(s_.clock.now()), .reason = "policy_denied",
                                  .policy_snapshot = policy.snapshot(), .job_hash = record.job_hash};
    if (auto answered = decide(ControlOp::reject, record.id, decision)) {
      // Someone decided first; report the snapshot conflict with what stands.
      if (answered->status == Outcome::already_rejected) {
        auto w = start(Outcome::conflict, 409);
        w.field("approval_id", record.id).field("reason", "snapshot_changed").field("rejected", true);
        return reply(Outcome::conflict, 409, w, "snapshot_changed");
      }
      return *answered;
    }
    markDecided(s_.store, record.id, ApprovalState::rejected, decision);
    s_.events.emit(Event{.event = EventKind::rejected, .approval_id = record.id, .job_id = record.job_id, .topic = record.topic,
                         .subject = record.subject, .rule = verdict.ruleId(), .job_hash = record.job_hash,
                         .policy_snapshot = policy.snapshot(), .reason = "policy_denied"});
    auto w = start(Outcome::conflict, 409);
    w.field("approval_id", record.id).field("reason", "snapshot_changed").field("rejected", true)
        .field("policy_snapshot", policy.snapshot());
    return reply(Outcome::conflict, 409, w, "snapshot_changed");
  }
  // Re-bind to the policy in force; approvals and votes given under the old one are dismissed
  // (votes live under the binding number, which moves on), and the rule's governance is read
  // again.
  const std::string rule(verdict.ruleId());
  static const Rule kDefaultRule{.id = "default", .decision = Decision::require_human};
  const Rule& governing = verdict.rule != nullptr ? *verdict.rule : kDefaultRule;
  std::chrono::system_clock::time_point held_at = s_.clock.now();
  (void)parseRfc3339(record.created_at, held_at);
  auto rebound = updateRecord(s_.store, record.id, [&](ApprovalRecord& r) {
    if (r.policy_snapshot == policy.snapshot()) return false;
    r.policy_snapshot = policy.snapshot();
    r.rule = rule;
    r.approvals.clear();
    r.votes.clear();
    ++r.binding;
    governance_.bind(r, governing, held_at);
    return true;
  });
  if (!rebound) return lockBusy(record.id);
  if (on_rebound_) on_rebound_(record.id, nextAttention(*rebound, held_at));
  s_.events.emit(Event{.event = EventKind::held, .approval_id = record.id, .job_id = record.job_id, .topic = record.topic,
                       .subject = record.subject, .rule = rule, .job_hash = record.job_hash,
                       .policy_snapshot = policy.snapshot(), .reason = "snapshot_changed", .payload = record.payload});
  auto w = start(Outcome::conflict, 409);
  w.field("approval_id", record.id).field("reason", "snapshot_changed")
      .field("policy_snapshot", policy.snapshot());
  return reply(Outcome::conflict, 409, w, "snapshot_changed");
}

ControlReply Control::approve(const Request& request) {
  const auto started = s_.clock.steady();
  const std::string& id = request.id;
  // Who acts is settled before anything is read: an unproved caller learns nothing.
  auto actor = governance_.identify(
      DecisionClaim{"approve", request.approver, request.signature ? &*request.signature : nullptr,
                    request.authenticated},
      s_.clock.now());
  if (!actor) return refused(actor.error(), id);
  auto entry = s_.store.get(id);
  if (!entry) return entry.error().code == Errc::not_found ? notFound(id) : lockBusy(id);

  auto record = parseApprovalRecord(entry->value);
  const auto policy = s_.policy.current();
  // The first reason not to approve, found without side effects. With none, the create of
  // <id>/decision is next and finds an earlier decision by itself; with one, an existing
  // decision answers first: it answers every later call, whatever the record says.
  enum class Problem { none, unreadable, expired, reviewer_hash, bytes_changed, new_policy, reviewer_snapshot, not_pending };
  const auto problem = [&] {
    if (!record || record->id != id) return Problem::unreadable;
    // With on_timeout: allow the deadline releases the job; a human may still decide before that.
    if (record->on_timeout != "allow" && pastDeadline(*record, s_.clock.now())) return Problem::expired;
    if (request.job_hash && *request.job_hash != record->job_hash) return Problem::reviewer_hash;
    bool payload_ok = true;
    if (recomputeHash(*record, payload_ok) != record->job_hash || !payload_ok) return Problem::bytes_changed;
    if (record->policy_snapshot != policy->snapshot()) return Problem::new_policy;
    if (request.policy_snapshot && *request.policy_snapshot != record->policy_snapshot) {
      return Problem::reviewer_snapshot;
    }
    if (record->state != ApprovalState::pending) return Problem::not_pending;
    return Problem::none;
  }();
  if (problem != Problem::unreadable) {
    // The rule's approvers, escalations and separation of duties, as the record holds them.
    if (auto refusal = governance_.mayDecide(*record, *actor, s_.clock.now())) return refused(*refusal, id);
  }
  if (problem != Problem::none) {
    if (auto answered = answerFromDecision(ControlOp::approve, id)) return *answered;
    switch (problem) {
      case Problem::unreadable: {
        ApprovalRecord shell;
        shell.id = id;
        return jobChanged(shell, record ? "record id differs from its key" : record.error().message);
      }
      case Problem::expired: return expire(*record);
      case Problem::reviewer_hash: return jobChanged(*record, "the reviewer saw another job hash");
      case Problem::bytes_changed: return jobChanged(*record, "the record no longer hashes to its job hash");
      case Problem::new_policy: return snapshotChanged(*record, *policy);
      case Problem::reviewer_snapshot: return conflict(id, "snapshot_changed");
      case Problem::not_pending:  // the view lags the keys: no decision, so decide
      case Problem::none: break;
    }
  }
  if (!record->quorum.single()) return vote(*record, *entry, *actor, request, started);

  // One approver decides: the decision itself is the vote.
  DecisionRecord decision{.decision = FinalDecision::approved, .by = actor->approver,
                                .at = formatRfc3339(s_.clock.now()), .reason = request.reason,
                                .policy_snapshot = record->policy_snapshot, .job_hash = record->job_hash,
                                .via = actor->via};
  if (auto answered = decide(ControlOp::approve, id, decision)) return *answered;
  crashPoint("after_approve_cas");
  const ApprovalVote approval{decision.by, decision.at, decision.reason, actor->via};
  return release(*record, *entry, decision, approval, started);
}

ControlReply Control::release(const ApprovalRecord& record, const KvEntry& entry,
                              const DecisionRecord& decision, const ApprovalVote& approval,
                              std::chrono::steady_clock::time_point started) {
  const std::string& id = record.id;
  s_.events.emit(Event{.event = EventKind::approved, .approval_id = id, .job_id = record.job_id, .topic = record.topic,
                       .subject = record.subject, .rule = record.rule, .job_hash = record.job_hash,
                       .policy_snapshot = record.policy_snapshot, .actor = decision.by,
                       .reason = decision.reason, .confirmed_by_next = true});

  std::function<void()> tail;
  const ReleaseOutcome released = releaser_.release(record, decision, "approve", &approval, &entry, &tail);
  if (released.published) s_.metrics.observeApproveToRelease(s_.clock.steady() - started);
  if (!released.published) {
    // The view says approved (the decision key already does); the replayer finishes it.
    markDecided(s_.store, id, ApprovalState::approved, decision, &approval);
    auto w = start(Outcome::approved, 202);
    w.field("approval_id", id).field("released", false).field("retryable", false);
    if (released.error) w.field("error", released.error->message);
    return reply(Outcome::approved, 202, w);
  }
  auto w = start(Outcome::approved, 200);
  w.field("approval_id", id).field("released", true).field("msg_id", released.msg_id)
      .field("target", record.target);
  if (!record.quorum.single()) w.field("approved_by", decision.by);
  ControlReply answer = reply(Outcome::approved, 200, w);
  // The job is out (PubAck, or a flush on core routes): the approver hears it now; <id>/released,
  // the view and the `released` event follow.
  answer.after = std::move(tail);
  return answer;
}

Result<std::vector<std::string>> Control::countVotes(const ApprovalRecord& record, std::uint64_t through_revision) {
  return countersign::countVotes(s_, record, governance_.voters(record, s_.clock.now()), nullptr, through_revision);
}

ControlReply Control::vote(const ApprovalRecord& record, const KvEntry& entry, const Actor& actor,
                           const Request& request, std::chrono::steady_clock::time_point started) {
  const std::string& id = record.id;
  const std::string now = formatRfc3339(s_.clock.now());
  VoteRecord cast{.approver = actor.approver, .at = now, .via = actor.via, .reason = request.reason,
                  .job_hash = record.job_hash, .policy_snapshot = record.policy_snapshot, .key = actor.key,
                  .signature = request.signature ? request.signature->signature : std::string()};
  const auto tally = [&](Outcome status, int code, const std::vector<std::string>& voters) {
    auto w = start(status, code);
    w.field("approval_id", id).field("votes", static_cast<int>(voters.size()))
        .field("quorum", record.quorum.needed());
    w.strings("voters", voters);
    return reply(status, code, w);
  };
  const std::string key = voteKey(id, record.binding, actor.approver);
  const std::string value = voteValue(s_, key, cast);
  auto created = s_.store.create(key, value);
  if (!created && created.error().code != Errc::exists) return lockBusy(id);
  bool fresh = created.has_value();
  // The count below has every vote written before this one: of two last votes at once (through
  // two replicas), the later one's count has both.
  std::uint64_t revision = fresh ? *created : 0;
  if (!fresh) {
    // Theirs already, unless countersign did not write it (a vote made by hand in the bucket
    // under their name): then their real vote takes its place.
    auto existing = s_.store.get(key);
    if (!existing) return lockBusy(id);
    revision = existing->revision;
    auto stored = parseVoteRecord(existing->value);
    if (!stored || !voteCounts(s_, record, key, *stored)) {
      auto replaced = s_.store.update(key, value, existing->revision);
      if (!replaced) return lockBusy(id);
      revision = *replaced;
      fresh = true;
    }
  }
  if (fresh) {
    s_.events.emit(Event{.event = EventKind::vote, .approval_id = id, .job_id = record.job_id, .topic = record.topic, .subject = record.subject,
                         .rule = record.rule, .job_hash = record.job_hash,
                         .policy_snapshot = record.policy_snapshot, .actor = actor.approver,
                         .reason = request.reason});
  }
  auto voters = countVotes(record, revision);
  if (!voters) return lockBusy(id);
  std::sort(voters->begin(), voters->end());
  if (!governance_.reached(record.quorum, *voters)) {
    if (auto answered = answerFromDecision(ControlOp::approve, id)) return *answered;
    if (!fresh) return tally(Outcome::already_voted, 200, *voters);
    // The record's view follows the keys (best effort: a later vote or the release repairs it).
    (void)updateRecord(s_.store, id, [&](ApprovalRecord& r) {
      if (r.binding != record.binding) return false;
      if (std::any_of(r.votes.begin(), r.votes.end(), [&](const auto& v) { return v.approver == actor.approver; })) {
        return false;
      }
      r.votes.push_back(ApprovalVote{actor.approver, now, request.reason, actor.via});
      return true;
    }, &entry);
    return tally(Outcome::vote_recorded, 202, *voters);
  }
  // Quorum: the first create of <id>/decision releases; everyone else answers from it.
  DecisionRecord decision{.decision = FinalDecision::approved, .by = joinVoters(*voters), .at = now,
                                .reason = request.reason, .policy_snapshot = record.policy_snapshot,
                                .job_hash = record.job_hash};
  if (auto answered = decide(ControlOp::approve, id, decision)) return *answered;
  crashPoint("after_approve_cas");
  return release(record, entry, decision, ApprovalVote{actor.approver, now, request.reason, actor.via}, started);
}

ControlReply Control::reject(const Request& request) {
  const std::string& id = request.id;
  auto actor = governance_.identify(
      DecisionClaim{"reject", request.approver, request.signature ? &*request.signature : nullptr,
                    request.authenticated},
      s_.clock.now());
  if (!actor) return refused(actor.error(), id);
  auto entry = s_.store.get(id);
  if (!entry) return entry.error().code == Errc::not_found ? notFound(id) : lockBusy(id);
  auto record = parseApprovalRecord(entry->value);
  if (record) {
    if (auto refusal = governance_.mayDecide(*record, *actor, s_.clock.now())) return refused(*refusal, id);
  }
  if (auto answered = answerFromDecision(ControlOp::reject, id)) return *answered;
  ApprovalRecord fallback;
  fallback.id = id;
  const ApprovalRecord& r = record ? *record : fallback;
  if (record && r.on_timeout != "allow" && pastDeadline(r, s_.clock.now())) return expire(r);
  // A signed reject names what its signer saw; it applies to that job only.
  if (record && request.job_hash && *request.job_hash != r.job_hash) {
    return jobChanged(r, "the reviewer saw another job hash");
  }
  if (record && request.policy_snapshot && *request.policy_snapshot != r.policy_snapshot) {
    return conflict(id, "snapshot_changed");
  }

  // Any allowed approver's reject decides at once (veto), whatever the quorum.
  DecisionRecord decision{.decision = FinalDecision::rejected, .by = actor->approver,
                                .at = formatRfc3339(s_.clock.now()), .reason = request.reason,
                                .policy_snapshot = r.policy_snapshot, .job_hash = r.job_hash, .via = actor->via};
  if (auto answered = decide(ControlOp::reject, id, decision)) return *answered;
  markDecided(s_.store, id, ApprovalState::rejected, decision);
  s_.events.emit(Event{.event = EventKind::rejected, .approval_id = id, .job_id = r.job_id, .topic = r.topic, .subject = r.subject,
                       .rule = r.rule, .job_hash = r.job_hash, .policy_snapshot = r.policy_snapshot,
                       .actor = decision.by, .reason = decision.reason});
  auto w = start(Outcome::rejected, 200);
  w.field("approval_id", id).field("decided_by", decision.by).field("decided_at", decision.at);
  if (!actor->via.empty()) w.field("via", actor->via);
  return reply(Outcome::rejected, 200, w);
}

ControlReply Control::get(const Request& request) {
  const std::string& id = request.id;
  // The record and the keys that decide its state, read at once: one wait instead of three.
  // The answer is what reading them one after the other gives (a failed read of the released
  // or decision key counts as no key, as it did).
  const std::array<std::string, 3> keys{id, releasedKey(id), decisionKey(id)};
  auto read = s_.store.getMany(keys);
  auto& entry = read[0];
  if (!entry) return entry.error().code == Errc::not_found ? notFound(id) : lockBusy(id);
  auto record = parseApprovalRecord(entry->value);
  if (!record) {
    auto w = start(Outcome::ok, 200);
    w.raw("record", entry->value);
    return reply(Outcome::ok, 200, w);
  }
  // The keys decide; the record's state is only a view of them.
  if (read[1]) {
    record->state = ApprovalState::released;
  } else if (const auto& decided = read[2]) {
    if (auto d = parseDecisionRecord(decided->value)) {
      if (record->state != ApprovalState::release_unknown) {
        record->state = d->decision == FinalDecision::approved   ? ApprovalState::approved
                        : d->decision == FinalDecision::rejected ? ApprovalState::rejected
                                                                 : ApprovalState::expired;
      }
    }
  }
  // Votes as the keys say (the record's list is a view that may lag).
  std::vector<std::string> voters;
  if (!record->quorum.single() && record->state == ApprovalState::pending) {
    if (auto counted = countVotes(*record)) voters = std::move(*counted);
    std::sort(voters.begin(), voters.end());
  }
  // What leaves countersign is redacted as configured (the stored record keeps the bytes).
  const bool redacted = !s_.config.events.redact.empty();
  if (redacted) {
    record->payload = redactPayload(record->payload, s_.config.events.redact);
    record->payload_is_json = true;
  }
  auto w = start(Outcome::ok, 200);
  w.raw("record", toJson(*record));
  if (redacted) w.field("payload_redacted", true);
  if (!record->quorum.single() && record->state == ApprovalState::pending) {
    w.field("votes", static_cast<int>(voters.size())).field("quorum", record->quorum.needed());
    w.strings("voters", voters);
  }
  return reply(Outcome::ok, 200, w);
}

namespace {

// A list read from the store over at least this many keys hands the memory it freed back.
constexpr std::size_t kTrimAfterListing = 10000;

// One list item: the same fields whether the index or the records answered.
std::string listItem(const ApprovalSummary& s, ApprovalState state) {
  JsonObjectWriter item;
  item.field("id", s.id)
      .optional("job_id", s.job_id)
      .field("state", toString(state))
      .field("topic", s.topic)
      .field("rule", s.rule)
      .field("created_at", s.created_at)
      .optional("expires_at", s.expires_at)
      .optional("requester", s.requester)
      .field("votes", s.votes)
      .field("quorum", s.quorum);
  if (!s.approvers.empty()) item.strings("approvers", s.approvers);
  return item.finish();
}

}  // namespace

ControlReply Control::list(const Request& request) {
  auto w = start(Outcome::ok, 200);
  auto& out = w.writer();
  if (index_ != nullptr) {
    const ApprovalQuery query{.state = request.state, .topic = request.topic, .after = request.after,
                              .limit = request.limit};
    if (auto page = index_->page(query)) {
      w.key("items");
      out.StartArray();
      for (const auto& summary : page->items) {
        const std::string text = listItem(summary, summary.state());
        out.RawValue(text.data(), text.size(), rapidjson::kObjectType);
      }
      out.EndArray();
      if (!page->next_after.empty()) w.field("next_after", page->next_after);
      return reply(Outcome::ok, 200, w);
    }
  }
  // Without an index: the key listing, then the records a page may show. The listing is sorted
  // in place and searched, not copied into sets: over a million keys each copy held hundreds
  // of MiB while it ran. What the listing freed stays with the allocator (in the arenas of this
  // thread and of cnats' reader), so a large one is handed back once freed (the guard is
  // declared first: it runs after the listing is destroyed).
  struct TrimAfter {
    std::size_t keys = 0;
    ~TrimAfter() {
      if (keys >= kTrimAfterListing) trimMemory();
    }
  } trim_after;
  auto keys = s_.store.listKeys();
  if (!keys) {
    auto failed = start(Outcome::unavailable, 503);
    failed.field("retryable", true).field("reason", keys.error().message);
    return reply(Outcome::unavailable, 503, failed);
  }
  trim_after.keys = keys->size();
  std::sort(keys->begin(), keys->end());
  auto contains = [&](const std::string& key) { return std::binary_search(keys->begin(), keys->end(), key); };
  w.key("items");
  out.StartArray();
  int emitted = 0;
  std::string last;
  bool more = false;
  for (auto it = request.after.empty() ? keys->begin() : std::upper_bound(keys->begin(), keys->end(), request.after);
       it != keys->end(); ++it) {
    const std::string& id = *it;
    if (id.find('/') != std::string::npos) continue;  // a record's other keys
    // What the decisive keys say rules most ids out without reading their record (a record
    // without <id>/decision is pending, one with <id>/released is released).
    if (request.state) {
      const bool released = contains(releasedKey(id));
      const bool decided = contains(decisionKey(id));
      const ApprovalState wanted = *request.state;
      if (released && wanted != ApprovalState::released) continue;
      if (!released && wanted == ApprovalState::released) continue;
      if (!decided && wanted != ApprovalState::pending) continue;
      if (decided && wanted == ApprovalState::pending) continue;
    }
    auto entry = s_.store.get(id);
    if (!entry) continue;  // aged out between keys() and get()
    auto summary = summarizeRecord(entry->value);
    if (!summary) continue;
    summary->released = contains(releasedKey(id));
    if (!summary->released && contains(decisionKey(id))) {
      summary->decided = true;
      if (auto decided = s_.store.get(decisionKey(id))) {
        if (auto d = parseDecisionRecord(decided->value)) summary->decision = d->decision;
      }
    }
    const ApprovalState state = summary->state();
    if (request.state && *request.state != state) continue;
    if (!request.topic.empty() && !subject::matches(request.topic, summary->topic)) continue;
    if (emitted == request.limit) {
      more = true;
      break;
    }
    const std::string text = listItem(*summary, state);
    out.RawValue(text.data(), text.size(), rapidjson::kObjectType);
    ++emitted;
    last = id;
  }
  out.EndArray();
  if (more) w.field("next_after", last);
  return reply(Outcome::ok, 200, w);
}

}  // namespace countersign
