#include "control_request.hpp"

#include "core/json_writer.hpp"
#include "countersign/json.hpp"

namespace countersign::bridge {
namespace {

void writeFields(countersign::detail::JsonObjectWriter& w, const ControlRequestFields& f, std::string_view key) {
  w.field("action", f.action)
      .field("id", f.id)
      .field("approver", f.approver)
      .field("job_hash", f.job_hash)
      .field("policy_snapshot", f.policy_snapshot)
      .field("at", f.at)
      .field("key", key);
  w.optional("reason", f.reason).optional("via", f.via);
}

}  // namespace

std::string signedControlRequest(const ControlRequestFields& fields, const nkeys::Signer& signer) {
  countersign::detail::JsonObjectWriter unsigned_request;
  writeFields(unsigned_request, fields, signer.encodedPublicKey());
  const auto doc = json::parseStrict(unsigned_request.finish());
  const std::string signature = nkeys::base64UrlEncode(signer.sign(json::canonicalize(*doc)));
  countersign::detail::JsonObjectWriter request;
  writeFields(request, fields, signer.encodedPublicKey());
  request.field("signature", signature);
  return request.finish();
}

}  // namespace countersign::bridge
