// Why acks are not confirmed one by one (IngressOptions::confirm_each_ack = false):
//
// Correctness does not need it. The handler returns only once its decision is durable (the KV
// create of a hold returned, a forward got its PubAck), and only then is the ack sent. Whether
// the ack is confirmed or not, the process can die before the server has it; the job is then
// redelivered after ack_wait and intake decides it again idempotently (the same job id and hash
// make no second record; a forward carries Nats-Msg-Id countersign-in:<stream>:<sequence>). So a
// confirmation adds knowledge, not safety, and costs a round trip per job on the only thread.
//
// Measured with it_js_ingress_test ThroughputWithATrivialHandler (20000 queued messages of
// ~10 B, one fetch thread, batch 64, Debug build, loopback, 2 vCPUs shared with parallel builds
// at a load average of 6-9, so noisy; 8 runs): natsMsg_Ack with one flush (PING/PONG) per batch
// 15k-40k msg/s, typically ~33k; natsMsg_AckSync per message 1.9k-7.2k msg/s, typically ~4.3k:
// about 8 times slower, a round trip per job. Skipping the per-batch flush made no measurable
// difference, so it stays: after each batch every ack has reached the server (or the failure
// is logged), which bounds the redeliveries after a crash to one batch and makes stop() clean.
#include "nats/js_ingress.hpp"

#include <algorithm>
#include <exception>
#include <optional>
#include <set>
#include <utility>

#include "countersign/clock.hpp"
#include "countersign/faults.hpp"
#include "nats/message_convert.hpp"

namespace countersign::natsio {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// A fetch that finds nothing returns after this long: it bounds how long stop() waits.
constexpr std::int64_t kFetchWaitMs = 500;
constexpr milliseconds kBackoffMin{250};
constexpr milliseconds kBackoffMax{2000};
constexpr std::int64_t kFlushWaitMs = 2000;
// How often an idle ingress makes sure its consumer still exists (one JetStream API request).
constexpr milliseconds kIdleCheckInterval{2000};
// A handler that throws or a message without metadata: try again later, never drop it.
constexpr std::int64_t kRetryDelayMs = 1000;
constexpr int kMaxBatch = 10000;
// A busy ingress reads the stream's recorded regressions again at least this often (another
// replica may have recorded one); an idle one before its next batch.
constexpr milliseconds kReuseReloadInterval{1000};
constexpr int kMaxReplicas = 5;

struct StreamInfoFree {
  void operator()(jsStreamInfo* info) const { jsStreamInfo_Destroy(info); }
};
struct ConsumerInfoFree {
  void operator()(jsConsumerInfo* info) const { jsConsumerInfo_Destroy(info); }
};
struct MetaDataFree {
  void operator()(jsMsgMetaData* meta) const { jsMsgMetaData_Destroy(meta); }
};
using StreamInfoPtr = std::unique_ptr<jsStreamInfo, StreamInfoFree>;
using ConsumerInfoPtr = std::unique_ptr<jsConsumerInfo, ConsumerInfoFree>;

// JetStream API failures that are not about the request itself are the environment's.
Error jsError(natsStatus s, std::string_view context) {
  Errc code = errcFor(s);
  if (code == Errc::internal || code == Errc::not_found) code = Errc::unavailable;
  return natsError(code, s, context);
}

bool hasBlankOrControl(std::string_view text) {
  return std::any_of(text.begin(), text.end(),
                     [](char c) { return static_cast<unsigned char>(c) <= ' ' || c == 0x7f; });
}

// A stream or consumer name: JetStream refuses '.', '*', '>' and blanks (and the names become
// file names on the server, hence the path separators).
Status checkName(std::string_view what, std::string_view name) {
  if (name.empty()) return fail(Errc::invalid_argument, std::string(what) + ": empty");
  if (hasBlankOrControl(name) || name.find_first_of(".*>/\\") != std::string_view::npos) {
    return fail(Errc::invalid_argument,
                std::string(what) + ": \"" + std::string(name) +
                    "\" may not contain '.', '*', '>', '/', '\\' or blanks");
  }
  return {};
}

// A subscription subject: non-empty tokens, '>' only as the last token, wildcards whole tokens.
Status checkSubject(std::string_view subject) {
  auto bad = [&](std::string_view why) {
    return fail(Errc::invalid_argument,
                "ingress subject \"" + std::string(subject) + "\": " + std::string(why));
  };
  if (subject.empty()) return bad("empty");
  if (hasBlankOrControl(subject)) return bad("contains blanks or control characters");
  std::size_t start = 0;
  for (;;) {
    std::size_t dot = subject.find('.', start);
    std::string_view token =
        subject.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (token.empty()) return bad("empty token");
    if (token.size() > 1 && token.find_first_of("*>") != std::string_view::npos) {
      return bad("wildcards must be whole tokens");
    }
    if (token == ">" && dot != std::string_view::npos) return bad("'>' must be the last token");
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return {};
}

Status checkOptions(const IngressOptions& o) {
  if (auto ok = checkName("ingress stream", o.stream); !ok) return ok;
  if (auto ok = checkName("ingress durable", o.durable); !ok) return ok;
  if (o.subjects.empty()) return fail(Errc::invalid_argument, "ingress subjects: empty");
  for (const auto& subject : o.subjects) {
    if (auto ok = checkSubject(subject); !ok) return ok;
  }
  if (std::set<std::string>(o.subjects.begin(), o.subjects.end()).size() != o.subjects.size()) {
    return fail(Errc::invalid_argument, "ingress subjects: listed twice");
  }
  if (o.replicas < 1 || o.replicas > kMaxReplicas) {
    return fail(Errc::invalid_argument,
                "ingress replicas: expected 1 to 5, got " + std::to_string(o.replicas));
  }
  if (o.ack_wait < milliseconds(1)) {
    return fail(Errc::invalid_argument, "ingress ack_wait: must be at least 1 ms");
  }
  if (o.batch < 1 || o.batch > kMaxBatch) {
    return fail(Errc::invalid_argument,
                "ingress batch: expected 1 to 10000, got " + std::to_string(o.batch));
  }
  if (o.stuck_after < milliseconds(1)) {
    return fail(Errc::invalid_argument, "ingress stuck_after: must be at least 1 ms");
  }
  if (o.max_ack_pending < 1) {
    return fail(Errc::invalid_argument, "ingress max_ack_pending: must be positive, got " +
                                            std::to_string(o.max_ack_pending));
  }
  return {};
}

std::string joined(const std::vector<std::string>& items) {
  std::string text = "[";
  for (const auto& item : items) text += (text.size() > 1 ? ", " : "") + item;
  return text + "]";
}

std::string retentionName(jsRetentionPolicy retention) {
  switch (retention) {
    case js_LimitsPolicy:
      return "limits";
    case js_InterestPolicy:
      return "interest";
    case js_WorkQueuePolicy:
      return "workqueue";
  }
  return "unknown";
}

std::int64_t nanos(milliseconds duration) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(duration).count();
}

bool streamOrConsumerMissing(natsStatus s, jsErrCode js_error) {
  return s == NATS_NOT_FOUND || js_error == JSStreamNotFoundErr ||
         js_error == JSConsumerNotFoundErr;
}

std::string secondsText(Clock::duration d) {
  return std::to_string(std::chrono::duration_cast<std::chrono::seconds>(d).count()) + " s";
}

}  // namespace

