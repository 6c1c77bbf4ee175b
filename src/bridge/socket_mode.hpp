// Slack Socket Mode: apps.connections.open gives a WebSocket URL; the bridge connects over TLS,
// waits for `hello`, acknowledges every envelope at once ({"envelope_id"}), hands interactive
// payloads to `on_interactive`, and on `disconnect` or a lost connection opens a new URL and
// reconnects with backoff. Runs on its own thread. This header stays free of Boost.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "countersign/log.hpp"
#include "https_client.hpp"
#include "slack_api.hpp"

namespace countersign::bridge {

class SocketMode {
 public:
  // `on_interactive` gets the envelope's payload as JSON text, after the ack was sent; it runs
  // on the socket's thread and must not block (queue the work).
  SocketMode(SlackApi& api, HttpsClient& client, Logger& log, std::function<void(std::string)> on_interactive);
  ~SocketMode();  // stops
  void start();
  void stop();
  bool connected() const { return connected_.load(); }

 private:
  void run();
  bool sleepUnlessStopping(std::chrono::milliseconds delay);
  // One connection's life; returns true when Slack asked to reconnect (no backoff needed).
  bool session(const std::string& url);

  SlackApi& api_;
  HttpsClient& client_;
  Logger& log_;
  std::function<void(std::string)> on_interactive_;
  std::thread thread_;
  std::atomic<bool> connected_{false};
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::function<void()> abort_session_;  // closes the live socket, under mutex_
};

}  // namespace countersign::bridge
