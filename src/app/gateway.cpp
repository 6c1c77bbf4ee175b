#include "app/gateway.hpp"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <condition_variable>
#include <csignal>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <mutex>
#include <thread>

#include "countersign/control.hpp"
#include "countersign/intake.hpp"
#include "countersign/nkeys.hpp"
#include "countersign/releaser.hpp"
#include "countersign/replayer.hpp"
#include "countersign/trim_memory.hpp"
#include "http/evidence.hpp"
#include "nats/audit_reader.hpp"
#include "nats/audit_stream.hpp"
#include "nats/embedded_server.hpp"
#include "nats/js_ingress.hpp"
#include "nats/message_convert.hpp"
#include "nats/subscriber.hpp"

namespace countersign::app {
namespace {

constexpr std::chrono::milliseconds kDrainTimeout{10000};
// Threads that settle holds whose id is taken already (they read the store).
constexpr std::size_t kHoldThreads = 4;
// A control `get` is answered on its subscription's thread unless more than this many bytes of
// requests wait behind it (then the control executor takes it): any waiting request.
constexpr int kInlineWhileNothingWaits = 1;

// host and port of the first server URL, for the embedded server ("nats://127.0.0.1:4222").
bool hostPort(const std::string& url, std::string& host, int& port) {
  std::string rest = url;
  if (const auto scheme = rest.find("://"); scheme != std::string::npos) rest = rest.substr(scheme + 3);
  if (const auto at = rest.rfind('@'); at != std::string::npos) rest = rest.substr(at + 1);
  const auto colon = rest.rfind(':');
  host = colon == std::string::npos ? rest : rest.substr(0, colon);
  port = 4222;
  if (colon != std::string::npos) {
    try {
      port = std::stoi(rest.substr(colon + 1));
    } catch (...) {
      return false;
    }
  }
  return !host.empty() && port > 0 && port < 65536;
}

// The ingress stream of a jetstream route: routes[].ingress_stream, else COUNTERSIGN_<NAME>.
std::string ingressStreamName(const RouteConfig& route) {
  if (!route.ingress_stream.empty()) return route.ingress_stream;
  std::string name = "COUNTERSIGN_";
  for (const char c : route.name) {
    name += c == '-' || c == '.' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return name;
}

std::optional<std::filesystem::file_time_type> modified(const std::string& path) {
  std::error_code ec;
  const auto t = std::filesystem::last_write_time(path, ec);
  if (ec) return std::nullopt;
  return t;
}

// Runs `decide` on `executor` and waits for its answer (on a thread that may wait: an admin
// worker).
template <class Decide>
auto onExecutor(WorkPool& executor, Decide decide) -> decltype(decide()) {
  auto task = std::make_shared<std::packaged_task<decltype(decide())()>>(std::move(decide));
  auto answer = task->get_future();
  executor.post("", [task] { (*task)(); });
  return answer.get();
}

Status failStep(std::string_view step, const Error& error) {
  return fail(error.code, std::string(step) + error.message);
}

}  // namespace

// The replayer as a timer on the replay executor (cs-replay-0): a scan at start, then every
// release.replay_interval (longer on a large bucket). stop() cancels the next scan and waits for
// a running one.
class ReplayLoop {
 public:
  ReplayLoop(Replayer& replayer, const Config& config, Logger& log, Metrics& metrics, WorkPool& executor)
      : replayer_(replayer), config_(config), log_(log), metrics_(metrics), executor_(executor) {
    executor_.post(kLane, [this] { scan(); });
  }
  ~ReplayLoop() { stop(); }
  ReplayLoop(const ReplayLoop&) = delete;
  ReplayLoop& operator=(const ReplayLoop&) = delete;

  void stop() {
    std::unique_lock lock(mutex_);
    stopping_ = true;
    idle_.wait(lock, [&] { return !scanning_; });
  }
  bool storeReachable() const { return store_reachable_.load(); }
  // The first scan has completed (readiness waits for it: until then the expiries and
  // unfinished releases of a large bucket are not looked after yet).
  bool scannedOnce() const { return scanned_once_.load(); }

 private:
  static constexpr std::string_view kLane = "replay";

