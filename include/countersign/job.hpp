// Job identity and the deterministic job hash (docs/protocol.md).
#pragma once

#include <rapidjson/document.h>

#include <optional>
#include <string>
#include <string_view>

#include "countersign/message.hpp"

namespace countersign {

inline constexpr std::string_view kHeaderPrefix = "Countersign-";
inline constexpr std::string_view kJobIdHeader = "Countersign-Job-Id";
inline constexpr std::string_view kReplyToHeader = "Countersign-Reply-To";
inline constexpr std::string_view kMsgIdHeader = "Nats-Msg-Id";

// True for header names starting with "countersign-" (ASCII case-insensitive).
bool isCountersignHeader(std::string_view name);
// True for header names starting with "nats-" (ASCII case-insensitive).
bool isNatsHeader(std::string_view name);

// What intake reads before it strips the untrusted headers.
struct UntrustedHeaders {
  std::optional<std::string> job_id;    // Countersign-Job-Id (first value)
  std::optional<std::string> reply_to;  // Countersign-Reply-To (first value)
};
// Reads Countersign-Job-Id / Countersign-Reply-To, then removes every Countersign-* header.
UntrustedHeaders stripCountersignHeaders(Headers& headers);

// Job id as in docs/protocol.md: header Nats-Msg-Id, else the Countersign-Job-Id read before
// stripping, else payload string field "id", else "job_id". nullopt: the caller generates one.
// `payload` is the strict parse, or nullptr when the payload is bytes.
std::optional<std::string> jobIdOf(const Headers& headers,
                                   const std::optional<std::string>& countersign_job_id,
                                   const rapidjson::Value* payload);

// The approval id: the job id itself when it matches ^[-_=A-Za-z0-9]+(\.[-_=A-Za-z0-9]+)*$,
// is at most 128 characters and does not start with "h-"; otherwise "h-" + the first 32 hex
// chars of sha256(job id).
std::string approvalIdFor(std::string_view job_id);
// True when `id` has the approval-id form (used to validate control requests).
bool isValidApprovalId(std::string_view id);

// "sha256:<hex>" over the canonical JSON of
// {"subject","target","headers":{name:[values]},"payload_json"|"payload_b64"}.
// Nats-* and Countersign-* headers are left out. `payload_json` is the strict parse of
// `payload` or nullptr when the payload is bytes (an empty payload is bytes).
std::string jobHash(std::string_view subject, std::string_view target, const Headers& headers,
                    const rapidjson::Value* payload_json, std::string_view payload);

}  // namespace countersign
