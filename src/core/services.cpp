#include "countersign/services.hpp"

#include "countersign/subject.hpp"

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
