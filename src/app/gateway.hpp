// The runtime shell of `countersign run`: a Gateway owns every part of the running process as a
// member. Members are declared in start order (embedded server, connections and store, core
// objects, executors, replay loop, endpoints, admin listener); stop() drains them in the reverse
// order and the destructor is the backstop for every way out, a failed start included.
//
// Threading rule: a client library's thread (cnats' delivery and PubAck threads, Asio's I/O
// thread) decodes a message and posts it to one of the Gateway's executors; core code runs on
// the executors' threads (periodic work as timers on them) and on intake's delivery threads
// (policy evaluation and non-blocking publishes only). docs/architecture.md has the table.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "app/endpoint.hpp"
#include "app/nats_plane.hpp"
#include "http/evidence.hpp"
#include "nats/record_index.hpp"
#include "countersign/clock.hpp"
#include "countersign/config.hpp"
#include "countersign/events.hpp"
#include "countersign/log.hpp"
#include "countersign/metrics.hpp"
#include "countersign/ordered_pipeline.hpp"
#include "countersign/policy.hpp"
#include "countersign/result.hpp"
#include "countersign/services.hpp"
#include "countersign/work_pool.hpp"
#include "http/admin_server.hpp"

namespace countersign {
class Intake;
namespace nkeys {
class Signer;
}
class Releaser;
class Control;
class Replayer;
}  // namespace countersign

namespace countersign::natsio {
class EmbeddedServer;
class JetStreamIngress;
}  // namespace countersign::natsio

namespace countersign::app {

class ReplayLoop;

// What an endpoint factory and an admin extension may use: the Gateway's parts, valid from the
// moment the factory runs until the Gateway is destroyed. Threads that are not the executors'
// must only hand work over to them (see Gateway).
struct GatewayParts {
  const Config& config;
  Logger& log;
  Metrics& metrics;
  natsio::Connection& intake_connection;
  natsio::Connection& control_connection;  // sends at once (send_asap)
  KvStore& store;
  WorkPool& control_executor;  // control requests: Control::onRequest, Control::handle
  Control& control;
};

// Adds an endpoint at start, after the built-in ones and before the admin listener. Its error
// fails the start (exit 3, the error's message as the line).
using EndpointFactory = std::function<Result<std::unique_ptr<Endpoint>>(GatewayParts&)>;
// Changes the admin listener's handlers before it starts (for example to add a live event
// feed fed by an endpoint); what it captures must outlive the Gateway's admin listener.
using AdminExtension = std::function<void(http::AdminHandlers&, GatewayParts&)>;

class Gateway {
 public:
  Gateway(Config config, std::shared_ptr<const Policy> policy, Logger& log);
  // stop() with the default deadline when still running; then the members go in reverse order.
  ~Gateway();
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  // Before start(): extra endpoints and admin handlers (the bridge process, the console).
  void addEndpoint(EndpointFactory factory) { endpoint_factories_.push_back(std::move(factory)); }
  void extendAdmin(AdminExtension extension) { admin_extensions_.push_back(std::move(extension)); }

  // Starts every part in order. The error names the step that failed, on one line (credentials
  // in server URLs masked); what was started before it is stopped again by stop().
  Status start();
  // Drains in reverse start order within `deadline`: the admin listener and the replay loop
  // stop, intake stops taking jobs and its holds finish (or are answered 503 retryable when the
  // store does not confirm them in time), control finishes the requests it took, the
  // connections drain and close, the embedded server stops. Idempotent.
  void stop(std::chrono::milliseconds deadline);
  // What /readyz reports: ready when both connections are up, the last replay scan could
  // read the bucket, and no JetStream ingress takes nothing while jobs wait.
  http::Readiness health() const;

  // The whole `countersign run`: blocks SIGTERM, SIGINT and SIGHUP in every thread, start()
  // (on failure: one line "countersign: <what failed>" on stderr and 3), the ready banner on
  // stdout, then waits: SIGHUP or a changed policy file (policy.watch) reloads the policy,
  // SIGTERM or SIGINT stops within the drain deadline. Returns the process's exit code.
  int run();

  // Threads of this process now (from /proc/self/status), for /metrics and tests.
  static int threadCount();

 private:
  void printBanner() const;
  void reloadPolicy(std::string_view why);
  std::string metricsText() const;
  std::string ingressMetrics() const;
  // The console's evidence of one approval, and its live events (<prefix>.events.> on the
  // control connection) for /api/v1/events.
  ControlReply evidence(const std::string& id) const;
  std::function<void()> eventFeed(http::EventSink sink) const;

  // Not parts: what the parts are made from and report to.
  Config config_;
  Logger& log_;
  SystemClock clock_;
  RandomIdSource ids_;
  PolicyHolder policy_;
  http::PolicyHistory earlier_policies_;  // replaced by reloads: the console explains under them
  Throttler throttler_;
  Metrics metrics_;
  bool started_ = false;
  bool stopped_ = false;
  // countersign's own key (receipts.seed_file, made at the first start): signs receipts.
  std::unique_ptr<nkeys::Signer> receipt_signer_;
  std::unique_ptr<StoreTags> store_tags_;  // from the same seed: tags held records and decisions
  EventVerifier event_keys_;  // checks events read back: its own key and audit.public_key
  RecentlySigned signed_bodies_;  // the events this process signed lately (the live feed's shortcut)
  bool receipt_key_created_ = false;

  // The parts, in start order.
  std::unique_ptr<natsio::EmbeddedServer> embedded_;
  std::optional<NatsPlane> intake_plane_;   // forwards and intake events (batched)
  std::optional<NatsPlane> control_plane_;  // the store, answers, control (send at once)
  std::unique_ptr<Services> intake_services_;
  std::unique_ptr<Services> control_services_;
  std::unique_ptr<Intake> intake_;
  std::unique_ptr<Releaser> releaser_;
  std::unique_ptr<Control> control_;
  std::unique_ptr<natsio::RecordIndex> list_index_;  // `list` pages (started by the first list)
  std::unique_ptr<Replayer> replayer_;
  // Executors: declared after the core objects they run, so that they are drained and joined
  // before those go (they are created first in start(): intake is given the hold executor).
  std::unique_ptr<WorkPool> hold_executor_;     // cs-hold-N: holds whose id is taken already;
                                                // its timer answers creates without a PubAck
  std::unique_ptr<WorkPool> control_executor_;  // cs-control-N: control requests
  std::unique_ptr<OrderedPipeline> receipt_pipeline_;  // cs-receipt-N: allowed jobs' receipts
                                                       // signed in parallel, forwarded in order
  std::unique_ptr<ReplayLoop> replay_loop_;     // the replayer's scans, a timer on:
  std::unique_ptr<WorkPool> replay_executor_;   // cs-replay-0
  std::optional<GatewayParts> parts_;
  std::vector<std::unique_ptr<Endpoint>> intake_endpoints_;   // route subscriptions, ingresses
  std::vector<std::unique_ptr<Endpoint>> control_endpoints_;  // control subjects
  std::vector<std::unique_ptr<Endpoint>> extra_endpoints_;    // addEndpoint()
  std::unique_ptr<http::AdminServer> admin_;

  std::vector<EndpointFactory> endpoint_factories_;
  std::vector<AdminExtension> admin_extensions_;
};

}  // namespace countersign::app
