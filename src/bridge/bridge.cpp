#include "bridge.hpp"

#include <nats/nats.h>

#include <algorithm>
#include <cstdio>
#include <future>
#include <memory>

#include "bridge_event.hpp"
#include "countersign/control_request.hpp"
#include "core/json_writer.hpp"
#include "countersign/json.hpp"
#include "interaction.hpp"
#include "nats/audit_reader.hpp"
#include "json_fields.hpp"
#include "retry.hpp"
#include "signatures.hpp"

namespace countersign::bridge {
namespace {

using std::chrono::milliseconds;

constexpr int kFetchBatch = 16;
constexpr int kFetchWaitMs = 1000;
constexpr milliseconds kRetryEventAfter{2000};
// A claim without a ts this old is taken over: its poster died between claim and post.
constexpr std::chrono::seconds kClaimLease{30};
constexpr milliseconds kRequestTimeout{10000};
constexpr std::size_t kMaxNotices = 256;

natsMsg* asMsg(void* msg) { return static_cast<natsMsg*>(msg); }

std::string postKey(const std::string& id, const std::string& channel, int binding) {
  return id + "/slack/" + channel + "/" + std::to_string(binding);
}

struct PostRecord {
  std::string channel;
  std::string ts;
  std::string claimed_at;
};

std::string toJson(const PostRecord& post) {
  countersign::detail::JsonObjectWriter w;
  w.field("channel", post.channel).field("ts", post.ts).optional("claimed_at", post.claimed_at);
  return w.finish();
}

std::optional<PostRecord> parsePost(const std::string& text) {
  auto doc = json::parseStrict(text);
  if (!doc || !doc->IsObject()) return std::nullopt;
  return PostRecord{detail::stringAt(*doc, "channel"), detail::stringAt(*doc, "ts"), detail::stringAt(*doc, "claimed_at")};
}

// The approval id of a compact event body (countersign writes `"approval_id":"..."`); empty when
// there is none.
std::string_view approvalIdOf(std::string_view body) {
  constexpr std::string_view kKey = "\"approval_id\":\"";
  const std::size_t key = body.find(kKey);
  if (key == std::string_view::npos) return {};
  const std::size_t start = key + kKey.size();
  const std::size_t end = body.find('"', start);
  return end == std::string_view::npos ? std::string_view() : body.substr(start, end - start);
}

std::string millis(std::chrono::nanoseconds d) {
  char text[32];
  std::snprintf(text, sizeof text, "%.3f", static_cast<double>(d.count()) / 1e6);
  return text;
}

std::vector<std::string> splitNames(std::string_view text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t comma = text.find(',', start);
    if (comma == std::string_view::npos) comma = text.size();
    std::string name(text.substr(start, comma - start));
    if (!name.empty()) out.push_back(std::move(name));
    start = comma + 1;
  }
  return out;
}

}  // namespace

// Where a post's time went, logged with it (bench/slack_bench.mjs reads these): milliseconds from
// the event's arrival in the stream to its lane taking it (queued), the record read (read), the
// wait for the post key's create beyond the read (claim), and the chat.postMessage call (slack).
struct PostTiming {
  std::chrono::system_clock::time_point stored{};  // the stream's timestamp; epoch when unknown
  std::chrono::system_clock::time_point taken = std::chrono::system_clock::now();
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point read{};
};

Bridge::Bridge(BridgeParts parts)
    : p_(std::move(parts)),
      webhooks_(std::move(p_.webhooks), p_.http, p_.clock, p_.log, p_.metrics),
      stream_(p_.config.audit.stream),
      filter_(p_.config.control.prefix + ".events.>") {}

Bridge::~Bridge() { stop(); }

void Bridge::start() {
  webhooks_.start();
  for (int i = 0; i < kEventLanes; ++i) lanes_[static_cast<std::size_t>(i)].thread = std::thread([this, i] { laneLoop(i); });
  consumer_thread_ = std::thread([this] { consumeLoop(); });
  click_thread_ = std::thread([this] { clickLoop(); });
  notice_thread_ = std::thread([this] { noticeLoop(); });
}

