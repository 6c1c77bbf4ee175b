// Approval receipts: the signed statement that a job passed countersign, carried by every
// released and allowed job so that a worker can refuse one published straight onto its subject.
//
//   Countersign-Receipt: <base64url(JSON)>.<base64url(Ed25519 signature of those JSON bytes)>
//   Countersign-Receipt-Key: <countersign's nkey public key, "U...">
//
// JSON is the RFC 8785 canonical form of {approval_id, approvers, decided_at, job_hash, msg_id,
// policy_snapshot, rule, subject, target}; allowed jobs have no approval_id and approvers [].
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "countersign/message.hpp"
#include "countersign/nkeys.hpp"
#include "countersign/result.hpp"

namespace countersign::receipt {

inline constexpr std::string_view kReceiptHeader = "Countersign-Receipt";
inline constexpr std::string_view kReceiptKeyHeader = "Countersign-Receipt-Key";

struct Claims {
  std::optional<std::string> approval_id;  // none for allowed jobs
  std::string job_hash;
  std::string policy_snapshot;
  std::string rule;
  std::vector<std::string> approvers;  // sorted; empty for allowed jobs
  std::string decided_at;              // RFC 3339 UTC
  std::string subject;                 // the subject countersign received the job on
  std::string target;                  // the subject it was published to
  std::string msg_id;                  // the Nats-Msg-Id it was published with ("" if none)
};

// The canonical JSON (approvers are sorted here whatever their order in `claims`).
std::string canonicalJson(const Claims& claims);
// "<base64url(canonicalJson)>.<base64url(signature)>".
std::string make(const nkeys::Signer& signer, const Claims& claims);
// The names in a decision's `by` ("alice" or "alice,bob"), sorted.
std::vector<std::string> approversOf(std::string_view by);
// Appends the two receipt headers.
void addHeaders(Headers& headers, const nkeys::Signer& signer, const Claims& claims);

// What a worker learns from a message's receipt.
struct Check {
  bool present = false;      // a Countersign-Receipt header is there
  bool well_formed = false;  // two base64url parts, the first a JSON object with every field
  bool signature_valid = false;  // the signature verifies with the expected key
  // The signature verifies with the key in Countersign-Receipt-Key, which is not the expected
  // one: a receipt from another countersign (or one made up by whoever holds that key).
  bool signed_by_other_key = false;
  bool hash_matches = false;    // the job hash recomputed from the message equals the receipt's
  bool target_matches = false;  // the message's subject is the receipt's target
  bool msg_id_matches = false;  // the message's Nats-Msg-Id (if any) is the receipt's msg_id
  std::string problem;          // the first thing wrong, for people; empty when ok()
  Claims claims;
  std::string recomputed_hash;

  bool ok() const { return signature_valid && hash_matches && target_matches && msg_id_matches; }
};

// Checks `message` (as delivered to the worker: subject, headers, payload) against the receipt
// it carries, with countersign's public key as the worker knows it (configured, never taken from
// the message).
Check verify(const Message& message, const nkeys::PublicKey& countersign_key);

}  // namespace countersign::receipt
