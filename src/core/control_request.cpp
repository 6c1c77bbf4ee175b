#include "countersign/control_request.hpp"

#include "countersign/json.hpp"

namespace countersign {

std::string signedControlRequest(const ControlRequestFields& fields, const nkeys::Signer& signer) {
  rapidjson::Document request(rapidjson::kObjectType);
  auto& allocator = request.GetAllocator();
  const auto add = [&](const char* name, const std::string& value) {
    request.AddMember(rapidjson::StringRef(name),
                      rapidjson::Value(value.c_str(), static_cast<rapidjson::SizeType>(value.size()), allocator),
                      allocator);
  };
  add("action", fields.action);
  add("id", fields.id);
  add("approver", fields.approver);
  add("job_hash", fields.job_hash);
  add("policy_snapshot", fields.policy_snapshot);
  add("at", fields.at);
  add("key", signer.encodedPublicKey());
  if (!fields.reason.empty()) add("reason", fields.reason);
  if (!fields.via.empty()) add("via", fields.via);
  add("signature", nkeys::base64UrlEncode(signer.sign(json::canonicalize(request))));
  return json::toString(request);
}

}  // namespace countersign
