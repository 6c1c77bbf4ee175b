// An asynchronous core NATS subscription that hands countersign Messages to a handler.
#pragma once

#include <nats/nats.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "countersign/message.hpp"
#include "countersign/result.hpp"
#include "nats/callback_home.hpp"
#include "nats/connection.hpp"

namespace countersign::natsio {

// Load shedding for a Subscription: when the handler is about to take a message while more than
// `above` bytes wait behind it, `on_shed` gets the message instead (it must be quick: answer and
// drop). cnats' own limit is then twice that plus 32 MiB, beyond which
// cnats drops messages unseen (counted in Subscription::dropped()). above == 0: no shedding.
struct SubscriptionShedding {
  int above = 0;
  std::function<void(Message&&)> on_shed;
};

class Subscription {
 public:
  using Handler = std::function<void(Message&&)>;
  // A message whose header block cnats cannot parse (a producer can send one): it comes with
  // subject, reply and payload but no headers, and the parse error. Without this handler such
  // messages are dropped (and counted in badMessages()).
  using BadMessageHandler = std::function<void(Message&&, const Error&)>;
  using Shedding = SubscriptionShedding;

  // Subscribes to `subject` (wildcards allowed), in queue group `queue` unless it is empty.
  // Threading: the handlers run on the subscription's own cnats delivery thread, one message
  // at a time, in the order the server sent them; never inline in this call. A handler must not
  // throw (an exception is caught and dropped, counted in badMessages()). `thread_name` (at
  // most 15 characters) names the delivery thread when it starts (and again with its first
  // message, should another thread have been started at the same moment). Pending limits are
  // 1M messages / 1 GiB so that bursts wait instead of being dropped as a slow consumer.
  // The Connection must outlive the Subscription.
  static Result<std::unique_ptr<Subscription>> subscribe(Connection& connection,
                                                         const std::string& subject,
                                                         const std::string& queue, Handler handler,
                                                         BadMessageHandler on_bad = {},
                                                         std::string thread_name = {},
                                                         Shedding shedding = {});
  // Unsubscribes and waits until no handler runs any more, however long that takes (a handler
  // that hands its message over returns at once), except on the delivery thread itself. Then,
  // while connected and unless a drain finished, one round trip to the server (at most 2 s):
  // cnats' reader thread may still be handing the subscription a message it read before the
  // unsubscribe, and is done with it once the server's answer arrives. Only then is it freed.
  ~Subscription();
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;

  // Stops delivery at once: messages still queued are dropped. Returns when no handler runs any
  // more, except when called from a handler of this subscription, where it only stops the
  // delivery of further messages.
  void unsubscribe();
  // Graceful stop: removes interest, then lets the handler finish every message already
  // received. Errc::timeout if that takes longer than `timeout` (the rest are dropped);
  // Errc::invalid_argument when called from a handler of this subscription (it would wait for
  // itself).
  Status drain(std::chrono::milliseconds timeout);

  // Messages cnats dropped because more than its pending limit waited (a slow consumer).
  std::uint64_t dropped() const;

  const std::string& subject() const { return subject_; }
  // Messages dropped because their headers were malformed (without BadMessageHandler) or a
  // handler threw.
  std::uint64_t badMessages() const { return state_->bad.load(); }

 private:
  // Shared with the delivery thread (CallbackHome): cnats' reference is released by the
  // completion callback.
  struct State {
    Handler handler;
    BadMessageHandler on_bad;
    Shedding shedding;
    std::string thread_name;
    std::atomic<std::uint64_t> bad{0};
    std::mutex mutex;
    std::condition_variable cv;
    bool complete = false;  // cnats will not call the handler again
  };
  using Home = CallbackHome<State>;

  Subscription() = default;
  bool onDeliveryThread() const;
  void waitComplete();
  static void onMessage(natsConnection* nc, natsSubscription* sub, natsMsg* msg, void* closure);
  static void onComplete(void* closure);

  natsSubscription* sub_ = nullptr;
  // The subscription's connection; cnats keeps it alive as long as the subscription.
  natsConnection* nc_ = nullptr;
  bool drained_ = false;  // a drain finished: its own round trip followed the unsubscribe
  std::shared_ptr<State> state_;
  std::string subject_;
};

}  // namespace countersign::natsio
