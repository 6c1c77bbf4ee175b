// Job identity and the job hash (docs/protocol.md).
#include "countersign/job.hpp"

#include <algorithm>
#include <array>
#include <vector>

#include "countersign/json.hpp"

namespace countersign {
namespace {

constexpr std::size_t kMaxApprovalIdLength = 128;
constexpr std::string_view kHashedIdPrefix = "h-";
constexpr std::size_t kHashedIdHexChars = 32;

bool isIdTokenChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '=';
}

// ^[-_=A-Za-z0-9]+(\.[-_=A-Za-z0-9]+)*$ without std::regex: non-empty tokens joined by dots.
bool matchesIdPattern(std::string_view id) {
  if (id.empty() || id.front() == '.' || id.back() == '.') return false;
  char previous = '\0';
  for (const char c : id) {
    if (c == '.') {
      if (previous == '.') return false;
    } else if (!isIdTokenChar(c)) {
      return false;
    }
    previous = c;
  }
  return true;
}

bool isLowerHex(std::string_view text) {
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

const std::string* firstHeaderIgnoreCase(const Headers& headers, std::string_view name) {
  for (const auto& [header_name, value] : headers) {
    if (equalsIgnoreCase(header_name, name)) return &value;
  }
  return nullptr;
}

std::optional<std::string> nonEmptyPayloadString(const rapidjson::Value& payload,
                                                 std::string_view field) {
  const auto member = payload.FindMember(rapidjson::Value(
      rapidjson::StringRef(field.data(), static_cast<rapidjson::SizeType>(field.size()))));
  if (member == payload.MemberEnd() || !member->value.IsString() ||
      member->value.GetStringLength() == 0) {
    return std::nullopt;
  }
  return std::string(member->value.GetString(), member->value.GetStringLength());
}

// `"headers":{name:[values...]}` with names in RFC 8785 order and each name's values in wire
// order (a stable sort keeps it). Nats-* and Countersign-* are left out.
void appendHashedHeaders(std::string& out, const Headers& headers) {
  constexpr std::size_t kInline = 16;
  std::array<const Headers::value_type*, kInline> inline_kept;
  std::vector<const Headers::value_type*> heap_kept;
  const Headers::value_type** kept = inline_kept.data();
  if (headers.size() > kInline) {
    heap_kept.resize(headers.size());
    kept = heap_kept.data();
  }
  std::size_t count = 0;
  for (const auto& header : headers) {
    if (!isNatsHeader(header.first) && !isCountersignHeader(header.first)) kept[count++] = &header;
  }
  const auto by_name = [](const Headers::value_type* a, const Headers::value_type* b) {
    return json::lessUtf16(a->first, b->first);
  };
  if (count <= kInline) {
    // Stable insertion sort: a handful of headers, and std::stable_sort would allocate.
    for (std::size_t i = 1; i < count; ++i) {
      const auto* header = kept[i];
      std::size_t j = i;
      for (; j > 0 && by_name(header, kept[j - 1]); --j) kept[j] = kept[j - 1];
      kept[j] = header;
    }
  } else {
    std::stable_sort(kept, kept + count, by_name);
  }

  out += "\"headers\":{";
  for (std::size_t i = 0; i < count; ++i) {
    const bool new_name = i == 0 || kept[i]->first != kept[i - 1]->first;
    if (new_name) {
      if (i > 0) out += "],";
      json::appendJsonString(out, kept[i]->first);
      out += ":[";
    } else {
      out += ',';
    }
    json::appendJsonString(out, kept[i]->second);
  }
  if (count > 0) out += ']';
  out += '}';
}

}  // namespace

bool isCountersignHeader(std::string_view name) {
  return startsWithIgnoreCase(name, kHeaderPrefix);
}

bool isNatsHeader(std::string_view name) {
  return startsWithIgnoreCase(name, "Nats-");
}

// The two headers are read ASCII-case-insensitively, like the stripping that follows: the first
// header (in wire order) spelled any way counts.
UntrustedHeaders stripCountersignHeaders(Headers& headers) {
  UntrustedHeaders untrusted;
  if (const auto* job_id = firstHeaderIgnoreCase(headers, kJobIdHeader)) untrusted.job_id = *job_id;
  if (const auto* reply_to = firstHeaderIgnoreCase(headers, kReplyToHeader)) {
    untrusted.reply_to = *reply_to;
  }
  std::erase_if(headers, [](const auto& header) { return isCountersignHeader(header.first); });
  return untrusted;
}

// An empty value never counts as an id: the next source is tried. Nats-Msg-Id is looked up
// byte-exact, as nats-server does for its deduplication.
std::optional<std::string> jobIdOf(const Headers& headers,
                                   const std::optional<std::string>& countersign_job_id,
                                   const rapidjson::Value* payload) {
  if (const auto* msg_id = findHeader(headers, kMsgIdHeader); msg_id && !msg_id->empty()) {
    return *msg_id;
  }
  if (countersign_job_id && !countersign_job_id->empty()) return *countersign_job_id;
  if (payload != nullptr && payload->IsObject()) {
    if (auto id = nonEmptyPayloadString(*payload, "id")) return id;
    if (auto id = nonEmptyPayloadString(*payload, "job_id")) return id;
  }
  return std::nullopt;
}

std::string approvalIdFor(std::string_view job_id) {
  if (job_id.size() <= kMaxApprovalIdLength && !job_id.starts_with(kHashedIdPrefix) &&
      matchesIdPattern(job_id)) {
    return std::string(job_id);
  }
  std::string id(kHashedIdPrefix);
  id += std::string_view(json::sha256Hex(job_id)).substr(0, kHashedIdHexChars);
  return id;
}

// Exactly the ids approvalIdFor can return: a pattern-matching id of at most 128 characters,
// where an "h-" prefix is only allowed as "h-" + 32 lower-case hex digits.
bool isValidApprovalId(std::string_view id) {
  if (id.size() > kMaxApprovalIdLength || !matchesIdPattern(id)) return false;
  if (!id.starts_with(kHashedIdPrefix)) return true;
  const std::string_view hex = id.substr(kHashedIdPrefix.size());
  return hex.size() == kHashedIdHexChars && isLowerHex(hex);
}

// The canonical text is written directly: the top-level keys in RFC 8785 order are "headers",
// "payload_b64" | "payload_json", "subject", "target".
std::string jobHash(std::string_view subject, std::string_view target, const Headers& headers,
                    const rapidjson::Value* payload_json, std::string_view payload) {
  std::string text;
  text.reserve(256 + payload.size() * 4 / 3 + subject.size() + target.size());
  text += '{';
  appendHashedHeaders(text, headers);
  if (payload_json != nullptr && !payload.empty()) {
    text += ",\"payload_json\":";
    json::appendCanonical(text, *payload_json);
  } else {
    text += ",\"payload_b64\":\"";
    json::appendBase64(text, payload);
    text += '"';
  }
  text += ",\"subject\":";
  json::appendJsonString(text, subject);
  text += ",\"target\":";
  json::appendJsonString(text, target);
  text += '}';
  return "sha256:" + json::sha256Hex(text);
}

}  // namespace countersign
