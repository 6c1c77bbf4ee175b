#include "countersign/approval_index.hpp"

#include <algorithm>

#include "countersign/json.hpp"
#include "countersign/subject.hpp"

namespace countersign {

namespace {

std::string stringField(const rapidjson::Value& doc, const char* name) {
  const auto it = doc.FindMember(name);
  if (it == doc.MemberEnd() || !it->value.IsString()) return {};
  return {it->value.GetString(), it->value.GetStringLength()};
}

std::size_t stateIndex(ApprovalState state) {
  return static_cast<std::size_t>(state);
}

// Nothing will happen to it any more: let go first when memory is bounded.
bool finished(ApprovalState state) {
  return state == ApprovalState::released || state == ApprovalState::rejected || state == ApprovalState::expired;
}

}  // namespace

ApprovalState ApprovalSummary::state() const {
  if (released) return ApprovalState::released;
  if (decided && decision && record_state != ApprovalState::release_unknown) {
    switch (*decision) {
      case FinalDecision::approved: return ApprovalState::approved;
      case FinalDecision::rejected: return ApprovalState::rejected;
      case FinalDecision::expired: return ApprovalState::expired;
    }
  }
  return record_state;
}

std::optional<ApprovalSummary> summarizeRecord(std::string_view json) {
  auto parsed = json::parseStrict(json);
  if (!parsed || !parsed->IsObject()) return std::nullopt;
  const rapidjson::Value& doc = *parsed;
  ApprovalSummary s;
  s.id = stringField(doc, "id");
  const auto state = parseApprovalState(stringField(doc, "state"));
  if (s.id.empty() || !state) return std::nullopt;
  s.record_state = *state;
  s.job_id = stringField(doc, "job_id");
  s.topic = stringField(doc, "topic");
  s.rule = stringField(doc, "rule");
  s.created_at = stringField(doc, "created_at");
  s.expires_at = stringField(doc, "expires_at");
  s.requester = stringField(doc, "requester");
  if (const auto it = doc.FindMember("votes"); it != doc.MemberEnd() && it->value.IsArray()) {
    s.votes = static_cast<int>(it->value.Size());
  }
  if (const auto it = doc.FindMember("quorum"); it != doc.MemberEnd()) {
    if (it->value.IsInt()) {
      s.quorum = it->value.GetInt();
    } else if (it->value.IsObject()) {
      int sum = 0;
      for (const auto& m : it->value.GetObject()) sum += m.value.IsInt() ? m.value.GetInt() : 0;
      s.quorum = sum;
    }
  }
  if (const auto it = doc.FindMember("approvers"); it != doc.MemberEnd() && it->value.IsArray()) {
    for (const auto& a : it->value.GetArray()) {
      if (a.IsString()) s.approvers.emplace_back(a.GetString(), a.GetStringLength());
    }
  }
  return s;
}

void ApprovalTable::place(const std::string& id, std::optional<ApprovalState> before, Entry& entry) {
  if (before) by_state_[stateIndex(*before)].erase(id);
  if (!entry.has_record) return;
  const ApprovalState now = entry.summary.state();
  by_state_[stateIndex(now)].insert(id);
  if (finished(now) && entry.finished_order == 0) {
    entry.finished_order = ++finished_count_;
    finished_.emplace(entry.finished_order, id);
  } else if (!finished(now) && entry.finished_order != 0) {
    finished_.erase(entry.finished_order);
    entry.finished_order = 0;
  }
}

void ApprovalTable::forgetOldestFinished() {
  while (finished_.size() > finished_kept_) {
    const auto oldest = finished_.begin();
    if (const auto it = by_id_.find(oldest->second); it != by_id_.end()) {
      by_state_[stateIndex(it->second.summary.state())].erase(it->first);
      by_id_.erase(it);
    }
    finished_.erase(oldest);
    forgot_finished_ = true;
  }
}

void ApprovalTable::put(std::string_view key, std::string_view value, std::uint64_t revision,
                        Clock::time_point written) {
  const auto slash = key.find('/');
  const std::string_view id = key.substr(0, slash);
  const std::string_view rest = slash == std::string_view::npos ? std::string_view() : key.substr(slash + 1);
  if (!rest.empty() && rest != "decision" && rest != "released") return;  // votes, claims, ...
  if (id.empty()) return;

  // Parsed before the lock: a record's JSON is the costly part.
  std::optional<ApprovalSummary> summary;
  std::optional<DecisionRecord> decision;
  if (rest.empty()) {
    summary = summarizeRecord(value);
    if (!summary) return;  // not a record of ours
  } else if (rest == "decision") {
    if (auto d = parseDecisionRecord(value)) decision = std::move(*d);
  }

  const std::lock_guard lock(mutex_);
  auto it = by_id_.find(id);
  if (it == by_id_.end()) it = by_id_.emplace(std::string(id), Entry{}).first;
  Entry& entry = it->second;
  const std::optional<ApprovalState> before =
      entry.has_record ? std::optional<ApprovalState>(entry.summary.state()) : std::nullopt;
  if (rest.empty()) {
    if (entry.has_record && revision <= entry.record_revision) return;  // an older write
    // The decisive keys are kept: they arrive independently of the record's writes.
    summary->decided = entry.summary.decided;
    summary->decision = entry.summary.decision;
    summary->released = entry.summary.released;
    entry.summary = std::move(*summary);
    entry.has_record = true;
    entry.record_revision = revision;
    entry.record_written = written;
  } else if (rest == "decision") {
    entry.summary.decided = true;  // created once: its value never changes
    if (decision) entry.summary.decision = decision->decision;
  } else {
    entry.summary.released = true;
  }
  place(it->first, before, entry);
  forgetOldestFinished();
}

std::optional<ApprovalPage> ApprovalTable::page(const ApprovalQuery& query, Clock::time_point now) const {
  ApprovalPage page;
  const int limit = std::max(1, query.limit);
  const bool ages = max_age_.count() > 0;
  const std::lock_guard lock(mutex_);
  if (forgot_finished_ && (!query.state || finished(*query.state))) return std::nullopt;
  auto take = [&](const std::string& id, const Entry& entry) {
    if (!entry.has_record) return true;
    if (ages && entry.record_written + max_age_ < now) return true;  // aged out of the bucket
    if (!query.topic.empty() && !subject::matches(query.topic, entry.summary.topic)) return true;
    if (static_cast<int>(page.items.size()) == limit) {
      page.next_after = page.items.back().id;
      return false;
    }
    page.items.push_back(entry.summary);
    page.items.back().id = id;
    return true;
  };
  if (query.state) {
    const auto& ids = by_state_[stateIndex(*query.state)];
    for (auto it = query.after.empty() ? ids.begin() : ids.upper_bound(query.after); it != ids.end(); ++it) {
      if (!take(*it, by_id_.find(*it)->second)) break;
    }
  } else {
    for (auto it = query.after.empty() ? by_id_.begin() : by_id_.upper_bound(query.after); it != by_id_.end();
         ++it) {
      if (!take(it->first, it->second)) break;
    }
  }
  return page;
}

bool ApprovalTable::forgotFinished() const {
  const std::lock_guard lock(mutex_);
  return forgot_finished_;
}

std::size_t ApprovalTable::size() const {
  const std::lock_guard lock(mutex_);
  return by_state_[0].size() + by_state_[1].size() + by_state_[2].size() + by_state_[3].size() +
         by_state_[4].size() + by_state_[5].size();
}

}  // namespace countersign
