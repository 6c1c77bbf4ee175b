// Integration-test harness: real nats-server processes on free ports with their own store dirs,
// the real countersign binary, and a small cnats client for the test's side of the wire.
// Everything a test starts is stopped (and its temp dir removed) by the destructors.
#pragma once

#include <nats/nats.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "countersign/message.hpp"

namespace countersign::testing {

using namespace std::chrono_literals;

// A fresh folder under $TMPDIR (or /tmp), removed on destruction unless KEEP_TEST_DIRS is set.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  // Writes `text` to path()/name and returns the full path.
  std::filesystem::path write(const std::string& name, const std::string& text) const;

 private:
  std::filesystem::path path_;
};

struct NatsServerOptions {
  bool jetstream = true;
  std::string extra_config;  // appended to the generated nats-server config file
  int port = -1;             // -1: a free port, read back from the ports file
};

// One nats-server child: `-c <generated conf>` with `port: -1` (or the given port), its own
// JetStream store dir and a ports file, waited for until it accepts connections.
class NatsServer {
 public:
  static std::unique_ptr<NatsServer> start(NatsServerOptions options = {});
  ~NatsServer();

  std::string url() const;  // nats://127.0.0.1:<port>
  int port() const { return port_; }
  const std::filesystem::path& storeDir() const;

  void stop();     // SIGTERM and wait
  void kill9();    // SIGKILL and wait
  void restart();  // start again on the same port with the same store dir, wait until ready
  // SIGSTOP / SIGCONT: the server keeps its connections open but answers nothing meanwhile.
  void pause();
  void resume();
  bool running() const { return pid_ > 0; }

 private:
  NatsServer() = default;
  void launch();
  NatsServerOptions options_;
  std::unique_ptr<TempDir> dir_;
  int port_ = 0;
  int pid_ = -1;
};

// A test-side cnats connection. Thread-safe like cnats itself.
class Client {
 public:
  // `inbox_prefix`: its replies' prefix (cnats' _INBOX when empty), for users that may subscribe
  // only to their own.
  explicit Client(const std::string& url, const std::string& inbox_prefix = "");
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  natsConnection* raw() const { return conn_; }
  jsCtx* js() const { return js_; }

  void publish(const std::string& subject, const std::string& payload, const Headers& headers = {},
               const std::string& reply = "");
  void flush();
  // Request-reply with a fresh inbox; nullopt on timeout or no responders.
  std::optional<Message> request(const std::string& subject, const std::string& payload,
                                 const Headers& headers = {},
                                 std::chrono::milliseconds timeout = 5s);

  // JetStream helpers: create a stream (file storage) and read a KV key (nullopt: none).
  void addStream(const std::string& name, const std::vector<std::string>& subjects,
                 std::chrono::seconds duplicate_window = std::chrono::seconds(120));
  std::optional<std::string> kvGet(const std::string& bucket, const std::string& key);
  void kvPut(const std::string& bucket, const std::string& key, const std::string& value);
  // Number of messages currently stored in a stream, and of consumers on it.
  std::uint64_t streamMessageCount(const std::string& stream);
  std::uint64_t streamConsumerCount(const std::string& stream);

 private:
  // The stream's state (its scalar fields only).
  jsStreamState streamState(const std::string& stream);
  natsConnection* conn_ = nullptr;
  jsCtx* js_ = nullptr;
};

// Collects every message on a subject (wildcards allowed) in arrival order.
class Collector {
 public:
  Collector(Client& client, const std::string& subject);
  ~Collector();
  Collector(const Collector&) = delete;
  Collector& operator=(const Collector&) = delete;

  // Waits until at least `count` messages arrived or the timeout passed; returns a copy of all.
  std::vector<Message> waitFor(std::size_t count, std::chrono::milliseconds timeout = 5s);
  // Everything received so far.
  std::vector<Message> messages() const;
  std::size_t count() const;