  void scan() {
    {
      const std::lock_guard lock(mutex_);
      if (stopping_) return;
      scanning_ = true;
    }
    if (!scanned_once_) natsio::lowerThreadPriority();  // cs-replay-0 scans in the background
    const auto scan_started = std::chrono::steady_clock::now();
    auto scanned = replayer_.scan();
    const auto took = std::chrono::steady_clock::now() - scan_started;
    metrics_.replayScan(std::chrono::duration<double>(took).count());
    // A full scan passes over every key (a steady one only over the approvals at work): on a
    // large bucket, scan at most a tenth of the time, so that approvals and holds keep the
    // cores. The first scan waited for the key watcher's pass over the bucket, which is not
    // repeated.
    const auto pause = scanned_once_ ? std::max(config_.release.replay_interval,
                                                std::chrono::duration_cast<std::chrono::milliseconds>(9 * took))
                                     : config_.release.replay_interval;
    store_reachable_.store(scanned.has_value());
    // The first scan (and the key watcher's pass over the bucket before it) builds and drops
    // sets as large as the bucket: hand the freed memory back, so that the process's size
    // follows what it holds (about one key and one deadline per open record). Later scans
    // allocate what they free; trimming after each of them held the allocator's lock for
    // milliseconds that other threads' allocations (an approval's) waited for, so only now and
    // then.
    const auto now = std::chrono::steady_clock::now();
    if (!scanned_once_ || now - last_trim_ >= kTrimEvery) {
      trimMemory();
      last_trim_ = now;
    }
    if (scanned && !scanned_once_.exchange(true)) {
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started_);
      log_.info("first replay scan done", {{"pending", std::to_string(scanned->pending)},
                                           {"ms", std::to_string(ms.count())}});
    }
    if (!scanned) {
      log_.warn("replay scan failed", {{"error", scanned.error().message}});
    } else if (scanned->replayed + scanned->release_unknown + scanned->expired > 0) {
      log_.info("replay scan", {{"replayed", std::to_string(scanned->replayed)},
                                {"release_unknown", std::to_string(scanned->release_unknown)},
                                {"expired", std::to_string(scanned->expired)}});
    }
    {
      const std::lock_guard lock(mutex_);
      scanning_ = false;
      if (!stopping_) executor_.postAfter(pause, kLane, [this] { scan(); });
    }
    idle_.notify_all();
  }

  Replayer& replayer_;
  const Config& config_;
  Logger& log_;
  Metrics& metrics_;
  WorkPool& executor_;
  std::mutex mutex_;
  std::condition_variable idle_;
  bool stopping_ = false;
  bool scanning_ = false;
  std::atomic<bool> store_reachable_{true};  // the last scan could read the bucket
  std::atomic<bool> scanned_once_{false};
  static constexpr std::chrono::seconds kTrimEvery{60};
  std::chrono::steady_clock::time_point last_trim_{};
  const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
};

Gateway::Gateway(Config config, std::shared_ptr<const Policy> policy, Logger& log)
    : config_(std::move(config)), log_(log), policy_(std::move(policy)) {
  metrics_.setPolicyLoaded(true);
}

Gateway::~Gateway() {
  stop(kDrainTimeout);
}

int Gateway::threadCount() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.starts_with("Threads:")) {
      try {
        return std::stoi(line.substr(8));
      } catch (...) {
        return 0;
      }
    }
  }
  return 0;
}

