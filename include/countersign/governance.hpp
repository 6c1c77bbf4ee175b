// Who may decide a held job, and when enough have: the one place every channel (control
// subjects, REST API, CLI, chat bridges, the web console) goes through. Pure: no store, no
// clock of its own (the caller passes `now`), no I/O.
//
//   identify()    who is acting: the approver named by the request, proved by a signature
//                 (Ed25519 over the RFC 8785 form of the request without `signature`) or by the
//                 edge (a REST token), and known to the registry when there is one;
//   mayDecide()   whether that approver may decide this record now: the rule's approvers plus
//                 the escalation steps that apply, and separation of duties;
//   voters()/reached()   whom to count and whether their votes make the quorum.
#pragma once

#include <chrono>
#include <expected>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "countersign/approvers.hpp"
#include "countersign/policy.hpp"
#include "countersign/record.hpp"
#include "countersign/result.hpp"
#include "countersign/wire_names.hpp"

namespace countersign {

// Why an approve/reject is refused before it touches the record. 401 `unauthenticated` for the
// first four, 403 `forbidden` for the rest; the reason is the wire word.
enum class Refusal {
  signature_required,
  bad_signature,
  unknown_key,
  stale_signature,
  not_an_approver,
  channel_not_allowed,
  self_approval,
};
std::string_view toString(Refusal refusal);
int httpCode(Refusal refusal);
Outcome statusOf(Refusal refusal);  // unauthenticated | forbidden

// How far a signed request's `at` may be from countersign's clock, either way.
inline constexpr std::chrono::seconds kMaxSignatureSkew{300};

// The signature part of a control request, as received.
struct RequestSignature {
  std::string key;        // the signer's nkey public key
  std::string signature;  // base64url, no padding
  std::string at;         // RFC 3339
  std::string action;     // approve | reject
  std::string via;        // the channel, when a channel signed for the approver
  std::string signed_text;  // RFC 8785 form of the request object without `signature`
};

// An approve or reject as the governance checks see it.
struct DecisionClaim {
  std::string_view action;    // approve | reject: what the edge was asked to do
  std::string_view approver;  // who the request says decides
  const RequestSignature* signature = nullptr;  // null: unsigned
  // The edge proved the approver itself (a REST token naming them): no signature needed.
  bool authenticated = false;
};

// Who acts, once proved.
struct Actor {
  std::string approver;
  std::string via;  // the channel that signed for them
  std::string key;  // the key that signed (empty: unsigned)
};

class Governance {
 public:
  // `registry` null: open mode (the approver is a claim; NATS permissions guard the subjects).
  explicit Governance(const ApproverRegistry* registry) : registry_(registry) {}

  std::expected<Actor, Refusal> identify(const DecisionClaim& claim,
                                  std::chrono::system_clock::time_point now) const;

  // nullopt: `actor` may decide `record` now.
  std::optional<Refusal> mayDecide(const ApprovalRecord& record, const Actor& actor,
                                   std::chrono::system_clock::time_point now) const;

  // The names whose votes count for `record` now (each read by its own vote key). nullopt:
  // anyone may vote (open mode without an approvers list), so the votes must be listed.
  std::optional<std::vector<std::string>> voters(const ApprovalRecord& record,
                                                 std::chrono::system_clock::time_point now) const;

  // True when the distinct `voters` make `quorum` (per group: that many members of each group).
  bool reached(const Quorum& quorum, const std::vector<std::string>& voters) const;

  // Fills the record's governance from `rule` as of `held_at` (hold or re-bind): approvers
  // (resolved to names when the registry knows them), quorum, separation of duties and the
  // escalation steps with the time each applies.
  void bind(ApprovalRecord& record, const Rule& rule,
            std::chrono::system_clock::time_point held_at) const;

  // The escalation steps of `record` that apply at `now` (their count; steps apply in order).
  static int stepsApplied(const ApprovalRecord& record, std::chrono::system_clock::time_point now);

  const ApproverRegistry* registry() const { return registry_; }

 private:
  // The entries (names, group:<g>) that may decide at `now`; empty: anyone.
  std::vector<std::string> entries(const ApprovalRecord& record,
                                   std::chrono::system_clock::time_point now) const;
  bool covered(const std::vector<std::string>& entries, std::string_view name) const;

  const ApproverRegistry* registry_;
};

// When the record next needs the replayer's attention after `now`: its deadline or its next
// escalation step, whichever is first; nullopt: never.
std::optional<std::chrono::system_clock::time_point> nextAttention(const ApprovalRecord& record,
                                                                   std::chrono::system_clock::time_point now);

// The requester of a job, read where the rule says (header.<Name>, payload.<a.b>,
// labels.<name>, subject.<n>); empty when absent or not a string. An empty `source` reads the
// payload's top-level "requester" string.
std::string readRequester(std::string_view source, const JobView& job);

// "alice,bob": the voters sorted and joined, as Countersign-Approved-By and a decision's `by`.
std::string joinVoters(std::vector<std::string> voters);

}  // namespace countersign
