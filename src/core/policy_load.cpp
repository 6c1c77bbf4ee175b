// Loading a policy: YAML -> validated rules -> normalised JSON -> snapshot.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <exception>
#include <fstream>
#include <iterator>
#include <sstream>

#include "countersign/approvers.hpp"
#include "countersign/json.hpp"
#include "countersign/policy.hpp"
#include "policy_conditions.hpp"
#include "yaml_reader.hpp"

namespace countersign {
namespace {

using Allocator = rapidjson::Document::AllocatorType;

constexpr std::size_t kMaxIdLength = 128;
constexpr double kMaxRatePerSecond = 1e9;

bool isIdentifier(std::string_view text, std::size_t max_length) {
  if (text.empty() || text.size() > max_length) return false;
  return std::all_of(text.begin(), text.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.' || c == '+';
  });
}

std::optional<Decision> decisionFrom(std::string_view text) {
  for (const auto d :
       {Decision::allow, Decision::deny, Decision::throttle, Decision::require_human}) {
    if (toString(d) == text) return d;
  }
  return std::nullopt;
}

// "10/s", "600/m", "3600/h" (a positive number per unit) -> per second.
std::optional<double> parseRate(std::string_view text) {
  const std::size_t slash = text.find('/');
  if (slash == std::string_view::npos || slash == 0) return std::nullopt;
  const std::string_view count = text.substr(0, slash);
  const std::string_view unit = text.substr(slash + 1);
  if (!std::all_of(count.begin(), count.end(),
                   [](char c) { return c == '.' || (c >= '0' && c <= '9'); })) {
    return std::nullopt;
  }
  double value = 0;
  const auto [end, ec] = std::from_chars(count.data(), count.data() + count.size(), value);
  if (ec != std::errc() || end != count.data() + count.size() || !std::isfinite(value) ||
      value <= 0) {
    return std::nullopt;
  }
  double seconds = 0;
  if (unit == "s") {
    seconds = 1;
  } else if (unit == "m") {
    seconds = 60;
  } else if (unit == "h") {
    seconds = 3600;
  } else {
    return std::nullopt;
  }
  const double per_second = value / seconds;
  if (per_second > kMaxRatePerSecond) return std::nullopt;
  return per_second;
}

int costRank(ConditionSource source) {
  switch (source) {
    case ConditionSource::topic:
    case ConditionSource::subject:
      return 0;
    case ConditionSource::header:
      return 1;
    case ConditionSource::payload:
    case ConditionSource::label:
      return 2;
  }
  return 2;
}

// Records an error for each key present that does not belong to `decision`.
void refuseKeys(const yaml::MapReader& map, std::initializer_list<std::string_view> keys,
                std::string_view decisions) {
  for (const auto key : keys) {
    if (const auto value = map.get(key)) {
      value->fail("only allowed with decision " + std::string(decisions));
    }
  }
}

void readThrottle(const yaml::MapReader& map, Rule& rule) {
  const auto rate = map.require("rate");
  if (!rate) return;
  const auto text = rate->string();
  if (!text) return;
  const auto per_second = parseRate(*text);
  if (!per_second) {
    rate->expected("a rate like \"10/s\", \"600/m\" or \"3600/h\"");
    return;
  }
  rule.throttle.rate_per_second = *per_second;
  rule.throttle.burst = std::max(1.0, *per_second);
  if (const auto burst = map.get("burst")) {
    if (const auto value = burst->integer(1, 1000000000)) {
      rule.throttle.burst = static_cast<double>(*value);
    }
  }
  if (const auto key = map.get("key")) {
    if (auto name = key->string()) {
      const bool header =
          name->starts_with("header.") && name->size() > std::string_view("header.").size();
      if (!header && !isLabelName(*name)) {
        key->expected("a label name or header.<name>");
        return;
      }
      rule.throttle.key = std::move(*name);
    }
  }
}

// approvers lists: person names or group:<g> (the approval-id characters, at most 64).
std::vector<std::string> readApproverEntries(const yaml::Value& value) {
  std::vector<std::string> entries;
  auto list = value.stringList();
  if (!list) return entries;
  if (list->empty()) value.fail("expected at least one approver");
  for (std::size_t i = 0; i < list->size(); ++i) {
    const std::string& entry = (*list)[i];
    const std::string_view name =
        entry.starts_with("group:") ? std::string_view(entry).substr(6) : std::string_view(entry);
    if (!isApproverName(name)) {
      value.diagnostics().fail(yaml::indexPath(value.path(), i),
                               "expected a name or group:<group> of letters, digits, '_', '-', '=' and '.' "
                               "(at most 64), got " + yaml::quote(entry));
    }
  }
  return std::move(*list);
}

bool isRequesterSource(std::string_view text) {
  for (const std::string_view prefix : {"header.", "payload.", "labels."}) {
    if (text.starts_with(prefix) && text.size() > prefix.size()) return true;
  }
  if (!text.starts_with("subject.")) return false;
  const std::string_view n = text.substr(8);
  return !n.empty() && n.size() <= 3 && std::all_of(n.begin(), n.end(), [](char c) { return c >= '0' && c <= '9'; });
}

void readGovernance(const yaml::MapReader& map, Rule& rule) {
  HumanSpec& human = rule.human;
  if (const auto approvers = map.get("approvers")) human.approvers = readApproverEntries(*approvers);
  if (const auto quorum = map.get("quorum")) {
    if (quorum->isMap()) {
      const yaml::MapReader groups(*quorum);
      if (groups.valid() && groups.entries().empty()) quorum->fail("expected at least one group");
      for (const auto& [group, count] : groups.entries()) {
        if (!isApproverName(group)) {
          count.fail("expected a group name of letters, digits, '_', '-', '=' and '.' (at most 64)");
          continue;
        }
        if (const auto n = count.integer(1, 100)) human.quorum.per_group.emplace(group, static_cast<int>(*n));
      }
    } else if (const auto n = quorum->integer(1, 100)) {
      human.quorum.count = static_cast<int>(*n);
    }
  }
  map.read("separation_of_duties", human.separation_of_duties);
  if (const auto requester = map.get("requester")) {
    if (auto text = requester->string()) {
      if (!isRequesterSource(*text)) {
        requester->expected("header.<Name>, payload.<path>, labels.<name> or subject.<n>");
      } else {
        human.requester = std::move(*text);
      }
    }
  }
  if (human.separation_of_duties && !map.has("requester")) {
    map.get("separation_of_duties")->fail("needs requester: where the job's requester is read");
  }
  if (const auto escalate = map.get("escalate")) {
    if (!escalate->isList()) escalate->expected("a list of {after, approvers}");
    std::chrono::milliseconds previous{0};
    for (const auto& item : escalate->items()) {
      const yaml::MapReader step(item, {"after", "approvers"});
      if (!step.valid()) continue;
      EscalationStep out;
      if (const auto after = step.require("after")) {
        if (const auto d = after->duration()) {
          if (d->count() <= 0 || *d <= previous) {
            after->fail("expected a positive duration, later than the step before");
          } else {
            out.after = *d;
            previous = *d;
          }
        }
      }
      if (const auto approvers = step.require("approvers")) out.approvers = readApproverEntries(*approvers);
      human.escalate.push_back(std::move(out));
    }
  }
}

void readHuman(const yaml::MapReader& map, Rule& rule) {
  readGovernance(map, rule);
  if (const auto timeout = map.get("timeout")) {
    if (const auto value = timeout->duration()) {
      if (value->count() <= 0) {
        timeout->fail("expected a positive duration");
      } else {
        rule.human.timeout = *value;
      }
    }
  }
  bool acknowledged = false;
  if (const auto ack = map.get("allow_on_timeout_acknowledged")) {
    if (const auto value = ack->boolean()) acknowledged = *value;
  }
  if (const auto on_timeout = map.get("on_timeout")) {
    const auto value = on_timeout->oneOf({"reject", "allow"});
    if (!value) return;
    if (!map.has("timeout")) {
      on_timeout->fail("needs a timeout");
      return;
    }
    if (*value == "allow" && !acknowledged) {
      on_timeout->fail(
          "\"allow\" releases held jobs without review when the timeout passes; set "
          "allow_on_timeout_acknowledged: true on the rule to confirm");
      return;
    }
    rule.human.on_timeout = *value;
  }
}

std::optional<Rule> readRule(const yaml::Value& value) {
  const yaml::MapReader map(value, {"id", "when", "decision", "reason", "rate", "burst", "key",
                                    "timeout", "on_timeout", "allow_on_timeout_acknowledged",
                                    "approvers", "quorum", "separation_of_duties", "requester",
                                    "escalate"});
  if (!map.valid()) return std::nullopt;
  Rule rule;
  if (const auto id = map.require("id")) {
    if (auto text = id->string()) {
      if (!isIdentifier(*text, kMaxIdLength)) {
        id->expected("a rule id of letters, digits, '_', '-', '.' and '+' (at most 128)");
      } else if (*text == "default") {
        id->fail("\"default\" is reserved for the default decision");
      } else {
        rule.id = std::move(*text);
      }
    }
  }
  if (const auto decision = map.require("decision")) {
    if (const auto text = decision->oneOf({"allow", "deny", "throttle", "require_human"})) {
      rule.decision = *decisionFrom(*text);
    }
  }
  if (!value.diagnostics().ok()) return std::nullopt;

  if (const auto when = map.get("when")) {
    const yaml::MapReader conditions(*when);
    if (!conditions.valid()) return std::nullopt;
    for (const auto& [key, condition_value] : conditions.entries()) {
      auto condition = compileCondition(key, condition_value);
      if (!condition) return std::nullopt;
      rule.when.push_back(std::move(condition));
    }
    std::stable_sort(rule.when.begin(), rule.when.end(), [](const auto& a, const auto& b) {
      return costRank(a->source) < costRank(b->source);
    });
    rule.reads_payload = std::any_of(rule.when.begin(), rule.when.end(), [](const auto& c) {
      return c->source == ConditionSource::payload || c->source == ConditionSource::label;
    });
  }

  switch (rule.decision) {
    case Decision::deny:
      map.read("reason", rule.reason);
      break;
    case Decision::throttle:
      readThrottle(map, rule);
      break;
    case Decision::require_human:
      readHuman(map, rule);
      break;
    case Decision::allow:
      break;
  }
  if (rule.decision != Decision::deny) refuseKeys(map, {"reason"}, "deny");
  if (rule.decision != Decision::throttle) refuseKeys(map, {"rate", "burst", "key"}, "throttle");
  if (rule.decision != Decision::require_human) {
    refuseKeys(map, {"timeout", "on_timeout", "allow_on_timeout_acknowledged", "approvers", "quorum",
                     "separation_of_duties", "requester", "escalate"},
               "require_human");
  }
  if (!value.diagnostics().ok()) return std::nullopt;
  return rule;
}

rapidjson::Value stringValue(std::string_view text, Allocator& allocator) {
  return rapidjson::Value(text.data(), static_cast<rapidjson::SizeType>(text.size()), allocator);
}

void add(rapidjson::Value& object, std::string_view name, rapidjson::Value value,
         Allocator& allocator) {
  object.AddMember(stringValue(name, allocator), value, allocator);
}

rapidjson::Value stringList(const std::vector<std::string>& items, Allocator& allocator) {
  rapidjson::Value list(rapidjson::kArrayType);
  for (const auto& item : items) list.PushBack(stringValue(item, allocator), allocator);
  return list;
}

// Governance keys join the normal form only when they differ from their defaults, so that a
// rule without them keeps the snapshot it always had, and `quorum: 1` means the same as no
// quorum. Lists keep their order (approvers and steps are compared as written).
void normaliseGovernance(const HumanSpec& human, rapidjson::Value& out, Allocator& allocator) {
  if (!human.approvers.empty()) add(out, "approvers", stringList(human.approvers, allocator), allocator);
  if (!human.quorum.per_group.empty()) {
    rapidjson::Value groups(rapidjson::kObjectType);
    for (const auto& [group, count] : human.quorum.per_group) add(groups, group, rapidjson::Value(count), allocator);
    add(out, "quorum", std::move(groups), allocator);
  } else if (human.quorum.count != 1) {
    add(out, "quorum", rapidjson::Value(human.quorum.count), allocator);
  }
  if (human.separation_of_duties) add(out, "separation_of_duties", rapidjson::Value(true), allocator);
  if (!human.requester.empty()) add(out, "requester", stringValue(human.requester, allocator), allocator);
  if (!human.escalate.empty()) {
    rapidjson::Value steps(rapidjson::kArrayType);
    for (const auto& step : human.escalate) {
      rapidjson::Value item(rapidjson::kObjectType);
      add(item, "after_ms", rapidjson::Value(static_cast<std::int64_t>(step.after.count())), allocator);
      add(item, "approvers", stringList(step.approvers, allocator), allocator);
      steps.PushBack(item, allocator);
    }
    add(out, "escalate", std::move(steps), allocator);
  }
}

// The rule with every default filled in: what the snapshot hashes.
rapidjson::Value normaliseRule(const Rule& rule, Allocator& allocator) {
  rapidjson::Value out(rapidjson::kObjectType);
  add(out, "id", stringValue(rule.id, allocator), allocator);
  add(out, "decision", stringValue(toString(rule.decision), allocator), allocator);
  rapidjson::Value when(rapidjson::kObjectType);
  for (const auto& condition : rule.when) {
    add(when, condition->key, normalise(*condition, allocator), allocator);
  }
  add(out, "when", std::move(when), allocator);
  switch (rule.decision) {
    case Decision::deny:
      add(out, "reason", stringValue(rule.reason, allocator), allocator);
      break;
    case Decision::throttle:
      add(out, "rate_per_second", rapidjson::Value(rule.throttle.rate_per_second), allocator);
      add(out, "burst", rapidjson::Value(rule.throttle.burst), allocator);
      add(out, "key", stringValue(rule.throttle.key, allocator), allocator);
      break;
    case Decision::require_human: {
      rapidjson::Value timeout;  // null: no timeout
      if (rule.human.timeout) timeout.SetInt64(rule.human.timeout->count());
      add(out, "timeout_ms", std::move(timeout), allocator);
      add(out, "on_timeout", stringValue(rule.human.on_timeout, allocator), allocator);
      normaliseGovernance(rule.human, out, allocator);
      break;
    }
    case Decision::allow:
      break;
  }
  return out;
}

}  // namespace