JetStreamIngress::JetStreamIngress(Connection& connection, IngressOptions options,
                                   IngressHandler handler, Logger log)
    : connection_(connection),
      options_(std::move(options)),
      handler_(std::move(handler)),
      log_(std::move(log)) {
  if (options_.reuse_store != nullptr) reuse_ = std::make_unique<IngressReuse>(*options_.reuse_store, options_.stream);
}

Result<std::unique_ptr<JetStreamIngress>> JetStreamIngress::start(Connection& connection,
                                                                  IngressOptions options,
                                                                  IngressHandler handler,
                                                                  Logger log) {
  if (auto ok = checkOptions(options); !ok) return std::unexpected(ok.error());
  if (!handler) return fail(Errc::invalid_argument, "ingress: no handler");
  std::unique_ptr<JetStreamIngress> self(
      new JetStreamIngress(connection, std::move(options), std::move(handler), std::move(log)));
  if (auto ok = self->setUp(); !ok) return std::unexpected(ok.error());
  self->server_seen_ = self->connectedServer();
  self->thread_ = std::thread([raw = self.get()] { raw->run(); });
  return self;
}

JetStreamIngress::~JetStreamIngress() {
  stop();
}

void JetStreamIngress::stop() {
  std::lock_guard stop_lock(stop_mutex_);
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  stop_requested_ = true;
  wake_.notify_all();
  if (thread_.joinable()) {
    if (thread_.get_id() == std::this_thread::get_id()) return;  // documented misuse: no join
    thread_.join();
  }
  endSubscription();
}

void JetStreamIngress::endSubscription() {
  // The server may still be sending to it (a pull request outlives the fetch that sent it, and
  // the server answers an expired one): unsubscribed, a round trip, then freed
  // (Connection::retire). Unsubscribing keeps the durable: cnats deletes a consumer on
  // unsubscribe only when its subscribe call created it, and bind() only binds to the one
  // ensureConsumer() made with js_AddConsumer. (A drain would not end: cnats counts a
  // synchronous subscription as drained only once its owner reads from it again.)
  connection_.retire(sub_);
  sub_ = nullptr;
}

IngressStats JetStreamIngress::stats() const {
  IngressStats s;
  s.handled = counters_.handled.load();
  s.acked = counters_.acked.load();
  s.naked = counters_.naked.load();
  s.terminated = counters_.terminated.load();
  s.malformed = counters_.malformed.load();
  s.ack_failures = counters_.ack_failures.load();
  s.fetch_errors = counters_.fetch_errors.load();
  s.rebinds = counters_.rebinds.load();
  s.stalls = counters_.stalls.load();
  s.recreated = counters_.recreated.load();
  s.regressions = counters_.regressions.load();
  return s;
}

JetStreamIngress::InStep::InStep(JetStreamIngress& self, Step step, std::uint64_t sequence)
    : self_(self) {
  std::lock_guard lock(self_.stalled_mutex_);
  self_.step_ = step;
  self_.step_sequence_ = sequence;
  self_.step_since_ = Clock::now();
}

