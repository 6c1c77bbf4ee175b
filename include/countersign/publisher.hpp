// Outgoing messages. Thread-safe; calls may block (a JetStream publish waits for its PubAck).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "countersign/message.hpp"
#include "countersign/result.hpp"

namespace countersign {

struct OutMessage {
  std::string_view subject;
  std::string_view reply;  // empty: none
  const Headers* headers = nullptr;  // nullptr: no headers
  std::string_view payload;
  // More headers sent after `headers` (lets a fixed set be added without copying either list).
  const Headers* more_headers = nullptr;
};

enum class Delivery {
  core,        // fire and forget (buffered by the client; never proof of delivery)
  core_flush,  // core publish, then a flush round trip to the server
  jetstream,   // JetStream publish that waits for the PubAck (dedup by Nats-Msg-Id header)
};

struct PublishAck {
  std::string stream;        // jetstream only
  std::uint64_t sequence = 0;
  bool duplicate = false;    // the stream had already stored this Nats-Msg-Id
};

class Publisher {
 public:
  virtual ~Publisher() = default;
  // Errc::too_large when the message exceeds the server's max payload; Errc::timeout or
  // Errc::unavailable when the server did not confirm (jetstream / core_flush).
  virtual Result<PublishAck> publish(const OutMessage& message, Delivery delivery,
                                     std::chrono::milliseconds timeout) = 0;
  // The server's max payload in bytes (headers + payload), as announced in INFO.
  virtual std::size_t maxPayload() const = 0;
};

}  // namespace countersign
