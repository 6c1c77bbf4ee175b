// Request signatures of the bridge: Slack's v0 signature on interactivity posts (checked), and
// countersign's v1 signature on webhook posts (made). Pure: the caller passes the time.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace countersign::bridge {

// Lower-case hex HMAC-SHA256(key, data).
std::string hmacSha256Hex(std::string_view key, std::string_view data);

// Equal length and bytes, in time that depends only on the length.
bool constantTimeEqual(std::string_view a, std::string_view b);

inline constexpr std::int64_t kSlackSignatureWindowSeconds = 300;

enum class SlackSignatureCheck { ok, missing, stale, bad_signature };
std::string_view toString(SlackSignatureCheck check);

// "v0=" + hex HMAC-SHA256(secret, "v0:<timestamp>:<body>").
std::string slackSignature(std::string_view secret, std::string_view timestamp, std::string_view body);

// Checks the headers X-Slack-Request-Timestamp and X-Slack-Signature against the raw body:
// the timestamp must be decimal Unix seconds within 300 s of `now_unix` either way, and the
// signature must match, compared in constant time. Look at nothing else before this says ok.
SlackSignatureCheck verifySlackSignature(std::string_view secret, std::string_view timestamp,
                                         std::string_view signature, std::string_view raw_body,
                                         std::int64_t now_unix);

// X-Countersign-Signature of a webhook post: "v1=" + hex HMAC-SHA256(secret, "<timestamp>.<body>").
std::string webhookSignature(std::string_view secret, std::string_view timestamp, std::string_view body);

}  // namespace countersign::bridge