JetStreamIngress::InStep::~InStep() {
  std::lock_guard lock(self_.stalled_mutex_);
  self_.step_ = Step::waiting;
  self_.step_since_ = Clock::now();
}

void JetStreamIngress::log(const std::string& line) const {
  if (log_) log_(line);
}

// ---- set-up: stream, consumer, subscription ------------------------------------------------

Status JetStreamIngress::ensureStream() {
  const std::string& name = options_.stream;
  jsStreamInfo* raw = nullptr;
  jsErrCode js_error{};
  natsStatus s = js_GetStreamInfo(&raw, connection_.js(), name.c_str(), nullptr, &js_error);
  StreamInfoPtr info(raw);
  if (streamOrConsumerMissing(s, js_error)) {
    std::vector<const char*> subjects;
    for (const auto& subject : options_.subjects) subjects.push_back(subject.c_str());
    jsStreamConfig config;
    jsStreamConfig_Init(&config);
    config.Name = name.c_str();
    config.Subjects = subjects.data();
    config.SubjectsLen = static_cast<int>(subjects.size());
    config.Retention = js_WorkQueuePolicy;
    config.Storage = js_FileStorage;
    config.Replicas = options_.replicas;
    raw = nullptr;
    js_error = {};
    s = js_AddStream(&raw, connection_.js(), &config, nullptr, &js_error);
    info.reset(raw);
    if (s == NATS_OK) {
      log("ingress: created stream " + name + " (workqueue, file, subjects " +
          joined(options_.subjects) + ")");
      return {};
    }
    if (js_error == JSStreamSubjectOverlapErr) {
      return std::unexpected(natsError(
          Errc::invalid_argument, s,
          "cannot create ingress stream " + name + " on subjects " + joined(options_.subjects)));
    }
    // Another replica may have created it meanwhile: look at what is there now.
    Error create_error = jsError(s, "cannot create ingress stream " + name);
    raw = nullptr;
    js_error = {};
    s = js_GetStreamInfo(&raw, connection_.js(), name.c_str(), nullptr, &js_error);
    info.reset(raw);
    if (s != NATS_OK) return std::unexpected(std::move(create_error));
  } else if (s != NATS_OK) {
    return std::unexpected(jsError(s, "cannot read ingress stream " + name));
  }

  const jsStreamConfig* config = info->Config;
  if (config == nullptr) return fail(Errc::unavailable, "ingress stream " + name + ": no config");
  std::vector<std::string> existing;
  for (int i = 0; i < config->SubjectsLen; ++i) existing.emplace_back(config->Subjects[i]);
  const std::set<std::string> have(existing.begin(), existing.end());
  const std::set<std::string> want(options_.subjects.begin(), options_.subjects.end());
  if (config->Retention != js_WorkQueuePolicy || have != want) {
    return fail(Errc::invalid_argument,
                "ingress stream " + name + " exists with retention " +
                    retentionName(config->Retention) + " and subjects " + joined(existing) +
                    ", but the route needs retention workqueue and subjects " +
                    joined(options_.subjects) +
                    "; countersign does not edit streams: change the stream or the route's "
                    "stream name");
  }
  if (config->Storage != js_FileStorage) {
    log("ingress: warning: stream " + name +
        " uses memory storage: jobs are lost when the "
        "server restarts");
  }
  return {};
}

Status JetStreamIngress::ensureConsumer() {
  const std::string& stream = options_.stream;
  const std::string& durable = options_.durable;
  const std::string what = "ingress consumer " + durable + " on stream " + stream;
  jsConsumerInfo* raw = nullptr;
  jsErrCode js_error{};
  natsStatus s = js_GetConsumerInfo(&raw, connection_.js(), stream.c_str(), durable.c_str(),
                                    nullptr, &js_error);
  ConsumerInfoPtr info(raw);
  if (streamOrConsumerMissing(s, js_error)) {
    jsConsumerConfig config;
    jsConsumerConfig_Init(&config);
    config.Durable = durable.c_str();
    config.AckPolicy = js_AckExplicit;
    config.DeliverPolicy = js_DeliverAll;
    config.AckWait = nanos(options_.ack_wait);
    config.MaxAckPending = options_.max_ack_pending;
    config.MaxDeliver = -1;  // unlimited: a job is never dropped for being retried often
    raw = nullptr;
    js_error = {};
    s = js_AddConsumer(&raw, connection_.js(), stream.c_str(), &config, nullptr, &js_error);
    info.reset(raw);
    if (s == NATS_OK) {
      log("ingress: created " + what + " (pull, explicit ack, ack_wait " +
          std::to_string(options_.ack_wait.count()) + " ms)");
      return {};
    }
    // Another replica may have created it meanwhile (with other settings): use it.
    Error create_error = jsError(s, "cannot create " + what);
    raw = nullptr;
    js_error = {};
    s = js_GetConsumerInfo(&raw, connection_.js(), stream.c_str(), durable.c_str(), nullptr,
                           &js_error);
    info.reset(raw);
    if (s != NATS_OK) return std::unexpected(std::move(create_error));
  } else if (s != NATS_OK) {
    return std::unexpected(jsError(s, "cannot read " + what));
  }

  const jsConsumerConfig* config = info->Config;
  if (config == nullptr) return fail(Errc::unavailable, what + ": no config");
  if (config->DeliverSubject != nullptr && config->DeliverSubject[0] != '\0') {
    return fail(Errc::invalid_argument,
                what +
                    " exists as a push consumer; the ingress needs a pull consumer: delete it "
                    "or choose another durable name");
  }
  if (config->AckPolicy != js_AckExplicit) {
    return fail(Errc::invalid_argument, what +
                                            " exists without explicit acks; the ingress "
                                            "needs explicit acks: delete it or choose another "
                                            "durable name");
  }
  const bool filter_ok =
      config->FilterSubject == nullptr || config->FilterSubject[0] == '\0' ||
      (options_.subjects.size() == 1 && options_.subjects.front() == config->FilterSubject);
  if (!filter_ok) {
    return fail(Errc::invalid_argument, what + " exists with filter subject " +
                                            config->FilterSubject +
                                            ", which would leave jobs "
                                            "unread: delete it or choose another durable name");
  }
  if (config->AckWait != nanos(options_.ack_wait) ||
      config->MaxAckPending != options_.max_ack_pending) {
    log("ingress: " + what + " exists with ack_wait " +
        std::to_string(config->AckWait / 1'000'000) + " ms and max_ack_pending " +
        std::to_string(config->MaxAckPending) + "; using it as it is");
  }
  return {};
}