Status Gateway::start() {
  started_ = true;
  auto receipt_seed = nkeys::readOrCreateSeedFile(config_.receipts.seed_file, &receipt_key_created_);
  if (!receipt_seed) return failStep("receipts.seed_file: ", receipt_seed.error());
  receipt_signer_ = std::make_unique<nkeys::Signer>(*receipt_seed);
  store_tags_ = std::make_unique<StoreTags>(*receipt_seed);
  event_keys_.trust(receipt_signer_->publicKey());
  if (auto configured = nkeys::parsePublicKey(config_.audit.public_key)) event_keys_.trust(*configured);
  if (receipt_key_created_) {
    log_.info("receipt key created",
              {{"file", config_.receipts.seed_file}, {"public_key", receipt_signer_->encodedPublicKey()}});
  }
  if (config_.nats.embedded) {
    std::string host;
    int port = 0;
    if (!hostPort(config_.nats.servers.front(), host, port)) {
      return fail(Errc::invalid_argument, "nats.servers[0]: cannot take host and port for the embedded server from \"" +
                                              natsio::safeUrl(config_.nats.servers.front()) + "\"");
    }
    auto started = natsio::EmbeddedServer::start(config_.nats.server_binary, host, port, config_.nats.data_dir,
                                                 [this](std::string_view line) { log_.info(line); });
    if (!started) return failStep("embedded nats-server did not start: ", started.error());
    embedded_ = std::move(*started);
    log_.info("embedded nats-server started",
              {{"url", natsio::safeUrl(config_.nats.servers.front())}, {"data_dir", config_.nats.data_dir}});
  }

  // Two connections: intake (high volume, buffered publishes) and control (answers requests at
  // once: send_asap, so cnats does not hold replies for the flusher). This process's audit
  // chains (one per connection) start anew at every start.
  const std::string chain_id = ids_.newId().substr(0, 12);
  // Executors first: the store's create timeouts are a timer on the hold executor, and intake
  // is given it; they are declared after the core objects so that they are drained and joined
  // before those go.
  hold_executor_ = std::make_unique<WorkPool>(kHoldThreads, 1024, "hold");
  control_executor_ = std::make_unique<WorkPool>(static_cast<std::size_t>(config_.concurrency.control), 1024, "control");
  replay_executor_ = std::make_unique<WorkPool>(1, 16, "replay");
  // The Ed25519 signature of a receipt is most of an allowed job's CPU. Signed in parallel only
  // where there are cores to spare: on 2 cores the hand-overs cost more CPU per job than the
  // second core gives (bench/README.md). Started by the first allowed job; a few jobs per
  // signer in flight keep them busy and bound the memory.
  int signers = config_.concurrency.receipt_signers;
  if (signers < 0) {
    const int cores = static_cast<int>(std::thread::hardware_concurrency());
    signers = cores >= 4 ? std::min(cores / 2, 8) : 0;
  }
  if (config_.receipts.allowed && signers > 0) {
    const auto threads = static_cast<std::size_t>(signers);
    receipt_pipeline_ = std::make_unique<OrderedPipeline>(threads, 4 * threads, "receipt");
  }
  // cnats' own threads get names as they start: the library's (timers, connection events),
  // each connection's reader and flusher and its request-reply inbox.
  natsio::NewThreads nats_threads;
  if (auto opened = natsio::openNatsLibrary(); !opened) return failStep("nats: ", opened.error());
  nats_threads.name("cs-nats-lib");
  auto intake_plane =
      openPlane(config_, "intake", false, false, log_, clock_, chain_id, receipt_signer_.get(), nullptr, &signed_bodies_);
  nats_threads.name("cs-nats-intake");
  if (!intake_plane) return failStep("cannot start: ", intake_plane.error());
  intake_plane_ = std::move(*intake_plane);
  // Received headers are read from cnats' message buffer: refuse to run on a cnats whose layout
  // is not the one that code reads.
  if (auto layout = natsio::checkReceivedLayout(intake_plane_->connection->raw(), std::chrono::seconds(5),
                                                      config_.nats.inbox_prefix); !layout) {
    return failStep("nats: ", layout.error());
  }
  auto control_plane = openPlane(config_, "control", true, true, log_, clock_, chain_id, receipt_signer_.get(),
                                 hold_executor_.get(), &signed_bodies_);
  nats_threads.name("cs-nats-control");
  if (!control_plane) return failStep("cannot start: ", control_plane.error());
  control_plane_ = std::move(*control_plane);
  natsio::Connection& control_connection = *control_plane_->connection;
  if (config_.audit.enabled) {
    if (auto audit = natsio::ensureAuditStream(control_connection, config_.audit, config_.control.prefix); !audit) {
      return failStep("audit.stream: ", audit.error());
    }
  }
  ReplayerOptions replay_options{.lease = config_.release.lease};
  for (std::size_t i = 0; i < config_.routes.size(); ++i) {
    const RouteConfig& route = config_.routes[i];
    if (route.to_stream.empty()) continue;
    const std::string where = "routes[" + std::to_string(i) + "].to_stream: ";
    if (!config_.nats.embedded) {
      // Another team's server: its streams are theirs to make.
      auto window = natsio::checkStream(control_connection, route.to_stream);
      if (!window && window.error().message.ends_with("does not exist")) {
        return failStep(where, Error{window.error().code, window.error().message +
                                                              " (create it on the server; countersign creates "
                                                              "streams only with nats.embedded: true)"});
      }
      if (!window) return failStep(where, window.error());
      replay_options.duplicate_windows[route.to_stream] = *window;
      continue;
    }
    // Embedded: the server is countersign's own, so it makes the stream it is told to, capturing
    // the target subjects of every route that releases into it.
    std::vector<std::string> subjects;
    for (const RouteConfig& other : config_.routes) {
      if (other.to_stream == route.to_stream &&
          std::find(subjects.begin(), subjects.end(), other.to) == subjects.end()) {
        subjects.push_back(other.to);
      }
    }
    bool created = false;
    auto window = natsio::ensureStream(control_connection, route.to_stream, subjects, created);
    if (!window) return failStep(where, window.error());
    if (created) {
      std::string joined;
      for (const auto& subject : subjects) joined += (joined.empty() ? "" : ",") + subject;
      log_.info("stream created", {{"stream", route.to_stream}, {"subjects", joined}, {"route", route.name}});
    }
    replay_options.duplicate_windows[route.to_stream] = *window;
  }

  // Intake's KV calls (a hold's create, sent without waiting) go out on the control connection
  // too: it writes at once (send_asap), where the intake connection's flusher would hold an
  // asynchronous publish up to a millisecond. Forwards and events keep the intake connection.
  natsio::KvBucket& store = *control_plane_->store;
  // Records, decisions and votes written before tags existed are tagged once, before anything is
  // released.
  std::vector<std::string> adopted_keys;
  if (auto adopted = adoptUntagged(store, *store_tags_, formatRfc3339(clock_.now()), &adopted_keys); !adopted) {
    return failStep("store: tagging records held before store tags: ", adopted.error());
  } else if (!adopted_keys.empty()) {
    // Loud on purpose: whatever the bucket held is trusted from now on.
    std::string keys;
    for (std::size_t i = 0; i < adopted_keys.size() && i < 100; ++i) keys += (i == 0 ? "" : ",") + adopted_keys[i];
    log_.warn("tagged records, decisions and votes that carried no valid tag (first start with store tags, or "
              "a marker key was deleted)",
              {{"records", std::to_string(adopted->records)}, {"decisions", std::to_string(adopted->decisions)},
               {"votes", std::to_string(adopted->votes)}, {"keys", keys}});
  }
  intake_services_ = std::make_unique<Services>(Services{config_, store, *intake_plane_->publisher, clock_, ids_,
                                                         policy_, throttler_, *intake_plane_->events, log_, metrics_,
                                                         receipt_signer_.get(), store_tags_.get()});
  control_services_ = std::make_unique<Services>(Services{config_, store, *control_plane_->publisher, clock_, ids_,
                                                          policy_, throttler_, *control_plane_->events, log_, metrics_,
                                                          receipt_signer_.get(), store_tags_.get()});
  // Holds do not wait for their KV create (concurrency.holds in flight); answers to producers
  // and the `held` events just before them go out at once on the control connection.
  intake_ = std::make_unique<Intake>(*intake_services_, control_plane_->publisher.get(), hold_executor_.get(),
                                     control_plane_->events.get(), receipt_pipeline_.get());
  releaser_ = std::make_unique<Releaser>(*control_services_);
  control_ = std::make_unique<Control>(*control_services_, *releaser_);
  // The list index's pass over the bucket goes on the store's watch connection, as the key
  // index's does.
  list_index_ = std::make_unique<natsio::RecordIndex>(*control_plane_->watch_connection, config_.store);
  control_->useIndex(list_index_.get());
  replayer_ = std::make_unique<Replayer>(*control_services_, *releaser_, replay_options);
  // The first scan's listing is the key index's first pass over the bucket: with values, so the
  // replayer learns every record's deadline from it instead of reading each record again.
  store.onFirstPass([replayer = replayer_.get()](std::string_view key, std::string_view value) {
    replayer->noteRecord(key, value);
  });
  intake_->onHeld([replayer = replayer_.get()](std::string_view id,
                                               std::optional<std::chrono::system_clock::time_point> deadline) {
    replayer->noteHeld(id, deadline);
  });
  // A re-bound record's new escalation steps replace what the replayer knew of it.
  control_->onRebound([replayer = replayer_.get()](std::string_view id,
                                                   std::optional<std::chrono::system_clock::time_point> at) {
    replayer->reschedule(id, at);
  });
  parts_.emplace(GatewayParts{config_, log_, metrics_, *intake_plane_->connection, control_connection, store,
                              *control_executor_, *control_});

  // Control: one subscription per subject in the queue group "countersign" (other replicas
  // have theirs); its delivery thread hands each request to the control executor, whose
  // concurrency.control threads decide them (they wait for the store).
  const std::string control_prefix = config_.control.prefix + ".control.";
  for (const auto op : {ControlOp::approve, ControlOp::reject, ControlOp::list}) {
    auto endpoint = subscribeToExecutor(control_connection, control_prefix + std::string(toString(op)), "countersign",
                                        *control_executor_,
                                        [control = control_.get(), op](Message&& m) { control->onRequest(op, m); },
                                        "cs-ctl-" + std::string(toString(op)));
    if (!endpoint) return std::unexpected(endpoint.error());
    control_endpoints_.push_back(std::move(*endpoint));
  }
  {
    // `get` only reads (the record and the keys that decide its state, at once: one wait for
    // the server), so its subscription's thread answers it itself, a thread wake-up sooner than
    // through the executor. Only while no other `get` waits behind it: when some do, the
    // executor takes it, so that a burst is still read concurrency.control at a time.
    const auto get = [control = control_.get()](Message&& m) { control->onRequest(ControlOp::get, m); };
    auto endpoint = subscribeShedding(
        control_connection, control_prefix + std::string(toString(ControlOp::get)), "countersign", get,
        kInlineWhileNothingWaits,
        [executor = control_executor_.get(), get](Message&& m) {
          executor->post("", [get, m = std::move(m)]() mutable { get(std::move(m)); });
        },
        "cs-ctl-get");
    if (!endpoint) return std::unexpected(endpoint.error());
    control_endpoints_.push_back(std::move(*endpoint));
  }
  {
    auto endpoint = subscribeToExecutor(
        control_connection, control_prefix + "release", "countersign", *control_executor_,
        [control = control_.get()](Message&& m) { control->answer(m, control->operatorRelease(m.payload)); },
        "cs-ctl-release");
    if (!endpoint) return std::unexpected(endpoint.error());
    control_endpoints_.push_back(std::move(*endpoint));
  }

  // Intake: a core route decides on its subscription's delivery thread (policy and publishes
  // that do not wait; a hold's create is asynchronous); a jetstream route on its ingress's
  // fetch thread (its ack waits for the decision to be durable).
  for (const RouteConfig& route : config_.routes) {
    if (route.mode == RouteMode::jetstream) {
      natsio::IngressOptions ingress{.stream = ingressStreamName(route),
                                     .subjects = {route.from},
                                     .durable = route.durable.empty() ? "countersign-" + route.name : route.durable,
                                     .replicas = config_.store.replicas,
                                     .ack_wait = route.ack_wait,
                                     .reuse_store = &store};
      natsio::NewThreads fetch_thread;
      auto started = natsio::JetStreamIngress::start(
          *intake_plane_->connection, std::move(ingress),
          [intake = intake_.get(), &route](Message&& m, const IngressPosition& at) {
            return intake->onJob(route, std::move(m), &at);
          },
          [this](std::string_view line) { log_.warn(line); });
      fetch_thread.name("cs-ingress");
      if (!started) return failStep("route " + route.name + ": ", started.error());
      intake_endpoints_.push_back(ingressEndpoint(std::move(*started), "ingress " + ingressStreamName(route)));
      continue;
    }
    // Beyond concurrency.intake_bytes waiting, a job is answered 503 "overloaded" at once
    // instead of growing memory (or being dropped unanswered by the client library).
    auto endpoint = subscribeShedding(
        *intake_plane_->connection, route.from, route.queue,
        [intake = intake_.get(), &route](Message&& m) { intake->onJob(route, std::move(m)); },
        config_.concurrency.intake_bytes,
        [intake = intake_.get(), &route](Message&& m) { intake->overloaded(route, std::move(m)); }, "cs-intake");
    if (!endpoint) return std::unexpected(endpoint.error());
    intake_endpoints_.push_back(std::move(*endpoint));
  }
  for (auto& factory : endpoint_factories_) {
    auto endpoint = factory(*parts_);
    if (!endpoint) return std::unexpected(endpoint.error());
    extra_endpoints_.push_back(std::move(*endpoint));
  }
  for (auto* plane : {&*intake_plane_, &*control_plane_}) {
    if (auto flushed = plane->connection->flush(std::chrono::seconds(5)); !flushed) {
      return failStep("server did not confirm the subscriptions: ", flushed.error());
    }
  }

  replay_loop_ = std::make_unique<ReplayLoop>(*replayer_, config_, log_, metrics_, *replay_executor_);

  // Admin HTTP: health, readiness, metrics and the REST API (same decisions as control).
  if (!config_.admin.listen.empty()) {
    http::AdminHandlers handlers{
        .readiness = [this] { return health(); },
        .metrics = [this] { return metricsText(); },
        // On an admin worker: the decision itself runs on the control executor, as for NATS
        // requests, so that every control decision runs on cs-control-N.
        .control =
            [control = control_.get(), executor = control_executor_.get()](ControlOp op, std::string body) {
              return onExecutor(*executor, [control, op, body = std::move(body)] { return control->handle(op, body); });
            },
        .decide =
            [control = control_.get(), executor = control_executor_.get()](const ControlRequest& request) {
              return onExecutor(*executor, [control, request] { return control->handle(request); });
            },
        .evidence = [this](const std::string& id) { return evidence(id); },
        .events = [this](http::EventSink sink) { return eventFeed(std::move(sink)); }};
    for (auto& extension : admin_extensions_) extension(handlers, *parts_);
    natsio::NewThreads admin_threads;  // the I/O thread names itself; its workers do not
    auto started = http::AdminServer::start(config_.admin, std::move(handlers), log_);
    admin_threads.name("cs-admin-work");
    if (!started) return std::unexpected(started.error());  // names admin.listen itself
    admin_ = std::move(*started);
  }
  return {};
}

