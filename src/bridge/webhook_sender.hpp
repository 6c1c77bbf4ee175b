// Webhook deliveries, off the consumer's thread. Each webhook has its own lane: a thread and a
// queue ordered by when each delivery is due, so a slow or failing receiver delays neither the
// Slack posts nor the other receivers. An event is finished (its `done` runs) when each of its
// deliveries was delivered, refused or given up; the bridge acks it then, so a bridge that stops
// with deliveries still waiting has them sent again after a restart (at least once). At most
// kMaxWaitingEvents events wait at once (memory, and the consumer's unacked events, stay bounded):
// beyond that an event's deliveries are given up at once, logged and counted.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bridge_metrics.hpp"
#include "countersign/bridge_config.hpp"
#include "countersign/clock.hpp"
#include "countersign/log.hpp"
#include "https_client.hpp"

namespace countersign::bridge {

struct ResolvedWebhook {
  WebhookConfig config;
  std::string secret;
};

inline constexpr int kMaxWaitingEvents = 128;

class WebhookSender {
 public:
  // How the owner of an event hears of it: `finished(true)` once every delivery is done or given
  // up (ack it), `finished(false)` when the sender stopped first (let it be delivered again);
  // `still_working()` now and then while deliveries wait (keep the event from being redelivered).
  struct EventHooks {
    std::function<void(bool handled)> finished;
    std::function<void()> still_working;
  };

  WebhookSender(std::vector<ResolvedWebhook> hooks, HttpsClient& http, const Clock& clock, Logger& log,
                BridgeMetrics& metrics);
  ~WebhookSender();
  WebhookSender(const WebhookSender&) = delete;
  WebhookSender& operator=(const WebhookSender&) = delete;

  void start();
  // Queues the event's deliveries and returns true: `hooks.finished` will run exactly once, on a
  // lane's thread or here. False when no webhook wants the event (nothing will run).
  bool submit(const std::string& event, const std::string& approval_id, const std::string& body, EventHooks hooks);
  // Stops the lanes after the attempts in hand; every event still waiting is finished(false).
  void stop();

  int waitingEvents() const { return waiting_.load(); }

 private:
  struct Pending;
  struct Delivery;
  struct Lane;

  void run(Lane& lane);
  bool attempt(Lane& lane, Delivery& delivery);
  void finishOne(const std::shared_ptr<Pending>& pending, bool handled);

  HttpsClient& http_;
  const Clock& clock_;
  Logger& log_;
  BridgeMetrics& metrics_;
  std::vector<std::unique_ptr<Lane>> lanes_;
  std::atomic<int> waiting_{0};
  std::atomic<bool> stopping_{false};
};

}  // namespace countersign::bridge
