// Policy evaluation (docs/policy.md). Loading is in policy_load.cpp, the conditions in
// policy_conditions.cpp, throttle buckets in throttler.cpp.
//
// Semantics chosen where the design leaves room, all of them failing closed:
// - A missing path, or a value of another JSON type than the one compared with, is false for
//   every operator except `exists: false`. That includes `ne` and `not_in`: `ne: "prod"` holds
//   only for a present string other than "prod", and `not_in: [a, b]` means `ne` against every
//   element (so a list mixing types never holds). A rule meant to fire when a field is absent
//   says `exists: false`.
// - A payload that is not strict JSON (docs/protocol.md: duplicate keys, bad UTF-8, ...) makes every
//   payload condition and every label condition false, `exists: false` included, unless the
//   label comes from the route (config, trusted). The header fallback of a label is not used
//   either then: a worker could read a label from the payload bytes that the policy never saw.
//   An empty payload carries nothing a worker could read: its labels come from the headers.
// - `matches` is an RE2 regex searched anywhere in the string (anchor with ^ and $ for a
//   whole-string match), run on strings only; linear in the input, its program size bounded. A string longer than kMaxRegexInput cannot be
//   evaluated: the job is denied (Verdict::indeterminate) instead of being let through.
// - Header and route-label values are strings; a header condition comparing with anything but
//   a string is refused at load because it could never hold.
// - Within a rule, topic / subject / header conditions are tried before payload and label ones,
//   so a job decided by its topic never has its payload parsed.
#include "countersign/policy.hpp"

#include <string>
#include <utility>

#include "countersign/json.hpp"
#include "policy_conditions.hpp"

namespace countersign {
namespace {

// All conditions of a rule, in their stored (cheap first) order. A condition that fails decides;
// an indeterminate one decides only if no later condition fails.
Outcome ruleOutcome(const Rule& rule, const JobView& job) {
  bool indeterminate = false;
  for (const auto& condition : rule.when) {
    const Outcome outcome = evaluateCondition(*condition, job);
    if (outcome == Outcome::fails) return Outcome::fails;
    if (outcome == Outcome::indeterminate) indeterminate = true;
  }
  return indeterminate ? Outcome::indeterminate : Outcome::holds;
}

}  // namespace

int Quorum::needed() const {
  if (per_group.empty()) return count;
  int sum = 0;
  for (const auto& [group, n] : per_group) sum += n;
  return sum;
}

std::string_view toString(Decision decision) {
  switch (decision) {
    case Decision::allow:
      return "allow";
    case Decision::deny:
      return "deny";
    case Decision::throttle:
      return "throttle";
    case Decision::require_human:
      return "require_human";
  }
  return "deny";
}

JobView::JobView(std::string_view subject, std::string_view topic, const Headers& headers,
                 std::string_view payload, const Labels* route_labels)
    : subject_(subject),
      topic_(topic),
      headers_(&headers),
      payload_(payload),
      route_labels_(route_labels) {}

const rapidjson::Value* JobView::payloadJson() const {
  if (!parsed_) {
    parsed_ = true;
    auto parsed = json::parseStrict(payload_);
    if (parsed) {
      doc_.emplace(std::move(*parsed));
      is_json_ = true;
    }
  }
  return is_json_ ? &*doc_ : nullptr;
}

const rapidjson::Value* JobView::label(std::string_view name) const {
  const Operand operand = resolveLabel(name, *this);
  if (operand.state == Operand::State::json) return operand.json;
  if (operand.state != Operand::State::text) return nullptr;
  auto value = std::make_unique<rapidjson::Document>();
  value->SetString(operand.text.data(), static_cast<rapidjson::SizeType>(operand.text.size()),
                   value->GetAllocator());
  scratch_.push_back(std::move(value));
  return scratch_.back().get();
}

Verdict Policy::evaluate(const JobView& job) const {
  for (const Rule& rule : rules_) {
    switch (ruleOutcome(rule, job)) {
      case Outcome::holds:
        return Verdict{rule.decision, &rule};
      case Outcome::indeterminate:
        return Verdict{Decision::deny, &rule, true};
      case Outcome::fails:
        break;
    }
  }
  return Verdict{default_decision_, nullptr};
}

Explanation Policy::explain(const JobView& job) const {
  Explanation out;
  for (const Rule& rule : rules_) {
    const Outcome outcome = ruleOutcome(rule, job);
    if (outcome == Outcome::holds) {
      out.verdict = Verdict{rule.decision, &rule};
      out.trace.push_back(rule.id + ": match -> " + std::string(toString(rule.decision)));
      for (const auto& condition : rule.when) out.conditions.push_back(checkCondition(*condition, job));
      return out;
    }
    // The first condition that decided the outcome, in evaluation order.
    std::string reason;
    for (const auto& condition : rule.when) {
      if (evaluateCondition(*condition, job) == outcome) {
        reason = describeFailure(*condition, job);
        break;
      }
    }
    if (outcome == Outcome::indeterminate) {
      out.verdict = Verdict{Decision::deny, &rule, true};
      out.trace.push_back(rule.id + ": cannot evaluate (" + reason + ") -> deny");
      return out;
    }
    out.trace.push_back(rule.id + ": no match (" + reason + ")");
  }
  out.verdict = Verdict{default_decision_, nullptr};
  out.trace.push_back("default: no rule matched -> " + std::string(toString(default_decision_)));
  return out;
}

}  // namespace countersign