void Bridge::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  room_.notify_all();
  for (auto& lane : lanes_) lane.wake.notify_all();
  if (consumer_thread_.joinable()) consumer_thread_.join();
  for (auto& lane : lanes_) {
    if (lane.thread.joinable()) lane.thread.join();  // each finishes the event in hand, naks the rest
  }
  if (click_thread_.joinable()) click_thread_.join();
  if (notice_thread_.joinable()) notice_thread_.join();  // after the clicks: they may queue answers
  webhooks_.stop();  // events still waiting for deliveries are nak'ed: sent again after a restart
  if (sub_ != nullptr) {
    // A fetch that timed out may still be answered: retire() unsubscribes, waits for a round
    // trip, then frees. Unsubscribing keeps the durable: it was bound by name, not created here.
    p_.nats.retire(static_cast<natsSubscription*>(sub_));
    sub_ = nullptr;
  }
  std::vector<void*> lost;
  {
    std::lock_guard lock(mutex_);
    lost.swap(lost_subs_);
  }
  for (void* old : lost) p_.nats.retire(static_cast<natsSubscription*>(old));
}

bool Bridge::sleepUnlessStopping(milliseconds delay, void* msg) {
  // Long waits keep the event ours: JetStream would hand it to another replica after ack_wait.
  const auto deadline = std::chrono::steady_clock::now() + delay;
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return true;
    const auto step = std::min<std::chrono::steady_clock::duration>(deadline - now, std::chrono::seconds(10));
    if (wake_.wait_for(lock, step, [this] { return stopping_; })) return false;
    if (msg != nullptr) (void)natsMsg_InProgress(asMsg(msg), nullptr);
  }
  return false;
}

void Bridge::enqueueInteraction(std::string payload_json) {
  {
    std::lock_guard lock(mutex_);
    if (clicks_.size() >= 1024) {
      p_.log.warn("bridge: click queue full, dropping a click");
      p_.metrics.click("dropped");
      return;
    }
    clicks_.push_back(Click{std::move(payload_json), std::chrono::steady_clock::now()});
  }
  wake_.notify_all();
}

// ---- the consumer ---------------------------------------------------------------------------

bool Bridge::setUpConsumer() {
  jsStreamInfo* stream_info = nullptr;
  jsErrCode js_error{};
  natsStatus s = js_GetStreamInfo(&stream_info, p_.nats.js(), stream_.c_str(), nullptr, &js_error);
  if (stream_info != nullptr) jsStreamInfo_Destroy(stream_info);
  if (s != NATS_OK) return false;  // the gateway has not made the audit stream yet
  jsConsumerInfo* info = nullptr;
  const std::string durable(kBridgeDurable);
  s = js_GetConsumerInfo(&info, p_.nats.js(), stream_.c_str(), durable.c_str(), nullptr, &js_error);
  if (info != nullptr) jsConsumerInfo_Destroy(info);
  if (s != NATS_OK) {
    jsConsumerConfig config;
    jsConsumerConfig_Init(&config);
    config.Durable = durable.c_str();
    config.FilterSubject = filter_.c_str();
    config.AckPolicy = js_AckExplicit;
    config.DeliverPolicy = js_DeliverByStartTime;
    const auto start = p_.clock.now() - p_.config.slack.backfill;
    config.OptStartTime = std::chrono::duration_cast<std::chrono::nanoseconds>(start.time_since_epoch()).count();
    config.AckWait = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::seconds(60)).count();
    config.MaxDeliver = -1;
    config.MaxAckPending = 256;
    info = nullptr;
    s = js_AddConsumer(&info, p_.nats.js(), stream_.c_str(), &config, nullptr, &js_error);
    if (info != nullptr) jsConsumerInfo_Destroy(info);
    if (s == NATS_OK) {
      p_.log.info("bridge: created the durable consumer", {{"durable", durable}, {"stream", stream_}, {"filter", filter_}});
    }
    // Another replica may have created it meanwhile: bind below either way.
  }
  jsSubOptions options;
  jsSubOptions_Init(&options);
  options.Stream = stream_.c_str();
  options.Consumer = durable.c_str();
  natsSubscription* sub = nullptr;
  s = js_PullSubscribe(&sub, p_.nats.js(), nullptr, durable.c_str(), nullptr, &options, &js_error);
  if (s != NATS_OK) return false;
  sub_ = sub;
  return true;
}

