#include "http/evidence.hpp"

#include "core/json_writer.hpp"
#include "countersign/job.hpp"
#include "countersign/json.hpp"
#include "countersign/policy.hpp"
#include "countersign/record.hpp"
#include "countersign/redact.hpp"

namespace countersign::http {

using detail::JsonObjectWriter;

namespace {

// True when one dotted path lies inside the other ("card" and "card.number" either way).
bool overlaps(std::string_view a, std::string_view b) {
  if (a.size() > b.size()) std::swap(a, b);
  return b.starts_with(a) && (b.size() == a.size() || b[a.size()] == '.');
}

// Whether a condition's value may come from a redacted payload field.
bool readsRedacted(std::string_view key, const std::vector<std::string>& redact) {
  if (key.starts_with("header.") || key == "topic" || key == "subject") return false;
  constexpr std::string_view kPayload = "payload.";
  for (const auto& path : redact) {
    if (key.starts_with(kPayload) && overlaps(key.substr(kPayload.size()), path)) return true;
    // A bare label reads payload labels.<name> or the top-level <name>.
    if (!key.starts_with(kPayload) && (overlaps(key, path) || overlaps("labels." + std::string(key), path))) {
      return true;
    }
  }
  return false;
}

ControlReply reply(Outcome status, int code, JsonObjectWriter& w) {
  return ControlReply{status, code, w.finish(), {}, {}};
}

// {"decision","rule","conditions":[{key,test,seen,holds}],"trace":[...]}
std::string explanationJson(const Explanation& explanation, const std::vector<std::string>& redact) {
  JsonObjectWriter explain;
  explain.field("decision", toString(explanation.verdict.decision)).field("rule", explanation.verdict.ruleId());
  auto& e = explain.writer();
  explain.key("conditions");
  e.StartArray();
  for (const ConditionCheck& check : explanation.conditions) {
    JsonObjectWriter item;
    item.field("key", check.key)
        .field("test", check.test)
        .field("seen", readsRedacted(check.key, redact) ? std::string(kRedacted) : check.seen)
        .field("holds", check.holds);
    const std::string text = item.finish();
    e.RawValue(text.data(), text.size(), rapidjson::kObjectType);
  }
  e.EndArray();
  explain.key("trace");
  e.StartArray();
  // The trace quotes values of the rules that did not match; with redaction on, it is left out.
  if (redact.empty()) {
    for (const auto& line : explanation.trace) e.String(line.data(), static_cast<rapidjson::SizeType>(line.size()));
  }
  e.EndArray();
  return explain.finish();
}

}  // namespace

void PolicyHistory::remember(std::shared_ptr<const Policy> replaced) {
  if (!replaced) return;
  const std::lock_guard lock(mutex_);
  std::erase_if(policies_, [&](const auto& p) { return p->snapshot() == replaced->snapshot(); });
  policies_.push_back(std::move(replaced));
  while (policies_.size() > kKept) policies_.pop_front();
}

std::shared_ptr<const Policy> PolicyHistory::find(std::string_view snapshot) const {
  const std::lock_guard lock(mutex_);
  for (const auto& p : policies_) {
    if (p->snapshot() == snapshot) return p;
  }
  return nullptr;
}

ControlReply evidenceReply(const EvidenceSources& sources, const std::string& raw_id) {
  const std::string id = isValidApprovalId(raw_id) ? raw_id : approvalIdFor(raw_id);
  auto entry = sources.store.get(id);
  if (!entry) {
    if (entry.error().code == Errc::not_found) {
      JsonObjectWriter w(wireName(Outcome::not_found), 404);
      w.field("approval_id", id);
      return reply(Outcome::not_found, 404, w);
    }
    JsonObjectWriter w(wireName(Outcome::unavailable), 503);
    w.field("retryable", true).field("reason", entry.error().message);
    return reply(Outcome::unavailable, 503, w);
  }
  auto record = parseApprovalRecord(entry->value);
  if (!record) {
    JsonObjectWriter w(wireName(Outcome::conflict), 409);
    w.field("approval_id", id).field("reason", "job_changed");
    return reply(Outcome::conflict, 409, w);
  }
  const auto policy = sources.policy.current();
  const bool current = policy->snapshot() == record->policy_snapshot;
  std::shared_ptr<const Policy> held_under = policy;
  if (!current) held_under = sources.earlier != nullptr ? sources.earlier->find(record->policy_snapshot) : nullptr;
  const RouteConfig* route = routeFor(sources.config, *record);
  const JobView view(record->subject, record->topic, record->headers, record->payload,
                     route ? &route->labels : nullptr);

  JsonObjectWriter w(wireName(Outcome::ok), 200);
  w.field("approval_id", id)
      .field("policy_snapshot_held", record->policy_snapshot)
      .field("policy_snapshot_current", policy->snapshot())
      .field("snapshot_current", current);
  auto& out = w.writer();
  if (held_under) {
    w.key("explain");
    const std::string text = explanationJson(held_under->explain(view), sources.config.events.redact);
    out.RawValue(text.data(), text.size(), rapidjson::kObjectType);
  } else {
    w.field("explain_unavailable",
            "the policy this job was held under (" + record->policy_snapshot +
                ") is no longer loaded: it was replaced before this process started, or too many reloads ago");
  }
  if (!current) {
    w.key("explain_current");
    const std::string text = explanationJson(policy->explain(view), sources.config.events.redact);
    out.RawValue(text.data(), text.size(), rapidjson::kObjectType);
  }
  w.key("timeline");
  out.StartArray();
  std::string timeline_error;
  if (sources.timeline) {
    auto events = sources.timeline(id);
    if (!events) {
      timeline_error = events.error().message;
    } else {
      for (const auto& event : *events) {
        const auto marked = markedEvent(event.body, event.origin);
        if (!marked) continue;  // not an event of ours
        out.RawValue(marked->data(), marked->size(), rapidjson::kObjectType);
      }
    }
  } else {
    timeline_error = "the audit trail is off (audit.enabled: false)";
  }
  out.EndArray();
  w.optional("timeline_error", timeline_error);
  return reply(Outcome::ok, 200, w);
}

}  // namespace countersign::http
