// A local nats-server child with JetStream, for `nats.embedded: true`: started before
// countersign connects, stopped after countersign has drained.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "countersign/result.hpp"
#include "nats/connection.hpp"

namespace countersign::natsio {

class EmbeddedServer {
 public:
  using Log = std::function<void(std::string_view)>;

  // Runs `<binary> -a <host> -p <port> -js -sd <data_dir> --ports_file_dir <data_dir>` (JetStream
  // keeps its files in <data_dir>/jetstream), creating data_dir if missing, with stdout and
  // stderr appended to <data_dir>/nats-server.log. Ready once the server wrote its ports file
  // (it does so only after it listens, so a port held by another program is never mistaken for
  // ours) and a TCP connect succeeds; port <= 0 picks a free port (see port()). Fails after
  // 10 s, or as soon as the child exits (e.g. port in use), quoting the log's last lines.
  // The child gets SIGTERM if the thread that called start() dies (call it from main).
  static Result<std::unique_ptr<EmbeddedServer>> start(const std::string& binary,
                                                       const std::string& host, int port,
                                                       const std::string& data_dir, Log log);
  ~EmbeddedServer();  // stop()
  EmbeddedServer(const EmbeddedServer&) = delete;
  EmbeddedServer& operator=(const EmbeddedServer&) = delete;

  // SIGTERM (nats-server shuts down cleanly, syncing its store), SIGKILL after 10 s; waits.
  void stop();
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  int port() const { return port_; }
  std::string url() const;  // nats://<host>:<port>, with 127.0.0.1 for a wildcard host
  const std::filesystem::path& logFile() const { return log_file_; }

 private:
  EmbeddedServer() = default;
  pid_t pid_ = -1;
  int port_ = 0;
  std::string connect_host_;
  std::filesystem::path log_file_;
  Log log_;
};

// Embedded mode: a route's `to_stream` that does not exist yet is created (file storage, the
// server's default duplicate window) capturing `subjects`; one that exists is used as it is.
// Returns the stream's duplicate window; `created` says whether this call made it.
Result<std::chrono::nanoseconds> ensureStream(Connection& connection, const std::string& stream,
                                              const std::vector<std::string>& subjects, bool& created);

}  // namespace countersign::natsio
