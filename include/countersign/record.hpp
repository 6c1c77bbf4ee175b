// The held record and the decisive keys of one approval (docs/protocol.md).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "countersign/message.hpp"
#include "countersign/policy.hpp"
#include "countersign/result.hpp"

namespace countersign {

enum class ApprovalState { pending, approved, released, rejected, expired, release_unknown };
std::string_view toString(ApprovalState state);
std::optional<ApprovalState> parseApprovalState(std::string_view text);

struct ApprovalVote {
  std::string approver;
  std::string at;
  std::string reason;
  std::string via;  // the channel that carried it (empty: the approver themself)
};

// Who may additionally decide from `at` on (an escalation step of the rule, resolved at hold).
struct EscalationRecord {
  std::string at;                      // RFC 3339: created_at + the step's `after`
  std::vector<std::string> approvers;  // names and group:<g> as the rule says them
};

// The record stored under key <approval id>. `state` is a view written after the keys that
// decide it; readers that need certainty read <id>/decision and <id>/released.
struct ApprovalRecord {
  std::string id;
  ApprovalState state = ApprovalState::pending;
  std::string route;  // the route that held it (extension: finds to_stream at release)
  std::string subject;
  std::string target;
  std::string topic;
  Headers headers;  // no Nats-* and no Countersign-* headers
  std::string payload;  // original bytes (not base64: encoded on the way to/from JSON)
  bool payload_is_json = false;  // payload_encoding "json" | "base64"
  std::string job_id;
  std::string job_hash;
  std::string policy_snapshot;
  std::string rule;
  std::string requester;
  std::string created_at;
  std::string expires_at;  // empty: no deadline
  std::string on_timeout = "reject";  // reject | allow (the rule's, fixed at hold time)
  std::vector<ApprovalVote> approvals;
  // Governance of the rule as of the hold (or the last re-bind): who may decide (names and
  // group:<g>; empty: anyone), how many must approve, whether the requester is excluded.
  std::vector<std::string> approvers;
  Quorum quorum;
  bool separation_of_duties = false;
  std::vector<EscalationRecord> escalations;
  // Votes under the current binding (a view of the <id>/vote/<binding>/<name> keys).
  std::vector<ApprovalVote> votes;
  int binding = 0;  // 0 at the hold, +1 at each re-bind to a new policy snapshot
  std::string decided_by;
  std::string decided_at;
  std::string reason;
  std::string released_at;
  std::string release_msg_id;
  int replays = 0;
  // countersign's tag over the job (StoreTags::recordTag), set at the hold; "" on records held
  // before tags existed.
  std::string tag;
};

// Serialises to the KV value (compact JSON; field names as in docs/protocol.md).
std::string toJson(const ApprovalRecord& record);
// Errc::parse_error when the value is not a record (bad JSON, missing or mistyped fields).
Result<ApprovalRecord> parseApprovalRecord(std::string_view json);

enum class FinalDecision { approved, rejected, expired };
std::string_view toString(FinalDecision decision);

// Value of <id>/decision: created once, never updated (the lock).
struct DecisionRecord {
  FinalDecision decision = FinalDecision::approved;
  std::string by;
  std::string at;
  std::string reason;
  std::string policy_snapshot;
  std::string job_hash;
  std::string via;  // the channel the decision came through (e.g. slack); empty: none, left out
  std::string tag;  // countersign's tag over the approval id and the fields above (StoreTags)
};
std::string toJson(const DecisionRecord& decision);
Result<DecisionRecord> parseDecisionRecord(std::string_view json);

// Value of <id>/vote/<binding>/<approver>: created once per approver and binding.
struct VoteRecord {
  std::string approver;
  std::string at;
  std::string via;
  std::string reason;
  std::string job_hash;
  std::string policy_snapshot;
  std::string key;        // the signer's nkey, when signed
  std::string signature;  // base64url Ed25519 signature of the signed request, when signed
  std::string tag;        // countersign's tag over the vote's key and the fields above (StoreTags)
};
std::string toJson(const VoteRecord& vote);
Result<VoteRecord> parseVoteRecord(std::string_view json);

// Value of <id>/released: created once, after the publish was confirmed.
struct ReleasedRecord {
  std::string at;
  std::string msg_id;
  std::string stream;
  std::uint64_t sequence = 0;
  std::string by;  // "approve" or "replay"
};
std::string toJson(const ReleasedRecord& released);
Result<ReleasedRecord> parseReleasedRecord(std::string_view json);

// Keys. '/' is outside the approval-id charset, so they never collide with a record key.
std::string decisionKey(std::string_view id);
std::string releasedKey(std::string_view id);
std::string replayKey(std::string_view id, int attempt);
std::string voteKey(std::string_view id, int binding, std::string_view approver);
// Created once when escalation step `step` (0-based) of binding `binding` applies: the
// `escalated` event goes out once, whichever replica sees it first.
std::string escalatedKey(std::string_view id, int binding, int step);

}  // namespace countersign
