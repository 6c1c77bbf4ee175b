// `countersign run`: wires the core (intake, control, release) to NATS and runs until SIGTERM.
#include <malloc.h>
#include <pthread.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "commands.hpp"
#include "countersign/config.hpp"
#include "countersign/control.hpp"
#include "countersign/events.hpp"
#include "countersign/intake.hpp"
#include "countersign/log.hpp"
#include "countersign/policy.hpp"
#include "countersign/releaser.hpp"
#include "countersign/replayer.hpp"
#include "countersign/services.hpp"
#include "countersign/work_pool.hpp"
#include "http/admin_server.hpp"
#include "nats/audit_stream.hpp"
#include "nats/connection.hpp"
#include "nats/embedded_server.hpp"
#include "nats/js_ingress.hpp"
#include "nats/kv_bucket.hpp"
#include "nats/nats_publisher.hpp"
#include "nats/subscriber.hpp"

namespace countersign::cli {
namespace {

constexpr int kExitConfig = 2;
constexpr int kExitStart = 3;
constexpr std::chrono::milliseconds kDrainTimeout{10000};

LogLevel parseLevel(const std::string& text) {
  if (text == "debug") return LogLevel::debug;
  if (text == "warn") return LogLevel::warn;
  if (text == "error") return LogLevel::error;
  return LogLevel::info;
}

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

// A server URL fit for logs: credentials in it ("user:pass@", "token@") are masked.
std::string safeUrl(const std::string& url) {
  const auto scheme = url.find("://");
  const std::size_t start = scheme == std::string::npos ? 0 : scheme + 3;
  const auto at = url.find('@', start);
  if (at == std::string::npos) return url;
  const auto colon = url.find(':', start);
  const std::string user = colon != std::string::npos && colon < at ? url.substr(start, colon - start) + ":***"
                                                                      : std::string("***");
  return url.substr(0, start) + user + url.substr(at);
}

std::optional<std::filesystem::file_time_type> modified(const std::string& path) {
  std::error_code ec;
  const auto t = std::filesystem::last_write_time(path, ec);
  if (ec) return std::nullopt;
  return t;
}

// Everything that lives on one NATS connection: its publisher, store handle and events.
struct Plane {
  std::unique_ptr<natsio::Connection> connection;
  std::unique_ptr<natsio::NatsPublisher> publisher;
  std::unique_ptr<natsio::KvBucket> store;  // control plane only: intake uses it too
  std::unique_ptr<EventSink> events;
};

Result<Plane> openPlane(const Config& config, std::string_view name, bool send_asap, bool with_store,
                        Logger& log, const Clock& clock, const std::string& chain_id) {
  Plane plane;
  auto connection = natsio::Connection::connect(
      config.nats, name, send_asap, [&log](std::string_view line) { log.warn(line); });
  if (!connection) return std::unexpected(connection.error());
  plane.connection = std::move(*connection);
  plane.publisher = std::make_unique<natsio::NatsPublisher>(*plane.connection);
  if (with_store) {
    auto store = natsio::KvBucket::open(*plane.connection, config.store, config.concurrency.holds);
    if (!store) return std::unexpected(store.error());
    plane.store = std::move(*store);
  }
  EventOptions events{.prefix = config.control.prefix,
                      .allowed_events = config.events.allowed,
                      .include_payload = config.events.include_payload,
                      .redact = config.events.redact,
                      .chained = config.audit.enabled,
                      .chain_id = chain_id + "-" + std::string(name),
                      .durable_decisions = config.audit.enabled};
  plane.events = std::make_unique<EventSink>(*plane.publisher, clock, log, std::move(events));
  return plane;
}

}  // namespace

int runGateway(const RunOptions& options) {
  // Signals are taken synchronously by this thread: block them before any thread (cnats'
  // included) starts, so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto loaded = loadConfig(options.config_path, processEnvironment());
  if (!loaded) {
    std::cerr << "countersign: " << loaded.error().message << '\n';
    return kExitConfig;
  }
  const Config config = std::move(*loaded);
  auto initial_policy = Policy::loadFile(config.policy.file);
  if (!initial_policy) {
    std::cerr << "countersign: " << initial_policy.error().message << '\n';
    return kExitConfig;
  }
  if (options.check) {
    std::cout << "ok config " << options.config_path << ", policy " << config.policy.file << " "
              << (*initial_policy)->snapshot() << ", " << config.routes.size() << " route(s)\n";
    return 0;
  }

  StreamLogger log(options.log_format == "text" ? LogFormat::text : LogFormat::json,
                   parseLevel(options.log_level));
  SystemClock clock;
  RandomIdSource ids;
  PolicyHolder policy(std::move(*initial_policy));
  Throttler throttler;
  Metrics metrics;
  metrics.setPolicyLoaded(true);

  std::unique_ptr<natsio::EmbeddedServer> embedded;
  if (config.nats.embedded) {
    std::string host;
    int port = 0;
    if (!hostPort(config.nats.servers.front(), host, port)) {
      std::cerr << "countersign: nats.servers[0]: cannot take host and port for the embedded server from \""
                << config.nats.servers.front() << "\"\n";
      return kExitConfig;
    }
    auto started = natsio::EmbeddedServer::start(config.nats.server_binary, host, port, config.nats.data_dir,
                                                 [&log](std::string_view line) { log.info(line); });
    if (!started) {
      std::cerr << "countersign: embedded nats-server did not start: " << started.error().message << '\n';
      return kExitStart;
    }
    embedded = std::move(*started);
    log.info("embedded nats-server started", {{"url", safeUrl(config.nats.servers.front())}, {"data_dir", config.nats.data_dir}});
  }

  // Two connections: intake (high volume, buffered publishes) and control (answers requests at
  // once: send_asap, so cnats does not hold replies for the flusher).
  // This process's audit chains (one per connection) start anew at every start.
  const std::string chain_id = ids.newId().substr(0, 12);
  auto intake_plane = openPlane(config, "intake", false, false, log, clock, chain_id);
  if (!intake_plane) {
    std::cerr << "countersign: cannot start: " << intake_plane.error().message << '\n';
    return kExitStart;
  }
  auto control_plane = openPlane(config, "control", true, true, log, clock, chain_id);
  if (!control_plane) {
    std::cerr << "countersign: cannot start: " << control_plane.error().message << '\n';
    return kExitStart;
  }
  if (config.audit.enabled) {
    if (auto audit = natsio::ensureAuditStream(*control_plane->connection, config.audit, config.control.prefix);
        !audit) {
      std::cerr << "countersign: audit.stream: " << audit.error().message << '\n';
      return kExitStart;
    }
  }
  ReplayerOptions replay_options{.lease = config.release.lease};
  for (std::size_t i = 0; i < config.routes.size(); ++i) {
    const RouteConfig& route = config.routes[i];
    if (route.to_stream.empty()) continue;
    auto window = natsio::checkStream(*control_plane->connection, route.to_stream);
    if (!window) {
      std::cerr << "countersign: routes[" << i << "].to_stream: " << window.error().message << '\n';
      return kExitStart;
    }
    replay_options.duplicate_windows[route.to_stream] = *window;
  }

  // Intake's KV calls (a hold's create, sent without waiting) go out on the control connection
  // too: it writes at once (send_asap), where the intake connection's flusher would hold an
  // asynchronous publish up to a millisecond. Forwards and events keep the intake connection.
  const Services intake_services{config, *control_plane->store, *intake_plane->publisher, clock, ids,
                                 policy, throttler, *intake_plane->events, log, metrics};
  const Services control_services{config, *control_plane->store, *control_plane->publisher, clock, ids,
                                  policy, throttler, *control_plane->events, log, metrics};
  // Holds do not wait for their KV create (concurrency.holds in flight); the few that find
  // their id taken are checked on this pool, by approval id.
  constexpr std::size_t kHoldCheckThreads = 4;
  WorkPool hold_pool(kHoldCheckThreads);
  // Answers to producers and the `held` events just before them go out at once on the control
  // connection (send_asap); forwards and the other intake events keep the intake connection's
  // batching.
  Intake intake(intake_services, control_plane->publisher.get(), &hold_pool, control_plane->events.get());
  Releaser releaser(control_services);
  Control control(control_services, releaser);
  Replayer replayer(control_services, releaser, replay_options);
  intake.onHeld([&replayer](std::string_view id, std::optional<std::chrono::system_clock::time_point> deadline) {
    replayer.noteHeld(id, deadline);
  });
  // On every way out: the subscriptions (declared below) stop first, then the holds they
  // started finish here, while intake still exists.
  auto finishHolds = [&](std::chrono::milliseconds wait) {
    (void)control_plane->store->waitForCreates(wait);
    hold_pool.drain();
  };
  struct OnExit {
    std::function<void()> run;
    ~OnExit() { run(); }
  } finish_holds{[&] { finishHolds(std::chrono::seconds(10)); }};

  // Each control subject gets concurrency.control members of the queue group "countersign"
  // (as other replicas have theirs): each member has its own delivery thread, so that many
  // requests are decided at once without a hand-over to another thread.
  std::vector<std::unique_ptr<natsio::Subscription>> control_subs;
  auto subscribeControl = [&](const std::string& subject, natsio::Subscription::Handler handler) {
    for (int i = 0; i < config.concurrency.control; ++i) {
      auto sub = natsio::Subscription::subscribe(*control_plane->connection, subject, "countersign", handler);
      if (!sub) {
        std::cerr << "countersign: cannot subscribe to " << subject << ": " << sub.error().message << '\n';
        return false;
      }
      control_subs.push_back(std::move(*sub));
    }
    return true;
  };
  for (const auto op : {ControlOp::approve, ControlOp::reject, ControlOp::get, ControlOp::list}) {
    if (!subscribeControl(config.control.prefix + ".control." + std::string(toString(op)),
                          [&control, op](Message&& m) { control.onRequest(op, m); })) {
      return kExitStart;
    }
  }
  if (!subscribeControl(config.control.prefix + ".control.release",
                        [&control](Message&& m) { control.answer(m, control.operatorRelease(m.payload)); })) {
    return kExitStart;
  }
  std::vector<std::unique_ptr<natsio::Subscription>> intake_subs;
  std::vector<std::unique_ptr<natsio::JetStreamIngress>> ingresses;
  for (const RouteConfig& route : config.routes) {
    if (route.mode == RouteMode::jetstream) {
      natsio::IngressOptions ingress{.stream = ingressStreamName(route),
                                     .subjects = {route.from},
                                     .durable = route.durable.empty() ? "countersign-" + route.name : route.durable,
                                     .replicas = config.store.replicas,
                                     .ack_wait = route.ack_wait};
      auto started = natsio::JetStreamIngress::start(
          *intake_plane->connection, std::move(ingress),
          [&intake, &route](Message&& m, const IngressPosition& at) { return intake.onJob(route, std::move(m), &at); },
          [&log](std::string_view line) { log.warn(line); });
      if (!started) {
        std::cerr << "countersign: route " << route.name << ": " << started.error().message << '\n';
        return kExitStart;
      }
      ingresses.push_back(std::move(*started));
      continue;
    }
    auto sub = natsio::Subscription::subscribe(*intake_plane->connection, route.from, route.queue,
                                               [&intake, &route](Message&& m) { intake.onJob(route, std::move(m)); });
    if (!sub) {
      std::cerr << "countersign: cannot subscribe to " << route.from << ": " << sub.error().message << '\n';
      return kExitStart;
    }
    intake_subs.push_back(std::move(*sub));
  }
  for (auto* plane : {&*intake_plane, &*control_plane}) {
    if (auto flushed = plane->connection->flush(std::chrono::seconds(5)); !flushed) {
      std::cerr << "countersign: server did not confirm the subscriptions: " << flushed.error().message << '\n';
      return kExitStart;
    }
  }

  auto reload = [&](std::string_view why) {
    auto next = Policy::loadFile(config.policy.file);
    metrics.policyReload(next.has_value());
    if (!next) {
      log.error("policy reload failed; keeping the policy in force",
                {{"why", why}, {"error", next.error().message}, {"policy_snapshot", policy.current()->snapshot()}});
      return;
    }
    const std::string before = policy.current()->snapshot();
    policy.replace(std::move(*next));
    log.info("policy reloaded", {{"why", why}, {"from", before}, {"policy_snapshot", policy.current()->snapshot()}});
  };

  // The replayer: at start, then every release.replay_interval (one thread per process).
  std::mutex replay_mutex;
  std::condition_variable replay_wake;
  bool stopping = false;
  std::atomic<bool> store_reachable{true};  // the last scan could read the bucket
  std::thread replay_thread([&] {
    std::unique_lock lock(replay_mutex);
    while (!stopping) {
      lock.unlock();
      const auto scan_started = std::chrono::steady_clock::now();
      auto scanned = replayer.scan();
      // A scan lists the whole bucket: on a large one, leave the server (and us) time between.
      const auto pause = std::max(config.release.replay_interval,
                                  std::chrono::duration_cast<std::chrono::milliseconds>(
                                      2 * (std::chrono::steady_clock::now() - scan_started)));
      store_reachable.store(scanned.has_value());
      // A scan builds and drops sets as large as the bucket's key list (and the key index's
      // watcher delivers the whole bucket at start): hand the freed memory back, so that the
      // process's size follows what it holds (about one key and one deadline per open record).
      malloc_trim(0);
      if (!scanned) {
        log.warn("replay scan failed", {{"error", scanned.error().message}});
      } else if (scanned->replayed + scanned->release_unknown + scanned->expired > 0) {
        log.info("replay scan", {{"replayed", std::to_string(scanned->replayed)},
                                 {"release_unknown", std::to_string(scanned->release_unknown)},
                                 {"expired", std::to_string(scanned->expired)}});
      }
      lock.lock();
      replay_wake.wait_for(lock, pause, [&] { return stopping; });
    }
  });

  // Admin HTTP: health, readiness, metrics and the REST API (same decisions as control).
  std::unique_ptr<http::AdminServer> admin;
  if (!config.admin.listen.empty()) {
    http::AdminHandlers handlers{
        .readiness =
            [&] {
              http::Readiness r;
              if (!intake_plane->connection->connected()) r.failing.push_back("nats: intake connection down");
              if (!control_plane->connection->connected()) r.failing.push_back("nats: control connection down");
              if (!store_reachable.load()) r.failing.push_back("store: bucket " + config.store.bucket + " not readable");
              r.ready = r.failing.empty();
              return r;
            },
        .metrics = [&] { return metrics.renderPrometheus(); },
        .control = [&](ControlOp op, std::string body) { return control.handle(op, body); }};
    auto started = http::AdminServer::start(config.admin, std::move(handlers), log);
    if (!started) {
      std::cerr << "countersign: admin.listen: " << started.error().message << '\n';
      return kExitStart;
    }
    admin = std::move(*started);
  }

  std::string servers;
  for (const auto& s : config.nats.servers) servers += (servers.empty() ? "" : ",") + safeUrl(s);
  std::cout << "countersign ready: nats " << servers << (config.nats.embedded ? " (embedded)" : "")
            << ", policy " << policy.current()->snapshot() << ", control " << config.control.prefix
            << ".control.{approve,reject,get,list}\n";
  for (const auto& route : config.routes) {
    std::cout << "  route " << route.name << ": " << route.from << " -> " << route.to
              << (route.mode == RouteMode::jetstream ? " (jetstream intake, stream " + ingressStreamName(route) + ")" : "")
              << (route.to_stream.empty() ? "" : " (to_stream " + route.to_stream + ")") << '\n';
  }
  if (admin) {
    std::cout << "  admin http://" << config.admin.listen.substr(0, config.admin.listen.rfind(':')) << ':'
              << admin->port() << " (/healthz /readyz /metrics /api/v1/approvals)\n";
  }
  std::cout << std::flush;
  if (!config.approvers) {
    log.warn("no approvers section: open mode, an approval's approver is a claim guarded only by NATS "
             "permissions on " + config.control.prefix + ".control.> (docs/approvers.md)");
  }
  log.info("ready", {{"policy_snapshot", policy.current()->snapshot()}, {"servers", servers}});

  auto last_modified = modified(config.policy.file);
  while (true) {
    const timespec tick{1, 0};
    const int signo = sigtimedwait(&signals, nullptr, &tick);
    if (signo == SIGTERM || signo == SIGINT) {
      log.info("shutting down", {{"signal", signo == SIGTERM ? "SIGTERM" : "SIGINT"}});
      break;
    }
    if (signo == SIGHUP) {
      last_modified = modified(config.policy.file);
      reload("SIGHUP");
      continue;
    }
    if (config.policy.watch) {
      const auto now_modified = modified(config.policy.file);
      if (now_modified && now_modified != last_modified) {
        last_modified = now_modified;
        reload("file changed");
      }
    }
  }

  if (admin) admin->stop();
  {
    const std::lock_guard lock(replay_mutex);
    stopping = true;
  }
  replay_wake.notify_all();
  replay_thread.join();
  // Stop intake first and let in-flight jobs finish, then control, then the connections.
  for (auto& ingress : ingresses) ingress->stop();
  // One deadline for the whole drain; with NATS down there is nothing to drain through, and
  // waiting would outlast the supervisor's grace period (Kubernetes: 30 s).
  const auto deadline = std::chrono::steady_clock::now() + kDrainTimeout;
  const auto left = [&] {
    return std::max(std::chrono::milliseconds(1), std::chrono::duration_cast<std::chrono::milliseconds>(
                                                      deadline - std::chrono::steady_clock::now()));
  };
  // Holds started by intake answer producers on the control connection: they finish before
  // either connection closes.
  if (intake_plane->connection->connected()) {
    for (auto& sub : intake_subs) (void)sub->drain(left());
  }
  finishHolds(left());
  if (intake_plane->connection->connected()) intake_plane->connection->drain(left());
  if (control_plane->connection->connected()) {
    for (auto& sub : control_subs) (void)sub->drain(left());
  }
  control_plane->store->stopWatching();
  if (control_plane->connection->connected()) control_plane->connection->drain(left());
  if (embedded) embedded->stop();
  log.info("stopped");
  return 0;
}

}  // namespace countersign::cli