Result<std::shared_ptr<const Policy>> Policy::parse(std::string_view yaml_text,
                                                    std::string_view source) {
  const auto document = yaml::parseDocument(yaml_text, source);
  if (!document) return std::unexpected(document.error());
  try {
    yaml::Diagnostics diag{std::string(source)};
    const yaml::Value root(diag, *document, "");
    const yaml::MapReader top(root, {"version", "rules", "default_decision"});
    if (!top.valid()) return std::unexpected(diag.error());

    std::shared_ptr<Policy> policy(new Policy());
    if (const auto version = top.require("version")) {
      if (auto text = version->string()) {
        if (!isIdentifier(*text, 64)) {
          version->expected("a version of letters, digits, '_', '-', '.' and '+' (at most 64)");
        } else {
          policy->version_ = std::move(*text);
        }
      }
    }
    if (const auto value = top.get("default_decision")) {
      if (const auto text = value->oneOf({"allow", "deny", "require_human"})) {
        policy->default_decision_ = *decisionFrom(*text);
      }
    }
    const auto rules = top.require("rules");
    if (!diag.ok()) return std::unexpected(diag.error());
    for (const auto& item : rules->items()) {
      auto rule = readRule(item);
      if (!rule) break;
      for (const auto& earlier : policy->rules_) {
        if (earlier.id == rule->id) {
          diag.fail(yaml::childPath(item.path(), "id"),
                    "duplicate rule id " + yaml::quote(rule->id));
          break;
        }
      }
      policy->rules_.push_back(std::move(*rule));
    }
    if (!diag.ok()) return std::unexpected(diag.error());

    rapidjson::Document normal(rapidjson::kObjectType);
    auto& allocator = normal.GetAllocator();
    add(normal, "version", stringValue(policy->version_, allocator), allocator);
    add(normal, "default_decision", stringValue(toString(policy->default_decision_), allocator),
        allocator);
    rapidjson::Value list(rapidjson::kArrayType);
    for (const auto& rule : policy->rules_)
      list.PushBack(normaliseRule(rule, allocator), allocator);
    add(normal, "rules", std::move(list), allocator);
    policy->canonical_ = json::canonicalize(normal);
    policy->snapshot_ = policy->version_ + ":sha256:" + json::sha256Hex(policy->canonical_);
    auto forwardHeaders = [&](std::string_view rule_id) {
      return Headers{{"Countersign-Decision", "allow"},
                     {"Countersign-Approval", "none"},
                     {"Countersign-Rule", std::string(rule_id)},
                     {"Countersign-Policy-Snapshot", policy->snapshot_}};
    };
    for (auto& rule : policy->rules_) rule.forward_headers = forwardHeaders(rule.id);
    policy->default_forward_headers_ = forwardHeaders("default");
    return std::shared_ptr<const Policy>(std::move(policy));
  } catch (const std::exception& e) {
    return fail(Errc::invalid_argument, std::string(source) + ": " + e.what());
  }
}

Result<std::shared_ptr<const Policy>> Policy::loadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail(Errc::io, path + ": cannot open policy file");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return fail(Errc::io, path + ": cannot read policy file");
  return parse(text.str(), path);
}

}  // namespace countersign
