// The signed control request the bridge sends for a click: approve or reject on behalf of the
// person who clicked, signed with the bridge's channel key. Pure: the caller passes the time.
#pragma once

#include <string>
#include <string_view>

#include "countersign/nkeys.hpp"

namespace countersign::bridge {

struct ControlRequestFields {
  std::string action;  // approve | reject
  std::string id;
  std::string approver;  // the person's name
  std::string job_hash;
  std::string policy_snapshot;
  std::string at;  // RFC 3339 UTC
  std::string reason;
  std::string via;  // the channel's name
};

// JSON of the request with `key` (the signer's public nkey) and `signature`: base64url of the
// Ed25519 signature over the RFC 8785 canonical JSON of every other field.
std::string signedControlRequest(const ControlRequestFields& fields, const nkeys::Signer& signer);

}  // namespace countersign::bridge