ControlReply Gateway::evidence(const std::string& id) const {
  http::EvidenceSources sources{
      .store = *control_plane_->store, .policy = policy_, .config = config_, .earlier = &earlier_policies_};
  if (config_.audit.enabled) {
    sources.timeline = [this](const std::string& approval) {
      return natsio::approvalTimeline(*control_plane_->connection, config_.audit.stream, approval, 5000, event_keys_);
    };
  }
  return http::evidenceReply(sources, id);
}

std::function<void()> Gateway::eventFeed(http::EventSink sink) const {
  auto sub = natsio::Subscription::subscribe(
      *control_plane_->connection, config_.control.prefix + ".events.>", "",
      [this, sink = std::move(sink)](Message&& m) {
        // With the audit trail on, countersign signs every event: the console never sees one it
        // did not make (anyone allowed to publish on the events subjects could add rows). This
        // process's own events are known by their bodies; others' (replicas', forgers') verified.
        if (config_.audit.enabled && !signed_bodies_.contains(m.payload) &&
            event_keys_.check(m.payload, findHeader(m.headers, kEventSignatureHeader),
                              findHeader(m.headers, kEventKeyHeader)) != EventOrigin::verified) {
          return;
        }
        sink(std::move(m.subject), std::move(m.payload));
      },
      {},
      "cs-events-feed");
  if (!sub) {
    log_.warn("admin: no live events for the console", {{"error", sub.error().message}});
    return [] {};
  }
  return [held = std::shared_ptr<natsio::Subscription>(std::move(*sub))] { held->unsubscribe(); };
}

