#include "countersign/receipt.hpp"

#include <algorithm>

#include "countersign/job.hpp"
#include "countersign/json.hpp"

namespace countersign::receipt {
namespace {

// The first value of the header named `name` in any case, or "".
std::string_view headerValue(const Headers& headers, std::string_view name) {
  for (const auto& [key, value] : headers) {
    if (equalsIgnoreCase(key, name)) return value;
  }
  return {};
}

bool readString(const rapidjson::Value& object, const char* name, std::string& out) {
  const auto it = object.FindMember(name);
  if (it == object.MemberEnd() || !it->value.IsString()) return false;
  out.assign(it->value.GetString(), it->value.GetStringLength());
  return true;
}

Result<Claims> parseClaims(std::string_view text) {
  auto parsed = json::parseStrict(text);
  if (!parsed) return fail(Errc::parse_error, "the receipt's JSON does not parse: " + parsed.error().message);
  const rapidjson::Value& object = *parsed;
  if (!object.IsObject()) return fail(Errc::parse_error, "the receipt's JSON is not an object");
  Claims claims;
  for (const auto& [name, field] :
       {std::pair{"job_hash", &claims.job_hash}, std::pair{"policy_snapshot", &claims.policy_snapshot},
        std::pair{"rule", &claims.rule}, std::pair{"decided_at", &claims.decided_at},
        std::pair{"subject", &claims.subject}, std::pair{"target", &claims.target},
        std::pair{"msg_id", &claims.msg_id}}) {
    if (!readString(object, name, *field)) {
      return fail(Errc::parse_error, std::string("the receipt has no string field ") + name);
    }
  }
  if (object.HasMember("approval_id")) {
    std::string id;
    if (!readString(object, "approval_id", id)) {
      return fail(Errc::parse_error, "the receipt's approval_id is not a string");
    }
    claims.approval_id = std::move(id);
  }
  const auto approvers = object.FindMember("approvers");
  if (approvers == object.MemberEnd() || !approvers->value.IsArray()) {
    return fail(Errc::parse_error, "the receipt has no list approvers");
  }
  for (const auto& name : approvers->value.GetArray()) {
    if (!name.IsString()) return fail(Errc::parse_error, "the receipt's approvers are not all strings");
    claims.approvers.emplace_back(name.GetString(), name.GetStringLength());
  }
  return claims;
}

}  // namespace

std::string canonicalJson(const Claims& claims) {
  std::vector<std::string> approvers = claims.approvers;
  std::sort(approvers.begin(), approvers.end(),
            [](const std::string& a, const std::string& b) { return json::lessUtf16(a, b); });
  // Members in RFC 8785 order (all names are ASCII).
  std::string out = "{";
  if (claims.approval_id) {
    out += "\"approval_id\":";
    json::appendJsonString(out, *claims.approval_id);
    out += ',';
  }
  out += "\"approvers\":[";
  for (std::size_t i = 0; i < approvers.size(); ++i) {
    if (i > 0) out += ',';
    json::appendJsonString(out, approvers[i]);
  }
  out += "],";
  const std::pair<const char*, const std::string*> fields[] = {
      {"decided_at", &claims.decided_at}, {"job_hash", &claims.job_hash},
      {"msg_id", &claims.msg_id},         {"policy_snapshot", &claims.policy_snapshot},
      {"rule", &claims.rule},             {"subject", &claims.subject},
      {"target", &claims.target}};
  bool first = true;
  for (const auto& [name, value] : fields) {
    if (!first) out += ',';
    first = false;
    out += '"';
    out += name;
    out += "\":";
    json::appendJsonString(out, *value);
  }
  out += '}';
  return out;
}

std::string make(const nkeys::Signer& signer, const Claims& claims) {
  const std::string text = canonicalJson(claims);
  return nkeys::base64UrlEncode(text) + "." + nkeys::base64UrlEncode(signer.sign(text));
}

std::vector<std::string> approversOf(std::string_view by) {
  std::vector<std::string> names;
  while (!by.empty()) {
    const auto comma = by.find(',');
    const std::string_view name = by.substr(0, comma);
    if (!name.empty()) names.emplace_back(name);
    if (comma == std::string_view::npos) break;
    by.remove_prefix(comma + 1);
  }
  std::sort(names.begin(), names.end(),
            [](const std::string& a, const std::string& b) { return json::lessUtf16(a, b); });
  return names;
}

void addHeaders(Headers& headers, const nkeys::Signer& signer, const Claims& claims) {
  headers.emplace_back(std::string(kReceiptHeader), make(signer, claims));
  headers.emplace_back(std::string(kReceiptKeyHeader), signer.encodedPublicKey());
}

Check verify(const Message& message, const nkeys::PublicKey& countersign_key) {
  Check check;
  const std::string_view receipt = headerValue(message.headers, kReceiptHeader);
  check.present = !receipt.empty();
  if (!check.present) {
    check.problem = "no Countersign-Receipt header: the job did not come through countersign";
    return check;
  }
  const auto dot = receipt.find('.');
  const auto text = dot == std::string_view::npos ? std::nullopt : nkeys::base64UrlDecode(receipt.substr(0, dot));
  const auto signature = dot == std::string_view::npos ? std::nullopt : nkeys::base64UrlDecode(receipt.substr(dot + 1));
  if (!text || !signature) {
    check.problem = "Countersign-Receipt is not <base64url>.<base64url>";
    return check;
  }
  auto claims = parseClaims(*text);
  if (!claims) {
    check.problem = claims.error().message;
    return check;
  }
  check.well_formed = true;
  check.claims = std::move(*claims);

  check.signature_valid = nkeys::verify(countersign_key, *text, *signature);
  if (!check.signature_valid) {
    const auto other = nkeys::parsePublicKey(headerValue(message.headers, kReceiptKeyHeader));
    check.signed_by_other_key = other && *other != countersign_key && nkeys::verify(*other, *text, *signature);
  }

  auto payload = json::parseStrict(message.payload);
  check.recomputed_hash = jobHash(check.claims.subject, message.subject, message.headers,
                                  payload ? &*payload : nullptr, message.payload);
  check.hash_matches = check.recomputed_hash == check.claims.job_hash;
  check.target_matches = message.subject == check.claims.target;
  check.msg_id_matches = headerValue(message.headers, "Nats-Msg-Id") == check.claims.msg_id;

  if (!check.signature_valid) {
    check.problem = check.signed_by_other_key
                        ? "the receipt was signed with another key (" +
                              std::string(headerValue(message.headers, kReceiptKeyHeader)) + ")"
                        : "the receipt's signature does not verify";
  } else if (!check.hash_matches) {
    check.problem = "the job hash recomputed from the message (" + check.recomputed_hash +
                    ") is not the receipt's (" + check.claims.job_hash + "): the job was changed";
  } else if (!check.target_matches) {
    check.problem = "the message arrived on " + message.subject + ", the receipt is for " + check.claims.target;
  } else if (!check.msg_id_matches) {
    check.problem = "the message's Nats-Msg-Id is not the receipt's msg_id";
  }
  return check;
}

}  // namespace countersign::receipt