Status JetStreamIngress::bind() {
  endSubscription();
  jsSubOptions sub_options;
  jsSubOptions_Init(&sub_options);
  sub_options.Stream = options_.stream.c_str();
  sub_options.Consumer = options_.durable.c_str();
  jsErrCode js_error{};
  natsStatus s = js_PullSubscribe(&sub_, connection_.js(), nullptr, options_.durable.c_str(),
                                  nullptr, &sub_options, &js_error);
  if (s != NATS_OK) {
    sub_ = nullptr;
    return std::unexpected(jsError(s, "cannot bind to ingress consumer " + options_.durable +
                                          " on stream " + options_.stream));
  }
  return {};
}

Status JetStreamIngress::setUp() {
  // cnats would buffer these requests while reconnecting and let them time out.
  if (!connection_.connected()) {
    return fail(Errc::unavailable, "ingress stream " + options_.stream + ": not connected to NATS");
  }
  if (auto ok = ensureStream(); !ok) return ok;
  if (auto ok = ensureConsumer(); !ok) return ok;
  return bind();
}

// ---- the fetch loop -------------------------------------------------------------------------

bool JetStreamIngress::sleepUnlessStopping(milliseconds delay) {
  std::unique_lock lock(mutex_);
  return !wake_.wait_for(lock, delay, [this] { return stopping_; });
}

void JetStreamIngress::run() {
  milliseconds backoff = kBackoffMin;
  auto wait = [&] {
    sleepUnlessStopping(backoff);
    backoff = std::min(backoff * 2, kBackoffMax);
  };
  while (!stop_requested_) {
    if (need_setup_) {
      Status set_up = [&] {
        InStep step(*this, Step::setting_up);
        return setUp();
      }();
      if (!set_up) {
        if (!degraded_) {
          log("ingress: cannot set up stream " + options_.stream +
              " again (retrying): " + set_up.error().message);
        }
        degraded_ = true;
        wait();
        continue;
      }
      need_setup_ = false;
      degraded_ = false;
      reload_reuse_ = true;
      idle_checks_with_pending_ = 0;
      idle_checks_past_end_ = 0;
      ++counters_.rebinds;
      log("ingress: stream " + options_.stream + " and consumer " + options_.durable +
          " are back; fetching again");
    }
    if (!connection_.connected()) {
      if (!degraded_) log("ingress: connection down, fetching paused");
      degraded_ = true;
      wait();
      continue;
    }
    // A server that restarted may have brought the stream back with a lower sequence: look
    // before taking anything from it. Until the check has its answers, and a regression it found
    // is recorded, nothing is fetched. A restarted server has another server id; cnats switches
    // to it before the connection is usable again (the reconnected callback comes later).
    if (const std::string server = connectedServer(); check_pending_ || server != server_seen_) {
      server_seen_ = server;
      check_pending_ = true;
      {
        InStep step(*this, Step::checking);
        checkAfterReconnect();
      }
      if (need_setup_) continue;  // set up first, then check again
      if (check_pending_) {
        wait();
        continue;
      }
    }
    natsMsgList list{};
    jsErrCode js_error{};
    natsStatus s = NATS_OK;
    {
      InStep step(*this, Step::fetching);
      s = natsSubscription_Fetch(&list, sub_, options_.batch, kFetchWaitMs, &js_error);
    }
    if (s == NATS_OK && list.Count > 0 && connectedServer() != server_seen_) {
      // Reconnected to another server during the fetch (a pull request is kept while
      // reconnecting and sent to the new server): not one of these before the check. They go
      // back to the consumer.
      for (int i = 0; i < list.Count; ++i) {
        if (natsMsg_Nak(list.Msgs[i], nullptr) == NATS_OK) {
          ++counters_.naked;
        } else {
          ++counters_.ack_failures;
        }
      }
      natsMsgList_Destroy(&list);
      continue;
    }
    if (s == NATS_OK || s == NATS_TIMEOUT || s == NATS_NOT_FOUND) {
      if (degraded_) log("ingress: fetching from " + options_.stream + " again");
      degraded_ = false;
      backoff = kBackoffMin;
      if (s == NATS_OK) {
        last_verified_ = Clock::now();
        idle_checks_with_pending_ = 0;
        if (list.Count > 0) {
          std::lock_guard lock(stalled_mutex_);
          stalled_.clear();
        }
        if (reuse_ && (reload_reuse_ || Clock::now() - reuse_loaded_ > kReuseReloadInterval)) reloadReuse();
        handleBatch(list);
      } else {
        reload_reuse_ = true;
        checkWhileIdle();
      }
      natsMsgList_Destroy(&list);
      continue;
    }
    onFetchError(s, js_error);
    wait();
  }
}

