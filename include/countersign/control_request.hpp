// The client side of a signed control request: what an approver's program (the CLI, the Slack
// bridge, any channel) sends to approve or reject. Pure: the caller passes the time.
#pragma once

#include <string>

#include "countersign/nkeys.hpp"

namespace countersign {

struct ControlRequestFields {
  std::string action;  // approve | reject
  std::string id;
  std::string approver;  // the person's name
  std::string job_hash;
  std::string policy_snapshot;
  std::string at;      // RFC 3339 UTC
  std::string reason;  // optional (empty: left out)
  std::string via;     // the channel's name when a channel signs for a person (empty: left out)
};

// JSON of the request with `key` (the signer's public nkey) and `signature`: base64url of the
// Ed25519 signature over the RFC 8785 canonical JSON of every other field.
std::string signedControlRequest(const ControlRequestFields& fields, const nkeys::Signer& signer);

}  // namespace countersign