void Bridge::consumeLoop() {
  int setup_failures = 0;
  auto last_lag = std::chrono::steady_clock::now() - std::chrono::hours(1);
  while (true) {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return;
    }
    if (sub_ == nullptr) {
      if (!p_.nats.connected() || !setUpConsumer()) {
        if (setup_failures++ == 0) {
          p_.log.info("bridge: waiting for the audit stream and the consumer", {{"stream", stream_}});
        }
        sleepUnlessStopping(milliseconds(std::min(2000, 250 * (1 << std::min(setup_failures, 3)))));
        continue;
      }
      setup_failures = 0;
      consumer_ready_.store(true);
      p_.log.info("bridge: consuming events", {{"stream", stream_}, {"durable", std::string(kBridgeDurable)}});
    }
    auto* sub = static_cast<natsSubscription*>(sub_);
    if (std::chrono::steady_clock::now() - last_lag > std::chrono::seconds(2)) {
      last_lag = std::chrono::steady_clock::now();
      jsConsumerInfo* info = nullptr;
      jsErrCode js_error{};
      const natsStatus info_status = natsSubscription_GetConsumerInfo(&info, sub, nullptr, &js_error);
      if (info_status == NATS_OK && info != nullptr) {
        p_.metrics.setLag(static_cast<std::int64_t>(info->NumPending + static_cast<std::uint64_t>(info->NumAckPending)));
        consumer_ready_.store(true);
      } else if (js_error == JSConsumerNotFoundErr || info_status == NATS_INVALID_SUBSCRIPTION) {
        // The consumer is gone: the server says so, or the client library closed the pull
        // subscription when a fetch was told "consumer deleted". It is made again below.
        p_.log.warn("bridge: the durable consumer is gone; making it again",
                    {{"stream", stream_}, {"durable", std::string(kBridgeDurable)}});
        consumer_ready_.store(false);
        // Events fetched from it may still be in the lanes or waiting for webhook deliveries, and
        // their ack, nak or in-progress reads the subscription: it is unsubscribed now and freed
        // at stop, once every lane and delivery is done with them.
        (void)natsSubscription_Unsubscribe(sub);
        {
          std::lock_guard lock(mutex_);
          lost_subs_.push_back(sub_);
        }
        sub_ = nullptr;
        if (info != nullptr) jsConsumerInfo_Destroy(info);
        continue;
      }
      if (info != nullptr) jsConsumerInfo_Destroy(info);
    }
    // Fetch no more than the lanes have room for: what is not fetched stays with the stream
    // (and another replica may take it).
    int room = 0;
    {
      std::unique_lock lock(mutex_);
      room_.wait(lock, [this] { return stopping_ || events_in_hand_ < kMaxEventsInHand; });
      if (stopping_) return;
      room = std::min(kFetchBatch, kMaxEventsInHand - events_in_hand_);
    }
    natsMsgList list{};
    jsErrCode js_error{};
    const natsStatus s = natsSubscription_Fetch(&list, sub, room, kFetchWaitMs, &js_error);
    if (s != NATS_OK) {
      natsMsgList_Destroy(&list);
      if (s != NATS_TIMEOUT) sleepUnlessStopping(milliseconds(500));
      continue;
    }
    for (int i = 0; i < list.Count; ++i) {
      dispatch(list.Msgs[i]);
      list.Msgs[i] = nullptr;  // the lane owns it now
    }
    natsMsgList_Destroy(&list);
  }
}

void Bridge::dispatch(void* msg) {
  // The lane of the event's approval, so that its events are handled in stream order (an event
  // without one: they share a lane). Only the lane depends on this quick look; the lane parses it.
  const std::string_view data(natsMsg_GetData(asMsg(msg)), static_cast<std::size_t>(natsMsg_GetDataLength(asMsg(msg))));
  const std::size_t lane = std::hash<std::string_view>{}(approvalIdOf(data)) % lanes_.size();
  {
    std::lock_guard lock(mutex_);
    if (!stopping_) {
      lanes_[lane].events.push_back(msg);
      ++events_in_hand_;
      msg = nullptr;
    }
  }
  if (msg != nullptr) {
    (void)natsMsg_Nak(asMsg(msg), nullptr);  // another replica (or the next start) takes it
    natsMsg_Destroy(asMsg(msg));
    return;
  }
  lanes_[lane].wake.notify_one();
}

