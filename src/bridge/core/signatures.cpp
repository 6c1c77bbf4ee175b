#include "signatures.hpp"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <charconv>

namespace countersign::bridge {
namespace {

std::string toHex(const unsigned char* bytes, std::size_t size) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(size * 2);
  for (std::size_t i = 0; i < size; ++i) {
    out += kDigits[bytes[i] >> 4];
    out += kDigits[bytes[i] & 0x0f];
  }
  return out;
}

}  // namespace

std::string hmacSha256Hex(std::string_view key, std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest, &size);
  return toHex(digest, size);
}

bool constantTimeEqual(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  }
  return diff == 0;
}

std::string_view toString(SlackSignatureCheck check) {
  switch (check) {
    case SlackSignatureCheck::ok: return "ok";
    case SlackSignatureCheck::missing: return "missing";
    case SlackSignatureCheck::stale: return "stale";
    case SlackSignatureCheck::bad_signature: return "bad_signature";
  }
  return "bad_signature";
}

std::string slackSignature(std::string_view secret, std::string_view timestamp, std::string_view body) {
  std::string base;
  base.reserve(timestamp.size() + body.size() + 4);
  base.append("v0:").append(timestamp).append(":").append(body);
  return "v0=" + hmacSha256Hex(secret, base);
}

SlackSignatureCheck verifySlackSignature(std::string_view secret, std::string_view timestamp,
                                         std::string_view signature, std::string_view raw_body,
                                         std::int64_t now_unix) {
  if (timestamp.empty() || signature.empty()) return SlackSignatureCheck::missing;
  std::int64_t sent = 0;
  const auto [end, ec] = std::from_chars(timestamp.data(), timestamp.data() + timestamp.size(), sent);
  if (ec != std::errc() || end != timestamp.data() + timestamp.size() || timestamp.size() > 12) {
    return SlackSignatureCheck::stale;
  }
  const std::int64_t skew = sent > now_unix ? sent - now_unix : now_unix - sent;
  if (skew > kSlackSignatureWindowSeconds) return SlackSignatureCheck::stale;
  if (secret.empty()) return SlackSignatureCheck::bad_signature;
  return constantTimeEqual(slackSignature(secret, timestamp, raw_body), signature)
             ? SlackSignatureCheck::ok
             : SlackSignatureCheck::bad_signature;
}

std::string webhookSignature(std::string_view secret, std::string_view timestamp, std::string_view body) {
  std::string base;
  base.reserve(timestamp.size() + body.size() + 1);
  base.append(timestamp).append(".").append(body);
  return "v1=" + hmacSha256Hex(secret, base);
}

}  // namespace countersign::bridge
