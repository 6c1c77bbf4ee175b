#include "nats/subscriber.hpp"

#include <algorithm>
#include <pthread.h>

#include "nats/message_convert.hpp"

namespace countersign::natsio {
namespace {

constexpr int kPendingMessages = 1'000'000;
constexpr int kPendingBytes = 1 << 30;
constexpr std::int64_t kShedHeadroom = 32 * 1024 * 1024;
// How long the destructor waits for its round trip; a server that does not answer sends nothing.
constexpr std::int64_t kRoundTripMs = 2000;

// The subscription state whose handler this thread is running, if any.
thread_local const void* t_delivering = nullptr;

}  // namespace

Result<std::unique_ptr<Subscription>> Subscription::subscribe(Connection& connection,
                                                              const std::string& subject,
                                                              const std::string& queue,
                                                              Handler handler,
                                                              BadMessageHandler on_bad,
                                                              std::string thread_name,
                                                              Shedding shedding) {
  if (!handler) return fail(Errc::invalid_argument, "subscribe " + subject + ": no handler");
  std::unique_ptr<Subscription> self(new Subscription());
  self->subject_ = subject;
  auto state = std::make_shared<State>();
  state->handler = std::move(handler);
  state->on_bad = std::move(on_bad);
  state->thread_name = std::move(thread_name);
  const int shed_above = shedding.above;
  state->shedding = std::move(shedding);
  void* closure = Home::share(state);

  natsSubscription* sub = nullptr;
  NewThreads delivery_thread;  // cnats starts the subscription's delivery thread in the call
  natsStatus s = queue.empty() ? natsConnection_Subscribe(&sub, connection.raw(), subject.c_str(),
                                                          &Subscription::onMessage, closure)
                               : natsConnection_QueueSubscribe(
                                     &sub, connection.raw(), subject.c_str(), queue.c_str(),
                                     &Subscription::onMessage, closure);
  if (s != NATS_OK) {
    Home::release(closure);  // cnats never took it
    return std::unexpected(natsError(s, "subscribe " + subject));
  }
  self->sub_ = sub;
  self->nc_ = connection.raw();
  self->state_ = std::move(state);
  if (!self->state_->thread_name.empty()) delivery_thread.name(self->state_->thread_name);

  s = natsSubscription_SetOnCompleteCB(sub, &Subscription::onComplete, closure);
  if (s != NATS_OK) {
    Error error = natsError(s, "subscribe " + subject);
    // Closed before we could ask to be told when it is done: cnats' reference stays (a few
    // bytes) rather than be freed under a delivery that may still run.
    natsSubscription_Unsubscribe(sub);
    natsSubscription_Destroy(sub);
    self->sub_ = nullptr;
    return std::unexpected(std::move(error));
  }
  // With shedding, cnats keeps room for what arrives while the handler sheds or finishes the
  // job in hand (on a busy machine its thread may wait for a core while the reader goes on), and
  // for max-size messages.
  const std::int64_t pending_bytes =
      shed_above > 0 ? std::min<std::int64_t>(2 * static_cast<std::int64_t>(shed_above) + kShedHeadroom, kPendingBytes)
                     : kPendingBytes;
  s = natsSubscription_SetPendingLimits(sub, kPendingMessages, static_cast<int>(pending_bytes));
  if (s != NATS_OK) return std::unexpected(natsError(s, "subscribe " + subject));
  return self;
}

std::uint64_t Subscription::dropped() const {
  std::int64_t n = 0;
  if (sub_ == nullptr || natsSubscription_GetDropped(sub_, &n) != NATS_OK) return 0;
  return static_cast<std::uint64_t>(n);
}

Subscription::~Subscription() {
  if (sub_ == nullptr) return;
  unsubscribe();
  // Destroy alone would free the subscription while the reader thread may still be handing it a
  // message that arrived before the unsubscribe; after the server's answer to a round trip it no
  // longer is. Not connected, the reader hands it nothing. Through the raw connection, which the
  // subscription holds: the Connection may already be gone.
  if (!drained_ && natsConnection_Status(nc_) == NATS_CONN_STATUS_CONNECTED) {
    (void)natsConnection_FlushTimeout(nc_, kRoundTripMs);
  }
  natsSubscription_Destroy(sub_);
}

bool Subscription::onDeliveryThread() const {
  return t_delivering == state_.get();
}

void Subscription::waitComplete() {
  std::unique_lock lock(state_->mutex);
  state_->cv.wait(lock, [this] { return state_->complete; });
}

void Subscription::unsubscribe() {
  if (sub_ == nullptr) return;
  // Fails harmlessly when already closed (by a drain, or with the connection).
  natsSubscription_Unsubscribe(sub_);
  if (!onDeliveryThread()) waitComplete();
}

Status Subscription::drain(std::chrono::milliseconds timeout) {
  if (sub_ == nullptr) return {};
  if (onDeliveryThread()) {
    return fail(Errc::invalid_argument, "drain of " + subject_ + " from its own handler");
  }
  const std::int64_t wait_ms = std::max<std::int64_t>(1, timeout.count());
  natsStatus s = natsSubscription_DrainTimeout(sub_, wait_ms);
  if (s == NATS_INVALID_SUBSCRIPTION || s == NATS_CONNECTION_CLOSED) {
    waitComplete();
    return {};  // already closed: nothing left to deliver
  }
  if (s != NATS_OK) return std::unexpected(natsError(s, "drain " + subject_));
  s = natsSubscription_WaitForDrainCompletion(sub_, wait_ms);
  if (s != NATS_OK) return std::unexpected(natsError(s, "drain " + subject_));
  waitComplete();
  s = natsSubscription_DrainCompletionStatus(sub_);
  if (s != NATS_OK) {
    Errc code = s == NATS_TIMEOUT ? Errc::timeout : Errc::unavailable;
    return std::unexpected(natsError(code, s, "drain " + subject_));
  }
  drained_ = true;  // the drain's flush came after its unsubscribe
  return {};
}

void Subscription::onMessage(natsConnection*, natsSubscription* sub, natsMsg* msg, void* closure) {
  State* state = &Home::of(closure);
  OwnedNatsMsg owned(msg);  // a core subscription's message: ours
  if (t_delivering == nullptr && !state->thread_name.empty()) {
    // cnats starts the delivery thread: it gets its name with its first message.
    thread_local bool named = false;
    if (!named) pthread_setname_np(pthread_self(), state->thread_name.substr(0, 15).c_str());
    named = true;
  }
  t_delivering = state;
  try {
    auto converted = fromNatsMsg(msg);
    int waiting_messages = 0;
    int waiting_bytes = 0;
    if (converted && state->shedding.above > 0 &&
        natsSubscription_GetPending(sub, &waiting_messages, &waiting_bytes) == NATS_OK &&
        waiting_bytes > state->shedding.above) {
      state->shedding.on_shed(std::move(*converted));
    } else if (converted) {
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
  {
    State& state = Home::of(closure);
    const std::lock_guard lock(state.mutex);
    state.complete = true;
    state.cv.notify_all();
  }
  Home::release(closure);  // cnats' last callback for this subscription
}

}  // namespace countersign::natsio