void JetStreamIngress::checkWhileIdle() {
  // A pull request to a consumer that no longer exists gets no answer at all (seen with
  // nats-server 2.9.10: no message, no 503), just like an idle one: only asking for the
  // consumer tells them apart.
  //
  // A consumer can also exist and hold jobs while pulls on this subscription find nothing:
  // - Its delivered stream sequence is past the stream's last sequence. nats-server 2.9 keeps a
  //   consumer's state and a stream's messages in separate files written at different times; a
  //   crash can leave a stream whose sequence went back (its last block and index not written)
  //   beside a consumer that remembers a later position. New jobs get sequences the consumer
  //   believes it has delivered, so it skips them and reports nothing pending. Nothing short of
  //   a new consumer takes them: the consumer is deleted and created again (deliver all: the
  //   stream is a work queue, so it holds exactly the jobs not yet acked).
  // - It reports undelivered jobs (with room under max_ack_pending: not merely another
  //   replica's unacked batch) at two checks in a row while every fetch came back empty: the
  //   subscription is bound again (a new pull subscription; the consumer and its state kept).
  if (Clock::now() - last_verified_ < kIdleCheckInterval) return;
  last_verified_ = Clock::now();
  InStep step(*this, Step::checking);
  const ConsumerState state = consumerState();
  if (state.gone) {
    log("ingress: consumer " + options_.durable + " on stream " + options_.stream +
        " is gone; creating it again");
    need_setup_ = true;
    return;
  }
  if (!state.known) return;
  // Read after the consumer: in normal operation the stream's last sequence can only have grown.
  if (auto last = streamLastSequence(); last && state.delivered_stream > *last) {
    const std::string what = "ingress " + options_.stream + ": consumer " + options_.durable +
                             " has delivered up to stream sequence " +
                             std::to_string(state.delivered_stream) +
                             ", past the stream's last sequence " + std::to_string(*last) +
                             " (the stream's sequence went back, e.g. after a server crash): it "
                             "skips new jobs";
    if (++idle_checks_past_end_ < 2) {
      setStalled(what + "; re-creating the consumer if it stays so");
      log(what + "; checking again");
      return;
    }
    idle_checks_past_end_ = 0;
    ++counters_.stalls;
    setStalled(what + "; re-creating the consumer");
    regressionFound(what, state.created, state.delivered_stream, *last);
    return;
  }
  idle_checks_past_end_ = 0;
  const bool room = state.max_ack_pending <= 0 || state.ack_pending < state.max_ack_pending;
  if (state.pending == 0 || !room) {
    idle_checks_with_pending_ = 0;
    if (state.pending == 0) setStalled({});
    return;
  }
  if (++idle_checks_with_pending_ < 2) return;
  idle_checks_with_pending_ = 0;
  ++counters_.stalls;
  const std::string what = "ingress " + options_.stream + ": fetches find nothing while consumer " +
                           options_.durable + " has " + std::to_string(state.pending) + " jobs waiting";
  setStalled(what);
  log(what + "; binding the subscription again");
  need_setup_ = true;
}

