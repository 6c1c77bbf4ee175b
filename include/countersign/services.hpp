// What the core's decision makers (intake, control, release) share: the injected
// environment (store, publisher, clock, ids, log), the current policy and the configuration.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "countersign/clock.hpp"
#include "countersign/config.hpp"
#include "countersign/log.hpp"
#include "countersign/metrics.hpp"
#include "countersign/policy.hpp"
#include "countersign/publisher.hpp"
#include "countersign/record.hpp"
#include "countersign/store.hpp"
#include "countersign/store_tags.hpp"

namespace countersign {

class EventSink;
namespace nkeys {
class Signer;
}

// The policy in force; replaced whole on reload. Thread-safe; readers get a shared pointer
// they may keep using after a swap.
class PolicyHolder {
 public:
  explicit PolicyHolder(std::shared_ptr<const Policy> initial) : policy_(std::move(initial)) {}
  std::shared_ptr<const Policy> current() const {
    const std::lock_guard lock(mutex_);
    return policy_;
  }
  void replace(std::shared_ptr<const Policy> next) {
    const std::lock_guard lock(mutex_);
    policy_ = std::move(next);
  }

 private:
  mutable std::mutex mutex_;
  std::shared_ptr<const Policy> policy_;
};

// Which reply subjects countersign may publish on (docs/protocol.md): those matching
// control.reply_subjects, and not under <prefix>. nor matching any route's subjects, so that a
// producer cannot make countersign publish where the producer may not.
class ReplyGuard {
 public:
  explicit ReplyGuard(const Config& config);
  bool allowed(std::string_view reply_subject) const;

 private:
  const Config& config_;
  std::string prefix_wildcard_;
};

struct Services {
  const Config& config;
  KvStore& store;
  Publisher& publisher;
  const Clock& clock;
  IdSource& ids;
  PolicyHolder& policy;
  Throttler& throttler;
  EventSink& events;
  Logger& log;
  Metrics& metrics;
  // countersign's own key: signs receipts on released (and, per config, allowed) jobs. nullptr:
  // no receipts (tests that do not look at them).
  const nkeys::Signer* receipts = nullptr;
  // Tags held records and decisions at creation, checked before a release (docs/security.md).
  // nullptr: untagged and unchecked (unit tests that do not look at them).
  const StoreTags* tags = nullptr;
};

// The value of a new <id>/decision key: `decision` with countersign's tag set (when tags are on).
std::string decisionValue(const Services& services, std::string_view id, DecisionRecord& decision);

// The value of a new <id>/vote/<binding>/<approver> key: `vote` with countersign's tag set (when
// tags are on).
std::string voteValue(const Services& services, std::string_view key, VoteRecord& vote);

// Whether the vote stored under `key` counts for `record`: it names the record's job hash and
// policy snapshot and the approver its key names, and (tags on) carries countersign's tag. A vote
// refused for its tag is counted in countersign_votes_refused_total; the first one is logged.
bool voteCounts(const Services& services, const ApprovalRecord& record, std::string_view key, const VoteRecord& vote);

// What the vote keys read for one count looked like: any write to them (a new vote, a vote
// replacing one written by hand, a delete) changes it, since every write to the bucket gets a
// higher revision than all before it.
struct VoteStamp {
  std::uint64_t newest_revision = 0;  // of the vote keys found, counted or not
  std::size_t keys = 0;               // vote keys found
  bool operator==(const VoteStamp&) const = default;
};

// The approvers whose votes count for `record` under its binding: one read per name of
// `candidates` (each through the stream: a key listing can miss the newest keys), or, when
// anyone may vote (nullopt), the approval's keys under the binding (KvStore::groupKeys), with
// every vote written up to `through_revision`: a voter passes its own vote's revision, so that of
// two votes cast at once through two processes the later one's count has the earlier one (an
// index may otherwise show another process's newest vote late). `stamp`,
// when given, receives what the keys read looked like.
Result<std::vector<std::string>> countVotes(const Services& services, const ApprovalRecord& record,
                                            const std::optional<std::vector<std::string>>& candidates,
                                            VoteStamp* stamp = nullptr, std::uint64_t through_revision = 0);

// Reads, changes and compare-and-swaps the record under `id`, retrying when a concurrent
// writer moved it on (they converge: every writer applies the same monotone change).
// `change` returns false to leave the record as it is. `known`: the entry the caller read last;
// the first attempt starts from it instead of reading again (a stale one only costs a retry).
Result<ApprovalRecord> updateRecord(KvStore& store, std::string_view id,
                                    const std::function<bool(ApprovalRecord&)>& change,
                                    const KvEntry* known = nullptr);

// Writes a decision into the record's view (state, decided_by/at, reason, and the vote when
// given), after the <id>/decision key that makes it true. Only a pending view moves: the view
// never goes back. Best effort: the keys decide, a failed view update is repaired by later ones.
void markDecided(KvStore& store, std::string_view id, ApprovalState state,
                 const DecisionRecord& decision, const ApprovalVote* vote = nullptr);

// The route that holds `record`: by name, else the first whose `to` matches its target.
const RouteConfig* routeFor(const Config& config, const ApprovalRecord& record);

}  // namespace countersign
