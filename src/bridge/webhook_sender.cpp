#include "webhook_sender.hpp"

#include <algorithm>
#include <deque>

#include "bridge_event.hpp"
#include "retry.hpp"
#include "signatures.hpp"

namespace countersign::bridge {

namespace {
// How often an event that waits for deliveries is reported as still in progress (the consumer's
// ack wait is 60 s).
constexpr std::chrono::seconds kProgressEvery{20};
using SteadyClock = std::chrono::steady_clock;
}  // namespace

struct WebhookSender::Pending {
  std::string event;
  std::string approval_id;
  std::string body;
  EventHooks hooks;
  std::atomic<int> remaining{0};
  std::atomic<bool> failed{false};
  std::mutex progress_mutex;
  SteadyClock::time_point last_progress = SteadyClock::now();
};

struct WebhookSender::Delivery {
  std::shared_ptr<Pending> pending;
  int attempts = 0;
  SteadyClock::time_point due;
};

struct WebhookSender::Lane {
  ResolvedWebhook hook;
  RetryPolicy policy;
  std::mutex mutex;
  std::condition_variable wake;
  std::deque<Delivery> queue;  // any order: the lane takes the earliest due
  std::thread thread;
};

WebhookSender::WebhookSender(std::vector<ResolvedWebhook> hooks, HttpsClient& http, const Clock& clock, Logger& log,
                             BridgeMetrics& metrics)
    : http_(http), clock_(clock), log_(log), metrics_(metrics) {
  for (auto& hook : hooks) {
    auto lane = std::make_unique<Lane>();
    lane->policy = kWebhookRetry;
    lane->policy.max_attempts = hook.config.max_attempts;
    lane->hook = std::move(hook);
    lanes_.push_back(std::move(lane));
  }
}

WebhookSender::~WebhookSender() { stop(); }

void WebhookSender::start() {
  for (auto& lane : lanes_) {
    Lane* raw = lane.get();
    lane->thread = std::thread([this, raw] { run(*raw); });
  }
}

bool WebhookSender::submit(const std::string& event, const std::string& approval_id, const std::string& body,
                           EventHooks hooks) {
  std::vector<Lane*> wanted;
  for (auto& lane : lanes_) {
    if (webhookWants(lane->hook.config, event)) wanted.push_back(lane.get());
  }
  if (wanted.empty()) return false;
  auto pending = std::make_shared<Pending>();
  pending->event = event;
  pending->approval_id = approval_id;
  pending->body = body;
  pending->hooks = std::move(hooks);
  if (stopping_.load()) {
    pending->hooks.finished(false);  // delivered by the next start
    return true;
  }
  if (waiting_.load() >= kMaxWaitingEvents) {
    for (const Lane* lane : wanted) {
      metrics_.webhook("given_up");
      metrics_.failure();
      log_.error("webhook: given up, too many events wait for deliveries",
                 {{"url", lane->hook.config.url}, {"event", event}, {"id", approval_id}});
    }
    pending->hooks.finished(true);
    return true;
  }
  waiting_.fetch_add(1);
  pending->remaining.store(static_cast<int>(wanted.size()));
  for (Lane* lane : wanted) {
    {
      std::lock_guard lock(lane->mutex);
      lane->queue.push_back(Delivery{pending, 0, SteadyClock::now()});
    }
    lane->wake.notify_one();
  }
  return true;
}

void WebhookSender::stop() {
  if (stopping_.exchange(true)) return;
  for (auto& lane : lanes_) {
    {
      std::lock_guard lock(lane->mutex);  // a lane between its check and its wait sees the flag
    }
    lane->wake.notify_all();
  }
  for (auto& lane : lanes_) {
    if (lane->thread.joinable()) lane->thread.join();
  }
  for (auto& lane : lanes_) {
    std::deque<Delivery> left;
    {
      std::lock_guard lock(lane->mutex);
      left.swap(lane->queue);
    }
    for (auto& delivery : left) finishOne(delivery.pending, false);
  }
}

void WebhookSender::finishOne(const std::shared_ptr<Pending>& pending, bool handled) {
  if (!handled) pending->failed.store(true);
  if (pending->remaining.fetch_sub(1) != 1) return;
  waiting_.fetch_sub(1);
  pending->hooks.finished(!pending->failed.load());
}

// One attempt; true when the delivery is finished (delivered, refused or given up).
bool WebhookSender::attempt(Lane& lane, Delivery& delivery) {
  const auto& config = lane.hook.config;
  const auto& body = delivery.pending->body;
  const std::string timestamp =
      std::to_string(std::chrono::duration_cast<std::chrono::seconds>(clock_.now().time_since_epoch()).count());
  const auto result = http_.post(config.url, "application/json", body,
                                 {{"X-Countersign-Timestamp", timestamp},
                                  {"X-Countersign-Signature", webhookSignature(lane.hook.secret, timestamp, body)}});
  ++delivery.attempts;
  if (result.status >= 200 && result.status < 300) {
    metrics_.webhook("delivered");
    return true;
  }
  if (result.status != 0 && !isRetryableStatus(result.status)) {
    metrics_.webhook("refused");
    log_.warn("webhook: refused", {{"url", config.url}, {"status", std::to_string(result.status)}});
    return true;
  }
  const auto delay = retryDelay(lane.policy, delivery.attempts, parseRetryAfter(result.retry_after));
  if (!delay) {
    metrics_.webhook("given_up");
    metrics_.failure();
    log_.error("webhook: given up",
               {{"url", config.url}, {"event", delivery.pending->event}, {"id", delivery.pending->approval_id}});
    return true;
  }
  metrics_.webhook("retried");
  delivery.due = SteadyClock::now() + *delay;
  return false;
}

void WebhookSender::run(Lane& lane) {
  std::unique_lock lock(lane.mutex);
  while (!stopping_.load()) {
    const auto now = SteadyClock::now();
    auto next = lane.queue.end();
    for (auto it = lane.queue.begin(); it != lane.queue.end(); ++it) {
      if (next == lane.queue.end() || it->due < next->due) next = it;
    }
    if (next == lane.queue.end() || next->due > now) {
      // Keep waiting events ours while they wait, then sleep until the next is due.
      std::vector<std::shared_ptr<Pending>> stale;
      for (const auto& delivery : lane.queue) {
        std::lock_guard progress(delivery.pending->progress_mutex);
        if (now - delivery.pending->last_progress >= kProgressEvery) {
          delivery.pending->last_progress = now;
          stale.push_back(delivery.pending);
        }
      }
      if (!stale.empty()) {
        lock.unlock();
        for (const auto& pending : stale) {
          if (pending->hooks.still_working) pending->hooks.still_working();
        }
        lock.lock();
        continue;
      }
      auto until = now + kProgressEvery;
      if (next != lane.queue.end()) until = std::min(until, next->due);
      lane.wake.wait_until(lock, until);
      continue;
    }
    Delivery delivery = std::move(*next);
    lane.queue.erase(next);
    lock.unlock();
    const bool finished = attempt(lane, delivery);
    if (finished) finishOne(delivery.pending, true);
    lock.lock();
    if (!finished) lane.queue.push_back(std::move(delivery));
  }
}

}  // namespace countersign::bridge
