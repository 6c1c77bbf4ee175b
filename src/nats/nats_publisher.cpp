#include "nats/nats_publisher.hpp"

#include <algorithm>
#include <string>

#include "nats/message_convert.hpp"

namespace countersign::natsio {
namespace {

struct PubAckFree {
  void operator()(jsPubAck* ack) const { jsPubAck_Destroy(ack); }
};
struct StreamInfoFree {
  void operator()(jsStreamInfo* info) const { jsStreamInfo_Destroy(info); }
};

}  // namespace

Result<PublishAck> NatsPublisher::publish(const OutMessage& message, Delivery delivery,
                                          std::chrono::milliseconds timeout) {
  const std::size_t size = wireSize(message);
  const std::size_t max = connection_.maxPayload();
  if (max > 0 && size > max) {
    return fail(Errc::too_large, "message to " + std::string(message.subject) + " is " +
                                     std::to_string(size) + " bytes, server max payload is " +
                                     std::to_string(max));
  }
  auto msg = toNatsMsg(message);
  if (!msg) return std::unexpected(msg.error());
  const std::int64_t wait_ms = std::max<std::int64_t>(1, timeout.count());
  const std::string what = "publish to " + std::string(message.subject);
  // cnats would buffer it until the reconnect: a confirmed delivery cannot happen now.
  if (delivery != Delivery::core && !connection_.connected()) {
    return fail(Errc::unavailable, what + ": not connected to NATS");
  }

  if (delivery == Delivery::jetstream) {
    jsPubOptions options;
    jsPubOptions_Init(&options);
    options.MaxWait = wait_ms;
    jsPubAck* raw_ack = nullptr;
    jsErrCode js_error{};
    natsStatus s = js_PublishMsg(&raw_ack, connection_.js(), msg->get(), &options, &js_error);
    std::unique_ptr<jsPubAck, PubAckFree> ack(raw_ack);
    if (s != NATS_OK) {
      Errc code = errcFor(s);
      if (js_error == JSStreamMessageExceedsMaximumErr) code = Errc::too_large;
      // The stream refused the message (limits, storage, wrong stream ...): not confirmed.
      if (code == Errc::internal) code = Errc::unavailable;
      if (s == NATS_NO_RESPONDERS) {
        return std::unexpected(
            natsError(Errc::unavailable, s, what + " (no stream stores this subject)"));
      }
      return std::unexpected(natsError(code, s, what));
    }
    PublishAck out;
    if (ack->Stream != nullptr) out.stream = ack->Stream;
    out.sequence = ack->Sequence;
    out.duplicate = ack->Duplicate;
    return out;
  }

  natsStatus s = natsConnection_PublishMsg(connection_.raw(), msg->get());
  if (s != NATS_OK) return std::unexpected(natsError(s, what));
  if (delivery == Delivery::core_flush) {
    s = natsConnection_FlushTimeout(connection_.raw(), wait_ms);
    if (s != NATS_OK) return std::unexpected(natsError(s, what + " (flush)"));
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
