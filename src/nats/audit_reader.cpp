#include "nats/audit_reader.hpp"

#include <nats/nats.h>
#include <rapidjson/document.h>

#include <algorithm>
#include <optional>

namespace countersign::natsio {

namespace {

std::string_view member(const rapidjson::Value& object, const char* name) {
  const auto it = object.FindMember(name);
  if (it == object.MemberEnd() || !it->value.IsString()) return {};
  return {it->value.GetString(), it->value.GetStringLength()};
}

}  // namespace

std::optional<std::string> messageHeader(natsMsg* msg, std::string_view name) {
  const char* value = nullptr;
  if (natsMsgHeader_Get(msg, std::string(name).c_str(), &value) != NATS_OK || value == nullptr) return std::nullopt;
  return std::string(value);
}

EventOrigin checkEvent(natsMsg* msg, const EventVerifier& verifier) {
  const auto signature = messageHeader(msg, kEventSignatureHeader);
  const auto key = messageHeader(msg, kEventKeyHeader);
  const std::string_view body(natsMsg_GetData(msg), static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
  return verifier.check(body, signature ? &*signature : nullptr, key ? &*key : nullptr);
}

Result<std::vector<CheckedEvent>> approvalTimeline(Connection& connection, const std::string& stream,
                                                   std::string_view id, std::size_t max_scan,
                                                   const EventVerifier& verifier) {
  jsStreamInfo* info = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  natsStatus status = js_GetStreamInfo(&info, connection.js(), stream.c_str(), nullptr, &code);
  if (status != NATS_OK || info == nullptr) {
    return fail(Errc::unavailable, "audit stream " + stream + ": " + natsStatus_GetText(status));
  }
  const std::uint64_t first = info->State.FirstSeq;
  const std::uint64_t last = info->State.LastSeq;
  const bool empty = info->State.Msgs == 0;
  jsStreamInfo_Destroy(info);

  std::vector<CheckedEvent> newest_first;
  std::size_t scanned = 0;
  for (std::uint64_t seq = last; !empty && seq >= first && seq > 0 && scanned < max_scan; --seq, ++scanned) {
    natsMsg* msg = nullptr;
    status = js_GetMsg(&msg, connection.js(), stream.c_str(), seq, nullptr, &code);
    if (status == NATS_NOT_FOUND) continue;
    if (status != NATS_OK) {
      return fail(Errc::unavailable, "audit stream " + stream + " #" + std::to_string(seq) + ": " +
                                         natsStatus_GetText(status));
    }
    std::string body(natsMsg_GetData(msg), static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
    const EventOrigin origin = checkEvent(msg, verifier);
    natsMsg_Destroy(msg);
    rapidjson::Document doc;
    doc.Parse(body.data(), body.size());
    if (doc.HasParseError() || !doc.IsObject() || member(doc, "approval_id") != id) continue;
    const bool first_hold = member(doc, "event") == "held" && member(doc, "reason") != "snapshot_changed" &&
                            (origin == EventOrigin::verified || verifier.empty());
    newest_first.push_back(CheckedEvent{std::move(body), origin});
    if (first_hold) break;
  }
  std::reverse(newest_first.begin(), newest_first.end());
  return newest_first;
}

}  // namespace countersign::natsio
