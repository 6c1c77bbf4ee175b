// The Slack bridge and webhook notifier: a durable consumer on the audit stream posts held jobs
// to Slack, updates their messages on every decision, sends webhooks, and turns clicks into
// signed control requests. Threads: one that fetches events, kEventLanes that handle them (the
// events of one approval always on the same lane, in stream order; a slow Slack call or record
// read holds up only its own lane), one click worker, one that tells people why a click changed
// nothing (chat.postEphemeral, which may wait out a rate limit without holding up the next
// click), one per webhook (plus the transports' own). Exactly one post per job and binding,
// across redeliveries, restarts and replicas: the post is claimed by creating
// <id>/slack/<channel>/<binding> in the bucket before it is made.
#pragma once

#include <array>
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
#include "countersign/events.hpp"
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
// Events handled at once: lanes, and the most fetched events waiting for or on a lane.
inline constexpr int kEventLanes = 4;
inline constexpr int kMaxEventsInHand = 64;

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
  // countersign's public keys: an event whose signature none of them verifies is counted, logged
  // and acked, and changes nothing (no post, no update, no webhook). Never null.
  const EventVerifier* event_keys = nullptr;
};

struct PostTiming;

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
  // Hands a fetched event to the lane of its approval (nak'ed when stopping).
  void dispatch(void* msg);
  void laneLoop(int lane);
  void finishEvent();
  Handled handleEvent(const std::string& subject, const std::string& body, void* msg);
  Handled handleSlack(const BridgeEvent& event, void* msg);
  Handled handOverToWebhooks(const BridgeEvent& event, const std::string& body, void* msg);
  // `claim`: the create of the post key when already made (binding 0, while the record was read);
  // `now`: the claim's time.
  Handled postHeld(const ApprovalView& view, const std::string& channel, void* msg,
                   std::optional<Result<std::uint64_t>> claim, const std::string& now,
                   const PostTiming* timing = nullptr);
  void giveBack(const std::string& key, const std::string& channel, const Result<std::uint64_t>& claim);
  Handled updateOutcome(const ApprovalView& view, const std::string& channel, const Outcome& outcome, int binding,
                        void* msg);
  std::optional<Outcome> outcomeOf(const ApprovalView& view, const BridgeEvent& event) const;
  Result<ApprovalView> fetchRecord(const std::string& id);
  void clickLoop();
  void actOnClick(const std::string& payload_json, std::chrono::steady_clock::time_point received);
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
  struct EventLane {
    std::thread thread;
    std::deque<void*> events;  // natsMsg*, owned; guarded by mutex_
    std::condition_variable wake;  // an event queued, or stopping
  };
  std::array<EventLane, kEventLanes> lanes_;
  std::condition_variable room_;  // events_in_hand_ went down, or stopping
  int events_in_hand_ = 0;        // dispatched and not finished; guarded by mutex_
  std::thread click_thread_;
  std::thread notice_thread_;
  std::atomic<bool> consumer_ready_{false};
  std::atomic<bool> told_unverified_{false};  // the first unverified event is logged as a warning
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  struct Click {
    std::string payload;
    std::chrono::steady_clock::time_point received;
  };
  std::deque<Click> clicks_;
  struct Notice {
    std::string channel;
    std::string user;
    std::string text;
  };
  std::deque<Notice> notices_;
  void* sub_ = nullptr;  // natsSubscription*
  // Subscriptions of a consumer that disappeared: unsubscribed, freed at stop (events fetched
  // from them may still be acked). One per loss of the consumer.
  std::vector<void*> lost_subs_;
};

}  // namespace countersign::bridge
