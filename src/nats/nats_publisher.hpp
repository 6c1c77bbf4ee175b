// Publisher on a cnats connection: core, core + flush, or JetStream with PubAck.
#pragma once

#include <chrono>
#include <string>

#include "countersign/publisher.hpp"
#include "nats/connection.hpp"

namespace countersign::natsio {

class NatsPublisher : public Publisher {
 public:
  // The Connection must outlive the publisher. Thread-safe like the connection.
  explicit NatsPublisher(Connection& connection) : connection_(connection) {}

  // core: buffered by cnats (also while reconnecting): success is no proof of delivery.
  // core_flush and jetstream fail at once with Errc::unavailable while disconnected.
  // core_flush: the publish, then a round trip to the server within `timeout`.
  // jetstream: waits up to `timeout` for the stream's PubAck; the Nats-Msg-Id header (if any)
  // is the dedup id and `duplicate` says the stream already had it.
  // Errors: Errc::too_large (checked before anything is sent, against the server's max payload,
  // or refused by the stream), Errc::timeout (no answer in time), Errc::unavailable (no stream
  // on the subject, disconnected, JetStream refused it), Errc::invalid_argument (bad subject or
  // header).
  Result<PublishAck> publish(const OutMessage& message, Delivery delivery,
                             std::chrono::milliseconds timeout) override;
  std::size_t maxPayload() const override { return connection_.maxPayload(); }

 private:
  Connection& connection_;
};

// A JetStream publish as a request on `connection` (Connection::request: the reply comes straight
// to the waiting thread) whose PubAck is read here. The stream's answer, as errors:
// Errc::wrong_revision for a lost Nats-Expected-Last-Subject-Sequence (the message names the
// server's "wrong last sequence"), Errc::too_large when the stream refuses the size,
// Errc::unavailable (no stream on the subject, disconnected, any other refusal), Errc::timeout.
// `what` starts every error's message.
Result<PublishAck> jsPublish(Connection& connection, const OutMessage& message, std::chrono::milliseconds timeout,
                             std::string_view what);
// The second half of jsPublish, for a publish sent with Connection::send: its reply (from
// Connection::awaitReply) read as the PubAck, with the same errors.
Result<PublishAck> readPubAck(Result<OwnedNatsMsg> reply, bool no_responders, std::string_view what);
// A PubAck's body (JSON) read with the same errors.
Result<PublishAck> parsePubAck(std::string_view body, std::string_view what);

// Checks that a stream exists (for a route's to_stream, at start) and returns its duplicate
// window. Errc::unavailable (with the stream's name) when it does not exist or JetStream does
// not answer, Errc::timeout on timeout.
Result<std::chrono::nanoseconds> checkStream(Connection& connection, const std::string& stream);

}  // namespace countersign::natsio
