// `countersign watch`: the decisions and releases as they happen, one line in words each.
#include <nats/nats.h>

#include <algorithm>
#include <iostream>
#include <memory>

#include "client.hpp"
#include "commands.hpp"
#include "countersign/events.hpp"
#include "countersign/json.hpp"
#include "nats/audit_reader.hpp"

namespace countersign::cli {
namespace {

std::string str(const rapidjson::Value& obj, const char* name) {
  const auto it = obj.FindMember(name);
  return it != obj.MemberEnd() && it->value.IsString() ? it->value.GetString() : "";
}

std::string withReason(std::string text, const std::string& reason) {
  if (!reason.empty()) text += ": " + reason;
  return text;
}

// What happened, in words, for one event body.
std::string describe(const rapidjson::Value& e) {
  const std::string event = str(e, "event");
  const std::string actor = str(e, "actor");
  const std::string rule = str(e, "rule");
  const std::string reason = str(e, "reason");
  if (event == "held") {
    return withReason("held for approval under rule " + rule, reason == "redelivered" || reason == "snapshot_changed"
                                                                    ? "again (" + reason + ")"
                                                                    : std::string());
  }
  if (event == "approved") return withReason("approved by " + actor, reason);
  if (event == "released") return "released to the workers (approved by " + actor + ")";
  if (event == "replayed") return "released again after an interrupted release (approved by " + actor + ")";
  if (event == "rejected") return withReason("rejected by " + actor, reason);
  if (event == "denied") return withReason("denied by rule " + rule, reason);
  if (event == "throttled") return "throttled by rule " + rule + ": over its rate";
  if (event == "allowed") return "allowed by rule " + rule + " and forwarded";
  if (event == "expired") return withReason("expired, not released", reason);
  if (event == "conflict") return withReason("conflict", reason);
  if (event == "release_unknown") {
    return "release unknown: an operator decides with `countersign release " + str(e, "approval_id") +
           " --force` or `--mark-released`";
  }
  if (event == "vote") return withReason("vote recorded from " + actor, reason);
  if (event == "escalated") return "escalated: more approvers may now decide";
  return withReason(event + (actor.empty() ? "" : " by " + actor), reason);
}

std::string line(const rapidjson::Value& e) {
  std::string id = str(e, "approval_id");
  const std::string job = str(e, "job_id");
  if (id.empty()) id = job.empty() ? "-" : "job " + job;
  else if (!job.empty() && job != id) id += " (job " + job + ")";
  std::string event = str(e, "event");
  event.resize(std::max<std::size_t>(event.size(), 9), ' ');
  return str(e, "at") + "  " + event + "  " + id + "  " + str(e, "topic") + "  " + describe(e);
}

}  // namespace

int watchCommand(const ClientOptions& options, const WatchOptions& watch) {
  Target target;
  int exit_code = kExitOk;
  auto connection = connectFor(options, target, exit_code);
  if (!connection) return exit_code;
  const auto trusted = trustedEventKeys(watch.keys, target);
  if (!trusted) return kExitUsage;
  const std::string subject = target.prefix + ".events.*." + watch.topic;
  natsSubscription* sub = nullptr;
  if (natsConnection_SubscribeSync(&sub, connection->raw(), subject.c_str()) != NATS_OK) {
    std::cerr << "countersign: cannot subscribe to " << subject << " (--topic must be a subject pattern)\n";
    return kExitUsage;
  }
  const RetiringSubscription guard(*connection, sub);  // events go on arriving until the end
  // A refused subscription is only reported asynchronously: the flush makes the server answer.
  (void)connection->flush(std::chrono::milliseconds(options.timeout_ms));
  if (!options.json) {
    std::cerr << "watching " << subject << " on " << target.server << '\n';
    if (trusted->empty()) {
      std::cerr << "(signatures not checked: give --key U... or --config to mark events countersign did not sign)\n";
    }
  }
  int seen = 0;
  long long waited_ms = 0;
  constexpr int kPollMs = 250;
  while (watch.count == 0 || seen < watch.count) {
    const char* text = nullptr;
    if (natsConnection_GetLastError(connection->raw(), &text) == NATS_NOT_PERMITTED) {
      std::cerr << "countersign: permission denied by the NATS server on " << target.server << ": "
                << (text ? text : "") << "\n(the NATS user needs subscribe on " << subject << ")\n";
      return kExitRefused;
    }
    natsMsg* msg = nullptr;
    const natsStatus status = natsSubscription_NextMsg(&msg, sub, kPollMs);
    if (status == NATS_TIMEOUT) {
      waited_ms += kPollMs;
      if (watch.limit_wait && waited_ms >= options.timeout_ms) {
        std::cerr << "countersign: no event within " << options.timeout_ms << " ms\n";
        return kExitUnreachable;
      }
      continue;
    }
    if (status != NATS_OK) {
      std::cerr << "countersign: watching " << subject << ": " << natsStatus_GetText(status) << '\n';
      return kExitUnreachable;
    }
    waited_ms = 0;
    const std::string body(natsMsg_GetData(msg), static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
    const EventOrigin origin = natsio::checkEvent(msg, *trusted);
    natsMsg_Destroy(msg);
    auto doc = json::parseStrict(body);
    if (!doc || !doc->IsObject()) continue;
    const std::string event = str(*doc, "event");
    if (!watch.events.empty() && std::find(watch.events.begin(), watch.events.end(), event) == watch.events.end()) {
      continue;
    }
    ++seen;
    if (options.json) {
      // The event as published, with signature_check set by this check (a body cannot mark itself).
      std::cout << markedEvent(body, origin).value_or(body) << '\n';
    } else {
      // Anyone allowed to publish on the events subjects can add events: say which are not
      // countersign's (with a key to check against).
      std::cout << line(*doc);
      if (!trusted->empty() && origin != EventOrigin::verified) std::cout << "  [NOT VERIFIED: " << toString(origin) << ']';
      std::cout << '\n';
    }
    std::cout.flush();
  }
  return kExitOk;
}

}  // namespace countersign::cli
