// An endpoint takes work in from outside the process (a NATS subscription, a JetStream consumer,
// a listener) and hands it to an executor. The Gateway owns its endpoints and drains them before
// the executors and core objects they feed.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "countersign/message.hpp"
#include "countersign/result.hpp"
#include "countersign/work_pool.hpp"
#include "nats/connection.hpp"
#include "nats/js_ingress.hpp"

namespace countersign::natsio {
class Subscription;
}  // namespace countersign::natsio

namespace countersign::app {

class Endpoint {
 public:
  virtual ~Endpoint() = default;
  // What it listens to ("subscription countersign.control.approve"), for logs.
  virtual std::string name() const = 0;
  // Stops taking work, then lets what was taken finish (a subscription delivers what it has
  // received); returns within `timeout`.
  virtual void drain(std::chrono::milliseconds timeout) = 0;
  // Not empty while it cannot take work it should (for readiness): what is wrong.
  virtual std::string problem() const { return {}; }
  // Messages dropped unseen by the client library (a slow consumer), for /metrics.
  virtual std::uint64_t dropped() const { return 0; }
  // A JetStream ingress's stream and counters (for /metrics); nullopt for other endpoints.
  virtual std::optional<std::pair<std::string, natsio::IngressStats>> ingressStats() const { return std::nullopt; }
};

// A core NATS subscription whose delivery thread only decodes the message and posts it to
// `executor`: the handler runs there (unkeyed: the executor's threads in turn).
// queue may be empty (no queue group). The delivery thread is named `thread_name` (<= 15
// characters, e.g. "cs-ctl-approve").
Result<std::unique_ptr<Endpoint>> subscribeToExecutor(natsio::Connection& connection,
                                                      const std::string& subject,
                                                      const std::string& queue, WorkPool& executor,
                                                      std::function<void(Message&&)> handler,
                                                      std::string thread_name);

// A core NATS subscription whose handler runs on its own delivery thread (for handlers that
// only decide and publish without waiting, like core intake).
Result<std::unique_ptr<Endpoint>> subscribeInline(natsio::Connection& connection,
                                                  const std::string& subject,
                                                  const std::string& queue,
                                                  std::function<void(Message&&)> handler,
                                                  std::string thread_name);

// subscribeInline with load shedding (natsio::Subscription::shedAbove): beyond `shed_above`
// bytes waiting, `on_shed` answers a message instead of `handler`.
Result<std::unique_ptr<Endpoint>> subscribeShedding(natsio::Connection& connection, const std::string& subject,
                                                    const std::string& queue, std::function<void(Message&&)> handler,
                                                    int shed_above, std::function<void(Message&&)> on_shed,
                                                    std::string thread_name);

// A JetStream ingress consumer as an endpoint.
std::unique_ptr<Endpoint> ingressEndpoint(std::unique_ptr<natsio::JetStreamIngress> ingress,
                                          std::string name);

}  // namespace countersign::app
