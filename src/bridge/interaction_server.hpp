// HTTP interactivity: `POST /slack/interactions`, as Slack sends clicks when the app is not in
// Socket Mode. The body is read up to 1 MiB (beyond: 413), then the v0 signature is checked over
// the raw bytes (a bad, missing or stale one: 401) before anything is parsed; a verified post is
// answered 200 at once and handed to `on_verified` (which queues the work). Anything else: 404
// or 405. One thread accepts; each connection is served on its own thread (at most 64 at once),
// with a 10 s socket timeout. This header stays free of Boost.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "bridge_metrics.hpp"
#include "countersign/log.hpp"
#include "countersign/result.hpp"

namespace countersign::bridge {

inline constexpr std::size_t kMaxInteractionBody = 1024 * 1024;

class InteractionServer {
 public:
  static Result<std::unique_ptr<InteractionServer>> start(const std::string& listen, std::string signing_secret,
                                                          std::function<std::int64_t()> now_unix,
                                                          std::function<void(std::string)> on_verified,
                                                          Logger& log, BridgeMetrics& metrics);
  ~InteractionServer();
  int port() const;
  void stop();

 private:
  struct Impl;
  explicit InteractionServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace countersign::bridge
