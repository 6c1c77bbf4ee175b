// The policy engine (docs/policy.md): immutable once loaded, shared by pointer, evaluated
// concurrently from any thread without locks. Throttle state lives apart, in Throttler.
#pragma once

#include <rapidjson/document.h>

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "countersign/message.hpp"
#include "countersign/result.hpp"

namespace countersign {

enum class Decision { allow, deny, throttle, require_human };
std::string_view toString(Decision decision);

using Labels = std::map<std::string, std::string, std::less<>>;

// What a policy reads of a job. The payload is parsed at most once, on first use, with
// json::parseStrict; the parse is then shared with the job hash ("one parse"). Not thread-safe:
// one JobView per job, used by one thread.
class JobView {
 public:
  JobView(std::string_view subject, std::string_view topic, const Headers& headers,
          std::string_view payload, const Labels* route_labels = nullptr);

  std::string_view subject() const { return subject_; }
  std::string_view topic() const { return topic_; }
  const Headers& headers() const { return *headers_; }
  std::string_view payload() const { return payload_; }
  const Labels* routeLabels() const { return route_labels_; }

  // The strict parse of the payload, or nullptr when it is not JSON (then it is bytes).
  const rapidjson::Value* payloadJson() const;
  bool payloadParsed() const { return parsed_; }

  // Label lookup: route label, else payload labels.<name>, else payload top-level <name>,
  // else header <name>. Returns nullptr when missing; the value is a JSON value (string for
  // route labels and headers). When the payload is not JSON only route labels are read: the
  // header must not stand in for a label the worker may find in the payload bytes. An empty
  // payload carries no labels, so there the header is read.
  const rapidjson::Value* label(std::string_view name) const;

 private:
  std::string_view subject_;
  std::string_view topic_;
  const Headers* headers_;
  std::string_view payload_;
  const Labels* route_labels_;
  mutable bool parsed_ = false;
  mutable bool is_json_ = false;
  // Made only when the payload is parsed: an empty Document still allocates its memory pool,
  // and most jobs (rules on subject and headers) never look at the payload.
  mutable std::optional<rapidjson::Document> doc_;
  // Scratch space for labels read from headers / route labels.
  mutable std::vector<std::unique_ptr<rapidjson::Document>> scratch_;
};

struct ThrottleSpec {
  double rate_per_second = 0;  // "10/s", "600/m", "3600/h"
  double burst = 1;            // defaults to max(1, rate per second) when absent
  std::string key;             // empty: one bucket per rule; else a label name or "header.X"
};

// How many distinct approvers must approve: `count` in all, or, when `per_group` is not empty,
// that many members of each group (one vote counts for each of its voter's groups).
struct Quorum {
  int count = 1;
  std::map<std::string, int, std::less<>> per_group;
  bool single() const { return per_group.empty() && count == 1; }
  int needed() const;  // votes needed at least (count, or the sum of per_group)
};

// Who is added to those who may decide once `after` has passed since the hold.
struct EscalationStep {
  std::chrono::milliseconds after{0};
  std::vector<std::string> approvers;  // names or group:<g>
};

struct HumanSpec {
  std::optional<std::chrono::milliseconds> timeout;  // "30m", "2h", "45s"
  std::string on_timeout = "reject";                 // reject | allow
  std::vector<std::string> approvers;  // names or group:<g>; empty: anyone in the registry
  Quorum quorum;
  bool separation_of_duties = false;   // the requester may not decide their own job
  // Where the requester is read: header.<Name>, payload.<a.b>, labels.<name>, subject.<n>.
  // Empty: the payload's top-level "requester" string, when there is one.
  std::string requester;
  std::vector<EscalationStep> escalate;
};

// Opaque compiled condition; defined in the implementation.
struct Condition;

struct Rule {
  std::string id;
  Decision decision = Decision::deny;
  std::string reason;  // deny reason (optional)
  ThrottleSpec throttle;
  HumanSpec human;
  std::vector<std::shared_ptr<const Condition>> when;  // all must hold
  bool reads_payload = false;  // some condition reads a payload field or a label
  // What a job forwarded under this rule carries (Countersign-Decision: allow, -Approval: none,
  // -Rule, -Policy-Snapshot), built once with the policy.
  Headers forward_headers;
};

struct Verdict {
  Decision decision = Decision::deny;
  const Rule* rule = nullptr;  // nullptr: no rule matched, default_decision applied
  // `rule` could not be evaluated (a `matches` on a string beyond the regex input limit):
  // the job is denied whatever the rule says (fail closed).
  bool indeterminate = false;
  std::string_view ruleId() const { return rule ? std::string_view(rule->id) : "default"; }
};

// One condition of the deciding rule: what it tests and the value it saw in the job.
struct ConditionCheck {
  std::string key;   // as written: "topic", "payload.amount", "header.X-Env", "env"
  std::string test;  // `matches "finance.>"`, `gt 1000`, `eq "production" and ne "x"`
  std::string seen;  // `"finance.payment.execute"`, `1250`, `nothing` (missing)
  bool holds = false;
};

struct Explanation {
  Verdict verdict;
  std::vector<std::string> trace;  // one line per rule tried: matched, or the first reason not
  std::vector<ConditionCheck> conditions;  // the matched rule's conditions, cheapest first
};

class Policy {
 public:
  // Parses and validates YAML text. Errors name the key's full path, e.g.
  // `rules[1].when.amount.gt: expected a number, got "ten"`. `source` prefixes messages.
  static Result<std::shared_ptr<const Policy>> parse(std::string_view yaml_text,
                                                     std::string_view source = "policy");
  static Result<std::shared_ptr<const Policy>> loadFile(const std::string& path);

  // "<version>:sha256:<hex>" over the RFC 8785 form of the normalised policy.
  const std::string& snapshot() const { return snapshot_; }
  const std::string& version() const { return version_; }
  const std::vector<Rule>& rules() const { return rules_; }
  Decision defaultDecision() const { return default_decision_; }
  // The normalised policy as canonical JSON (what the snapshot hashes).
  const std::string& canonicalJson() const { return canonical_; }

  // First rule whose conditions all hold; cheap conditions (topic, subject, header) are tried
  // before payload ones so that jobs decided by topic never parse their payload.
  Verdict evaluate(const JobView& job) const;
  // Rule::forward_headers, or those of the synthetic rule "default" when `rule` is null.
  const Headers& forwardHeaders(const Rule* rule) const {
    return rule != nullptr ? rule->forward_headers : default_forward_headers_;
  }
  Explanation explain(const JobView& job) const;

 private:
  Policy() = default;
  std::string version_;
  std::string snapshot_;
  std::string canonical_;
  std::vector<Rule> rules_;
  Decision default_decision_ = Decision::deny;
  Headers default_forward_headers_;
};

// Token buckets per throttle rule (and key), surviving policy reloads (keyed by rule id).
// Keyed buckets are capped in number; the least recently used is evicted. Thread-safe.
class Throttler {
 public:
  explicit Throttler(std::size_t max_keyed_buckets = 10000);
  struct Admission {
    bool admitted = true;
    std::chrono::milliseconds retry_after{0};
  };
  Admission admit(const Rule& rule, const JobView& job, std::chrono::steady_clock::time_point now);

 private:
  struct Bucket;
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace countersign
