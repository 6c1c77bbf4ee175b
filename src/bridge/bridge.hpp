// The Slack bridge and webhook notifier: a durable consumer on the audit stream posts held jobs
// to Slack, updates their messages on every decision, sends webhooks, and turns clicks into
// signed control requests. Threads: one consumer, one click worker, one that tells people why a
// click changed nothing (chat.postEphemeral, which may wait out a rate limit without holding up
// the next click), one per webhook (plus the transports' own). Exactly one post per job and binding, across redeliveries, restarts and replicas: the
// post is claimed by creating <id>/slack/<channel>/<binding> in the bucket before it is made.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bridge_event.hpp"
#include "bridge_metrics.hpp"
#include "countersign/clock.hpp"
#include "countersign/config.hpp"
#include "countersign/log.hpp"
#include "countersign/nkeys.hpp"
#include "countersign/store.hpp"
#include "https_client.hpp"
#include "nats/connection.hpp"
#include "slack_api.hpp"
#include "slack_message.hpp"
#include "webhook_sender.hpp"

namespace countersign::bridge {

inline constexpr std::string_view kBridgeDurable = "countersign-bridge";

// People by Slack user id (from approvers.people[].slack).
struct SlackPerson {
  std::string name;
  std::string slack;
};

struct BridgeParts {
  const Config& config;
  Logger& log;
  BridgeMetrics& metrics;
  natsio::Connection& nats;
  KvStore& store;
  HttpsClient& http;
  SlackApi* slack = nullptr;             // null: webhooks only
  const nkeys::Signer* signer = nullptr;  // the channel key; null: webhooks only
  std::string via;                        // the channel's name in approvers.channels
  std::vector<SlackPerson> people;
  std::vector<ResolvedWebhook> webhooks;
  const Clock& clock;
};

class Bridge {
 public:
  explicit Bridge(BridgeParts parts);
  ~Bridge();
  void start();
  // Stops fetching, finishes the event and the clicks in hand, then returns.
  void stop();

  // A verified interactivity payload (block_actions JSON); queued, acted on by the worker.
  void enqueueInteraction(std::string payload_json);

  bool consumerReady() const { return consumer_ready_.load(); }

 private:
  // yes: ack now; retry: nak (again later); handed_over: the webhook sender owns the message and
  // acks it when its deliveries are done.
  enum class Handled { yes, retry, handed_over };

  void consumeLoop();
  bool setUpConsumer();
  Handled handleEvent(const std::string& subject, const std::string& body, void* msg);
  Handled handleSlack(const BridgeEvent& event, void* msg);
  Handled handOverToWebhooks(const BridgeEvent& event, const std::string& body, void* msg);
  Handled postHeld(const ApprovalView& view, const std::string& channel, void* msg);
  Handled updateOutcome(const ApprovalView& view, const std::string& channel, const Outcome& outcome, int binding,
                        void* msg);
  std::optional<Outcome> outcomeOf(const ApprovalView& view, const BridgeEvent& event) const;
  Result<ApprovalView> fetchRecord(const std::string& id);
  void clickLoop();
  void actOnClick(const std::string& payload_json);
  // Queues an ephemeral answer to `user` (at most kMaxNotices wait; beyond, dropped and logged).
  void tellUser(const std::string& channel, const std::string& user, const std::string& text);
  void noticeLoop();
  std::string slackIdOf(std::string_view name) const;
  std::string nameOfSlack(std::string_view slack_id) const;
  bool sleepUnlessStopping(std::chrono::milliseconds delay, void* msg = nullptr);

  BridgeParts p_;
  WebhookSender webhooks_;
  std::string stream_;
  std::string filter_;
  std::thread consumer_thread_;
  std::thread click_thread_;
  std::thread notice_thread_;
  std::atomic<bool> consumer_ready_{false};
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::deque<std::string> clicks_;
  struct Notice {
    std::string channel;
    std::string user;
    std::string text;
  };
  std::deque<Notice> notices_;
  void* sub_ = nullptr;  // natsSubscription*
};

}  // namespace countersign::bridge
