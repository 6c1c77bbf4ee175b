#include "countersign/governance.hpp"

#include <algorithm>
#include <charconv>

#include "countersign/clock.hpp"
#include "countersign/nkeys.hpp"

namespace countersign {
namespace {

constexpr std::string_view kGroupPrefix = "group:";

bool matchesEntry(std::string_view entry, std::string_view name) {
  return entry == "*" || entry == name;
}

}  // namespace

std::string_view toString(Refusal refusal) {
  switch (refusal) {
    case Refusal::signature_required: return "signature_required";
    case Refusal::bad_signature: return "bad_signature";
    case Refusal::unknown_key: return "unknown_key";
    case Refusal::stale_signature: return "stale_signature";
    case Refusal::not_an_approver: return "not_an_approver";
    case Refusal::channel_not_allowed: return "channel_not_allowed";
    case Refusal::self_approval: return "self_approval";
  }
  return "not_an_approver";
}

int httpCode(Refusal refusal) {
  switch (refusal) {
    case Refusal::signature_required:
    case Refusal::bad_signature:
    case Refusal::unknown_key:
    case Refusal::stale_signature:
      return 401;
    case Refusal::not_an_approver:
    case Refusal::channel_not_allowed:
    case Refusal::self_approval:
      return 403;
  }
  return 403;
}

Outcome statusOf(Refusal refusal) {
  return httpCode(refusal) == 401 ? Outcome::unauthenticated : Outcome::forbidden;
}

std::expected<Actor, Refusal> Governance::identify(const DecisionClaim& claim,
                                                   std::chrono::system_clock::time_point now) const {
  const RequestSignature* sig = claim.signature;
  const Person* person = registry_ != nullptr ? registry_->person(claim.approver) : nullptr;
  if (registry_ != nullptr && person == nullptr) return std::unexpected(Refusal::not_an_approver);
  if (sig == nullptr) {
    if (registry_ != nullptr && registry_->require_signature && !claim.authenticated) {
      return std::unexpected(Refusal::signature_required);
    }
    return Actor{std::string(claim.approver), {}, {}};
  }
  // Malformed parts do not verify.
  const auto key = nkeys::parsePublicKey(sig->key);
  if (!key) return std::unexpected(Refusal::bad_signature);
  const auto raw = nkeys::base64UrlDecode(sig->signature);
  if (!raw || raw->size() != 64) return std::unexpected(Refusal::bad_signature);
  // The key must be the approver's, or a channel's that may act for them (then `via` names it).
  std::string via;
  if (registry_ != nullptr) {
    if (registry_->personWithKey(sig->key) == person) {
      // Their own key: no channel carried it, whatever `via` claims.
      if (!sig->via.empty()) return std::unexpected(Refusal::unknown_key);
    } else if (const Channel* channel = registry_->channelWithKey(sig->key)) {
      if (sig->via != channel->name) return std::unexpected(Refusal::unknown_key);
      const bool allowed = std::any_of(channel->may_act_for.begin(), channel->may_act_for.end(),
                                       [&](const std::string& entry) { return ApproverRegistry::covers(entry, *person); });
      if (!allowed) return std::unexpected(Refusal::channel_not_allowed);
      via = channel->name;
    } else {
      return std::unexpected(Refusal::unknown_key);
    }
  } else {
    via = sig->via;
  }
  std::chrono::system_clock::time_point at;
  if (!parseRfc3339(sig->at, at)) return std::unexpected(Refusal::bad_signature);
  if (at > now + kMaxSignatureSkew || at < now - kMaxSignatureSkew) {
    return std::unexpected(Refusal::stale_signature);
  }
  // The signed text is the request as received: its action must be what this edge was asked.
  if (sig->action != claim.action) return std::unexpected(Refusal::bad_signature);
  if (!nkeys::verify(*key, sig->signed_text, *raw)) return std::unexpected(Refusal::bad_signature);
  return Actor{std::string(claim.approver), std::move(via), sig->key};
}

std::vector<std::string> Governance::entries(const ApprovalRecord& record,
                                             std::chrono::system_clock::time_point now) const {
  if (record.approvers.empty()) return {};
  std::vector<std::string> out = record.approvers;
  const int applied = stepsApplied(record, now);
  for (int i = 0; i < applied; ++i) {
    const auto& step = record.escalations[static_cast<std::size_t>(i)].approvers;
    out.insert(out.end(), step.begin(), step.end());
  }
  return out;
}

bool Governance::covered(const std::vector<std::string>& list, std::string_view name) const {
  if (registry_ == nullptr) {
    return std::any_of(list.begin(), list.end(), [&](const std::string& e) { return matchesEntry(e, name); });
  }
  const Person* person = registry_->person(name);
  if (person == nullptr) return false;
  return std::any_of(list.begin(), list.end(),
                     [&](const std::string& e) { return ApproverRegistry::covers(e, *person); });
}

std::optional<Refusal> Governance::mayDecide(const ApprovalRecord& record, const Actor& actor,
                                             std::chrono::system_clock::time_point now) const {
  if (record.separation_of_duties && !record.requester.empty() && record.requester == actor.approver) {
    return Refusal::self_approval;
  }
  const auto allowed = entries(record, now);
  if (allowed.empty()) {
    if (registry_ != nullptr && registry_->person(actor.approver) == nullptr) return Refusal::not_an_approver;
    return std::nullopt;
  }
  if (!covered(allowed, actor.approver)) return Refusal::not_an_approver;
  return std::nullopt;
}

std::optional<std::vector<std::string>> Governance::voters(const ApprovalRecord& record,
                                                           std::chrono::system_clock::time_point now) const {
  const auto allowed = entries(record, now);
  std::vector<std::string> names;
  if (registry_ == nullptr) {
    if (allowed.empty()) return std::nullopt;
    for (const auto& entry : allowed) {
      if (entry == "*") return std::nullopt;
      if (!entry.starts_with(kGroupPrefix) && std::find(names.begin(), names.end(), entry) == names.end()) {
        names.push_back(entry);
      }
    }
  } else {
    for (const auto& person : registry_->people) {
      if (allowed.empty() || covered(allowed, person.name)) names.push_back(person.name);
    }
  }
  // The requester's own vote never counts when duties are separated.
  if (record.separation_of_duties && !record.requester.empty()) std::erase(names, record.requester);
  return names;
}

bool Governance::reached(const Quorum& quorum, const std::vector<std::string>& voters) const {
  std::vector<std::string> distinct = voters;
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  if (quorum.per_group.empty()) return static_cast<int>(distinct.size()) >= quorum.count;
  if (registry_ == nullptr) return false;  // group membership is known only to the registry
  for (const auto& [group, needed] : quorum.per_group) {
    const auto members = std::count_if(distinct.begin(), distinct.end(), [&](const std::string& name) {
      const Person* p = registry_->person(name);
      return p != nullptr && std::find(p->groups.begin(), p->groups.end(), group) != p->groups.end();
    });
    if (members < needed) return false;
  }
  return true;
}

void Governance::bind(ApprovalRecord& record, const Rule& rule,
                      std::chrono::system_clock::time_point held_at) const {
  // Resolved to names as of the hold; a list that names nobody known keeps its entries, which
  // then match nobody (never "anyone").
  const auto resolve = [&](const std::vector<std::string>& list) {
    if (registry_ == nullptr || list.empty()) return list;
    auto names = registry_->resolve(list);
    return names.empty() ? list : names;
  };
  record.approvers = resolve(rule.human.approvers);
  record.quorum = rule.human.quorum;
  record.separation_of_duties = rule.human.separation_of_duties;
  record.escalations.clear();
  for (const auto& step : rule.human.escalate) {
    record.escalations.push_back(EscalationRecord{formatRfc3339(held_at + step.after), resolve(step.approvers)});
  }
}

int Governance::stepsApplied(const ApprovalRecord& record, std::chrono::system_clock::time_point now) {
  int applied = 0;
  for (const auto& step : record.escalations) {
    std::chrono::system_clock::time_point at;
    if (!parseRfc3339(step.at, at) || now < at) break;
    ++applied;
  }
  return applied;
}

std::optional<std::chrono::system_clock::time_point> nextAttention(const ApprovalRecord& record,
                                                                   std::chrono::system_clock::time_point now) {
  std::optional<std::chrono::system_clock::time_point> next;
  if (std::chrono::system_clock::time_point t; !record.expires_at.empty() && parseRfc3339(record.expires_at, t)) {
    next = t;
  }
  for (const auto& step : record.escalations) {
    std::chrono::system_clock::time_point at;
    if (!parseRfc3339(step.at, at) || at <= now) continue;
    if (!next || at < *next) next = at;
    break;
  }
  return next;
}

std::string readRequester(std::string_view source, const JobView& job) {
  const auto text = [](const rapidjson::Value* v) {
    return v != nullptr && v->IsString() ? std::string(v->GetString(), v->GetStringLength()) : std::string();
  };
  if (source.empty()) {
    const rapidjson::Value* root = job.payloadJson();
    if (root == nullptr || !root->IsObject()) return {};
    const auto it = root->FindMember("requester");
    return it == root->MemberEnd() ? std::string() : text(&it->value);
  }
  if (source.starts_with("header.")) {
    const std::string* value = findHeader(job.headers(), source.substr(7));
    return value != nullptr ? *value : std::string();
  }
  if (source.starts_with("labels.")) return text(job.label(source.substr(7)));
  if (source.starts_with("payload.")) {
    const rapidjson::Value* at = job.payloadJson();
    std::string_view path = source.substr(8);
    while (at != nullptr) {
      if (!at->IsObject()) return {};
      const std::size_t dot = path.find('.');
      const std::string_view name = path.substr(0, dot);
      const auto it = at->FindMember(rapidjson::Value(rapidjson::StringRef(name.data(), name.size())));
      if (it == at->MemberEnd()) return {};
      at = &it->value;
      if (dot == std::string_view::npos) return text(at);
      path = path.substr(dot + 1);
    }
    return {};
  }
  if (source.starts_with("subject.")) {
    std::size_t n = 0;
    const std::string_view digits = source.substr(8);
    if (std::from_chars(digits.data(), digits.data() + digits.size(), n).ec != std::errc()) return {};
    std::string_view subject = job.subject();
    for (std::size_t i = 0;; ++i) {
      const std::size_t dot = subject.find('.');
      if (i == n) return std::string(subject.substr(0, dot));
      if (dot == std::string_view::npos) return {};
      subject = subject.substr(dot + 1);
    }
  }
  return {};
}

std::string joinVoters(std::vector<std::string> voters) {
  std::sort(voters.begin(), voters.end());
  voters.erase(std::unique(voters.begin(), voters.end()), voters.end());
  std::string out;
  for (const auto& v : voters) {
    if (!out.empty()) out += ',';
    out += v;
  }
  return out;
}

}  // namespace countersign