 private:
  static void onMessage(natsConnection*, natsSubscription*, natsMsg* msg, void* closure);
  // cnats calls it once no onMessage can run any more: only then may `this` go away.
  static void onComplete(void* closure);
  natsSubscription* sub_ = nullptr;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<Message> messages_;
  bool closed_ = false;  // set by onComplete
};

// A worker that answers every request on `subject` with `reply_payload` (for request-reply
// through countersign), and records what it received.
class Responder {
 public:
  Responder(Client& client, const std::string& subject, std::string reply_payload);
  ~Responder();
  std::vector<Message> received() const;

 private:
  static void onMessage(natsConnection*, natsSubscription*, natsMsg* msg, void* closure);
  // cnats calls it once no onMessage can run any more: only then may `this` go away.
  static void onComplete(void* closure);
  natsConnection* conn_;
  natsSubscription* sub_ = nullptr;
  std::string reply_payload_;
  mutable std::mutex mutex_;
  std::vector<Message> received_;
  std::condition_variable cv_;  // signals closed_
  bool closed_ = false;         // set by onComplete
};

struct CountersignOptions {
  std::string config_yaml;  // written to <dir>/countersign.yaml; may refer to "policy.yaml"
  std::string policy_yaml;  // written to <dir>/policy.yaml
  std::map<std::string, std::string> env;  // extra environment variables
  // The binary to run: the shipped one, or COUNTERSIGN_FAULTS_BIN (crash points) for fault tests.
  std::string binary = COUNTERSIGN_BIN;
  std::string prefix = "countersign";      // control prefix used for the readiness probe
  std::string nats_url;                    // for the readiness probe
  bool wait_ready = true;
};

// The real countersign binary, `countersign run --config <dir>/countersign.yaml`, with stdout
// and stderr going to files in its dir. Ready when `<prefix>.control.list` answers.
class CountersignProcess {
 public:
  static std::unique_ptr<CountersignProcess> start(CountersignOptions options);
  ~CountersignProcess();  // SIGKILL if still running

  int pid() const { return pid_; }
  const std::filesystem::path& dir() const;
  // The public key (U...) of the seed in its directory (receipt.nk): what `audit verify --key`
  // and workers checking receipts trust. Empty, with a test failure, when there is none.
  std::string receiptKey() const;
  std::filesystem::path policyPath() const;
  std::string logs() const;  // stdout + stderr so far

  void waitReady(std::chrono::milliseconds timeout = 15s);
  void signal(int signo);
  // SIGTERM, wait for exit; returns the exit status (128+signal when killed by one).
  int stop(std::chrono::milliseconds timeout = 15s);
  void kill9();
  // Waits for the process to exit by itself; nullopt on timeout.
  std::optional<int> waitExit(std::chrono::milliseconds timeout);

 private:
  CountersignProcess() = default;
  CountersignOptions options_;
  std::unique_ptr<TempDir> dir_;
  int pid_ = -1;
  std::optional<int> exit_status_;
};

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};
// Runs the countersign binary with arguments (no shell), waits, captures both streams.
CommandResult runCountersign(const std::vector<std::string>& args,
                             const std::map<std::string, std::string>& env = {},
                             std::chrono::milliseconds timeout = 30s);

// A config for one route agents.jobs.> -> jobs.> against `nats_url`, policy at "policy.yaml",
// and `admin` as the whole admin block (by default: no listener). `extra` is appended verbatim
// (e.g. a `release:` block).
std::string basicConfig(const std::string& nats_url, const std::string& extra = "",
                        const std::string& admin = "admin:\n  listen: \"\"\n");

// The seed policy (policies/approval-policy.yaml in the source tree).
std::string seedPolicy();

// How many rounds a test that repeats a race several times makes: `normal`, or the number in
// TEARDOWN_ROUNDS (scripts/valgrind-teardown.sh asks for more).
int teardownRounds(int normal);

// Parses a JSON reply body; fails the current test (ADD_FAILURE) and returns {} when invalid.
std::map<std::string, std::string> jsonFields(const std::string& body);

}  // namespace countersign::testing
