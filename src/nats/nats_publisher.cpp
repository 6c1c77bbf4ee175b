#include "nats/nats_publisher.hpp"

#include <algorithm>
#include <string>

#include "countersign/json.hpp"
#include "nats/message_convert.hpp"

namespace countersign::natsio {
namespace {

struct StreamInfoFree {
  void operator()(jsStreamInfo* info) const { jsStreamInfo_Destroy(info); }
};

constexpr std::int64_t kWrongLastSequence = 10071;         // JSStreamWrongLastSequenceErr
constexpr std::int64_t kMessageExceedsMaximum = 10054;     // JSStreamMessageExceedsMaximumErr

}  // namespace

Result<PublishAck> jsPublish(Connection& connection, const OutMessage& message, std::chrono::milliseconds timeout,
                             std::string_view what) {
  bool no_responders = false;
  auto reply = connection.request(message, timeout, what, &no_responders);
  return readPubAck(std::move(reply), no_responders, what);
}

Result<PublishAck> readPubAck(Result<OwnedNatsMsg> reply, bool no_responders, std::string_view what) {
  if (!reply) {
    if (no_responders) return fail(Errc::unavailable, std::string(what) + " (no stream stores this subject)");
    return std::unexpected(reply.error());
  }
  const char* data = natsMsg_GetData(reply->get());
  return parsePubAck(std::string_view(data != nullptr ? data : "",
                                      static_cast<std::size_t>(natsMsg_GetDataLength(reply->get()))),
                     what);
}

Result<PublishAck> parsePubAck(std::string_view body, std::string_view what) {
  auto doc = json::parseStrict(body);
  if (!doc || !doc->IsObject()) {
    return fail(Errc::unavailable, std::string(what) + ": not a PubAck: " + std::string(body.substr(0, 200)));
  }
  if (const auto error = doc->FindMember("error"); error != doc->MemberEnd() && error->value.IsObject()) {
    std::int64_t err_code = 0;
    std::string description = "refused";
    if (const auto c = error->value.FindMember("err_code"); c != error->value.MemberEnd() && c->value.IsInt64()) {
      err_code = c->value.GetInt64();
    }
    if (const auto d = error->value.FindMember("description"); d != error->value.MemberEnd() && d->value.IsString()) {
      description.assign(d->value.GetString(), d->value.GetStringLength());
    }
    const Errc code = err_code == kWrongLastSequence       ? Errc::wrong_revision
                      : err_code == kMessageExceedsMaximum ? Errc::too_large
                                                           : Errc::unavailable;
    return fail(code, std::string(what) + ": " + description);
  }
  PublishAck out;
  const auto stream = doc->FindMember("stream");
  const auto seq = doc->FindMember("seq");
  if (stream == doc->MemberEnd() || !stream->value.IsString() || seq == doc->MemberEnd() || !seq->value.IsUint64()) {
    return fail(Errc::unavailable, std::string(what) + ": not a PubAck: " + std::string(body.substr(0, 200)));
  }
  out.stream.assign(stream->value.GetString(), stream->value.GetStringLength());
  out.sequence = seq->value.GetUint64();
  if (const auto dup = doc->FindMember("duplicate"); dup != doc->MemberEnd() && dup->value.IsBool()) {
    out.duplicate = dup->value.GetBool();
  }
  return out;
}

Result<PublishAck> NatsPublisher::publish(const OutMessage& message, Delivery delivery,
                                          std::chrono::milliseconds timeout) {
  const std::size_t size = wireSize(message);
  const std::size_t max = connection_.maxPayload();
  if (max > 0 && size > max) {
    return fail(Errc::too_large, "message to " + std::string(message.subject) + " is " +
                                     std::to_string(size) + " bytes, server max payload is " +
                                     std::to_string(max));
  }
  const std::int64_t wait_ms = std::max<std::int64_t>(1, timeout.count());
  // Put together only when needed: a plain forward succeeds without it (one allocation per job).
  const auto what = [&] { return "publish to " + std::string(message.subject); };
  // cnats would buffer it until the reconnect: a confirmed delivery cannot happen now.
  if (delivery != Delivery::core && !connection_.connected()) {
    return fail(Errc::unavailable, what() + ": not connected to NATS");
  }
  if (delivery == Delivery::jetstream) {
    auto ack = jsPublish(connection_, message, std::chrono::milliseconds(wait_ms), what());
    // A lost expected-sequence check is the stream refusing the message, like any other refusal.
    if (!ack && ack.error().code == Errc::wrong_revision) return fail(Errc::unavailable, ack.error().message);
    return ack;
  }
  auto msg = toNatsMsg(message);
  if (!msg) return std::unexpected(msg.error());
  natsStatus s = natsConnection_PublishMsg(connection_.raw(), msg->get());
  if (s != NATS_OK) return std::unexpected(natsError(s, what()));
  if (delivery == Delivery::core_flush) {
    s = natsConnection_FlushTimeout(connection_.raw(), wait_ms);
    if (s != NATS_OK) return std::unexpected(natsError(s, what() + " (flush)"));
  }
  return PublishAck{};
}

Result<std::chrono::nanoseconds> checkStream(Connection& connection, const std::string& stream) {
  jsStreamInfo* raw = nullptr;
  jsErrCode js_error{};
  natsStatus s = js_GetStreamInfo(&raw, connection.js(), stream.c_str(), nullptr, &js_error);
  std::unique_ptr<jsStreamInfo, StreamInfoFree> info(raw);
  if (s == NATS_NOT_FOUND || js_error == JSStreamNotFoundErr) {
    return fail(Errc::unavailable, "stream " + stream + " does not exist");
  }
  if (s != NATS_OK) {
    Errc code = errcFor(s);
    if (code == Errc::internal || code == Errc::not_found) code = Errc::unavailable;
    return std::unexpected(natsError(code, s, "stream " + stream));
  }
  if (info == nullptr || info->Config == nullptr) {
    return fail(Errc::unavailable, "stream " + stream + ": no configuration in its info");
  }
  return std::chrono::nanoseconds(info->Config->Duplicates);
}

}  // namespace countersign::natsio