void Bridge::laneLoop(int index) {
  EventLane& lane = lanes_[static_cast<std::size_t>(index)];
  while (true) {
    void* msg = nullptr;
    {
      std::unique_lock lock(mutex_);
      lane.wake.wait(lock, [&] { return stopping_ || !lane.events.empty(); });
      if (lane.events.empty()) return;
      msg = lane.events.front();
      lane.events.pop_front();
      if (stopping_) {
        // Not started: another replica (or the next start) takes it.
        lock.unlock();
        (void)natsMsg_Nak(asMsg(msg), nullptr);
        natsMsg_Destroy(asMsg(msg));
        finishEvent();
        continue;
      }
    }
    natsMsg* nats_msg = asMsg(msg);
    const std::string subject = natsMsg_GetSubject(nats_msg);
    const std::string body(natsMsg_GetData(nats_msg), static_cast<std::size_t>(natsMsg_GetDataLength(nats_msg)));
    switch (handleEvent(subject, body, msg)) {
      case Handled::yes:
        (void)natsMsg_Ack(nats_msg, nullptr);
        natsMsg_Destroy(nats_msg);
        break;
      case Handled::retry:
        (void)natsMsg_NakWithDelay(nats_msg, kRetryEventAfter.count(), nullptr);
        natsMsg_Destroy(nats_msg);
        break;
      case Handled::handed_over:
        break;  // the webhook sender acks and destroys it
    }
    finishEvent();
  }
}

void Bridge::finishEvent() {
  {
    std::lock_guard lock(mutex_);
    --events_in_hand_;
  }
  room_.notify_one();
}

Bridge::Handled Bridge::handleEvent(const std::string& subject, const std::string& body, void* msg) {
  // Anyone who may publish on <prefix>.events.> can put a message in the stream: only what
  // countersign signed may post, update a message or reach a webhook.
  if (const EventOrigin origin = natsio::checkEvent(asMsg(msg), *p_.event_keys); origin != EventOrigin::verified) {
    p_.metrics.refused(toString(origin));
    const bool first = !told_unverified_.exchange(true);
    const std::initializer_list<LogField> fields{{"subject", subject}, {"signature_check", toString(origin)}};
    if (first) {
      p_.log.warn("bridge: ignoring an event countersign did not sign (further ones are logged at debug and counted "
                  "in countersign_bridge_events_refused_total)", fields);
    } else {
      p_.log.debug("bridge: ignoring an event countersign did not sign", fields);
    }
    return Handled::yes;
  }
  auto event = parseBridgeEvent(body);
  if (!event) {
    p_.log.warn("bridge: skipping a message that is not an event", {{"error", event.error().message}});
    return Handled::yes;
  }
  p_.metrics.events(event->event);
  if (p_.slack != nullptr && slackCares(event->event) && !event->approval_id.empty()) {
    if (handleSlack(*event, msg) == Handled::retry) return Handled::retry;
  }
  return handOverToWebhooks(*event, body, msg);
}

Result<ApprovalView> Bridge::fetchRecord(const std::string& id) {
  countersign::detail::JsonObjectWriter request;
  request.field("id", id);
  const std::string data = request.finish();
  const std::string subject = p_.config.control.prefix + ".control.get";
  natsMsg* reply = nullptr;
  const natsStatus s = natsConnection_Request(&reply, p_.nats.raw(), subject.c_str(), data.data(),
                                              static_cast<int>(data.size()), kRequestTimeout.count());
  if (s != NATS_OK) return fail(Errc::unavailable, std::string("control.get: ") + natsStatus_GetText(s));
  const std::string text(natsMsg_GetData(reply), static_cast<std::size_t>(natsMsg_GetDataLength(reply)));
  natsMsg_Destroy(reply);
  return parseApprovalView(text);
}

