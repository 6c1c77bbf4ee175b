// The admin HTTP listener (/healthz, /readyz, /metrics, the REST API) on Boost.Beast. This header
// stays free of Boost: Asio and Beast are compiled in admin_server.cpp only.
#pragma once

#include <chrono>
#include <memory>

#include "countersign/config.hpp"
#include "countersign/log.hpp"
#include "countersign/result.hpp"
#include "http/rest_api.hpp"

namespace countersign::http {

struct AdminServerOptions {
  // Reading a request's head, reading its body and writing a reply must each finish within
  // this time, and an idle keep-alive connection is closed after it: slow clients cannot pin
  // connections.
  std::chrono::milliseconds io_timeout{30000};
  int control_workers = 2;  // threads that run control requests (they wait for NATS)
  // /api/v1/events: clients at once (503 beyond), frames queued per client before it is told
  // to resync and dropped, events kept for Last-Event-ID, the keep-alive comment's period, and
  // the tick: events are written to the streams at most once per tick (the first after a quiet
  // tick at once), so a stream costs at most 1 s / event_tick writes a second at any event rate.
  std::size_t max_event_streams = 64;
  std::size_t event_queue = 1024;
  std::size_t event_history = 1024;
  std::chrono::milliseconds heartbeat{15000};
  std::chrono::milliseconds event_tick{100};
};

// HTTP/1.1 with keep-alive on one I/O thread, at most admin.max_connections connections (at
// the limit the longest-idle one is closed for a newcomer, so /healthz stays reachable). Requests that call control (the REST API) run on
// a small worker pool, because control waits for NATS and /healthz must not wait behind it.
// Request bodies are capped at kMaxRequestBody (413); slow or idle clients are disconnected
// after AdminServerOptions::io_timeout (30 s). `handlers` are copied; what they capture must
// outlive the server. stop() and the destructor must not be called from a handler.
class AdminServer {
 public:
  // Binds `config.listen` ("host:port", "[::1]:port"; port 0 = any free port) and starts
  // serving. Fails (Errc::invalid_argument) on a malformed address and (Errc::unavailable) when
  // it cannot be bound.
  static Result<std::unique_ptr<AdminServer>> start(const AdminConfig& config,
                                                    AdminHandlers handlers, Logger& log,
                                                    AdminServerOptions options = {});
  ~AdminServer();  // stops and joins
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  int port() const;  // the bound port
  // Stops accepting, drops open connections, waits for running handlers. Idempotent.
  void stop();

 private:
  struct Impl;
  explicit AdminServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace countersign::http