std::string Gateway::metricsText() const {
  std::string text = metrics_.renderPrometheus();
  text += "# HELP countersign_threads Threads of the countersign process.\n";
  text += "# TYPE countersign_threads gauge\n";
  text += "countersign_threads " + std::to_string(threadCount()) + "\n";
  std::uint64_t dropped = 0;
  for (const auto& endpoint : intake_endpoints_) dropped += endpoint->dropped();
  text += "# HELP countersign_intake_dropped_total Jobs the NATS client dropped unanswered: more than twice "
          "concurrency.intake_bytes waited on a core route.\n";
  text += "# TYPE countersign_intake_dropped_total counter\n";
  text += "countersign_intake_dropped_total " + std::to_string(dropped) + "\n";
  text += ingressMetrics();
  return text;
}

// JetStream ingresses: what readiness reports, as numbers to alert on.
std::string Gateway::ingressMetrics() const {
  struct Family {
    const char* name;
    const char* type;
    const char* help;
    std::function<std::uint64_t(const Endpoint&, const natsio::IngressStats&)> value;
  };
  const Family families[] = {
      {"countersign_ingress_stalled", "gauge",
       "1 while a JetStream ingress takes nothing although jobs wait (the reason is on /readyz).",
       [](const Endpoint& e, const natsio::IngressStats&) -> std::uint64_t { return e.problem().empty() ? 0 : 1; }},
      {"countersign_ingress_stalls_total", "counter",
       "Stalls a JetStream ingress found and acted on: fetches empty while its consumer had jobs waiting, or its "
       "consumer past the end of its stream.",
       [](const Endpoint&, const natsio::IngressStats& s) { return s.stalls; }},
      {"countersign_ingress_rebinds_total", "counter",
       "Times a JetStream ingress set up its stream, consumer or pull subscription again.",
       [](const Endpoint&, const natsio::IngressStats& s) { return s.rebinds; }},
      {"countersign_ingress_consumer_recreated_total", "counter",
       "Consumers a JetStream ingress deleted and created again: past the end of their stream, or after its sequence went back.",
       [](const Endpoint&, const natsio::IngressStats& s) { return s.recreated; }},
      {"countersign_ingress_regressions_total", "counter",
       "Times a JetStream ingress found its stream's sequence gone back (after a server crash) and recorded the "
       "reused sequences, whose jobs are forwarded under a new id.",
       [](const Endpoint&, const natsio::IngressStats& s) { return s.regressions; }},
  };
  std::string text;
  for (const auto& family : families) {
    std::string rows;
    for (const auto& endpoint : intake_endpoints_) {
      if (auto stats = endpoint->ingressStats()) {
        rows += std::string(family.name) + "{stream=\"" + stats->first + "\"} " +
                std::to_string(family.value(*endpoint, stats->second)) + "\n";
      }
    }
    if (rows.empty()) return text;  // no JetStream route
    text += std::string("# HELP ") + family.name + " " + family.help + "\n";
    text += std::string("# TYPE ") + family.name + " " + family.type + "\n";
    text += rows;
  }
  return text;
}

