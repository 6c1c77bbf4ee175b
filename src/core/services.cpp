#include "countersign/services.hpp"

#include "countersign/subject.hpp"

#include <algorithm>
#include <atomic>

namespace countersign {

ReplyGuard::ReplyGuard(const Config& config)
    : config_(config), prefix_wildcard_(config.control.prefix + ".>") {}

bool ReplyGuard::allowed(std::string_view reply_subject) const {
  if (reply_subject.empty() || !subject::isValid(reply_subject, false)) return false;
  bool listed = false;
  for (const auto& pattern : config_.control.reply_subjects) {
    if (subject::matches(pattern, reply_subject)) {
      listed = true;
      break;
    }
  }
  if (!listed) return false;
  if (subject::matches(prefix_wildcard_, reply_subject)) return false;
  for (const auto& route : config_.routes) {
    if (subject::matches(route.from, reply_subject) || subject::matches(route.to, reply_subject)) {
      return false;
    }
  }
  return true;
}

std::string decisionValue(const Services& services, std::string_view id, DecisionRecord& decision) {
  if (services.tags != nullptr) decision.tag = services.tags->decisionTag(id, decision);
  return toJson(decision);
}

std::string voteValue(const Services& services, std::string_view key, VoteRecord& vote) {
  if (services.tags != nullptr) vote.tag = services.tags->voteTag(key, vote);
  return toJson(vote);
}

bool voteCounts(const Services& services, const ApprovalRecord& record, std::string_view key, const VoteRecord& vote) {
  if (vote.policy_snapshot != record.policy_snapshot || vote.job_hash != record.job_hash) return false;
  if (key != voteKey(record.id, record.binding, vote.approver)) return false;
  if (services.tags == nullptr || services.tags->voteValid(key, vote)) return true;
  services.metrics.voteRefused();
  // Once per process: a forger could write many; the counter says how many.
  static std::atomic<bool> told{false};
  if (!told.exchange(true)) {
    services.log.error("vote not written by countersign: it counts toward no quorum (further ones are counted in "
                       "countersign_votes_refused_total)",
                       {{"key", key}, {"approver", vote.approver}});
  }
  return false;
}

Result<std::vector<std::string>> countVotes(const Services& services, const ApprovalRecord& record,
                                            const std::optional<std::vector<std::string>>& candidates,
                                            VoteStamp* stamp, std::uint64_t through_revision) {
  std::vector<std::string> counted;
  const auto accept = [&](const std::string& key, const KvEntry& entry) {
    if (stamp != nullptr) {
      stamp->newest_revision = std::max(stamp->newest_revision, entry.revision);
      ++stamp->keys;
    }
    auto vote = parseVoteRecord(entry.value);
    if (vote && voteCounts(services, record, key, *vote)) counted.push_back(vote->approver);
  };
  // The vote keys are read together (one wait instead of one per key).
  if (candidates) {
    std::vector<std::string> keys;
    keys.reserve(candidates->size());
    for (const auto& name : *candidates) keys.push_back(voteKey(record.id, record.binding, name));
    auto entries = services.store.getMany(keys);
    for (std::size_t i = 0; i < keys.size(); ++i) {
      if (entries[i]) {
        accept(keys[i], *entries[i]);
      } else if (entries[i].error().code != Errc::not_found) {
        return std::unexpected(entries[i].error());
      }
    }
    return counted;
  }
  auto listed = services.store.groupKeys(record.id, through_revision);
  if (!listed) return std::unexpected(listed.error());
  const std::string prefix = voteKey(record.id, record.binding, "");
  std::vector<std::string> keys;
  for (auto& key : *listed) {
    if (key.starts_with(prefix)) keys.push_back(std::move(key));
  }
  auto entries = services.store.getMany(keys);
  for (std::size_t i = 0; i < keys.size(); ++i) {
    if (entries[i]) accept(keys[i], *entries[i]);
  }
  return counted;
}

Result<ApprovalRecord> updateRecord(KvStore& store, std::string_view id,
                                    const std::function<bool(ApprovalRecord&)>& change,
                                    const KvEntry* known) {
  constexpr int kAttempts = 16;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    Result<KvEntry> entry = attempt == 0 && known != nullptr ? Result<KvEntry>(*known) : store.get(id);
    if (!entry) return std::unexpected(entry.error());
    auto record = parseApprovalRecord(entry->value);
    if (!record) return std::unexpected(record.error());
    if (!change(*record)) return record;
    auto written = store.update(id, toJson(*record), entry->revision);
    if (written) return record;
    if (written.error().code != Errc::wrong_revision) return std::unexpected(written.error());
  }
  return fail(Errc::wrong_revision, "record " + std::string(id) + " kept moving under update");
}

void markDecided(KvStore& store, std::string_view id, ApprovalState state,
                 const DecisionRecord& decision, const ApprovalVote* vote) {
  (void)updateRecord(store, id, [&](ApprovalRecord& r) {
    if (r.state != ApprovalState::pending) return false;
    r.state = state;
    r.decided_by = decision.by;
    r.decided_at = decision.at;
    r.reason = decision.reason;
    if (vote != nullptr) r.approvals.push_back(*vote);
    return true;
  });
}

const RouteConfig* routeFor(const Config& config, const ApprovalRecord& record) {
  for (const auto& route : config.routes) {
    if (route.name == record.route) return &route;
  }
  for (const auto& route : config.routes) {
    if (subject::matches(route.to, record.target)) return &route;
  }
  return nullptr;
}

}  // namespace countersign