std::optional<Outcome> Bridge::outcomeOf(const ApprovalView& view, const BridgeEvent& event) const {
  Outcome outcome;
  outcome.quorum = view.quorum;
  // The vote event may arrive before the record's view of the votes is written: the event is
  // proof that its vote exists.
  std::vector<std::string> voters = view.voters;
  if (event.event == "vote" && !event.actor.empty() &&
      std::find(voters.begin(), voters.end(), event.actor) == voters.end()) {
    voters.push_back(event.actor);
  }
  outcome.votes = static_cast<int>(voters.size());
  // The reason of a rejection, the note of an approval (the record keeps it; the released event
  // carries none).
  outcome.reason = event.event == "rejected" ? event.reason : "";
  if (view.state == "released") {
    outcome.kind = OutcomeKind::released;
  } else if (view.state == "approved" || view.state == "release_unknown") {
    outcome.kind = OutcomeKind::approved;
  } else if (view.state == "rejected") {
    outcome.kind = OutcomeKind::rejected;
  } else if (view.state == "expired") {
    outcome.kind = OutcomeKind::expired;
  } else if (event.event == "vote") {
    outcome.kind = OutcomeKind::vote;
  } else {
    return std::nullopt;
  }
  if (outcome.kind == OutcomeKind::approved || outcome.kind == OutcomeKind::released) outcome.reason = view.reason;
  const bool decided_elsewhere = outcome.kind != OutcomeKind::vote && !view.voters.empty() &&
                                 (outcome.kind == OutcomeKind::approved || outcome.kind == OutcomeKind::released);
  outcome.actors = decided_elsewhere ? view.voters : splitNames(event.actor);
  if (outcome.kind == OutcomeKind::vote && !event.actor.empty()) outcome.actors = {event.actor};
  for (const auto& name : outcome.actors) outcome.actor_slack.push_back(slackIdOf(name));
  return outcome;
}

Bridge::Handled Bridge::handleSlack(const BridgeEvent& event, void* msg) {
  const auto channel = channelFor(p_.config.slack.channels, event.topic);
  if (!channel) return Handled::yes;
  PostTiming timing;
  if (jsMsgMetaData* meta = nullptr; natsMsg_GetMetaData(&meta, asMsg(msg)) == NATS_OK) {
    timing.stored = std::chrono::system_clock::time_point(
        std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::nanoseconds(meta->Timestamp)));
    jsMsgMetaData_Destroy(meta);
  }
  // A job's first hold is binding 0: its post is claimed while the record is read, so that the
  // two round trips overlap. postHeld takes the claim when the record is pending at binding 0;
  // otherwise it is given back (see giveBack).
  std::optional<std::future<Result<std::uint64_t>>> early;
  const std::string claimed_at = formatRfc3339(p_.clock.now());
  if (event.event == "held" && event.reason.empty()) {
    auto done = std::make_shared<std::promise<Result<std::uint64_t>>>();
    early = done->get_future();
    p_.store.createAsync(postKey(event.approval_id, *channel, 0), toJson(PostRecord{*channel, "", claimed_at}),
                         [done](Result<std::uint64_t> created) { done->set_value(std::move(created)); });
  }
  auto view = fetchRecord(event.approval_id);
  timing.read = std::chrono::steady_clock::now();
  std::optional<Result<std::uint64_t>> claim;
  if (early) {
    claim = early->get();
    if (!view || view->state != "pending" || view->binding != 0) {
      giveBack(postKey(event.approval_id, *channel, 0), *channel, *claim);
      claim.reset();
    }
  }
  if (!view) {
    if (view.error().code == Errc::not_found) return Handled::yes;
    if (view.error().code == Errc::unavailable) {
      p_.log.warn("bridge: cannot read the record, will retry", {{"id", event.approval_id}, {"error", view.error().message}});
      return Handled::retry;
    }
    p_.log.warn("bridge: unreadable record, skipped", {{"id", event.approval_id}, {"error", view.error().message}});
    p_.metrics.failure();
    return Handled::yes;
  }
  if (view->state == "pending") {
    if (auto handled = postHeld(*view, *channel, msg, std::move(claim), claimed_at, &timing); handled == Handled::retry) {
      return handled;
    }
    if (event.event != "vote") return Handled::yes;
  }
  const auto outcome = outcomeOf(*view, event);
  if (!outcome) return Handled::yes;
  return updateOutcome(*view, *channel, *outcome, view->binding, msg);
}

void Bridge::giveBack(const std::string& key, const std::string& channel, const Result<std::uint64_t>& claim) {
  // Ours and unused: written without claimed_at, the claim is free for the next poster at once,
  // and an update finds no message to change (instead of waiting for a post that never comes).
  if (!claim) return;  // someone else's (exists), or unknown: it ends with its lease
  if (auto freed = p_.store.update(key, toJson(PostRecord{channel, "", ""}), *claim); !freed) {
    p_.log.warn("bridge: cannot give back an unused post claim", {{"key", key}, {"error", freed.error().message}});
  }
}

