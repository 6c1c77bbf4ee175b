#include "nats/subscriber.hpp"

#include <algorithm>

#include "nats/message_convert.hpp"

namespace countersign::natsio {
namespace {

constexpr int kPendingMessages = 1'000'000;
constexpr int kPendingBytes = 1 << 30;
constexpr std::chrono::milliseconds kUnsubscribeWait{10000};

// The subscription state whose handler this thread is running, if any.
thread_local const void* t_delivering = nullptr;

}  // namespace

Result<std::unique_ptr<Subscription>> Subscription::subscribe(Connection& connection,
                                                              const std::string& subject,
                                                              const std::string& queue,
                                                              Handler handler,
                                                              BadMessageHandler on_bad) {
  if (!handler) return fail(Errc::invalid_argument, "subscribe " + subject + ": no handler");
  std::unique_ptr<Subscription> self(new Subscription());
  self->subject_ = subject;
  auto state = std::make_unique<State>();
  state->handler = std::move(handler);
  state->on_bad = std::move(on_bad);

  natsSubscription* sub = nullptr;
  natsStatus s = queue.empty() ? natsConnection_Subscribe(&sub, connection.raw(), subject.c_str(),
                                                          &Subscription::onMessage, state.get())
                               : natsConnection_QueueSubscribe(
                                     &sub, connection.raw(), subject.c_str(), queue.c_str(),
                                     &Subscription::onMessage, state.get());
  if (s != NATS_OK) return std::unexpected(natsError(s, "subscribe " + subject));
  // The delivery thread may already be using `state`: from here on it is freed only once cnats
  // reported completion.
  self->sub_ = sub;
  self->state_ = state.release();

  s = natsSubscription_SetOnCompleteCB(sub, &Subscription::onComplete, self->state_);
  if (s != NATS_OK) {
    Error error = natsError(s, "subscribe " + subject);
    // Closed before we could ask to be told when it is done: the state cannot be freed safely.
    natsSubscription_Unsubscribe(sub);
    natsSubscription_Destroy(sub);
    self->sub_ = nullptr;
    self->state_ = nullptr;
    return std::unexpected(std::move(error));
  }
  s = natsSubscription_SetPendingLimits(sub, kPendingMessages, kPendingBytes);
  if (s != NATS_OK) return std::unexpected(natsError(s, "subscribe " + subject));
  return self;
}

Subscription::~Subscription() {
  if (sub_ == nullptr) return;
  unsubscribe();
  natsSubscription_Destroy(sub_);
  std::unique_lock lock(state_->mutex);
  if (state_->complete) {
    lock.unlock();
    delete state_;
  } else {
    state_->orphaned = true;  // onComplete frees it
  }
}

bool Subscription::onDeliveryThread() const {
  return t_delivering == state_;
}

bool Subscription::waitComplete(std::chrono::milliseconds timeout) {
  std::unique_lock lock(state_->mutex);
  return state_->cv.wait_for(lock, timeout, [this] { return state_->complete; });
}

void Subscription::unsubscribe() {
  if (sub_ == nullptr) return;
  // Fails harmlessly when already closed (by a drain, or with the connection).
  natsSubscription_Unsubscribe(sub_);
  if (!onDeliveryThread()) (void)waitComplete(kUnsubscribeWait);
}

Status Subscription::drain(std::chrono::milliseconds timeout) {
  if (sub_ == nullptr) return {};
  if (onDeliveryThread()) {
    return fail(Errc::invalid_argument, "drain of " + subject_ + " from its own handler");
  }
  const std::int64_t wait_ms = std::max<std::int64_t>(1, timeout.count());
  natsStatus s = natsSubscription_DrainTimeout(sub_, wait_ms);
  if (s == NATS_INVALID_SUBSCRIPTION || s == NATS_CONNECTION_CLOSED) {
    (void)waitComplete(kUnsubscribeWait);
    return {};  // already closed: nothing left to deliver
  }
  if (s != NATS_OK) return std::unexpected(natsError(s, "drain " + subject_));
  s = natsSubscription_WaitForDrainCompletion(sub_, wait_ms);
  if (s != NATS_OK) return std::unexpected(natsError(s, "drain " + subject_));
  (void)waitComplete(kUnsubscribeWait);
  s = natsSubscription_DrainCompletionStatus(sub_);
  if (s != NATS_OK) {
    Errc code = s == NATS_TIMEOUT ? Errc::timeout : Errc::unavailable;
    return std::unexpected(natsError(code, s, "drain " + subject_));
  }
  return {};
}

void Subscription::onMessage(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
  auto* state = static_cast<State*>(closure);
  OwnedNatsMsg owned(msg);  // a core subscription's message: ours
  t_delivering = state;
  try {
    auto converted = fromNatsMsg(msg);
    if (converted) {
      state->handler(std::move(*converted));
    } else if (state->on_bad) {
      Message partial;
      if (const char* subject = natsMsg_GetSubject(msg)) partial.subject = subject;
      if (const char* reply = natsMsg_GetReply(msg)) partial.reply = reply;
      if (const char* data = natsMsg_GetData(msg)) {
        partial.payload.assign(data, static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
      }
      state->on_bad(std::move(partial), converted.error());
    } else {
      state->bad.fetch_add(1);
    }
  } catch (...) {
    state->bad.fetch_add(1);
  }
  t_delivering = nullptr;
}

void Subscription::onComplete(void* closure) {
  auto* state = static_cast<State*>(closure);
  std::unique_lock lock(state->mutex);
  state->complete = true;
  if (state->orphaned) {
    lock.unlock();
    delete state;
    return;
  }
  state->cv.notify_all();
}

}  // namespace countersign::natsio