void JetStreamIngress::checkAfterReconnect() {
  // The server may have restarted after a crash with the stream's sequence set back (see
  // checkWhileIdle). Then new jobs get sequences forwarded before under the same
  // countersign-in:<stream>:<seq>, which the target stream would drop as duplicates. Signs, any
  // of which is proof (in normal operation a stream's last sequence only grows):
  // - the consumer delivered, or this ingress handled, a sequence past the stream's last one;
  // - the message on the highest sequence this ingress handled is not the one it handled (another
  //   store time): new jobs may already have taken the stream past its old end.
  if (reuse_) reloadReuse();
  const ConsumerState state = consumerState();
  if (state.gone) {
    // A server that lost its store: created again, and checked again then (a new stream starts
    // at sequence 1 again).
    need_setup_ = true;
    return;
  }
  const auto last = streamLastSequence();
  if (!state.known || !last) {
    setStalled("ingress " + options_.stream + ": cannot read consumer " + options_.durable +
               " and its stream after a reconnect; taking nothing until it can");
    return;
  }
  const std::uint64_t beyond = std::max(state.delivered_stream, highest_handled_);
  std::string what;
  if (beyond > *last) {
    what = "ingress " + options_.stream + ": the stream's last sequence is " + std::to_string(*last) +
           " after a reconnect, below sequence " + std::to_string(beyond) + " delivered before it";
  } else if (highest_handled_ > 0) {
    if (const auto stored = storedAt(highest_handled_); stored && *stored != highest_handled_ns_) {
      what = "ingress " + options_.stream + ": sequence " + std::to_string(highest_handled_) +
             ", handled before a reconnect, holds another message now";
    }
  }
  if (what.empty()) {
    check_pending_ = false;
    setStalled({});
    return;
  }
  what += " (the stream's sequence went back, e.g. after a server crash)";
  bool found_here = false;
  std::optional<std::uint64_t> covered_by;
  if (reuse_ && state.delivered_stream <= *last) {
    // Another replica may have found it first (on this server instance), recorded it and created
    // the consumer again: then only make sure the record covers what this one handled.
    const std::string server = connectedServer();
    const auto regressions = reuse_->regressions();
    found_here = std::any_of(regressions.begin(), regressions.end(),
                             [&](const StreamRegression& r) { return r.server == server; });
    // Or the only sign is a message this ingress handled that a recorded regression already
    // accounts for: another replica recorded that crash while this one was away (maybe across a
    // further restart). A new epoch would give the jobs forwarded since then a second id, and the
    // target stream would store them twice. The consumer is still made again (unless a replica
    // did so on this server instance), in case it would skip jobs the stream took on again.
    if (const auto* covering = regressionCovering(regressions, highest_handled_, highest_handled_ns_)) {
      covered_by = covering->epoch;
    }
  }
  if (!found_here) ++counters_.stalls;
  regressionFound(what, state.created, state.delivered_stream, *last, /*recreate=*/!found_here, covered_by);
}

std::string JetStreamIngress::connectedServer() const {
  char server[256] = {0};
  natsConnection_GetConnectedServerId(connection_.raw(), server, sizeof server);
  return server;
}

bool JetStreamIngress::regressionFound(const std::string& what, std::int64_t consumer_created, std::uint64_t delivered,
                                       std::uint64_t last, bool recreate, std::optional<std::uint64_t> covered_by) {
  if (covered_by) {
    log(what + "; already recorded as epoch " + std::to_string(*covered_by) +
        " (a crash this process was away for): no new epoch");
  } else if (reuse_) {
    const std::string server = connectedServer();
    const std::uint64_t up_to = std::max(delivered, highest_handled_);
    // Messages stored no later than the newest one this ingress handled were there before the
    // crash: their ids stay (each replica raises it to its own newest; new messages were all
    // stored after the server came back, later than any of them). A process that handled
    // nothing yet cannot tell: every one up to up_to gets the epoch.
    const std::int64_t after = highest_handled_ns_;
    auto recorded = reuse_->record(server, up_to, after,
                                   formatRfc3339(std::chrono::system_clock::now()));
    if (!recorded) {
      check_pending_ = true;
      setStalled(what + "; cannot record it in the store, taking nothing until it is");
      log(what + "; cannot record it (" + recorded.error().message + "): taking nothing until it is");
      return false;
    }
    reuse_loaded_ = Clock::now();
    reload_reuse_ = false;
    ++counters_.regressions;
    log(what + "; recorded as epoch " + std::to_string(recorded->epoch) + ": jobs on sequences up to " +
        std::to_string(recorded->up_to) + " stored after it are forwarded as countersign-in:" + options_.stream +
        ":<seq>:" + std::to_string(recorded->epoch) +
        (after == 0 ? " (this process handled nothing before it: all of them)" : ""));
  } else {
    ++counters_.regressions;
    log(what + "; no store to record it in: forwards on reused sequences may be dropped as duplicates");
  }
  check_pending_ = false;
  // What was handled before is covered now; later sequences are the stream's new ones.
  highest_handled_ = 0;
  highest_handled_ns_ = 0;
  if (!recreate) {
    setStalled({});
    return true;
  }
  setStalled(what + "; re-creating the consumer");
  log(what + "; deleting the consumer and creating it again");
  recreateConsumer(consumer_created, delivered, last);
  return true;
}

void JetStreamIngress::reloadReuse() {
  reuse_loaded_ = Clock::now();
  reload_reuse_ = false;
  if (auto loaded = reuse_->load(); !loaded) {
    log("ingress " + options_.stream + ": cannot read the recorded regressions (" + loaded.error().message +
        "); using the ones read before");
  }
}

