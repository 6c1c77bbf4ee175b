#include "nats/embedded_server.hpp"

#include <thread>
#include <vector>

#include "nats/child_process.hpp"
#include "nats/nats_publisher.hpp"

namespace countersign::natsio {
namespace {

constexpr std::chrono::seconds kStartTimeout{10};
constexpr std::chrono::seconds kStopGrace{10};
constexpr std::size_t kLogLinesInErrors = 15;

// What nats-server's log says went wrong, as one line: its last fatal or error line without
// the "[pid] date time [FTL] " prefix, else its last line.
std::string lastComplaint(const std::string& tail) {
  std::string last;
  std::string complaint;
  std::size_t at = 0;
  while (at < tail.size()) {
    std::size_t end = tail.find('\n', at);
    if (end == std::string::npos) end = tail.size();
    const std::string line = tail.substr(at, end - at);
    at = end + 1;
    if (line.empty()) continue;
    last = line;
    for (const char* level : {"[FTL] ", "[ERR] "}) {
      if (const auto p = line.find(level); p != std::string::npos) complaint = line.substr(p + 6);
    }
  }
  return complaint.empty() ? last : complaint;
}

std::string connectHost(const std::string& host) {
  if (host.empty() || host == "0.0.0.0") return "127.0.0.1";
  if (host == "::" || host == "[::]") return "::1";
  return host;
}

}  // namespace

Result<std::unique_ptr<EmbeddedServer>> EmbeddedServer::start(const std::string& binary,
                                                              const std::string& host, int port,
                                                              const std::string& data_dir,
                                                              Log log) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(data_dir, ec);
  if (ec) return fail(Errc::io, "nats.data_dir " + data_dir + ": " + ec.message());
  const fs::path dir = fs::absolute(data_dir, ec);
  if (ec) return fail(Errc::io, "nats.data_dir " + data_dir + ": " + ec.message());

  std::unique_ptr<EmbeddedServer> self(new EmbeddedServer());
  self->log_ = std::move(log);
  self->connect_host_ = connectHost(host);
  self->log_file_ = dir / "nats-server.log";

  SpawnOptions spawn;
  spawn.argv = {binary,
                "-a",
                host.empty() ? "127.0.0.1" : host,
                "-p",
                std::to_string(port > 0 ? port : -1),
                "-js",
                "-sd",
                dir.string(),
                "--ports_file_dir",
                dir.string()};
  spawn.stdout_path = self->log_file_.string();
  spawn.stderr_path = self->log_file_.string();
  spawn.death_signal = SIGTERM;
  auto pid = spawnProcess(spawn);
  if (!pid) return std::unexpected(pid.error());
  self->pid_ = *pid;
  if (self->log_) {
    self->log_("nats-server started (pid " + std::to_string(*pid) + "), log in " +
               self->log_file_.string());
  }

  auto deadline = std::chrono::steady_clock::now() + kStartTimeout;
  for (;;) {
    if (auto status = waitProcess(self->pid_, std::chrono::milliseconds(0))) {
      self->pid_ = -1;
      // One line: what nats-server said, and where its whole log is.
      const std::string tail = tailFile(self->log_file_, kLogLinesInErrors);
      if (tail.find("address already in use") != std::string::npos) {
        // The usual case on a machine that already runs NATS: use that server instead.
        return fail(Errc::unavailable,
                    "nats-server cannot listen on " + spawn.argv[2] + ":" + spawn.argv[4] +
                        ": The port is taken: is a NATS server already running there? To use it, set "
                        "nats.embedded: false and nats.servers in the config (or COUNTERSIGN_NATS_EMBEDDED=false "
                        "and COUNTERSIGN_NATS_URL=nats://host:4222); it needs JetStream. deploy/nats/ has "
                        "server and countersign configs for that.");
      }
      return fail(Errc::unavailable, "nats-server exited with status " + std::to_string(*status) +
                                         " before it was ready: " + lastComplaint(tail) + " (its log: " +
                                         self->log_file_.string() + ")");
    }
    if (auto ready_port = readNatsPortsFile(dir, self->pid_)) {
      if (tcpConnects(self->connect_host_, *ready_port)) {
        self->port_ = *ready_port;
        return self;
      }
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      const std::string tail = tailFile(self->log_file_, kLogLinesInErrors);
      self->stop();
      return fail(Errc::timeout, "nats-server was not ready after " + std::to_string(kStartTimeout.count()) +
                                     " s: " + lastComplaint(tail) + " (its log: " + self->log_file_.string() + ")");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

EmbeddedServer::~EmbeddedServer() {
  stop();
}

void EmbeddedServer::stop() {
  if (pid_ <= 0) return;
  int status = stopProcess(pid_, kStopGrace);
  if (log_) log_("nats-server stopped (status " + std::to_string(status) + ")");
  pid_ = -1;
}

std::string EmbeddedServer::url() const {
  std::string host = connect_host_;
  if (host.find(':') != std::string::npos) host = "[" + host + "]";
  return "nats://" + host + ":" + std::to_string(port_);
}

Result<std::chrono::nanoseconds> ensureStream(Connection& connection, const std::string& stream,
                                              const std::vector<std::string>& subjects, bool& created) {
  created = false;
  {
    jsStreamInfo* existing = nullptr;
    jsErrCode js_error{};
    const natsStatus found = js_GetStreamInfo(&existing, connection.js(), stream.c_str(), nullptr, &js_error);
    if (existing != nullptr) jsStreamInfo_Destroy(existing);
    if (found != NATS_NOT_FOUND && js_error != JSStreamNotFoundErr) return checkStream(connection, stream);
  }
  std::vector<const char*> subject_ptrs;
  for (const auto& subject : subjects) subject_ptrs.push_back(subject.c_str());
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  cfg.Name = stream.c_str();
  cfg.Subjects = subject_ptrs.data();
  cfg.SubjectsLen = static_cast<int>(subject_ptrs.size());
  cfg.Storage = js_FileStorage;
  jsStreamInfo* info = nullptr;
  jsErrCode code{};
  const natsStatus s = js_AddStream(&info, connection.js(), &cfg, nullptr, &code);
  if (s != NATS_OK) {
    // Another replica may have made it at the same moment: use it if it is there now.
    if (auto again = checkStream(connection, stream)) return again;
    return std::unexpected(natsError(s, "cannot create stream " + stream));
  }
  const std::chrono::nanoseconds duplicates(info != nullptr && info->Config != nullptr ? info->Config->Duplicates : 0);
  jsStreamInfo_Destroy(info);
  created = true;
  return duplicates;
}

}  // namespace countersign::natsio