Bridge::Handled Bridge::postHeld(const ApprovalView& view, const std::string& channel, void* msg,
                                 std::optional<Result<std::uint64_t>> claim, const std::string& now,
                                 const PostTiming* timing) {
  const std::string key = postKey(view.id, channel, view.binding);
  std::uint64_t revision = 0;
  auto created = claim ? std::move(*claim) : p_.store.create(key, toJson(PostRecord{channel, "", now}));
  const auto claim_done = std::chrono::steady_clock::now();
  if (created) {
    revision = *created;
  } else if (created.error().code == Errc::exists) {
    auto existing = p_.store.get(key);
    if (!existing) return Handled::retry;
    const auto post = parsePost(existing->value);
    if (post && !post->ts.empty()) return Handled::yes;  // posted already
    std::chrono::system_clock::time_point claimed;
    if (post && parseRfc3339(post->claimed_at, claimed) && p_.clock.now() - claimed < kClaimLease) {
      return Handled::retry;  // someone is posting it right now
    }
    auto taken = p_.store.update(key, toJson(PostRecord{channel, "", now}), existing->revision);
    if (!taken) return Handled::retry;
    revision = *taken;
    p_.log.info("bridge: taking over a post whose poster stopped", {{"id", view.id}});
  } else {
    return Handled::retry;
  }
  const auto sending = std::chrono::steady_clock::now();
  const auto reply = p_.slack->callUntilDone("chat.postMessage", heldMessage(view, channel, p_.config.slack.console_url),
                                             false, [&](milliseconds d) { return sleepUnlessStopping(d, msg); });
  const auto answered = std::chrono::steady_clock::now();
  if (!reply.ok) {
    if (reply.retryable() || reply.authError()) return Handled::retry;  // stopping
    p_.log.error("bridge: cannot post a held job", {{"id", view.id}, {"channel", channel}, {"error", reply.error}});
    p_.metrics.failure();
    return Handled::yes;
  }
  std::string ts;
  if (auto doc = json::parseStrict(reply.body); doc && doc->IsObject()) ts = detail::stringAt(*doc, "ts");
  p_.metrics.post();
  if (timing != nullptr) {
    const bool stored = timing->stored.time_since_epoch().count() != 0;
    const std::string queued = stored ? millis(timing->taken - timing->stored) : "";
    const std::string read = millis(timing->read - timing->start);
    // The claim's part not hidden by the read (all of it when it was made after the read).
    const std::string claim_ms = millis(claim_done - timing->read);
    p_.log.info("bridge: posted a held job", {{"id", view.id}, {"channel", channel}, {"ts", ts}, {"queued_ms", queued},
                                              {"read_ms", read}, {"claim_ms", claim_ms}, {"slack_ms", millis(answered - sending)}});
  } else {
    p_.log.info("bridge: posted a held job", {{"id", view.id}, {"channel", channel}, {"ts", ts}});
  }
  if (auto recorded = p_.store.update(key, toJson(PostRecord{channel, ts, now}), revision); !recorded) {
    p_.log.error("bridge: posted but could not record the post", {{"id", view.id}, {"error", recorded.error().message}});
  }
  // A re-bound job: the message of the previous binding says the policy changed.
  if (view.binding > 0) {
    Outcome changed;
    changed.kind = OutcomeKind::policy_changed;
    ApprovalView old = view;
    (void)updateOutcome(old, channel, changed, view.binding - 1, msg);
  }
  return Handled::yes;
}

Bridge::Handled Bridge::updateOutcome(const ApprovalView& view, const std::string& channel, const Outcome& outcome,
                                      int binding, void* msg) {
  auto existing = p_.store.get(postKey(view.id, channel, binding));
  if (!existing) return existing.error().code == Errc::not_found ? Handled::yes : Handled::retry;
  const auto post = parsePost(existing->value);
  if (!post) return Handled::yes;
  if (post->ts.empty()) {
    // Claimed: the post is being made, update after it. Given back: there is no message.
    return post->claimed_at.empty() ? Handled::yes : Handled::retry;
  }
  const auto reply =
      p_.slack->callUntilDone("chat.update", outcomeUpdate(view, channel, post->ts, outcome, p_.config.slack.console_url),
                              false, [&](milliseconds d) { return sleepUnlessStopping(d, msg); });
  if (!reply.ok) {
    if (reply.retryable() || reply.authError()) return Handled::retry;
    p_.log.error("bridge: cannot update a message", {{"id", view.id}, {"error", reply.error}});
    p_.metrics.failure();
    return Handled::yes;
  }
  p_.metrics.update();
  return Handled::yes;
}