void JetStreamIngress::recreateConsumer(std::int64_t created, std::uint64_t delivered, std::uint64_t last) {
  // Another replica may have re-created it meanwhile: delete only the consumer that was found.
  const ConsumerState again = consumerState();
  if (again.known && again.created != created) {
    log("ingress: consumer " + options_.durable + " on stream " + options_.stream +
        " was created again meanwhile (by another replica?); keeping it");
    setStalled({});
    return;
  }
  jsErrCode js_error{};
  natsStatus s = js_DeleteConsumer(connection_.js(), options_.stream.c_str(), options_.durable.c_str(), nullptr,
                                   &js_error);
  if (s != NATS_OK && !streamOrConsumerMissing(s, js_error)) {
    log("ingress: " + natsError(s, "deleting consumer " + options_.durable).message + "; trying again later");
    return;
  }
  ++counters_.recreated;
  log("ingress: deleted consumer " + options_.durable + " on stream " + options_.stream + " (delivered " +
      std::to_string(delivered) + ", stream ends at " + std::to_string(last) + "); creating it again");
  need_setup_ = true;  // the loop creates it (deliver all) and binds a new subscription
}

void JetStreamIngress::setStalled(std::string reason) {
  std::lock_guard lock(stalled_mutex_);
  stalled_ = std::move(reason);
}

std::string JetStreamIngress::stalled() const {
  std::lock_guard lock(stalled_mutex_);
  std::string out = stalled_;
  const auto in_step = Clock::now() - step_since_;
  if (step_ != Step::waiting && in_step > options_.stuck_after) {
    std::string doing;
    switch (step_) {
      case Step::fetching:
        doing = "in one fetch";
        break;
      case Step::handling:
        doing = "deciding stream sequence " + std::to_string(step_sequence_);
        break;
      case Step::flushing:
        doing = "flushing acks";
        break;
      case Step::checking:
        doing = "checking its consumer";
        break;
      case Step::setting_up:
        doing = "setting up its stream and consumer";
        break;
      case Step::waiting:
        break;
    }
    if (!out.empty()) out += "\n";
    out += "ingress " + options_.stream + ": the fetch thread has been " + doing + " for " + secondsText(in_step) +
           " (more than " + secondsText(options_.stuck_after) + "), taking nothing";
  }
  return out;
}

void JetStreamIngress::onFetchError(natsStatus status, jsErrCode js_error) {
  ++counters_.fetch_errors;
  if (!degraded_) {
    log("ingress: " + natsError(status, "fetch from " + options_.stream).message +
        (js_error != 0 ? " (JetStream error " + std::to_string(js_error) + ")" : ""));
  }
  degraded_ = true;
  // A failed pull ("409 Consumer Deleted" to a waiting request, ...): the consumer or the whole
  // stream may be gone, e.g. a server that restarted without its store. Only a definite
  // "not found" rebuilds them.
  InStep step(*this, Step::checking);
  if (consumerIsGone()) {
    log("ingress: consumer " + options_.durable + " on stream " + options_.stream +
        " is gone; creating it again");
    need_setup_ = true;
  }
}

bool JetStreamIngress::consumerIsGone() { return consumerState().gone; }

JetStreamIngress::ConsumerState JetStreamIngress::consumerState() {
  ConsumerState state;
  // While reconnecting cnats would buffer the request and let it time out: no answer, no news.
  if (!connection_.connected()) return state;
  jsConsumerInfo* raw = nullptr;
  jsErrCode js_error{};
  natsStatus s = js_GetConsumerInfo(&raw, connection_.js(), options_.stream.c_str(),
                                    options_.durable.c_str(), nullptr, &js_error);
  ConsumerInfoPtr info(raw);
  state.gone = streamOrConsumerMissing(s, js_error);
  if (s == NATS_OK && info) {
    state.known = true;
    state.pending = info->NumPending;
    state.ack_pending = info->NumAckPending;
    state.delivered_stream = info->Delivered.Stream;
    state.created = info->Created;
    if (info->Config != nullptr) state.max_ack_pending = info->Config->MaxAckPending;
  }
  return state;
}

std::optional<std::uint64_t> JetStreamIngress::streamLastSequence() {
  if (!connection_.connected()) return std::nullopt;
  jsStreamInfo* raw = nullptr;
  jsErrCode js_error{};
  natsStatus s = js_GetStreamInfo(&raw, connection_.js(), options_.stream.c_str(), nullptr, &js_error);
  StreamInfoPtr info(raw);
  if (s != NATS_OK || !info) return std::nullopt;
  return info->State.LastSeq;
}

std::optional<std::int64_t> JetStreamIngress::storedAt(std::uint64_t sequence) {
  if (!connection_.connected()) return std::nullopt;
  natsMsg* raw = nullptr;
  jsErrCode js_error{};
  natsStatus s = js_GetMsg(&raw, connection_.js(), options_.stream.c_str(), sequence, nullptr, &js_error);
  if (s != NATS_OK || raw == nullptr) {
    natsMsg_Destroy(raw);
    return std::nullopt;
  }
  const std::int64_t stored = natsMsg_GetTime(raw);
  natsMsg_Destroy(raw);
  return stored;
}

void JetStreamIngress::handleBatch(natsMsgList& list) {
  // A long batch must not outlive its messages' ack deadline: tell the server the remaining
  // ones are in progress when half of ack_wait has passed since they were fetched (or touched).
  auto touched = Clock::now();
  const auto touch_after = options_.ack_wait / 2;
  for (int i = 0; i < list.Count; ++i) {
    natsMsg* msg = list.Msgs[i];
    if (stop_requested_) {
      // Not taken: let another replica have it at once instead of after ack_wait.
      if (natsMsg_Nak(msg, nullptr) == NATS_OK) {
        ++counters_.naked;
      } else {
        ++counters_.ack_failures;
      }
      continue;
    }
    if (Clock::now() - touched > touch_after) {
      for (int j = i; j < list.Count; ++j) (void)natsMsg_InProgress(list.Msgs[j], nullptr);
      touched = Clock::now();
    }
    handleOne(msg);
  }
  flushAcks();
}