http::Readiness Gateway::health() const {
  http::Readiness r;
  if (!intake_plane_ || !intake_plane_->connection->connected()) r.failing.push_back("nats: intake connection down");
  if (!control_plane_ || !control_plane_->connection->connected()) {
    r.failing.push_back("nats: control connection down");
  }
  if (replay_loop_ && !replay_loop_->storeReachable()) {
    r.failing.push_back("store: bucket " + config_.store.bucket + " not readable");
  } else if (replay_loop_ && !replay_loop_->scannedOnce()) {
    r.failing.push_back("store: first scan of bucket " + config_.store.bucket + " not done yet");
  }
  // A JetStream ingress that takes nothing while its consumer has jobs waiting.
  for (const auto& endpoint : intake_endpoints_) {
    if (auto problem = endpoint->problem(); !problem.empty()) r.failing.push_back(std::move(problem));
  }
  r.ready = r.failing.empty();
  return r;
}

void Gateway::stop(std::chrono::milliseconds timeout) {
  if (!started_ || stopped_) return;
  stopped_ = true;
  // One deadline for the whole drain; with NATS down there is nothing to drain through, and
  // waiting would outlast the supervisor's grace period (Kubernetes: 30 s).
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const auto left = [&] {
    return std::max(std::chrono::milliseconds(1),
                    std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()));
  };
  const auto connected = [](const std::optional<NatsPlane>& plane) {
    return plane && plane->connection->connected();
  };
  if (admin_) admin_->stop();
  if (replay_loop_) replay_loop_->stop();
  // Intake stops taking jobs; the holds it started finish while intake and both connections
  // still exist (their answers go out on the control connection).
  for (auto& endpoint : extra_endpoints_) endpoint->drain(connected(intake_plane_) ? left() : std::chrono::milliseconds(1));
  for (auto& endpoint : intake_endpoints_) {
    endpoint->drain(connected(intake_plane_) ? left() : std::chrono::milliseconds(1));
  }
  if (control_plane_ && control_plane_->store) {
    natsio::KvBucket& store = *control_plane_->store;
    if (!store.waitForCreates(left())) {
      // Not confirmed in time: answered "unavailable" (retryable) now, while intake exists.
      store.cancelCreates();
    }
  }
  if (hold_executor_) hold_executor_->drain();
  // The allowed jobs still being signed are forwarded before the intake connection drains.
  if (receipt_pipeline_) receipt_pipeline_->drain();
  if (connected(intake_plane_)) intake_plane_->connection->drain(left());
  // Control finishes the requests it has taken, then the connection closes.
  if (connected(control_plane_)) {
    for (auto& endpoint : control_endpoints_) endpoint->drain(left());
  }
  if (control_executor_) control_executor_->drain();
  if (control_plane_ && control_plane_->store) control_plane_->store->stopWatching();
  if (list_index_) list_index_->stop();
  if (connected(control_plane_)) control_plane_->connection->drain(left());
  // The store's watch connection too, before an embedded server goes: else it sees the server
  // leave and warns of a disconnect on a clean stop.
  if (control_plane_ && control_plane_->watch_connection && control_plane_->watch_connection->connected()) {
    control_plane_->watch_connection->drain(left());
  }
  // What is left goes in reverse declaration order: endpoints before the executors they feed,
  // executors before the core objects they run, the store before its connection.
  admin_.reset();
  extra_endpoints_.clear();
  intake_endpoints_.clear();
  control_endpoints_.clear();
  // The executors before the replay loop: a timer that is due still runs when its executor goes
  // (the stopped loop ignores it), and none may run once the loop is gone.
  replay_executor_.reset();
  replay_loop_.reset();
  control_executor_.reset();
  receipt_pipeline_.reset();
  hold_executor_.reset();
  if (embedded_) embedded_->stop();
}