Bridge::Handled Bridge::handOverToWebhooks(const BridgeEvent& event, const std::string& body, void* msg) {
  natsMsg* owned = asMsg(msg);
  const bool queued = webhooks_.submit(
      event.event, event.approval_id, body,
      WebhookSender::EventHooks{[owned](bool handled) {
                                  if (handled) {
                                    (void)natsMsg_Ack(owned, nullptr);
                                  } else {
                                    (void)natsMsg_Nak(owned, nullptr);
                                  }
                                  natsMsg_Destroy(owned);
                                },
                                [owned] { (void)natsMsg_InProgress(owned, nullptr); }});
  return queued ? Handled::handed_over : Handled::yes;
}

// ---- clicks ---------------------------------------------------------------------------------

void Bridge::clickLoop() {
  while (true) {
    Click click;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !clicks_.empty(); });
      if (clicks_.empty()) return;  // stopping, and every click in hand is done
      click = std::move(clicks_.front());
      clicks_.pop_front();
    }
    actOnClick(click.payload, click.received);
  }
}

std::string Bridge::slackIdOf(std::string_view name) const {
  for (const auto& person : p_.people) {
    if (person.name == name) return person.slack;
  }
  return {};
}

std::string Bridge::nameOfSlack(std::string_view slack_id) const {
  for (const auto& person : p_.people) {
    if (!person.slack.empty() && person.slack == slack_id) return person.name;
  }
  return {};
}

void Bridge::tellUser(const std::string& channel, const std::string& user, const std::string& text) {
  if (p_.slack == nullptr || channel.empty()) return;
  {
    std::lock_guard lock(mutex_);
    if (notices_.size() >= kMaxNotices) {
      p_.log.warn("bridge: too many answers wait for Slack, dropping one", {{"slack_user", user}});
      return;
    }
    notices_.push_back(Notice{channel, user, text});
  }
  wake_.notify_all();
}

void Bridge::noticeLoop() {
  while (true) {
    Notice notice;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !notices_.empty(); });
      if (notices_.empty()) return;  // stopping, and every answer in hand was tried
      notice = std::move(notices_.front());
      notices_.pop_front();
    }
    countersign::detail::JsonObjectWriter w;
    w.field("channel", notice.channel).field("user", notice.user).field("text", notice.text);
    (void)p_.slack->callUntilDone("chat.postEphemeral", w.finish(), false, [&](milliseconds d) {
      return sleepUnlessStopping(std::min(d, milliseconds(5000)));
    });
  }
}