void JetStreamIngress::handleOne(natsMsg* msg) {
  jsMsgMetaData* raw_meta = nullptr;
  natsStatus s = natsMsg_GetMetaData(&raw_meta, msg);
  std::unique_ptr<jsMsgMetaData, MetaDataFree> meta(raw_meta);
  if (s != NATS_OK || meta->Stream == nullptr) {
    // Every message on this subscription comes from the consumer; never drop one.
    log("ingress: " + natsError(s, "message without JetStream metadata").message +
        "; redelivering it later");
    if (natsMsg_NakWithDelay(msg, kRetryDelayMs, nullptr) == NATS_OK) {
      ++counters_.naked;
    } else {
      ++counters_.ack_failures;
    }
    return;
  }
  IngressPosition position{.stream = meta->Stream,
                           .sequence = meta->Sequence.Stream,
                           .stored_ns = meta->Timestamp,
                           .epoch = reuse_ ? reuse_->epoch(meta->Sequence.Stream, meta->Timestamp) : 0,
                           .reuse = reuse_.get()};
  if (position.sequence >= highest_handled_) {
    highest_handled_ = position.sequence;
    highest_handled_ns_ = position.stored_ns;
  }

  auto converted = fromNatsMsg(msg);
  if (!converted) {
    // A producer sent a header block nobody can trust: it can never be taken.
    ++counters_.malformed;
    log("ingress: stream " + position.stream + " sequence " + std::to_string(position.sequence) +
        ": " + converted.error().message + "; terminated");
    IntakeOutcome refused;
    refused.status = Outcome::malformed;
    refused.ack = IngressAck::term;
    settle(msg, refused, position.sequence);
    return;
  }
  // The reply is JetStream's ack subject, never the producer's.
  converted->reply.clear();
  InStep step(*this, Step::handling, position.sequence);
  IntakeOutcome outcome = callHandler(std::move(*converted), position);
  ++counters_.handled;
  if (outcome.status == Outcome::approval_required) crashPoint("after_hold_before_ack");
  settle(msg, outcome, position.sequence);
}

IntakeOutcome JetStreamIngress::callHandler(Message&& message, const IngressPosition& position) {
  std::string failure;
  try {
    return handler_(std::move(message), position);
  } catch (const std::exception& e) {
    failure = e.what();
  } catch (...) {
    failure = "unknown exception";
  }
  log("ingress: handler failed on stream " + position.stream + " sequence " +
      std::to_string(position.sequence) + ": " + failure + "; redelivering it later");
  IntakeOutcome outcome;
  outcome.status = Outcome::unavailable;
  outcome.ack = IngressAck::nak;
  outcome.redeliver_after = milliseconds(kRetryDelayMs);
  return outcome;
}

void JetStreamIngress::settle(natsMsg* msg, const IntakeOutcome& outcome, std::uint64_t sequence) {
  natsStatus s = NATS_OK;
  jsErrCode js_error{};
  const char* what = "ack";
  switch (outcome.ack) {
    case IngressAck::ack:
      if (options_.confirm_each_ack) {
        s = natsMsg_AckSync(msg, nullptr, &js_error);
      } else {
        s = natsMsg_Ack(msg, nullptr);
        ++unflushed_acks_;
      }
      if (s == NATS_OK) ++counters_.acked;
      break;
    case IngressAck::nak:
      what = "nak";
      s = outcome.redeliver_after.count() > 0
              ? natsMsg_NakWithDelay(msg, outcome.redeliver_after.count(), nullptr)
              : natsMsg_Nak(msg, nullptr);
      ++unflushed_acks_;
      if (s == NATS_OK) ++counters_.naked;
      break;
    case IngressAck::term:
      what = "term";
      s = natsMsg_Term(msg, nullptr);
      ++unflushed_acks_;
      if (s == NATS_OK) ++counters_.terminated;
      break;
  }
  if (s != NATS_OK) {
    // Not fatal: the server redelivers after ack_wait and intake's decision is idempotent.
    ++counters_.ack_failures;
    log("ingress: " +
        natsError(s, std::string(what) + " of stream " + options_.stream + " sequence " +
                         std::to_string(sequence))
            .message +
        "; it will be redelivered after ack_wait");
  }
}

void JetStreamIngress::flushAcks() {
  if (unflushed_acks_ == 0) return;
  unflushed_acks_ = 0;
  if (!connection_.connected()) return;  // cnats sends them after the reconnect
  InStep step(*this, Step::flushing);
  natsStatus s = natsConnection_FlushTimeout(connection_.raw(), kFlushWaitMs);
  if (s != NATS_OK) {
    log("ingress: " + natsError(s, "flushing acks").message +
        "; unconfirmed acks may be redelivered after ack_wait");
  }
}

}  // namespace countersign::natsio