void Gateway::reloadPolicy(std::string_view why) {
  auto next = Policy::loadFile(config_.policy.file);
  metrics_.policyReload(next.has_value());
  if (!next) {
    log_.error("policy reload failed; keeping the policy in force",
               {{"why", why}, {"error", next.error().message}, {"policy_snapshot", policy_.current()->snapshot()}});
    return;
  }
  const std::string before = policy_.current()->snapshot();
  earlier_policies_.remember(policy_.current());  // the console explains jobs held under it
  policy_.replace(std::move(*next));
  log_.info("policy reloaded", {{"why", why}, {"from", before}, {"policy_snapshot", policy_.current()->snapshot()}});
}

void Gateway::printBanner() const {
  std::string servers;
  for (const auto& s : config_.nats.servers) servers += (servers.empty() ? "" : ",") + natsio::safeUrl(s);
  std::cout << "countersign ready: nats " << servers << (config_.nats.embedded ? " (embedded)" : "")
            << ", policy " << policy_.current()->snapshot() << ", control " << config_.control.prefix
            << ".control.{approve,reject,get,list}\n";
  for (const auto& route : config_.routes) {
    std::cout << "  route " << route.name << ": " << route.from << " -> " << route.to
              << (route.mode == RouteMode::jetstream ? " (jetstream intake, stream " + ingressStreamName(route) + ")" : "")
              << (route.to_stream.empty() ? "" : " (to_stream " + route.to_stream + ")") << '\n';
  }
  if (admin_) {
    std::cout << "  admin http://" << config_.admin.listen.substr(0, config_.admin.listen.rfind(':')) << ':'
              << admin_->port() << " (/healthz /readyz /metrics /api/v1/approvals, console /ui/)\n";
  }
  std::cout << "  receipts signed by " << receipt_signer_->encodedPublicKey() << " (" << config_.receipts.seed_file
            << (receipt_key_created_ ? ", created now" : "") << ")\n";
  std::cout << std::flush;
  if (!config_.approvers) {
    log_.warn("no approvers section: open mode, an approval's approver is a claim guarded only by NATS "
              "permissions on " + config_.control.prefix + ".control.> (docs/approvers.md)");
  }
  log_.info("ready", {{"policy_snapshot", policy_.current()->snapshot()}, {"servers", servers},
                      {"receipt_key", receipt_signer_->encodedPublicKey()}});
}

int Gateway::run() {
  // Signals are taken synchronously by this thread: block them before any thread (cnats'
  // included) starts, so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  if (auto started = start(); !started) {
    std::cerr << "countersign: " << started.error().message << '\n' << std::flush;
    stop(kDrainTimeout);
    return 3;
  }
  printBanner();

  auto last_modified = modified(config_.policy.file);
  while (true) {
    const timespec tick{1, 0};
    const int signo = sigtimedwait(&signals, nullptr, &tick);
    if (signo == SIGTERM || signo == SIGINT) {
      log_.info("shutting down", {{"signal", signo == SIGTERM ? "SIGTERM" : "SIGINT"}});
      break;
    }
    if (signo == SIGHUP) {
      last_modified = modified(config_.policy.file);
      reloadPolicy("SIGHUP");
      continue;
    }
    if (config_.policy.watch) {
      const auto now_modified = modified(config_.policy.file);
      if (now_modified && now_modified != last_modified) {
        last_modified = now_modified;
        reloadPolicy("file changed");
      }
    }
  }
  stop(kDrainTimeout);
  log_.info("stopped");
  return 0;
}

}  // namespace countersign::app