void Bridge::actOnClick(const std::string& payload_json, std::chrono::steady_clock::time_point received) {
  const auto taken = std::chrono::steady_clock::now();
  auto click = decodeInteractionPayload(payload_json);
  if (!click) {
    if (click.error().message != "not_our_action") {
      p_.metrics.click("bad_payload");
      p_.log.warn("bridge: ignoring an interaction", {{"error", click.error().message}});
    }
    return;
  }
  const std::string person = nameOfSlack(click->user_id);
  if (person.empty()) {
    p_.metrics.click("unknown_user");
    p_.log.warn("bridge: click from a Slack user who is not an approver", {{"slack_user", click->user_id}, {"id", click->value.id}});
    tellUser(click->channel_id, click->user_id,
             "You are not in countersign's list of approvers, so your click changed nothing. Ask an operator to add "
             "your Slack id to approvers.people.");
    return;
  }
  if (p_.signer == nullptr) return;
  const bool approve = click->action == ClickAction::approve;
  // Reject and "Approve with note…" open their dialog; its submission comes back as a click
  // from_dialog. Slack's trigger_id lasts 3 s, so one attempt. Without the dialog a Reject rejects
  // as it is, but an approval is never made without the confirmation the dialog stands for.
  const bool wants_dialog = click->with_note || (!approve && !click->trigger_id.empty());
  if (wants_dialog && !click->from_dialog && p_.slack != nullptr) {
    SlackReply opened;
    if (!click->trigger_id.empty()) {
      opened = p_.slack->call("views.open", approve ? noteDialog(click->trigger_id, click->value, click->channel_id,
                                                                 click->message_ts)
                                                    : reasonDialog(click->trigger_id, click->value, click->channel_id,
                                                                   click->message_ts));
    } else {
      opened.error = "no trigger_id";
    }
    if (opened.ok) {
      p_.metrics.click("dialog_opened");
      return;
    }
    if (approve) {
      p_.metrics.click("dialog_failed");
      p_.log.warn("bridge: cannot open the note dialog, nothing approved", {{"id", click->value.id}, {"error", opened.error}});
      tellUser(click->channel_id, click->user_id,
               "The note dialog did not open in time: nothing was approved. Click again, or use Approve.");
      return;
    }
    p_.log.warn("bridge: cannot open the reason dialog, rejecting without a reason",
                {{"id", click->value.id}, {"error", opened.error}});
  }
  // An approval carries the note typed in its dialog, or no reason; a rejection its reason, or
  // "rejected in Slack".
  std::string typed = approve ? "" : "rejected in Slack";
  if (click->from_dialog && !click->reason.empty()) typed = click->reason;
  ControlRequestFields fields{approve ? "approve" : "reject",
                              click->value.id,
                              person,
                              click->value.job_hash,
                              click->value.policy_snapshot,
                              formatRfc3339(p_.clock.now()),
                              typed,
                              p_.via};
  const std::string request = signedControlRequest(fields, *p_.signer);
  const std::string subject = p_.config.control.prefix + (approve ? ".control.approve" : ".control.reject");
  const auto sending = std::chrono::steady_clock::now();
  natsMsg* reply = nullptr;
  const natsStatus s = natsConnection_Request(&reply, p_.nats.raw(), subject.c_str(), request.data(),
                                              static_cast<int>(request.size()), kRequestTimeout.count());
  const auto answered = std::chrono::steady_clock::now();
  if (s != NATS_OK) {
    p_.metrics.click("no_answer");
    p_.log.warn("bridge: no answer to a click's control request", {{"id", click->value.id}, {"error", natsStatus_GetText(s)}});
    tellUser(click->channel_id, click->user_id, "countersign did not answer in time: nothing was decided. Please click again.");
    return;
  }
  const std::string text(natsMsg_GetData(reply), static_cast<std::size_t>(natsMsg_GetDataLength(reply)));
  natsMsg_Destroy(reply);
  std::string status;
  std::string reason;
  if (auto doc = json::parseStrict(text); doc && doc->IsObject()) {
    status = detail::stringAt(*doc, "status");
    reason = detail::stringAt(*doc, "reason");
  }
  p_.metrics.click(status.empty() ? "bad_answer" : status);
  // Where the click's time went (bench/slack_bench.mjs reads these): received -> its thread takes
  // it (queued), decoded, mapped and signed (sign), the control request's round trip (request).
  p_.log.info("bridge: click acted on", {{"id", click->value.id}, {"approver", person}, {"status", status}, {"reason", reason},
                                         {"queued_ms", millis(taken - received)}, {"sign_ms", millis(sending - taken)},
                                         {"request_ms", millis(answered - sending)}});
  if (status == "approved" || status == "rejected" || status == "vote_recorded" || status == "already_voted" ||
      status == "already_approved" || status == "already_rejected") {
    return;  // the message is updated from the events
  }
  std::string why = "countersign refused: " + status + (reason.empty() ? "" : " (" + reason + ")");
  if (reason == "not_an_approver") why = "You may not decide this job under its rule: nothing changed.";
  if (reason == "self_approval") why = "You requested this job, so you may not decide it: nothing changed.";
  if (reason == "snapshot_changed") why = "The policy changed since this message was posted: review the new message.";
  if (reason == "job_changed") why = "The job no longer matches what this message showed: do not approve it.";
  if (status == "expired") why = "This job expired before your click: nothing changed.";
  tellUser(click->channel_id, click->user_id, why);
}

}  // namespace countersign::bridge
