// System benchmarks: what countersign costs compared with NATS doing the same work
// without it, measured in the same run against the same nats-server, reported as ratios.
//
//   bench_system run [--quick] [--out FILE] [--only allow,latency,hold,approve,scale]
//   bench_system micro-table FILE.json     (Google Benchmark JSON -> markdown table)
//   bench_system relay URL FROM_PREFIX TO_PREFIX SEND_ASAP [SIGN]  (internal: the best relay)
//   bench_system sidecar URL hold SUBJECT BUCKET             (internal: the bare sidecar, holds)
//   bench_system sidecar URL approve SUBJECT BUCKET N        (internal: the bare sidecar,
//   approvals)
//
// Everything it starts (nats-server, countersign, relays, sidecars) lives in a temp dir and is
// stopped on exit; children die with this process (PR_SET_PDEATHSIG). The measurements and their
// baselines are described in bench/README.md; bench/run.sh turns the output into bench/RESULTS.md.
#include <arpa/inet.h>
#include <nats/nats.h>
#include <netinet/in.h>
#include <rapidjson/document.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "countersign/clock.hpp"
#include "countersign/config.hpp"
#include "countersign/events.hpp"
#include "countersign/job.hpp"
#include "countersign/json.hpp"
#include "countersign/nkeys.hpp"
#include "countersign/policy.hpp"
#include "countersign/receipt.hpp"
#include "countersign/record.hpp"
#include "countersign/store_tags.hpp"
#include "nats/audit_stream.hpp"
#include "nats/child_process.hpp"
#include "nats/connection.hpp"
#include "nats/message_convert.hpp"
#include "nats/nats_publisher.hpp"

namespace {

using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;
namespace fs = std::filesystem;
namespace natsio = countersign::natsio;

// ---- small utilities ------------------------------------------------------------------------

const SteadyClock::time_point kProgramStart = SteadyClock::now();

std::int64_t nowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(SteadyClock::now().time_since_epoch())
      .count();
}

void note(const std::string& text) {
  const double t = std::chrono::duration<double>(SteadyClock::now() - kProgramStart).count();
  std::cerr << "[bench " << std::fixed << std::setprecision(1) << t << "s] " << text << std::endl;
}

[[noreturn]] void die(const std::string& what) {
  std::cerr << "bench_system: " << what << std::endl;
  std::exit(1);
}

std::string natsText(natsStatus s) {
  std::string text = natsStatus_GetText(s);
  if (const char* last = nats_GetLastError(nullptr); last != nullptr && *last != '\0') {
    text += " (" + std::string(last) + ")";
  }
  return text;
}

void check(natsStatus s, const std::string& what) {
  if (s != NATS_OK) die(what + ": " + natsText(s));
}

std::string fmt(double value, int precision = 1) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(precision) << value;
  return out.str();
}

std::string fmtRate(double per_second) {
  if (per_second >= 10000) return fmt(per_second / 1000.0, 1) + "k/s";
  return fmt(per_second, 0) + "/s";
}

std::string fmtUs(double ns) {
  return fmt(ns / 1000.0, std::abs(ns) < 10'000 ? 1 : 0) + " µs";
}

std::string readFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void writeFile(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out) die("cannot write " + path.string());
}

std::string loadAverage() {
  std::string text = readFile("/proc/loadavg");
  std::istringstream in(text);
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return one + " " + five + " " + fifteen;
}

// CPU seconds (user + system) a process has used so far; 0 when it cannot be read.
double cpuSeconds(pid_t pid) {
  const std::string stat = readFile("/proc/" + std::to_string(pid) + "/stat");
  const auto paren = stat.rfind(')');
  if (paren == std::string::npos) return 0;
  std::istringstream in(stat.substr(paren + 2));
  std::vector<std::string> fields;
  for (std::string field; in >> field;) fields.push_back(field);
  // Fields after "(comm)" start at field 3 (state): utime is field 14, stime 15.
  if (fields.size() < 13) return 0;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  return (std::stod(fields[11]) + std::stod(fields[12])) / ticks;
}

// Context switches (voluntary + involuntary) of all of a process's live threads so far: every
// hand-over between threads (a wake, a sleep on a condition) counts here. 0 when unreadable.
double contextSwitches(pid_t pid) {
  double total = 0;
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::istringstream in(readFile(task.path().string() + "/status"));
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("voluntary_ctxt_switches:", 0) == 0 || line.rfind("nonvoluntary_ctxt_switches:", 0) == 0) {
        total += std::stod(line.substr(line.find(':') + 1));
      }
    }
  }
  return total;
}

// Resident memory in KiB (VmRSS), 0 when it cannot be read.
long rssKb(pid_t pid) {
  std::istringstream in(readFile("/proc/" + std::to_string(pid) + "/status"));
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return 0;
}

struct Percentiles {
  std::size_t count = 0;
  double p50 = 0, p90 = 0, p99 = 0, p999 = 0, max = 0;  // nanoseconds
};

Percentiles percentiles(std::vector<std::int64_t> values) {
  Percentiles out;
  out.count = values.size();
  if (values.empty()) return out;
  std::sort(values.begin(), values.end());
  auto at = [&](double q) {
    const auto index = std::min(values.size() - 1,
                                static_cast<std::size_t>(q * static_cast<double>(values.size())));
    return static_cast<double>(values[index]);
  };
  out.p50 = at(0.50);
  out.p90 = at(0.90);
  out.p99 = at(0.99);
  out.p999 = at(0.999);
  out.max = static_cast<double>(values.back());
  return out;
}

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

// A minimal HTTP/1.0 GET on 127.0.0.1 (nats-server monitoring, countersign /metrics).
std::optional<std::string> httpGet(int port, const std::string& path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return std::nullopt;
  timeval timeout{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::optional<std::string> body;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0) {
    const std::string request =
        "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
        static_cast<ssize_t>(request.size())) {
      std::string response;
      char buffer[16384];
      for (;;) {
        const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
        if (n <= 0) break;
        response.append(buffer, static_cast<std::size_t>(n));
      }
      if (const auto end = response.find("\r\n\r\n"); end != std::string::npos)
        body = response.substr(end + 4);
    }
  }
  ::close(fd);
  return body;
}

// With BENCH_NATS_PROF_PORT set (see NatsServer::start): a CPU profile of nats-server over the
// next `seconds`, fetched by curl in the background into $BENCH_NATS_PROF_DIR (default /tmp) as
// <name>.pprof; the destructor waits until it is written. Read it with `go tool pprof` (or any
// reader of Go's profile.proto). Samples are taken only while the server runs, so a window longer
// than the work it covers adds no samples, only wall time. Without the variable it does nothing.
class ServerProfile {
 public:
  ServerProfile(const std::string& name, int seconds) {
    const char* port = std::getenv("BENCH_NATS_PROF_PORT");
    if (port == nullptr || *port == '\0') return;
    const char* dir = std::getenv("BENCH_NATS_PROF_DIR");
    const std::string file = std::string(dir != nullptr && *dir != '\0' ? dir : "/tmp") + "/" + name + ".pprof";
    const std::string command = "curl -s -o '" + file + "' 'http://127.0.0.1:" + port +
                                "/debug/pprof/profile?seconds=" + std::to_string(seconds) + "' &";
    if (std::system(command.c_str()) == 0) until_ = SteadyClock::now() + std::chrono::seconds(seconds + 1);
  }
  ~ServerProfile() {
    if (until_) std::this_thread::sleep_until(*until_);
  }
  ServerProfile(const ServerProfile&) = delete;
  ServerProfile& operator=(const ServerProfile&) = delete;

 private:
  std::optional<SteadyClock::time_point> until_;
};

// ---- processes ------------------------------------------------------------------------------

class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern =
        std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/countersign-bench-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr)
      die("mkdtemp " + pattern + ": " + std::strerror(errno));
    path_ = pattern;
  }
  ~TempDir() {
    if (std::getenv("KEEP_BENCH_DIRS") != nullptr) {
      std::cerr << "[bench] keeping " << path_ << '\n';
      return;
    }
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// Waits until `file` contains `needle` (or the process exits, or the timeout passes).
bool waitForLine(const fs::path& file, const std::string& needle, pid_t pid,
                 std::chrono::milliseconds timeout) {
  const auto deadline = SteadyClock::now() + timeout;
  while (SteadyClock::now() < deadline) {
    if (readFile(file).find(needle) != std::string::npos) return true;
    if (natsio::waitProcess(pid, 0ms)) return false;
    std::this_thread::sleep_for(2ms);
  }
  return false;
}

class Child {
 public:
  Child() = default;
  Child(pid_t pid, fs::path log) : pid_(pid), log_(std::move(log)) {}
  ~Child() { stop(); }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  pid_t pid() const { return pid_; }
  const fs::path& log() const { return log_; }
  void stop() {
    if (pid_ > 0) natsio::stopProcess(pid_, 10s);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
  fs::path log_;
};

struct NatsServer {
  std::unique_ptr<Child> process;
  std::string url;
  int port = 0;
  int monitor_port = 0;

  static std::unique_ptr<NatsServer> start(const fs::path& dir) {
    fs::create_directories(dir);
    std::ostringstream conf;
    conf << "host: 127.0.0.1\nport: -1\nhttp_port: -1\n";
    conf << "jetstream {\n  store_dir: \"" << (dir / "store").string() << "\"\n}\n";
    // BENCH_NATS_PROF_PORT=N: nats-server's Go profiler on 127.0.0.1:N (/debug/pprof/profile),
    // to see where the server's CPU goes (its Debian binary is stripped for perf, not for pprof).
    if (const char* prof = std::getenv("BENCH_NATS_PROF_PORT"); prof != nullptr && *prof != '\0') {
      conf << "prof_port: " << prof << "\n";
    }
    writeFile(dir / "nats-server.conf", conf.str());
    natsio::SpawnOptions spawn;
    spawn.argv = {NATS_SERVER_BIN, "-c", (dir / "nats-server.conf").string(), "--ports_file_dir",
                  dir.string()};
    spawn.stdout_path = (dir / "nats-server.log").string();
    spawn.stderr_path = spawn.stdout_path;
    spawn.death_signal = SIGKILL;
    auto pid = natsio::spawnProcess(spawn);
    if (!pid) die("nats-server: " + pid.error().message);
    auto server = std::make_unique<NatsServer>();
    server->process = std::make_unique<Child>(*pid, dir / "nats-server.log");
    const auto deadline = SteadyClock::now() + 15s;
    while (SteadyClock::now() < deadline) {
      for (const auto& entry : fs::directory_iterator(dir)) {
        if (entry.path().extension() != ".ports") continue;
        rapidjson::Document doc;
        const std::string text = readFile(entry.path());
        doc.Parse(text.data(), text.size());
        if (doc.HasParseError() || !doc.IsObject()) continue;
        auto portOf = [&](const char* key) {
          const auto it = doc.FindMember(key);
          if (it == doc.MemberEnd() || !it->value.IsArray() || it->value.Empty()) return 0;
          const std::string url = it->value[0].GetString();
          return std::atoi(url.substr(url.rfind(':') + 1).c_str());
        };
        server->port = portOf("nats");
        server->monitor_port = portOf("monitoring");
      }
      if (server->port > 0 && natsio::tcpConnects("127.0.0.1", server->port)) {
        server->url = "nats://127.0.0.1:" + std::to_string(server->port);
        return server;
      }
      std::this_thread::sleep_for(10ms);
    }
    die("nats-server not ready:\n" + natsio::tailFile(dir / "nats-server.log", 30));
  }

  pid_t pid() const { return process->pid(); }

  // Slow consumers the server has seen (it disconnects them), from /varz.
  std::int64_t slowConsumers() const {
    auto body = httpGet(monitor_port, "/varz");
    if (!body) return -1;
    rapidjson::Document doc;
    doc.Parse(body->data(), body->size());
    if (doc.HasParseError() || !doc.IsObject()) return -1;
    const auto it = doc.FindMember("slow_consumers");
    return it != doc.MemberEnd() && it->value.IsInt64() ? it->value.GetInt64() : -1;
  }
};

std::string selfExe() {
  std::error_code ec;
  auto path = fs::read_symlink("/proc/self/exe", ec);
  if (ec) die("cannot read /proc/self/exe");
  return path.string();
}

// The key every countersign of this run signs with (written as its receipts.seed_file before it
// starts), so that records seeded straight into a bucket carry the tag countersign's own hold
// gives them (StoreTags): a countersign starting on them finds a bucket it could have written,
// not one to adopt record by record (the upgrade step, about 3,000 records a second).
const countersign::nkeys::Seed& benchSeed() {
  static const countersign::nkeys::Seed seed = countersign::nkeys::generateSeed();
  return seed;
}

const countersign::StoreTags& benchTags() {
  static const countersign::StoreTags tags(benchSeed());
  return tags;
}

struct CountersignOptions {
  std::string url;
  std::string bucket = "countersign_approvals";
  std::string from = "agents.jobs.>";  // the route's intake subjects
  std::string to_stream;   // empty: core route
  bool admin = false;      // admin listener on a free port (for /metrics)
  std::string extra_yaml;  // appended to the config (e.g. a release: block)
  std::string policy_text;  // empty: policies/approval-policy.yaml
};

// Diagnosis hooks (bench/README.md): BENCH_COUNTERSIGN_EXTRA_YAML is appended to every
// countersign config (e.g. "release:\n  replay_interval: 1h\n"); BENCH_COUNTERSIGN_WRAPPER is a
// command put in front of the binary (e.g. "valgrind --tool=callgrind"); BENCH_RELAY_WRAPPER the
// same for the bare relay processes.
std::string envOr(const char* name, const std::string& fallback = "") {
  const char* value = std::getenv(name);
  return value != nullptr ? std::string(value) : fallback;
}

struct Countersign {
  std::unique_ptr<Child> process;
  fs::path dir;
  double startup_ms = 0;  // spawn until the "countersign ready" line
  long rss_at_ready_kb = 0;
  int admin_port = 0;

  static std::unique_ptr<Countersign> start(const fs::path& dir,
                                            const CountersignOptions& options) {
    fs::create_directories(dir);
    std::ostringstream config;
    config << "nats:\n  servers: [\"" << options.url << "\"]\n  embedded: false\n"
           << "policy:\n  file: policy.yaml\n"
           << "store:\n  bucket: " << options.bucket << "\n"
           << "routes:\n  - name: jobs\n    from: \"" << options.from
           << "\"\n    to: \"jobs.>\"\n    mode: core\n";
    if (!options.to_stream.empty()) config << "    to_stream: " << options.to_stream << "\n";
    config << "admin:\n  listen: \"" << (options.admin ? "127.0.0.1:0" : "") << "\"\n";
    config << options.extra_yaml << envOr("BENCH_COUNTERSIGN_EXTRA_YAML");
    writeFile(dir / "countersign.yaml", config.str());
    // Its key (receipts.seed_file's default) is the run's: the seeded records' tags verify.
    if (!fs::exists(dir / "receipt.nk")) {
      if (auto written = countersign::nkeys::writeSeedFile((dir / "receipt.nk").string(), benchSeed()); !written) {
        die("receipt.nk: " + written.error().message);
      }
    }
    writeFile(dir / "policy.yaml",
              !options.policy_text.empty()
                  ? options.policy_text
                  : readFile(fs::path(COUNTERSIGN_SOURCE_DIR) / "policies" / "approval-policy.yaml"));

    natsio::SpawnOptions spawn;
    std::istringstream wrapper(envOr("BENCH_COUNTERSIGN_WRAPPER"));
    for (std::string word; wrapper >> word;) spawn.argv.push_back(word);
    spawn.argv.insert(spawn.argv.end(),
                      {COUNTERSIGN_BIN, "run", "--config", (dir / "countersign.yaml").string()});
    spawn.working_dir = dir.string();
    spawn.stdout_path = (dir / "stdout.log").string();
    spawn.stderr_path = (dir / "stderr.log").string();
    spawn.death_signal = SIGKILL;
    const auto started = SteadyClock::now();
    auto pid = natsio::spawnProcess(spawn);
    if (!pid) die("countersign: " + pid.error().message);
    auto cs = std::make_unique<Countersign>();
    cs->dir = dir;
    cs->process = std::make_unique<Child>(*pid, dir / "stderr.log");
    if (!waitForLine(dir / "stdout.log", "countersign ready", *pid, 300s)) {
      die("countersign not ready:\n" + natsio::tailFile(dir / "stdout.log", 20) +
          natsio::tailFile(dir / "stderr.log", 20));
    }
    cs->startup_ms =
        std::chrono::duration<double, std::milli>(SteadyClock::now() - started).count();
    cs->rss_at_ready_kb = rssKb(*pid);
    if (options.admin) {
      const std::string marker = "admin http://127.0.0.1:";
      if (!waitForLine(dir / "stdout.log", marker, *pid, 10s))
        die("countersign printed no admin address");
      const std::string out = readFile(dir / "stdout.log");
      cs->admin_port = std::atoi(out.c_str() + out.find(marker) + marker.size());
    }
    return cs;
  }

  pid_t pid() const { return process->pid(); }

  // A gauge or counter from /metrics (first sample of that name); nullopt when unreadable.
  std::optional<double> metric(const std::string& name) const {
    auto body = httpGet(admin_port, "/metrics");
    if (!body) return std::nullopt;
    std::istringstream in(*body);
    for (std::string line; std::getline(in, line);) {
      if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
    }
    return std::nullopt;
  }

  // Log lines that mention a slow consumer or a disconnect (countersign logs cnats' errors).
  std::size_t troubleLines() const {
    std::size_t count = 0;
    std::istringstream in(readFile(dir / "stdout.log") + readFile(dir / "stderr.log"));
    for (std::string line; std::getline(in, line);) {
      if (line.find("slow consumer") != std::string::npos ||
          line.find("Slow Consumer") != std::string::npos ||
          line.find("disconnected") != std::string::npos) {
        ++count;
      }
    }
    return count;
  }
};

// A helper process of this binary (relay, sidecar), started like countersign: output to
// `dir`/<name>.log, waited for until it prints "<name> ready"; `wrapper_env` names the
// environment variable whose command goes in front of it (e.g. valgrind).
std::unique_ptr<Child> startHelper(const fs::path& dir, const std::string& name,
                                   const char* wrapper_env, const std::vector<std::string>& args) {
  fs::create_directories(dir);
  natsio::SpawnOptions spawn;
  std::istringstream wrapper(envOr(wrapper_env));
  for (std::string word; wrapper >> word;) spawn.argv.push_back(word);
  spawn.argv.push_back(selfExe());
  spawn.argv.push_back(name);
  spawn.argv.insert(spawn.argv.end(), args.begin(), args.end());
  const fs::path log = dir / (name + ".log");
  spawn.stdout_path = log.string();
  spawn.stderr_path = spawn.stdout_path;
  spawn.death_signal = SIGKILL;
  auto pid = natsio::spawnProcess(spawn);
  if (!pid) die(name + ": " + pid.error().message);
  auto child = std::make_unique<Child>(*pid, log);
  if (!waitForLine(log, name + " ready", *pid, 15s)) {
    die(name + " not ready:\n" + natsio::tailFile(log, 20));
  }
  return child;
}

std::unique_ptr<Child> startRelay(const fs::path& dir, const std::string& url,
                                  const std::string& from_prefix, bool send_asap, bool sign = false) {
  return startHelper(dir, "relay", "BENCH_RELAY_WRAPPER",
                     {url, from_prefix, "jobs.", send_asap ? "1" : "0", sign ? "1" : "0"});
}

// The bare sidecar (runSidecar) for holds or approvals on `subject`, storing in `bucket` (which
// must exist); with `contract`, the contract sidecar.
std::unique_ptr<Child> startSidecar(const fs::path& dir, const std::string& url,
                                    const std::string& mode, const std::string& subject,
                                    const std::string& bucket, int concurrency = 0,
                                    bool contract = false) {
  std::vector<std::string> args{url, mode, subject, bucket};
  if (mode == "approve") args.push_back(std::to_string(concurrency));
  if (contract) args.push_back("contract");
  return startHelper(dir, "sidecar", "BENCH_SIDECAR_WRAPPER", args);
}

// ---- NATS client side -----------------------------------------------------------------------

std::atomic<std::int64_t> g_client_slow_consumers{0};
std::atomic<std::int64_t> g_client_disconnects{0};

void onClientError(natsConnection*, natsSubscription*, natsStatus err, void*) {
  if (err == NATS_SLOW_CONSUMER) g_client_slow_consumers.fetch_add(1);
}
void onClientDisconnect(natsConnection*, void*) {
  g_client_disconnects.fetch_add(1);
}

class Connection {
 public:
  Connection(const std::string& url, const std::string& name, bool send_asap) {
    natsOptions* opts = nullptr;
    check(natsOptions_Create(&opts), "nats options");
    check(natsOptions_SetURL(opts, url.c_str()), "nats url");
    check(natsOptions_SetName(opts, name.c_str()), "nats name");
    check(natsOptions_SetSendAsap(opts, send_asap), "nats send asap");
    check(natsOptions_SetErrorHandler(opts, &onClientError, nullptr), "nats error handler");
    check(natsOptions_SetDisconnectedCB(opts, &onClientDisconnect, nullptr),
          "nats disconnect handler");
    // Large producer bursts: let the client buffer rather than fail a publish.
    check(natsOptions_SetIOBufSize(opts, 1 << 20), "nats io buffer");
    check(natsConnection_Connect(&conn_, opts), "connect " + url);
    natsOptions_Destroy(opts);
    jsOptions js_opts;
    jsOptions_Init(&js_opts);
    js_opts.PublishAsync.MaxPending = 4096;
    js_opts.PublishAsync.StallWait = 60000;  // seeding 1M records waits for room, never fails
    js_opts.Wait = 60000;  // a server busy deleting a large bucket answers late
    js_opts.PublishAsync.ErrHandler = &Connection::onAsyncError;
    js_opts.PublishAsync.ErrHandlerClosure = this;
    check(natsConnection_JetStream(&js_, conn_, &js_opts), "jetstream context");
  }
  ~Connection() {
    jsCtx_Destroy(js_);
    natsConnection_Close(conn_);
    natsConnection_Destroy(conn_);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  natsConnection* raw() const { return conn_; }
  jsCtx* js() const { return js_; }
  void flush() { check(natsConnection_FlushTimeout(conn_, 30000), "flush"); }
  std::int64_t asyncErrors() const { return async_errors_.load(); }

 private:
  static void onAsyncError(jsCtx*, jsPubAckErr* pae, void* closure) {
    auto* self = static_cast<Connection*>(closure);
    if (self->async_errors_.fetch_add(1) == 0) {
      std::cerr << "[bench] async publish failed: " << natsStatus_GetText(pae->Err)
                << (pae->ErrText != nullptr ? std::string(" ") + pae->ErrText : std::string())
                << '\n';
    }
  }
  natsConnection* conn_ = nullptr;
  jsCtx* js_ = nullptr;
  std::atomic<std::int64_t> async_errors_{0};
};

using MsgPtr = std::unique_ptr<natsMsg, decltype(&natsMsg_Destroy)>;

MsgPtr makeMsg(const std::string& subject, const char* reply, const std::string& payload,
               const std::vector<std::pair<std::string, std::string>>& headers) {
  natsMsg* msg = nullptr;
  check(natsMsg_Create(&msg, subject.c_str(), reply, payload.data(),
                       static_cast<int>(payload.size())),
        "message to " + subject);
  for (const auto& [name, value] : headers)
    check(natsMsgHeader_Set(msg, name.c_str(), value.c_str()), "header");
  return MsgPtr(msg, &natsMsg_Destroy);
}

// A cnats subscription with a std::function handler; unsubscribes and waits for completion.
class Subscription {
 public:
  using Handler = std::function<void(natsMsg*)>;
  Subscription(Connection& conn, const std::string& subject, Handler handler)
      : handler_(std::move(handler)) {
    check(natsConnection_Subscribe(&sub_, conn.raw(), subject.c_str(), &Subscription::onMessage,
                                   this),
          "subscribe " + subject);
    check(natsSubscription_SetOnCompleteCB(sub_, &Subscription::onComplete, this), "on complete");
    check(natsSubscription_SetPendingLimits(sub_, 1'000'000, 1 << 30), "pending limits");
    conn.flush();
  }
  ~Subscription() {
    natsSubscription_Unsubscribe(sub_);
    std::unique_lock lock(mutex_);
    cv_.wait_for(lock, 10s, [this] { return closed_; });
    lock.unlock();
    natsSubscription_Destroy(sub_);
  }
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;

  std::int64_t dropped() const {
    std::int64_t n = 0;
    natsSubscription_GetDropped(sub_, &n);
    return n;
  }

 private:
  static void onMessage(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
    static_cast<Subscription*>(closure)->handler_(msg);
    natsMsg_Destroy(msg);
  }
  static void onComplete(void* closure) {
    auto* self = static_cast<Subscription*>(closure);
    std::lock_guard lock(self->mutex_);
    self->closed_ = true;
    self->cv_.notify_all();
  }
  Handler handler_;
  natsSubscription* sub_ = nullptr;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool closed_ = false;
};

// ---- payloads and records -------------------------------------------------------------------

constexpr std::size_t kPayloadSize = 256;
constexpr std::size_t kSentNsOffset = 11;  // {"sent_ns":<19 digits>,...
const std::vector<std::pair<std::string, std::string>> kProducerHeaders{{"X-Agent", "agent-7"}};

std::string padTo(std::string head, std::size_t size) {
  // head ends with `"note":"`; fill the string and close it.
  const std::size_t tail = 2;  // "}
  if (head.size() + tail > size) die("payload template too long");
  head.append(size - head.size() - tail, 'x');
  head += "\"}";
  return head;
}

// 256 B JSON; bytes [11, 30) hold the send time (steady clock, ns), patched per message.
std::string allowPayload() {
  std::string p =
      padTo(R"({"sent_ns":0000000000000000000,"id":"kb-query","op":"search",)"
            R"("labels":{"team":"knowledge"},"query":"exactly once release semantics","note":")",
            kPayloadSize);
  if (p.compare(kSentNsOffset, 19, "0000000000000000000") != 0) die("payload layout");
  return p;
}

void stampPayload(std::string& payload, std::int64_t ns) {
  char digits[20];
  std::snprintf(digits, sizeof digits, "%019lld", static_cast<long long>(ns));
  std::memcpy(payload.data() + kSentNsOffset, digits, 19);
}

std::int64_t payloadStamp(natsMsg* msg) {
  const char* data = natsMsg_GetData(msg);
  if (data == nullptr || natsMsg_GetDataLength(msg) < static_cast<int>(kSentNsOffset + 19))
    return 0;
  std::int64_t value = 0;
  for (std::size_t i = kSentNsOffset; i < kSentNsOffset + 19; ++i)
    value = value * 10 + (data[i] - '0');
  return value;
}

// A payment job held by the seed policy (finance.payment.execute + env production), 256 B.
std::string holdPayload(const std::string& id) {
  return padTo(R"({"id":")" + id +
                   R"(","amount":{"value":125.5,"currency":"EUR"},)"
                   R"("labels":{"env":"production","team":"treasury"},"note":")",
               kPayloadSize);
}

const std::string kHoldSubject = "agents.jobs.finance.payment.execute";
const std::string kHoldTarget = "jobs.finance.payment.execute";

// The record countersign's intake would store for holdPayload(id) (same fields, hash and tag).
std::string heldRecordJson(const std::string& id, const std::string& snapshot, int quorum = 1) {
  countersign::ApprovalRecord record;
  record.quorum.count = quorum;
  record.id = id;
  record.route = "jobs";
  record.subject = kHoldSubject;
  record.target = kHoldTarget;
  record.topic = "finance.payment.execute";
  record.headers = {{"X-Agent", "agent-7"}};
  record.payload = holdPayload(id);
  record.payload_is_json = true;
  record.job_id = id;
  auto parsed = countersign::json::parseStrict(record.payload);
  if (!parsed) die("hold payload is not JSON");
  record.job_hash =
      countersign::jobHash(record.subject, record.target, record.headers, &*parsed, record.payload);
  record.policy_snapshot = snapshot;
  record.rule = "require-approval-prod-finance";
  record.created_at = countersign::formatRfc3339(std::chrono::system_clock::now());
  record.tag = benchTags().recordTag(record);
  return countersign::toJson(record);
}

std::string seedSnapshot() {
  auto policy = countersign::Policy::loadFile(std::string(COUNTERSIGN_SOURCE_DIR) +
                                              "/policies/approval-policy.yaml");
  if (!policy) die("seed policy: " + policy.error().message);
  return (*policy)->snapshot();
}

// The seed policy with `quorum: 2` on the rule that holds the benchmark's jobs (2-of-2 votes:
// the registry has two people), and its snapshot.
std::string quorumPolicyText() {
  std::string text = readFile(fs::path(COUNTERSIGN_SOURCE_DIR) / "policies" / "approval-policy.yaml");
  const std::string anchor = "      env: production\n    decision: require_human\n";
  const auto at = text.find(anchor);
  if (at == std::string::npos) die("seed policy: the finance rule is not where the quorum bench expects it");
  text.insert(at + anchor.size(), "    quorum: 2\n");
  return text;
}

std::string quorumSnapshot() {
  const fs::path file = fs::temp_directory_path() / ("countersign-bench-quorum-" + std::to_string(::getpid()) + ".yaml");
  writeFile(file, quorumPolicyText());
  auto policy = countersign::Policy::loadFile(file.string());
  fs::remove(file);
  if (!policy) die("quorum policy: " + policy.error().message);
  return (*policy)->snapshot();
}

// A record template (heldRecordJson(kIdPlaceholder, ...)) with its first id replaced: what the
// bare client and the bare sidecar store, without building a record per operation.
const std::string kIdPlaceholder = "ID_PLACEHOLDER_0000000000";

std::string recordFor(const std::string& record_template, const std::string& id) {
  std::string value = record_template;
  value.replace(value.find(kIdPlaceholder), kIdPlaceholder.size(), id);
  return value;
}

kvStore* openBucket(Connection& conn, const std::string& bucket) {
  kvStore* kv = nullptr;
  natsStatus s = js_KeyValue(&kv, conn.js(), bucket.c_str());
  if (s == NATS_NOT_FOUND) {
    // The settings countersign's KvBucket::open uses.
    kvConfig config;
    kvConfig_Init(&config);
    config.Bucket = bucket.c_str();
    config.History = 1;
    config.StorageType = js_FileStorage;
    config.Replicas = 1;
    s = js_CreateKeyValue(&kv, conn.js(), &config);
  }
  check(s, "KV bucket " + bucket);
  return kv;
}

// Writes `ids` as held records straight into the bucket's stream (async JetStream publishes to
// $KV.<bucket>.<id>): the same bytes countersign's hold would store, much faster.
double seedRecords(Connection& conn, const std::string& bucket, const std::vector<std::string>& ids,
                   const std::string& snapshot, int quorum = 1) {
  kvStore* kv = openBucket(conn, bucket);
  kvStore_Destroy(kv);
  const auto started = SteadyClock::now();
  const std::int64_t errors_before = conn.asyncErrors();
  for (const auto& id : ids) {
    const std::string value = heldRecordJson(id, snapshot, quorum);
    natsMsg* msg = nullptr;
    check(natsMsg_Create(&msg, ("$KV." + bucket + "." + id).c_str(), nullptr, value.data(),
                         static_cast<int>(value.size())),
          "seed message");
    natsStatus s = js_PublishMsgAsync(conn.js(), &msg, nullptr);
    if (s != NATS_OK) {
      natsMsg_Destroy(msg);
      die("seed publish: " + natsText(s));
    }
  }
  // The markers a countersign creates on its first start once the bucket holds no untagged
  // record or vote: without them, the next countersign would list every key to adopt them.
  const std::string marker = R"({"at":"2026-01-01T00:00:00Z"})";
  for (const std::string_view key : {countersign::kTagsAdoptedKey, countersign::kVoteTagsAdoptedKey}) {
    natsMsg* msg = nullptr;
    check(natsMsg_Create(&msg, ("$KV." + bucket + "." + std::string(key)).c_str(), nullptr, marker.data(),
                         static_cast<int>(marker.size())),
          "seed marker");
    if (js_PublishMsgAsync(conn.js(), &msg, nullptr) != NATS_OK) {
      natsMsg_Destroy(msg);
      die("seed marker publish failed");
    }
  }
  jsPubOptions wait;
  jsPubOptions_Init(&wait);
  wait.MaxWait = 120000;
  check(js_PublishAsyncComplete(conn.js(), &wait), "seed publish complete");
  if (conn.asyncErrors() != errors_before) die("seeding " + bucket + " failed");
  return std::chrono::duration<double>(SteadyClock::now() - started).count();
}

void deleteBucket(Connection& conn, const std::string& bucket) {
  natsStatus s = js_DeleteKeyValue(conn.js(), bucket.c_str());
  if (s != NATS_OK && s != NATS_NOT_FOUND)
    note("cannot delete bucket " + bucket + ": " + natsText(s));
}

void addJobsStream(Connection& conn) {
  const char* subjects[] = {"jobs.>"};
  jsStreamConfig config;
  jsStreamConfig_Init(&config);
  config.Name = "JOBS";
  config.Subjects = subjects;
  config.SubjectsLen = 1;
  config.Storage = js_FileStorage;
  jsStreamInfo* info = nullptr;
  jsErrCode error{};
  check(js_AddStream(&info, conn.js(), &config, nullptr, &error), "add stream JOBS");
  jsStreamInfo_Destroy(info);
}

// The NATS work of one approval, as the bare client and the bare sidecar both do it: KV get of
// the record, KV create `<id>/decision`, JetStream publish of the job with the release headers
// (waits for the PubAck), then `published` (where a sidecar answers, as countersign does), then
// KV create `<id>/released`. False, with `error`, at the first step that fails.
// The decision the bare sequences write (approved by "bench").
countersign::DecisionRecord benchDecision(const countersign::ApprovalRecord& record, const std::string& at) {
  return {.decision = countersign::FinalDecision::approved,
          .by = "bench",
          .at = at,
          .reason = "benchmark",
          .policy_snapshot = record.policy_snapshot,
          .job_hash = record.job_hash};
}

// The headers a release carries (approved by "bench").
countersign::Headers benchReleaseHeaders(const countersign::ApprovalRecord& record, const std::string& id) {
  countersign::Headers headers = record.headers;
  headers.insert(headers.end(), {{"Nats-Msg-Id", "countersign:" + id},
                                 {"Countersign-Decision", "require_human"},
                                 {"Countersign-Approval", "granted"},
                                 {"Countersign-Approval-Id", id},
                                 {"Countersign-Approved-By", "bench"},
                                 {"Countersign-Rule", record.rule},
                                 {"Countersign-Policy-Snapshot", record.policy_snapshot},
                                 {"Countersign-Job-Hash", record.job_hash}});
  return headers;
}

// The steps of a bare approval, timed one by one when asked (the scale phase: which of the
// server's lookups slows down with the bucket's size).
enum ApproveStep { kStepGet, kStepCreateDecision, kStepPublish, kStepCreateReleased, kApproveSteps };

bool approveSequence(jsCtx* js, kvStore* kv, const std::string& id, std::string& error,
                     const std::function<void(const countersign::ApprovalRecord&)>& published,
                     std::array<std::int64_t, kApproveSteps>* step_ns = nullptr) {
  std::int64_t mark = nowNs();
  auto step = [&](ApproveStep done) {
    if (step_ns == nullptr) return;
    const std::int64_t now = nowNs();
    (*step_ns)[done] = now - mark;
    mark = now;
  };
  kvEntry* entry = nullptr;
  natsStatus s = kvStore_Get(&entry, kv, id.c_str());
  step(kStepGet);
  if (s != NATS_OK) {
    error = "get: " + natsText(s);
    return false;
  }
  auto record = countersign::parseApprovalRecord(
      std::string_view(static_cast<const char*>(kvEntry_Value(entry)),
                       static_cast<std::size_t>(kvEntry_ValueLen(entry))));
  kvEntry_Destroy(entry);
  if (!record) {
    error = "record: " + record.error().message;
    return false;
  }
  const std::string at = countersign::formatRfc3339(std::chrono::system_clock::now());
  const countersign::DecisionRecord decision = benchDecision(*record, at);
  const std::string decision_json = countersign::toJson(decision);
  std::uint64_t revision = 0;
  s = kvStore_Create(&revision, kv, countersign::decisionKey(id).c_str(), decision_json.data(),
                     static_cast<int>(decision_json.size()));
  step(kStepCreateDecision);
  if (s != NATS_OK) {
    error = "create decision: " + natsText(s);
    return false;
  }
  const countersign::Headers headers = benchReleaseHeaders(*record, id);
  auto msg = makeMsg(record->target, nullptr, record->payload, headers);
  jsPubOptions options;
  jsPubOptions_Init(&options);
  options.MaxWait = 5000;
  jsPubAck* ack = nullptr;
  jsErrCode js_error{};
  s = js_PublishMsg(&ack, js, msg.get(), &options, &js_error);
  step(kStepPublish);
  const std::string stream = ack != nullptr && ack->Stream != nullptr ? ack->Stream : "";
  const std::uint64_t sequence_number = ack != nullptr ? ack->Sequence : 0;
  jsPubAck_Destroy(ack);
  if (s != NATS_OK) {
    error = "publish: " + natsText(s);
    return false;
  }
  if (published) published(*record);
  const countersign::ReleasedRecord released{.at = at,
                                             .msg_id = "countersign:" + id,
                                             .stream = stream,
                                             .sequence = sequence_number,
                                             .by = "approve"};
  const std::string released_json = countersign::toJson(released);
  s = kvStore_Create(&revision, kv, countersign::releasedKey(id).c_str(), released_json.data(),
                     static_cast<int>(released_json.size()));
  step(kStepCreateReleased);
  if (s != NATS_OK) {
    error = "create released: " + natsText(s);
    return false;
  }
  return true;
}

// ---- the relay process (the baseline of the allow path) -------------------------------------
//
// The best relay we can write in cnats, with countersign's own mechanisms and nothing else: a
// queue subscription whose delivery thread reads the raw header block (natsio::fromNatsMsg,
// which never asks cnats to parse it), appends the four Countersign-* headers (values of the
// same length as countersign's), builds the outgoing message in one go (natsio::toNatsMsg),
// publishes it on a connection with cnats' flusher (or send_asap) and frees both messages in
// place (natsio::freeNatsMsg: no wake of cnats' collector thread). With SIGN=1 it also makes the
// receipt countersign puts on an allowed job (job hash of the message, canonical JSON, Ed25519
// signature), the contract's work without the rest of countersign.

struct RelayState {
  natsConnection* conn = nullptr;
  std::string from_prefix;
  std::string to_prefix;
  std::unique_ptr<countersign::nkeys::Signer> signer;  // null: no receipt
};

// The headers countersign adds to an allowed job, with values of the same length, so that the
// relay and countersign put the same bytes on the wire.
const countersign::Headers kAllowHeaders{
    {"Countersign-Decision", "allow"},
    {"Countersign-Approval", "none"},
    {"Countersign-Rule", "allow-readonly"},
    {"Countersign-Policy-Snapshot",
     "v1:sha256:0000000000000000000000000000000000000000000000000000000000000000"}};

void relayMessage(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
  auto* state = static_cast<RelayState*>(closure);
  auto in = natsio::fromNatsMsg(msg);
  natsio::freeNatsMsg(msg);
  if (!in || in->subject.size() <= state->from_prefix.size()) return;
  const std::string target = state->to_prefix + in->subject.substr(state->from_prefix.size());
  if (state->signer) {
    auto payload = countersign::json::parseStrict(in->payload);
    countersign::receipt::addHeaders(
        in->headers, *state->signer,
        countersign::receipt::Claims{
            .job_hash = countersign::jobHash(in->subject, target, in->headers,
                                             payload ? &*payload : nullptr, in->payload),
            .policy_snapshot = kAllowHeaders.back().second,
            .rule = "allow-readonly",
            .decided_at = countersign::formatRfc3339(std::chrono::system_clock::now()),
            .subject = in->subject,
            .target = target,
            .msg_id = ""});
  }
  auto out = natsio::toNatsMsg(countersign::OutMessage{.subject = target,
                                                       .reply = in->reply,
                                                       .headers = &in->headers,
                                                       .payload = in->payload,
                                                       .more_headers = &kAllowHeaders});
  if (out) natsConnection_PublishMsg(state->conn, out->get());
}

int runRelay(int argc, char** argv) {
  if (argc != 6 && argc != 7) die("usage: bench_system relay URL FROM_PREFIX TO_PREFIX SEND_ASAP [SIGN]");
  // cnats opened as countersign opens it (no lock spinning).
  if (auto opened = natsio::openNatsLibrary(); !opened) die(opened.error().message);
  RelayState state;
  state.from_prefix = argv[3];
  state.to_prefix = argv[4];
  const bool send_asap = std::string(argv[5]) == "1";
  if (argc == 7 && std::string(argv[6]) == "1") {
    state.signer = std::make_unique<countersign::nkeys::Signer>(countersign::nkeys::generateSeed());
  }
  natsOptions* opts = nullptr;
  check(natsOptions_Create(&opts), "options");
  check(natsOptions_SetURL(opts, argv[2]), "url");
  check(natsOptions_SetName(opts, "bench-relay"), "name");
  check(natsOptions_SetSendAsap(opts, send_asap), "send asap");
  check(natsConnection_Connect(&state.conn, opts), "relay connect");
  natsSubscription* sub = nullptr;
  // Like countersign's intake: a queue subscription with the same pending limits.
  check(natsConnection_QueueSubscribe(&sub, state.conn, (state.from_prefix + ">").c_str(), "relay",
                                      &relayMessage, &state),
        "relay subscribe");
  check(natsSubscription_SetPendingLimits(sub, 1'000'000, 1 << 30), "pending limits");
  check(natsConnection_FlushTimeout(state.conn, 5000), "relay flush");
  std::cout << "relay ready" << std::endl;
  for (;;) ::pause();  // SIGTERM ends it
}

// ---- the bare sidecar process (the baseline of a sidecar's position) -------------------------
//
// The thinnest cnats program that does the NATS work any sidecar in countersign's position must
// do, with countersign's mechanisms and nothing else: no policy, no events, no audit stream, no
// key watcher, no replayer, no metrics. Its numbers against raw NATS show what the position
// costs (the request-reply hop through the server, cnats' threads); countersign's against it,
// what countersign's own work costs. It answers on subjects of its own, so it never competes
// with countersign for the bench's requests.

// Like countersign's connections: cnats defaults apart from send_asap.
natsConnection* sidecarConnect(const char* url, const char* name, bool send_asap) {
  natsOptions* opts = nullptr;
  check(natsOptions_Create(&opts), "options");
  check(natsOptions_SetURL(opts, url), "url");
  check(natsOptions_SetName(opts, name), "name");
  check(natsOptions_SetSendAsap(opts, send_asap), "send asap");
  natsConnection* conn = nullptr;
  check(natsConnection_Connect(&conn, opts), "sidecar connect");
  natsOptions_Destroy(opts);
  return conn;
}

// An answer like countersign's: JSON body, status word in Countersign-Status.
void sidecarAnswer(natsConnection* conn, const char* subject, const char* status,
                   const std::string& body) {
  natsMsg* out = nullptr;
  if (natsMsg_Create(&out, subject, nullptr, body.data(), static_cast<int>(body.size())) != NATS_OK)
    return;
  if (natsMsgHeader_Set(out, "Countersign-Status", status) == NATS_OK)
    natsConnection_PublishMsg(conn, out);
  natsMsg_Destroy(out);
}

// The id of a request: hold payloads and approve requests both start with {"id":"<id>".
std::string requestId(natsMsg* msg) {
  const char* data = natsMsg_GetData(msg);
  if (data == nullptr) return {};
  const std::string_view text(data, static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
  constexpr std::string_view head = R"({"id":")";
  if (!text.starts_with(head)) return {};
  const auto end = text.find('"', head.size());
  return end == std::string_view::npos ? std::string()
                                       : std::string(text.substr(head.size(), end - head.size()));
}

const std::string kUnavailable = R"({"status":"unavailable","code":503})";

// ---- the contract sidecar: the bare sidecar plus what the wire contract adds ------------------
//
// `bench_system sidecar ... contract`: the same process, connections and sequence, plus exactly
// the messages and signatures countersign's contract requires of whoever holds and releases
// jobs (docs/audit.md, docs/receipts.md, docs/protocol.md), made with countersign's own pieces:
// its event sink (EventSink: the chained body, Nats-Msg-Id with a random part, an Ed25519
// signature in headers, signed on the emitting thread as countersign's control connection
// does, decisive events waiting for the audit stream's PubAck), the audit stream as countersign
// creates it (natsio::ensureAuditStream, under a prefix and a stream of its own) and the
// receipt's header builder. Nothing of countersign's own logic: no policy, no job hash
// computed from the payload (the held events name the seeded record's), no store tags, no
// replayer, no key index or list index, no metrics.

const std::string kContractPrefix = "benchcontract";
const std::string kContractStream = "BENCH_CONTRACT_AUDIT";

// Core publishes on a raw cnats connection (the bare hold sidecar's control connection) as
// countersign's NatsPublisher sends them: where the contract sidecar's `held` events go.
class CorePublisher final : public countersign::Publisher {
 public:
  explicit CorePublisher(natsConnection* conn) : conn_(conn) {}
  countersign::Result<countersign::PublishAck> publish(const countersign::OutMessage& message,
                                                       countersign::Delivery delivery,
                                                       std::chrono::milliseconds) override {
    if (delivery != countersign::Delivery::core) {
      return countersign::fail(countersign::Errc::invalid_argument, "the hold sidecar publishes core only");
    }
    auto msg = natsio::toNatsMsg(message);
    if (!msg) return std::unexpected(msg.error());
    if (natsStatus s = natsConnection_PublishMsg(conn_, msg->get()); s != NATS_OK) {
      return countersign::fail(countersign::Errc::unavailable, natsText(s));
    }
    return countersign::PublishAck{};
  }
  std::size_t maxPayload() const override { return static_cast<std::size_t>(natsConnection_GetMaxPayload(conn_)); }

 private:
  natsConnection* conn_;
};

// The key (events and receipts, as countersign's one key signs both) and the event sink,
// configured as countersign's control connection's sink is with the audit trail on.
struct Contract {
  countersign::SystemClock clock;
  countersign::StreamLogger log;
  countersign::RandomIdSource nonces;
  countersign::nkeys::Signer signer{countersign::nkeys::generateSeed()};
  std::unique_ptr<countersign::Publisher> publisher;
  std::unique_ptr<countersign::EventSink> events;
};

std::unique_ptr<Contract> openContract(const std::string& url, std::unique_ptr<countersign::Publisher> publisher) {
  countersign::NatsConfig config;
  config.servers = {url};
  auto setup = natsio::Connection::connect(config, "bench-contract-setup", false);
  if (!setup) die("contract sidecar: " + setup.error().message);
  countersign::AuditConfig audit;
  audit.stream = kContractStream;
  if (auto made = natsio::ensureAuditStream(**setup, audit, kContractPrefix); !made) {
    die("contract sidecar: " + made.error().message);
  }
  auto contract = std::make_unique<Contract>();
  contract->publisher = std::move(publisher);
  contract->events = std::make_unique<countersign::EventSink>(
      *contract->publisher, contract->clock, contract->log,
      countersign::EventOptions{.prefix = kContractPrefix,
                                .chained = true,
                                .chain_id = contract->nonces.newId().substr(0, 12) + "-control",
                                .durable_decisions = true,
                                .msg_id_nonces = &contract->nonces,
                                .signer = &contract->signer,
                                .signer_name = "sign-cont",
                                .sign_on_caller = true});
  // For a reader that checks the events and receipts (`countersign audit verify --key`).
  std::cout << "contract sidecar key " << contract->signer.encodedPublicKey() << std::endl;
  return contract;
}

// Hold: the request is taken on the subscription's delivery thread, which publishes the record
// as a KV create (Nats-Expected-Last-Subject-Sequence 0) on the send_asap connection without
// waiting, its reply subject <inbox><number>; the PubAck comes to a subscription of the
// sidecar's own on that inbox, whose handler answers 202 on that connection. As countersign's
// KvBucket::createAsync does it (not cnats' asynchronous publish, which frees every PubAck
// through its collector thread), and every message is freed in place (natsio::freeNatsMsg).
struct SidecarHold {
  struct Pending {
    std::string reply;
    std::string id;
  };
  natsConnection* control = nullptr;
  std::string inbox;            // "_INBOX.<random>."
  std::string subject_prefix;   // $KV.<bucket>.
  std::string record_template;  // the record countersign stores, with kIdPlaceholder
  std::string answer_tail;      // the 202 body after the approval id (fixed)
  // Contract sidecar only: the sink of the `held` events, and the record template's fields
  // they name (the topic, subject, rule, job hash and policy snapshot of every hold).
  std::unique_ptr<Contract> contract;
  countersign::ApprovalRecord shape;
  std::mutex mutex;
  std::uint64_t next = 0;
  std::unordered_map<std::uint64_t, Pending> pending;  // creates awaiting their PubAck
};

void sidecarHoldRequest(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
  auto* state = static_cast<SidecarHold*>(closure);
  const char* reply = natsMsg_GetReply(msg);
  const std::string id = requestId(msg);
  if (reply != nullptr && !id.empty()) {
    const std::string value = recordFor(state->record_template, id);
    std::uint64_t number = 0;
    {
      const std::lock_guard lock(state->mutex);
      number = ++state->next;
      state->pending.emplace(number, SidecarHold::Pending{reply, id});
    }
    const std::string ack_subject = state->inbox + std::to_string(number);
    natsMsg* create = nullptr;
    natsStatus s = natsMsg_Create(&create, (state->subject_prefix + id).c_str(), ack_subject.c_str(),
                                  value.data(), static_cast<int>(value.size()));
    if (s == NATS_OK) s = natsMsgHeader_Set(create, "Nats-Expected-Last-Subject-Sequence", "0");
    if (s == NATS_OK) s = natsConnection_PublishMsg(state->control, create);
    if (s != NATS_OK) {
      {
        const std::lock_guard lock(state->mutex);
        state->pending.erase(number);
      }
      sidecarAnswer(state->control, reply, "unavailable", kUnavailable);
    }
    natsio::freeNatsMsg(create);
  }
  natsio::freeNatsMsg(msg);
}

void sidecarHoldAck(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
  auto* state = static_cast<SidecarHold*>(closure);
  std::string_view subject = natsMsg_GetSubject(msg);
  std::uint64_t number = 0;
  subject.remove_prefix(std::min(subject.size(), state->inbox.size()));
  std::from_chars(subject.data(), subject.data() + subject.size(), number);
  std::optional<SidecarHold::Pending> pending;
  {
    const std::lock_guard lock(state->mutex);
    if (auto it = state->pending.find(number); it != state->pending.end()) {
      pending = std::move(it->second);
      state->pending.erase(it);
    }
  }
  if (pending) {
    // A PubAck names the stream and the sequence; a refusal is {"error": ...}, the server's
    // "no responders" an empty body.
    const char* data = natsMsg_GetData(msg);
    const std::string_view ack(data != nullptr ? data : "", static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
    if (ack.find("\"seq\"") != std::string_view::npos && ack.find("\"error\"") == std::string_view::npos) {
      if (state->contract) {
        // As countersign's intake: the signed `held` event (a core publish into the audit
        // stream) before the answer.
        const countersign::ApprovalRecord& r = state->shape;
        state->contract->events->emit(countersign::Event{
            .event = countersign::EventKind::held, .approval_id = pending->id, .job_id = pending->id,
            .topic = r.topic, .subject = r.subject, .rule = r.rule, .job_hash = r.job_hash,
            .policy_snapshot = r.policy_snapshot, .payload = r.payload});
      }
      sidecarAnswer(state->control, pending->reply.c_str(), "approval_required",
                    R"({"status":"approval_required","code":202,"approval_id":")" + pending->id +
                        state->answer_tail);
    } else {
      sidecarAnswer(state->control, pending->reply.c_str(), "unavailable", kUnavailable);
    }
  }
  natsio::freeNatsMsg(msg);
}

// Approve: `concurrency` queue subscribers on the send_asap connection, each on its own
// delivery thread, each running the bare sequence and answering 200 once the job's publish is
// confirmed (before `<id>/released`, as countersign does). Its round trips go the way
// countersign's do: requests whose replies come to the asking thread's own inbox
// (natsio::Connection::request, natsio::jsPublish), not through cnats' request-reply inbox thread.
struct SidecarApprove {
  std::unique_ptr<natsio::Connection> conn;
  std::string bucket;
  std::unique_ptr<Contract> contract;  // contract sidecar only
};

// The bare sequence with countersign's round trips: direct get of the record, create of
// <id>/decision, JetStream publish of the job, create of <id>/released. With `contract`, what the
// contract adds, as countersign's approve path does it: the signed `approved` event (a core
// publish) before the job's publish, the signed receipt in the job's headers, and after
// `published` (the answer) `<id>/released` and the record's view (an update on the revision the
// get read) sent together with one wait for both, then the signed `released` event, which waits
// for the audit stream's PubAck.
bool approveSequenceOwnInbox(natsio::Connection& conn, const std::string& bucket, const std::string& id,
                             std::string& error,
                             const std::function<void(const countersign::ApprovalRecord&)>& published,
                             Contract* contract = nullptr) {
  using countersign::OutMessage;
  const std::string subject_prefix = "$KV." + bucket + ".";
  const std::string body = R"({"last_by_subj":")" + subject_prefix + id + "\"}";
  auto got = conn.request(OutMessage{.subject = "$JS.API.DIRECT.GET.KV_" + bucket, .payload = body},
                          std::chrono::milliseconds(5000), "get");
  if (!got) {
    error = got.error().message;
    return false;
  }
  const char* data = natsMsg_GetData(got->get());
  auto record = countersign::parseApprovalRecord(
      std::string_view(data != nullptr ? data : "", static_cast<std::size_t>(natsMsg_GetDataLength(got->get()))));
  std::string revision;  // the record's, for the view's update
  if (const char* seq = nullptr; contract != nullptr && natsMsgHeader_Get(got->get(), "Nats-Sequence", &seq) == NATS_OK) {
    revision = seq;
  }
  got->reset();
  if (!record) {
    error = "record: " + record.error().message;
    return false;
  }
  auto create = [&](const std::string& key, const std::string& value) {
    const countersign::Headers expect{{"Nats-Expected-Last-Subject-Sequence", "0"}};
    return natsio::jsPublish(conn, OutMessage{.subject = subject_prefix + key, .headers = &expect, .payload = value},
                             std::chrono::milliseconds(5000), "create " + key);
  };
  const std::string at = countersign::formatRfc3339(std::chrono::system_clock::now());
  const countersign::DecisionRecord decision = benchDecision(*record, at);
  if (auto made = create(countersign::decisionKey(id), countersign::toJson(decision)); !made) {
    error = made.error().message;
    return false;
  }
  const std::string msg_id = "countersign:" + id;
  countersign::Headers headers = benchReleaseHeaders(*record, id);
  if (contract != nullptr) {
    contract->events->emit(countersign::Event{
        .event = countersign::EventKind::approved, .approval_id = id, .job_id = record->job_id,
        .topic = record->topic, .subject = record->subject, .rule = record->rule, .job_hash = record->job_hash,
        .policy_snapshot = record->policy_snapshot, .actor = decision.by, .reason = decision.reason,
        .confirmed_by_next = true});
    countersign::receipt::addHeaders(headers, contract->signer,
                                     countersign::receipt::Claims{.approval_id = id,
                                                                  .job_hash = record->job_hash,
                                                                  .policy_snapshot = decision.policy_snapshot,
                                                                  .rule = record->rule,
                                                                  .approvers = countersign::receipt::approversOf(decision.by),
                                                                  .decided_at = decision.at,
                                                                  .subject = record->subject,
                                                                  .target = record->target,
                                                                  .msg_id = msg_id});
  }
  auto ack = natsio::jsPublish(conn, OutMessage{.subject = record->target, .headers = &headers, .payload = record->payload},
                               std::chrono::milliseconds(5000), "publish");
  if (!ack) {
    error = ack.error().message;
    return false;
  }
  if (published) published(*record);
  const countersign::ReleasedRecord released{
      .at = at, .msg_id = msg_id, .stream = ack->stream, .sequence = ack->sequence, .by = "approve"};
  if (contract == nullptr) {
    if (auto made = create(countersign::releasedKey(id), countersign::toJson(released)); !made) {
      error = made.error().message;
      return false;
    }
    return true;
  }
  // The record's view as the release leaves it.
  countersign::ApprovalRecord view = *record;
  view.state = countersign::ApprovalState::released;
  view.released_at = at;
  view.release_msg_id = msg_id;
  view.decided_by = decision.by;
  view.decided_at = decision.at;
  view.reason = decision.reason;
  view.approvals.push_back({decision.by, decision.at, decision.reason, ""});
  const std::string released_json = countersign::toJson(released);
  const std::string view_json = countersign::toJson(view);
  const countersign::Headers expect_none{{"Nats-Expected-Last-Subject-Sequence", "0"}};
  const countersign::Headers expect_read{{"Nats-Expected-Last-Subject-Sequence", revision}};
  const std::string released_subject = subject_prefix + countersign::releasedKey(id);
  const std::string view_subject = subject_prefix + id;
  const std::pair<std::string, OutMessage> writes[] = {
      {"create released", OutMessage{.subject = released_subject, .headers = &expect_none, .payload = released_json}},
      {"update view", OutMessage{.subject = view_subject, .headers = &expect_read, .payload = view_json}}};
  std::uint64_t numbers[2] = {0, 0};
  for (std::size_t i = 0; i < 2; ++i) {
    auto sent = conn.send(writes[i].second, writes[i].first);
    if (sent) numbers[i] = *sent;
    else if (error.empty()) error = sent.error().message;
  }
  for (std::size_t i = 0; i < 2; ++i) {
    if (numbers[i] == 0) continue;  // every request sent is awaited, whatever the other's fate
    bool no_responders = false;
    auto reply = conn.awaitReply(numbers[i], std::chrono::milliseconds(5000), writes[i].first, &no_responders);
    auto written = natsio::readPubAck(std::move(reply), no_responders, writes[i].first);
    if (!written && error.empty()) error = written.error().message;
  }
  if (!error.empty()) return false;
  contract->events->emit(countersign::Event{
      .event = countersign::EventKind::released, .approval_id = id, .job_id = record->job_id, .topic = record->topic,
      .subject = record->subject, .rule = record->rule, .job_hash = record->job_hash,
      .policy_snapshot = decision.policy_snapshot, .actor = decision.by});
  return true;
}

void sidecarApproveRequest(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
  auto* state = static_cast<SidecarApprove*>(closure);
  const char* reply = natsMsg_GetReply(msg);
  const std::string id = requestId(msg);
  if (reply != nullptr && !id.empty()) {
    bool answered = false;
    std::string error;
    approveSequenceOwnInbox(*state->conn, state->bucket, id, error,
                    [&](const countersign::ApprovalRecord& record) {
                      sidecarAnswer(state->conn->raw(), reply, "approved",
                                    R"({"status":"approved","code":200,"approval_id":")" + id +
                                        R"(","released":true,"msg_id":"countersign:)" + id +
                                        R"(","target":")" + record.target + "\"}");
                      answered = true;
                    },
                    state->contract.get());
    if (!answered) {
      sidecarAnswer(state->conn->raw(), reply, "unavailable",
                    R"({"status":"unavailable","code":503,"error":")" + error + "\"}");
    } else if (!error.empty()) {
      std::cerr << "after the answer to " << id << ": " << error << std::endl;  // the bench's log shows it
    }
  }
  natsio::freeNatsMsg(msg);  // as countersign frees its requests: in place, no collector wake
}

int runSidecar(int argc, char** argv) {
  const std::string mode = argc >= 6 ? argv[3] : "";
  const int args = mode == "hold" ? 6 : 7;
  const bool contract = argc == args + 1 && std::string(argv[args]) == "contract";
  if (!((mode == "hold" || mode == "approve") && (argc == args || contract))) {
    die("usage: bench_system sidecar URL hold SUBJECT BUCKET [contract] | URL approve SUBJECT BUCKET N [contract]");
  }
  // cnats opened as countersign opens it (no lock spinning).
  if (auto opened = natsio::openNatsLibrary(); !opened) die(opened.error().message);
  const char* url = argv[2];
  const std::string subject = argv[4];
  const std::string bucket = argv[5];
  natsConnection* control = sidecarConnect(url, "bench-sidecar-control", true);
  std::vector<natsSubscription*> subs;
  if (mode == "hold") {
    // Requests arrive on a connection with cnats defaults, like countersign's intake.
    natsConnection* intake = sidecarConnect(url, "bench-sidecar-intake", false);
    auto* state = new SidecarHold;  // lives until the process is stopped
    state->control = control;
    state->subject_prefix = "$KV." + bucket + ".";
    state->record_template = heldRecordJson(kIdPlaceholder, seedSnapshot());
    auto record = countersign::parseApprovalRecord(state->record_template);
    if (!record) die("sidecar: record template: " + record.error().message);
    state->answer_tail = R"(","job_hash":")" + record->job_hash + R"(","policy_snapshot":")" +
                         record->policy_snapshot + R"(","rule":")" + record->rule + "\"}";
    if (contract) {
      state->contract = openContract(url, std::make_unique<CorePublisher>(control));
      state->shape = std::move(*record);
    }
    // As countersign's KvBucket::startAsync: the PubAcks' subscription on an inbox of its own.
    char* inbox = nullptr;
    check(natsInbox_Create(&inbox), "sidecar inbox");
    state->inbox = std::string(inbox) + ".";
    natsInbox_Destroy(inbox);
    natsSubscription* acks = nullptr;
    check(natsConnection_Subscribe(&acks, control, (state->inbox + "*").c_str(), &sidecarHoldAck, state),
          "sidecar PubAck subscribe");
    subs.push_back(acks);
    natsSubscription* sub = nullptr;
    check(natsConnection_QueueSubscribe(&sub, intake, subject.c_str(), "sidecar",
                                        &sidecarHoldRequest, state),
          "sidecar subscribe");
    subs.push_back(sub);
    check(natsConnection_FlushTimeout(intake, 5000), "sidecar flush");
  } else {
    auto* state = new SidecarApprove;  // lives until the process is stopped
    countersign::NatsConfig config;
    config.servers = {url};
    auto connected = natsio::Connection::connect(config, "bench-sidecar-approve", true);
    if (!connected) die("sidecar: " + connected.error().message);
    state->conn = std::move(*connected);
    state->bucket = bucket;
    if (contract) state->contract = openContract(url, std::make_unique<natsio::NatsPublisher>(*state->conn));
    const int concurrency = std::max(1, std::atoi(argv[6]));
    for (int i = 0; i < concurrency; ++i) {
      natsSubscription* sub = nullptr;
      check(natsConnection_QueueSubscribe(&sub, state->conn->raw(), subject.c_str(), "sidecar",
                                          &sidecarApproveRequest, state),
            "sidecar subscribe");
      subs.push_back(sub);
    }
    check(natsConnection_FlushTimeout(state->conn->raw(), 5000), "sidecar flush");
  }
  // The pending limits countersign's subscriptions have.
  for (natsSubscription* sub : subs)
    check(natsSubscription_SetPendingLimits(sub, 1'000'000, 1 << 30), "pending limits");
  check(natsConnection_FlushTimeout(control, 5000), "sidecar flush");
  std::cout << "sidecar ready" << std::endl;
  for (;;) ::pause();  // SIGTERM ends it
}

// ---- the worker: counts (and times) what reaches jobs.> --------------------------------------

class Worker {
 public:
  enum class Mode { count, latency, approval };

  explicit Worker(const std::string& url) : conn_(url, "bench-worker", false) {
    sub_ =
        std::make_unique<Subscription>(conn_, "jobs.>", [this](natsMsg* msg) { onMessage(msg); });
  }

  std::uint64_t received() const { return received_.load(std::memory_order_relaxed); }
  std::int64_t dropped() const { return sub_->dropped(); }

  void countOnly() {
    std::lock_guard lock(mutex_);
    mode_ = Mode::count;
    on_release_ = nullptr;
  }
  // Records (receive - send) for messages sent at or after `from_ns`.
  void timeFrom(std::int64_t from_ns) {
    std::lock_guard lock(mutex_);
    mode_ = Mode::latency;
    latency_from_ns_ = from_ns;
    latencies_.clear();
  }
  std::vector<std::int64_t> takeLatencies() {
    std::lock_guard lock(mutex_);
    return std::move(latencies_);
  }
  // Approval mode: a released job names its approval id in Countersign-Approval-Id.
  void expectApprovals(std::function<void(const std::string& id, std::int64_t at_ns)> on_release) {
    std::lock_guard lock(mutex_);
    mode_ = Mode::approval;
    on_release_ = std::move(on_release);
  }

 private:
  void onMessage(natsMsg* msg) {
    const std::int64_t at = nowNs();
    received_.fetch_add(1, std::memory_order_relaxed);
    // The handler runs under the lock: once countOnly() returns, no handler (and nothing it
    // refers to) is in use any more.
    std::lock_guard lock(mutex_);
    if (mode_ == Mode::latency) {
      const std::int64_t sent = payloadStamp(msg);
      if (sent >= latency_from_ns_) latencies_.push_back(at - sent);
    } else if (mode_ == Mode::approval) {
      const char* id = nullptr;
      if (natsMsgHeader_Get(msg, "Countersign-Approval-Id", &id) == NATS_OK && id != nullptr) {
        on_release_(id, at);
      }
    }
  }

  Connection conn_;
  std::unique_ptr<Subscription> sub_;
  std::atomic<std::uint64_t> received_{0};
  std::mutex mutex_;
  Mode mode_ = Mode::count;
  std::int64_t latency_from_ns_ = 0;
  std::vector<std::int64_t> latencies_;
  std::function<void(const std::string&, std::int64_t)> on_release_;
};

// ---- results --------------------------------------------------------------------------------

struct Settings {
  bool quick = false;
  std::size_t scale_max = 0;  // 0: the default sizes (quick: up to 10k, full: up to 100k)
  double soak_seconds = 600;
  std::set<std::string> only;  // empty: everything but the soak
  fs::path out;
  bool wants(const std::string& phase) const {
    return only.empty() ? phase != "soak" : only.contains(phase);
  }
};

struct Target {
  std::string measure;
  std::string baseline;
  std::string countersign;
  std::string ratio;
  std::string target;
  std::optional<bool> met;  // nullopt: not measured
  bool info = false;        // no target: shown for information
  std::string verdict;      // when set, shown instead of met/missed (e.g. inconclusive)
};

// One bar group of the ratio chart (bench/plot.gp): countersign against its baseline, the bare
// sidecar against raw NATS (where measured), and the target.
struct PlotPoint {
  std::string label;
  double ratio = 0;
  std::optional<double> side_ratio;
  double target = 0.7;
};

struct Report {
  std::vector<Target> summary;
  std::vector<PlotPoint> plot;
  std::vector<std::string> details_after;  // sections written once the phase's own is out
  std::ostringstream details;
  std::vector<std::string> findings;
};

std::string yesNo(const Target& t) {
  if (t.info) return "-";
  if (!t.verdict.empty()) return t.verdict;
  const auto& met = t.met;
  if (!met) return "not run";
  return *met ? "**met**" : "**missed**";
}

// ---- 1. allow path throughput ---------------------------------------------------------------

struct Rig {
  NatsServer& server;
  TempDir& dir;
  const Settings& settings;
  Report& report;
  std::string snapshot;
};

struct ThroughputRound {
  double rate = 0;           // messages the worker received per second in the window
  double proc_cpu_us = 0;    // relay/countersign CPU per message
  double server_cpu_us = 0;  // nats-server CPU per message
  std::uint64_t published = 0;
  std::uint64_t received = 0;  // by the end of the drain
  std::uint64_t lost = 0;
};

// Publishes 256 B jobs to `subject` as fast as the pipeline takes them: at most `window`
// messages in flight (published but not yet received by the worker), so no queue grows without
// bound and nothing is dropped for overload. Counts what the worker gets in a fixed window.
ThroughputRound throughputRound(Connection& producer, Worker& worker, const std::string& subject,
                                pid_t proc, pid_t server, std::chrono::milliseconds warmup,
                                std::chrono::milliseconds window) {
  constexpr std::uint64_t kInFlight = 20000;
  worker.countOnly();
  const std::uint64_t received_before = worker.received();
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> published{0};
  std::thread sender([&] {
    std::string payload = allowPayload();
    auto msg = makeMsg(subject, nullptr, payload, kProducerHeaders);
    std::uint64_t sent = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      if (sent - (worker.received() - received_before) >= kInFlight) {
        std::this_thread::sleep_for(50us);
        continue;
      }
      for (int i = 0; i < 64; ++i) {
        check(natsConnection_PublishMsg(producer.raw(), msg.get()), "publish");
        ++sent;
      }
      published.store(sent, std::memory_order_relaxed);
    }
    published.store(sent);
  });
  std::this_thread::sleep_for(warmup);
  const std::uint64_t r0 = worker.received();
  auto procCpu = [proc] { return proc > 0 ? cpuSeconds(proc) : 0.0; };
  const double p0 = procCpu(), s0 = cpuSeconds(server);
  const auto t0 = SteadyClock::now();
  std::this_thread::sleep_for(window);
  const std::uint64_t r1 = worker.received();
  const double p1 = procCpu(), s1 = cpuSeconds(server);
  const auto t1 = SteadyClock::now();
  stop = true;
  sender.join();
  producer.flush();
  const auto drain_deadline = SteadyClock::now() + 10s;
  while (worker.received() - received_before < published.load() &&
         SteadyClock::now() < drain_deadline) {
    std::this_thread::sleep_for(5ms);
  }
  ThroughputRound round;
  const double seconds = std::chrono::duration<double>(t1 - t0).count();
  const double messages = static_cast<double>(r1 - r0);
  round.rate = messages / seconds;
  round.proc_cpu_us = messages > 0 ? (p1 - p0) * 1e6 / messages : 0;
  round.server_cpu_us = messages > 0 ? (s1 - s0) * 1e6 / messages : 0;
  round.published = published.load();
  round.received = worker.received() - received_before;
  round.lost = round.published > round.received ? round.published - round.received : 0;
  return round;
}

// One way from the producer to the worker: the subject the producer publishes on and the
// process between them (none for the direct baseline).
struct Pipeline {
  std::string name;
  std::string subject;
  pid_t pid = 0;  // 0: nothing between producer and worker
  double max_rate = 0;  // its median in section 1 (the latency phase skips rates above it)
};

struct AllowPipelines {
  Pipeline direct, relay, relay_asap, relay_receipt, cs, cs_plain;
};

// The ratio row of the summary and the chart: countersign's rate against a baseline's.
void allowTarget(Rig& rig, const std::string& what, const Pipeline& cs, const Pipeline& base,
                 double aim, const std::string& plot_label, bool info = false) {
  const double ratio = base.max_rate > 0 ? cs.max_rate / base.max_rate : 0;
  Target t{"1. allow path throughput, " + what, base.name + ": " + fmtRate(base.max_rate),
           cs.name + ": " + fmtRate(cs.max_rate), fmt(ratio, 2) + "x",
           ">= " + fmt(aim, 1) + "x" + (info ? " (information)" : ""), ratio >= aim};
  rig.report.summary.push_back(t);
  if (!plot_label.empty()) rig.report.plot.push_back({plot_label, ratio, std::nullopt, aim});
}

void allowThroughput(Rig& rig, AllowPipelines& p, Worker& worker, const Countersign& cs) {
  const bool quick = rig.settings.quick;
  const int rounds = quick ? 1 : 3;
  const auto warmup = quick ? 300ms : 500ms;
  const auto window = quick ? 1500ms : 3000ms;
  Connection producer(rig.server.url, "bench-producer", false);
  std::vector<Pipeline*> order{&p.direct, &p.relay, &p.relay_receipt, &p.cs, &p.cs_plain};
  std::vector<std::vector<ThroughputRound>> results(order.size());
  const std::int64_t slow_before = rig.server.slowConsumers();
  for (int r = 0; r < rounds; ++r) {
    for (std::size_t i = 0; i < order.size(); ++i) {
      results[i].push_back(throughputRound(producer, worker, order[i]->subject, order[i]->pid,
                                           rig.server.pid(), warmup, window));
      note("allow round " + std::to_string(r + 1) + " " + order[i]->name + ": " +
           fmtRate(results[i].back().rate));
    }
  }
  const std::int64_t slow_after = rig.server.slowConsumers();

  auto med = [](const std::vector<ThroughputRound>& rounds_of, double ThroughputRound::*field) {
    std::vector<double> values;
    for (const auto& round : rounds_of) values.push_back(round.*field);
    return median(values);
  };
  auto sum = [](const std::vector<ThroughputRound>& rounds_of,
                std::uint64_t ThroughputRound::*field) {
    std::uint64_t total = 0;
    for (const auto& round : rounds_of) total += round.*field;
    return total;
  };
  for (std::size_t i = 0; i < order.size(); ++i) order[i]->max_rate = med(results[i], &ThroughputRound::rate);
  p.relay_asap.max_rate = p.relay.max_rate;  // the same program; only its flushes differ

  allowTarget(rig, "receipts on (default) / best relay", p.cs, p.relay, 0.9, "allow / best relay");
  allowTarget(rig, "receipts on (default) / direct", p.cs, p.direct, 0.5, "allow / direct");
  allowTarget(rig, "receipts off / best relay", p.cs_plain, p.relay, 0.9, "allow, no receipt / best relay");
  allowTarget(rig, "receipts off / direct", p.cs_plain, p.direct, 0.5, "allow, no receipt / direct");
  allowTarget(rig, "receipts on / best relay that signs the same receipt", p.cs, p.relay_receipt, 0.9,
              "allow / signing relay", true);
  rig.report.summary.back().info = false;

  auto& d = rig.report.details;
  d << "### 1. Allow path throughput\n\n"
    << "Producer -> `agents.jobs.knowledge.read` -> countersign (core route, seed policy, rule "
       "`allow-readonly`, receipts on as by default) -> `jobs.knowledge.read` -> worker. Baselines on "
       "the same server, same payloads and client settings: **direct** (the producer publishes to "
       "`jobs.knowledge.read` itself: no process between, the limit of any sidecar), the **best "
       "relay** (`bench_system relay`: the thinnest cnats program in countersign's place, with "
       "countersign's own mechanisms: raw header block read without cnats' parser, the four "
       "`Countersign-*` headers appended, the outgoing message built in one go, both freed in place "
       "instead of through cnats' collector thread, cnats' flusher batching writes; "
       "`relay1.jobs.>` -> `jobs.>`), the same relay making the **receipt** an allowed job carries "
       "(job hash, canonical JSON, Ed25519 signature: `relay3.jobs.>`), and a second countersign "
       "with `receipts.allowed: false` (`agents2.jobs.>`). 256 B JSON payloads, one producer "
       "connection publishing as fast as the pipeline drains (at most 20000 messages in flight = "
       "published minus received, so no queue grows without bound). Rate = messages the worker "
       "received in a "
    << window.count() << " ms window after " << warmup.count() << " ms warm-up; " << rounds
    << " round(s), the pipelines taking turns, median. CPU per message from /proc/<pid>/stat over "
       "the window.\n\n"
    << "| | rate (median) | rounds | CPU µs/msg (process between) | nats-server CPU µs/msg | "
       "total µs/msg (process + server) | published | lost |\n"
    << "|---|---|---|---|---|---|---|---|\n";
  for (std::size_t i = 0; i < order.size(); ++i) {
    const auto& rs = results[i];
    std::string all;
    for (const auto& round : rs) all += (all.empty() ? "" : ", ") + fmtRate(round.rate);
    const double proc = med(rs, &ThroughputRound::proc_cpu_us);
    const double server = med(rs, &ThroughputRound::server_cpu_us);
    d << "| " << order[i]->name << " | " << fmtRate(order[i]->max_rate) << " | " << all << " | "
      << (order[i]->pid > 0 ? fmt(proc, 2) : std::string("-")) << " | " << fmt(server, 2) << " | "
      << fmt(proc + server, 2) << " | " << sum(rs, &ThroughputRound::published) << " | "
      << sum(rs, &ThroughputRound::lost) << " |\n";
  }
  d << "\nServer-side slow consumers during the phase: " << (slow_after - slow_before)
    << "; client-side drops at the worker: " << worker.dropped()
    << "; countersign log lines about slow consumers/disconnects: " << cs.troubleLines() << ".\n\n";
  const double relay_cpu = med(results[1], &ThroughputRound::proc_cpu_us);
  const double signing_cpu = med(results[2], &ThroughputRound::proc_cpu_us);
  const double cs_cpu = med(results[3], &ThroughputRound::proc_cpu_us);
  const double plain_cpu = med(results[4], &ThroughputRound::proc_cpu_us);
  d << "CPU per message: countersign " << fmt(cs_cpu, 2) << " µs with receipts, " << fmt(plain_cpu, 2)
    << " µs without (the receipt costs it " << fmt(cs_cpu - plain_cpu, 2) << " µs); the best relay "
    << fmt(relay_cpu, 2) << " µs, " << fmt(signing_cpu, 2) << " µs when it signs the same receipt ("
    << fmt(signing_cpu - relay_cpu, 2) << " µs). Without a receipt countersign adds "
    << fmt(plain_cpu - relay_cpu, 2)
    << " µs per message over the best relay: policy evaluation, the job view, metrics.\n\n";
}

// ---- 2. allow path latency ------------------------------------------------------------------

struct LatencyRun {
  std::vector<std::int64_t> samples;
  double offered = 0;  // the rate actually published
  std::uint64_t lost = 0;
};

// Paced publisher: every 100 µs it publishes the messages due at `rate`; each carries its send
// time; the worker records receive - send for those sent after the warm-up.
LatencyRun latencyRound(Connection& producer, Worker& worker, const std::string& subject,
                        double rate, std::chrono::milliseconds warmup,
                        std::chrono::milliseconds window) {
  std::string payload = allowPayload();
  const std::uint64_t received_before = worker.received();
  const std::int64_t start = nowNs();
  const std::int64_t measure_from =
      start + std::chrono::duration_cast<std::chrono::nanoseconds>(warmup).count();
  const std::int64_t end =
      measure_from + std::chrono::duration_cast<std::chrono::nanoseconds>(window).count();
  worker.timeFrom(measure_from);
  std::uint64_t sent = 0;
  timespec next{};
  clock_gettime(CLOCK_MONOTONIC, &next);
  for (;;) {
    const std::int64_t now = nowNs();
    if (now >= end) break;
    const auto due = static_cast<std::uint64_t>(static_cast<double>(now - start) * rate / 1e9);
    while (sent < due) {
      stampPayload(payload, nowNs());
      auto msg = makeMsg(subject, nullptr, payload, kProducerHeaders);
      check(natsConnection_PublishMsg(producer.raw(), msg.get()), "publish");
      ++sent;
    }
    next.tv_nsec += 100'000;
    if (next.tv_nsec >= 1'000'000'000) {
      next.tv_nsec -= 1'000'000'000;
      ++next.tv_sec;
    }
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, nullptr);
  }
  producer.flush();
  const auto drain_deadline = SteadyClock::now() + 10s;
  while (worker.received() - received_before < sent && SteadyClock::now() < drain_deadline) {
    std::this_thread::sleep_for(5ms);
  }
  LatencyRun run;
  run.samples = worker.takeLatencies();
  run.offered = static_cast<double>(sent) / (static_cast<double>(end - start) / 1e9);
  const std::uint64_t got = worker.received() - received_before;
  run.lost = sent > got ? sent - got : 0;
  worker.countOnly();
  return run;
}

void allowLatency(Rig& rig, Worker& worker, const AllowPipelines& p) {
  const bool quick = rig.settings.quick;
  const int rounds = quick ? 1 : 2;
  const auto warmup = 300ms;
  const auto window = quick ? 1500ms : 3000ms;
  Connection producer(rig.server.url, "bench-paced-producer", false);
  struct Variant {
    const Pipeline* pipeline;
    std::vector<std::int64_t> samples;
    std::vector<double> round_p99;
    std::uint64_t lost = 0;
    bool skipped = false;  // the rate is above what this pipeline can carry
  };
  struct Level {
    std::string label;
    double rate;
    std::vector<Variant> variants;
  };
  // The target is judged at 10% of the direct maximum (the cost per message without queueing);
  // 50% is shown for information. A pipeline whose own maximum (section 1) is below 90% of a
  // level's rate is not run there: its queue would only grow.
  auto variants = [&](bool with_asap) {
    std::vector<Variant> out{{&p.direct, {}, {}, 0, false}, {&p.relay, {}, {}, 0, false}};
    if (with_asap) out.push_back({&p.relay_asap, {}, {}, 0, false});
    out.push_back({&p.cs, {}, {}, 0, false});
    out.push_back({&p.cs_plain, {}, {}, 0, false});
    return out;
  };
  // The third level is one countersign with receipts can carry: what its path adds per message.
  std::vector<Level> levels{{"10% of the direct maximum", p.direct.max_rate / 10, variants(true)},
                            {"50% of the direct maximum", p.direct.max_rate / 2, variants(false)},
                            {"10% of countersign's maximum with receipts", p.cs.max_rate / 10, variants(false)}};
  for (auto& level : levels) {
    for (auto& v : level.variants) v.skipped = v.pipeline->max_rate * 0.9 < level.rate;
    for (int r = 0; r < rounds; ++r) {
      for (auto& v : level.variants) {
        if (v.skipped) continue;
        auto run = latencyRound(producer, worker, v.pipeline->subject, level.rate, warmup, window);
        v.samples.insert(v.samples.end(), run.samples.begin(), run.samples.end());
        v.lost += run.lost;
        const auto pc = percentiles(run.samples);
        v.round_p99.push_back(pc.p99);
        note("latency at " + fmtRate(level.rate) + " round " + std::to_string(r + 1) + " " +
             v.pipeline->name + ": p50 " + fmtUs(pc.p50) + " p99 " + fmtUs(pc.p99));
      }
    }
  }
  auto& d = rig.report.details;
  d << "### 2. Allow path latency\n\n"
    << "Same pipelines and payloads, publisher paced: every 100 µs it publishes the messages due at "
       "the rate (cnats default connection, so its flusher thread batches writes for up to 1 ms, the "
       "same for every variant); each payload carries its send time (steady clock) and the worker "
       "records receive minus send. "
    << rounds << " round(s) of " << window.count() << " ms after " << warmup.count()
    << " ms warm-up per variant, interleaved. The best relay uses cnats defaults like countersign's "
       "intake connection (its outgoing messages also wait for the flusher); the send_asap relay "
       "shows what that flusher costs. A pipeline is not run at a rate above 90% of its own maximum "
       "from section 1.\n\n";
  auto spread = [](const std::vector<double>& values) {
    if (values.size() < 2) return std::numeric_limits<double>::infinity();
    return *std::max_element(values.begin(), values.end()) -
           *std::min_element(values.begin(), values.end());
  };
  for (std::size_t i = 0; i < levels.size(); ++i) {
    const auto& level = levels[i];
    d << "At " << fmtRate(level.rate) << " (" << level.label << "):\n\n"
      << "| | samples | p50 | p90 | p99 | p99.9 | max | lost "
         "|\n|---|---|---|---|---|---|---|---|\n";
    std::string per_round;
    for (const auto& v : level.variants) {
      if (v.skipped) {
        d << "| " << v.pipeline->name << " | not run: above its maximum of "
          << fmtRate(v.pipeline->max_rate) << " | | | | | | |\n";
        continue;
      }
      const auto pc = percentiles(v.samples);
      d << "| " << v.pipeline->name << " | " << pc.count << " | " << fmtUs(pc.p50) << " | "
        << fmtUs(pc.p90) << " | " << fmtUs(pc.p99) << " | " << fmtUs(pc.p999) << " | "
        << fmtUs(pc.max) << " | " << v.lost << " |\n";
      per_round += (per_round.empty() ? "" : "; ") + v.pipeline->name + ":";
      for (const double p99 : v.round_p99) per_round += " " + fmtUs(p99);
    }
    const Variant& direct = level.variants.front();
    const Variant& relay = level.variants[1];
    const Variant& cs = *std::find_if(level.variants.begin(), level.variants.end(),
                                      [&](const Variant& v) { return v.pipeline == &p.cs; });
    const Variant& plain = *std::find_if(level.variants.begin(), level.variants.end(),
                                         [&](const Variant& v) { return v.pipeline == &p.cs_plain; });
    std::string plain_text;
    if (!plain.skipped && !direct.samples.empty()) {
      const double added = percentiles(plain.samples).p99 - percentiles(direct.samples).p99;
      plain_text = "; receipts off: p99 " + std::string(added >= 0 ? "+" : "") + fmtUs(added) + " over direct";
    }
    Target target{"2. allow path latency p50 / p99 at " + fmtRate(level.rate) + " (" + level.label +
                      "), countersign with receipts",
                  "", "", "", i == 0 ? "added p99 < 50 µs over direct" : "(information)", std::nullopt};
    const auto dp = percentiles(direct.samples);
    target.baseline = "direct " + fmtUs(dp.p50) + " / " + fmtUs(dp.p99);
    if (cs.skipped) {
      // It cannot carry the rate at all: the target is missed, not unmeasured.
      target.countersign = "cannot carry the rate (its maximum: " + fmtRate(p.cs.max_rate) + ")";
      target.ratio = plain_text.empty() ? "-" : plain_text.substr(2);
      target.met = false;
    } else {
      const auto cp = percentiles(cs.samples);
      const auto rp = percentiles(relay.samples);
      const double added_p99 = cp.p99 - dp.p99;
      const double noise = std::max(spread(direct.round_p99), spread(cs.round_p99));
      target.countersign = fmtUs(cp.p50) + " / " + fmtUs(cp.p99);
      target.ratio = "p99 " + std::string(added_p99 >= 0 ? "+" : "") + fmtUs(added_p99) +
                     " over direct, " + (cp.p99 - rp.p99 >= 0 ? "+" : "") + fmtUs(cp.p99 - rp.p99) +
                     " over the best relay" + plain_text;
      if (added_p99 < 50'000 && noise < 50'000) {
        target.met = true;
      } else if (!std::isinf(noise) && added_p99 - noise >= 50'000) {
        target.met = false;
      } else {
        target.verdict = "inconclusive (round-to-round p99 spread " +
                         (std::isinf(noise) ? std::string("unknown") : fmtUs(noise)) + ")";
      }
      d << "\nAdded by countersign (receipts on) over direct: p50 " << fmtUs(cp.p50 - dp.p50)
        << ", p99 " << fmtUs(added_p99) << "; over the best relay: p50 " << fmtUs(cp.p50 - percentiles(relay.samples).p50)
        << ", p99 " << fmtUs(cp.p99 - rp.p99) << ". p99 per round (" << per_round
        << "); the largest round-to-round spread of direct and countersign, "
        << (std::isinf(noise) ? std::string("unknown with one round") : fmtUs(noise))
        << ", is what this run can resolve.\n\n";
    }
    if (i > 0) {
      target.met.reset();
      target.verdict.clear();
      target.info = true;
    }
    rig.report.summary.push_back(target);
  }
}

// Waits (at most `limit`) until each process uses less than 5% of a core over 300 ms: a phase
// that saturated the pipeline (the latency phase at 50% of a noisy maximum) can leave queues that
// countersign and the server still work through, which would be charged to the next phase.
// Returns the seconds waited; says so on stderr unless `quietly` (between rounds).
double waitQuiet(const std::vector<pid_t>& pids, const std::string& before,
                 std::chrono::milliseconds limit = 20000ms, bool quietly = false) {
  const auto started = std::chrono::steady_clock::now();
  auto waited = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  };
  constexpr auto kWindow = 300ms;
  while (std::chrono::steady_clock::now() - started < limit) {
    std::vector<double> at;
    for (const pid_t pid : pids) at.push_back(cpuSeconds(pid));
    std::this_thread::sleep_for(kWindow);
    bool quiet = true;
    for (std::size_t i = 0; i < pids.size(); ++i) {
      quiet = quiet &&
              (cpuSeconds(pids[i]) - at[i]) < 0.05 * std::chrono::duration<double>(kWindow).count();
    }
    if (quiet) {
      if (!quietly) note("quiet before " + before + " after " + fmt(waited(), 1) + " s");
      return waited();
    }
  }
  note("not quiet before " + before + " after " + fmt(waited(), 1) + " s; measuring anyway");
  return waited();
}

// ---- 3. hold rate ---------------------------------------------------------------------------

struct RateRound {
  double rate = 0;
  std::uint64_t ok = 0;
  std::uint64_t failed = 0;
  std::string first_failure;
  Percentiles latency;
  double proc_cpu_us = 0;
  double server_cpu_us = 0;
  double proc_switches = 0;  // context switches per operation of the process between
};

// Keeps `concurrency` requests in flight against `subject` (async, one connection, replies on a
// wildcard inbox); `build(i)` gives payload i; `ok(status)` says whether the reply is a success.
RateRound requestRound(Connection& conn, const std::string& tag, const std::string& subject,
                       int concurrency, const std::function<std::string(std::uint64_t)>& build,
                       const std::function<bool(const std::string&)>& ok, pid_t proc, pid_t server,
                       std::chrono::milliseconds warmup, std::chrono::milliseconds window) {
  std::mutex mutex;
  std::condition_variable cv;
  int outstanding = 0;
  std::unordered_map<std::uint64_t, std::int64_t> started;
  std::vector<std::int64_t> latencies;
  std::atomic<std::uint64_t> done{0}, good{0}, bad{0};
  std::string first_failure;
  std::int64_t measure_from = INT64_MAX, measure_to = INT64_MAX;
  std::uint64_t ok_in_window = 0;
  const std::string inbox = "_INBOX.bench." + tag + ".";
  Subscription replies(conn, inbox + "*", [&](natsMsg* msg) {
    const std::int64_t at = nowNs();
    const char* status = nullptr;
    natsMsgHeader_Get(msg, "Countersign-Status", &status);
    const std::string reply_subject = natsMsg_GetSubject(msg);
    const std::uint64_t index = std::strtoull(reply_subject.c_str() + inbox.size(), nullptr, 10);
    const bool success = ok(status != nullptr ? status : "");
    std::lock_guard lock(mutex);
    if (success) {
      good.fetch_add(1);
      if (at >= measure_from && at < measure_to) ++ok_in_window;
    } else if (bad.fetch_add(1) == 0) {
      first_failure = std::string(natsMsg_GetData(msg) != nullptr ? natsMsg_GetData(msg) : "",
                                  static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
    }
    if (auto it = started.find(index); it != started.end()) {
      if (it->second >= measure_from && at < measure_to) latencies.push_back(at - it->second);
      started.erase(it);
    }
    --outstanding;
    done.fetch_add(1);
    cv.notify_one();
  });
  const std::int64_t t_start = nowNs();
  {
    std::lock_guard lock(mutex);
    measure_from = t_start + std::chrono::duration_cast<std::chrono::nanoseconds>(warmup).count();
    measure_to =
        measure_from + std::chrono::duration_cast<std::chrono::nanoseconds>(window).count();
  }
  double p0 = 0, s0 = 0, w0 = 0;
  bool sampled_start = false;
  std::uint64_t sent = 0;
  for (;;) {
    std::unique_lock lock(mutex);
    cv.wait(lock, [&] { return outstanding < concurrency; });
    const std::int64_t now = nowNs();
    if (!sampled_start && now >= measure_from) {
      p0 = cpuSeconds(proc);
      s0 = cpuSeconds(server);
      w0 = proc > 0 ? contextSwitches(proc) : 0;
      sampled_start = true;
    }
    if (now >= measure_to) break;
    ++outstanding;
    started[sent] = now;
    lock.unlock();
    const std::string reply = inbox + std::to_string(sent);
    auto msg = makeMsg(subject, reply.c_str(), build(sent), kProducerHeaders);
    check(natsConnection_PublishMsg(conn.raw(), msg.get()), "request");
    ++sent;
  }
  const double p1 = cpuSeconds(proc), s1 = cpuSeconds(server);
  const double w1 = proc > 0 ? contextSwitches(proc) : 0;
  std::unique_lock lock(mutex);
  if (!cv.wait_for(lock, 30s, [&] { return outstanding == 0; }))
    note(tag + ": " + std::to_string(outstanding) + " requests unanswered");
  RateRound round;
  const double seconds = static_cast<double>(measure_to - measure_from) / 1e9;
  round.rate = static_cast<double>(ok_in_window) / seconds;
  round.ok = good.load();
  round.failed = bad.load() + static_cast<std::uint64_t>(outstanding);
  round.first_failure = first_failure;
  round.latency = percentiles(latencies);
  const double n = static_cast<double>(ok_in_window);
  round.proc_cpu_us = n > 0 ? (p1 - p0) * 1e6 / n : 0;
  round.server_cpu_us = n > 0 ? (s1 - s0) * 1e6 / n : 0;
  round.proc_switches = n > 0 ? (w1 - w0) / n : 0;
  return round;
}

// `concurrency` threads each looping a synchronous operation; counts successes in the window.
RateRound threadsRound(
    int concurrency, const std::function<bool(int thread, std::uint64_t i, std::string& error)>& op,
    pid_t server, std::chrono::milliseconds warmup, std::chrono::milliseconds window,
    std::uint64_t limit = UINT64_MAX) {
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> next{0};
  std::mutex mutex;
  std::vector<std::int64_t> latencies;
  std::uint64_t ok_in_window = 0, good = 0, bad = 0;
  std::string first_failure;
  const std::int64_t t_start = nowNs();
  const std::int64_t measure_from =
      t_start + std::chrono::duration_cast<std::chrono::nanoseconds>(warmup).count();
  const std::int64_t measure_to =
      measure_from + std::chrono::duration_cast<std::chrono::nanoseconds>(window).count();
  std::vector<std::thread> threads;
  for (int t = 0; t < concurrency; ++t) {
    threads.emplace_back([&, t] {
      while (!stop.load()) {
        const std::uint64_t i = next.fetch_add(1);
        if (i >= limit) break;
        const std::int64_t begin = nowNs();
        if (begin >= measure_to) break;
        std::string error;
        const bool success = op(t, i, error);
        const std::int64_t end = nowNs();
        std::lock_guard lock(mutex);
        if (success) {
          ++good;
          if (end >= measure_from && end < measure_to) ++ok_in_window;
          if (begin >= measure_from && end < measure_to) latencies.push_back(end - begin);
        } else if (bad++ == 0) {
          first_failure = error;
        }
      }
    });
  }
  std::this_thread::sleep_until(SteadyClock::time_point(std::chrono::nanoseconds(measure_from)));
  const double s0 = cpuSeconds(server), c0 = cpuSeconds(::getpid());
  std::this_thread::sleep_until(SteadyClock::time_point(std::chrono::nanoseconds(measure_to)));
  const double s1 = cpuSeconds(server), c1 = cpuSeconds(::getpid());
  stop = true;
  for (auto& thread : threads) thread.join();
  RateRound round;
  const double seconds = static_cast<double>(measure_to - measure_from) / 1e9;
  round.rate = static_cast<double>(ok_in_window) / seconds;
  round.ok = good;
  round.failed = bad;
  round.first_failure = first_failure;
  round.latency = percentiles(latencies);
  const double n = static_cast<double>(ok_in_window);
  round.proc_cpu_us =
      n > 0 ? (c1 - c0) * 1e6 / n : 0;  // the bench process itself (the bare client)
  round.server_cpu_us = n > 0 ? (s1 - s0) * 1e6 / n : 0;
  return round;
}

// The replayer lists the whole bucket every second (and, in this version, fails to once it holds a
// few thousand keys): the "replayer idle" variants run countersign with this block so that the
// cost of the intake and approve paths themselves shows apart from it.
const std::string kReplayerIdle = "release:\n  replay_interval: 3600s\n";
// No audit stream: events are plain core publishes nobody stores, and no decisive event waits
// for a PubAck. Shows what JetStream's storing of the audit trail costs per hold / approval.
const std::string kAuditOff = "audit:\n  enabled: false\n";

// BENCH_DEFAULT_ONLY=1: the hold and approve phases measure only their `default` rows (with the
// bare sidecar and raw), for quicker before/after pairs.
bool defaultOnly() {
  const char* value = std::getenv("BENCH_DEFAULT_ONLY");
  return value != nullptr && std::string_view(value) == "1";
}

// One variant at one concurrency: the baseline's rounds, the bare and contract sidecars' (only
// where they were measured) and countersign's.
template <class Round>
struct RoundPair {
  std::string variant;
  int n = 0;
  std::vector<Round> raw;
  std::vector<Round> cs;
  std::vector<Round> side;      // empty: no bare sidecar for this variant
  std::vector<Round> contract;  // empty: no contract sidecar for this variant
};

template <class Round, class Getter>
double medianOf(const std::vector<Round>& rounds, Getter getter) {
  std::vector<double> values;
  for (const auto& round : rounds) values.push_back(getter(round));
  return median(values);
}

// The summary line of a ratio measure: its `default` rows against the 0.7x target, and the bare
// sidecar's ratio to raw.
struct RatioSummary {
  std::string baseline;
  std::string cs;
  std::string ratio;
  std::string side_ratio;
  bool all_met = true;
  std::string own;         // countersign / bare sidecar at each N
  bool own_met = true;     // >= 0.9x at each N
  bool has_side = false;
  std::string price;       // contract sidecar / bare sidecar at each N (the contract's price)
  std::string own_code;    // countersign / contract sidecar at each N (countersign's own code)
  bool own_code_met = true;  // >= 0.9x at each N
  bool has_contract = false;
};

// What the columns of a ratio table are called: "KV creates/s", "holds/s", "hold".
struct RatioNames {
  std::string raw_rate;
  std::string rate;
  std::string op;
};

// Medians of one row, for the table and the text.
struct RatioRow {
  double raw_rate = 0, cs_rate = 0, side_rate = 0, con_rate = 0;
  double raw_server = 0, cs_server = 0, side_server = 0, con_server = 0;  // server CPU µs per op
  double cs_cpu = 0, side_cpu = 0, con_cpu = 0;            // countersign / sidecars' CPU µs per op
  double cs_switches = 0, side_switches = 0, con_switches = 0;  // their context switches per op
  double raw_p50 = 0;
  bool has_side = false;
  bool has_contract = false;
  double ratio() const { return raw_rate > 0 ? cs_rate / raw_rate : 0; }
  double sideRatio() const { return raw_rate > 0 ? side_rate / raw_rate : 0; }
  double csOfSide() const { return side_rate > 0 ? cs_rate / side_rate : 0; }
  double contractOfSide() const { return side_rate > 0 ? con_rate / side_rate : 0; }  // the contract's price
  double csOfContract() const { return con_rate > 0 ? cs_rate / con_rate : 0; }      // countersign's own code
};

template <class Round>
RatioRow ratioRow(const RoundPair<Round>& row) {
  auto med = [](const std::vector<Round>& rounds, double Round::*field) {
    return medianOf(rounds, [field](const Round& x) { return x.*field; });
  };
  RatioRow out;
  // A measured process's medians: rate, server CPU, its own CPU and context switches per op.
  auto process = [&](const std::vector<Round>& rounds, double& rate, double& server, double& cpu, double& switches) {
    rate = med(rounds, &Round::rate);
    server = med(rounds, &Round::server_cpu_us);
    cpu = med(rounds, &Round::proc_cpu_us);
    switches = med(rounds, &Round::proc_switches);
  };
  out.raw_rate = med(row.raw, &Round::rate);
  out.raw_server = med(row.raw, &Round::server_cpu_us);
  out.raw_p50 = medianOf(row.raw, [](const Round& x) { return x.latency.p50; });
  process(row.cs, out.cs_rate, out.cs_server, out.cs_cpu, out.cs_switches);
  out.has_side = !row.side.empty();
  if (out.has_side) process(row.side, out.side_rate, out.side_server, out.side_cpu, out.side_switches);
  out.has_contract = !row.contract.empty();
  if (out.has_contract) process(row.contract, out.con_rate, out.con_server, out.con_cpu, out.con_switches);
  return out;
}

// Writes the table (header and one row per pair: medians of its rounds; "-" where no bare
// sidecar ran), sums up the `default` rows, and adds their ratios to the plot data.
template <class Round, class Failures>
RatioSummary writeRatioRows(std::ostream& d, Report& report, const std::string& plot_label,
                            const std::vector<RoundPair<Round>>& rows, const RatioNames& names,
                            Failures failures, int cpu_digits) {
  d << "| countersign | N in flight | raw " << names.raw_rate << " | bare sidecar " << names.rate
    << " | contract sidecar " << names.rate << " | countersign " << names.rate
    << " | ratio countersign / raw | bare sidecar / raw | contract sidecar / bare sidecar (the contract's "
       "price) | countersign / contract sidecar (countersign's own code) | countersign / bare sidecar | raw "
       "p50 / p99 | bare sidecar p50 / p99 | contract sidecar p50 / p99 | countersign p50 / p99 | CPU µs/"
    << names.op << " bare / contract sidecar / countersign | server CPU µs/" << names.op
    << " raw / bare / contract sidecar / countersign | context switches/" << names.op
    << " bare / contract sidecar / countersign | failures raw / bare / contract sidecar / countersign |\n"
    << "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  RatioSummary summary;
  for (const auto& row : rows) {
    const RatioRow m = ratioRow(row);
    auto latency = [](const std::vector<Round>& rounds) {
      if (rounds.empty()) return std::string("-");
      return fmtUs(medianOf(rounds, [](const Round& x) { return x.latency.p50; })) + " / " +
             fmtUs(medianOf(rounds, [](const Round& x) { return x.latency.p99; }));
    };
    auto failed = [&](const std::vector<Round>& rounds) {
      if (rounds.empty()) return std::string("-");
      std::uint64_t total = 0;
      for (const auto& x : rounds) total += failures(x);
      return std::to_string(total);
    };
    auto sideOr = [&](const std::string& text) { return m.has_side ? text : std::string("-"); };
    auto conOr = [&](const std::string& text) { return m.has_contract ? text : std::string("-"); };
    auto bothOr = [&](const std::string& text) { return m.has_side && m.has_contract ? text : std::string("-"); };
    d << "| " << row.variant << " | " << row.n << " | " << fmtRate(m.raw_rate) << " | "
      << sideOr(fmtRate(m.side_rate)) << " | " << conOr(fmtRate(m.con_rate)) << " | " << fmtRate(m.cs_rate)
      << " | " << fmt(m.ratio(), 2) << "x | " << sideOr(fmt(m.sideRatio(), 2) + "x") << " | "
      << bothOr(fmt(m.contractOfSide(), 2) + "x") << " | " << conOr(fmt(m.csOfContract(), 2) + "x") << " | "
      << sideOr(fmt(m.csOfSide(), 2) + "x") << " | " << latency(row.raw) << " | " << latency(row.side) << " | "
      << latency(row.contract) << " | " << latency(row.cs) << " | " << sideOr(fmt(m.side_cpu, cpu_digits))
      << " / " << conOr(fmt(m.con_cpu, cpu_digits)) << " / " << fmt(m.cs_cpu, cpu_digits) << " | "
      << fmt(m.raw_server, cpu_digits) << " / " << sideOr(fmt(m.side_server, cpu_digits)) << " / "
      << conOr(fmt(m.con_server, cpu_digits)) << " / " << fmt(m.cs_server, cpu_digits) << " | "
      << sideOr(fmt(m.side_switches, 1)) << " / " << conOr(fmt(m.con_switches, 1)) << " / "
      << fmt(m.cs_switches, 1) << " | " << failed(row.raw) << " / " << failed(row.side) << " / "
      << failed(row.contract) << " / " << failed(row.cs) << " |\n";
    if (row.variant != "default") continue;
    summary.all_met = summary.all_met && m.ratio() >= 0.7;
    const std::string sep = summary.baseline.empty() ? "" : "; ";
    summary.baseline += sep + "N=" + std::to_string(row.n) + ": " + fmtRate(m.raw_rate);
    summary.cs += sep + "N=" + std::to_string(row.n) + ": " + fmtRate(m.cs_rate);
    summary.ratio += sep + fmt(m.ratio(), 2) + "x";
    summary.side_ratio += sep + sideOr(fmt(m.sideRatio(), 2) + "x");
    summary.own += sep + "N=" + std::to_string(row.n) + ": " + sideOr(fmt(m.csOfSide(), 2) + "x");
    summary.own_met = summary.own_met && m.has_side && m.csOfSide() >= 0.9;
    summary.has_side = summary.has_side || m.has_side;
    summary.price += sep + "N=" + std::to_string(row.n) + ": " + bothOr(fmt(m.contractOfSide(), 2) + "x");
    summary.own_code += sep + "N=" + std::to_string(row.n) + ": " + conOr(fmt(m.csOfContract(), 2) + "x");
    summary.own_code_met = summary.own_code_met && m.has_contract && m.csOfContract() >= 0.9;
    summary.has_contract = summary.has_contract || m.has_contract;
    report.plot.push_back({plot_label + " N=" + std::to_string(row.n), m.ratio(),
                           m.has_side ? std::optional<double>(m.sideRatio()) : std::nullopt, 0.7});
    if (m.has_side) {
      report.plot.push_back({plot_label + " N=" + std::to_string(row.n) + " / bare sidecar", m.csOfSide(),
                             std::nullopt, 0.9});
    }
    if (m.has_contract) {
      report.plot.push_back({plot_label + " N=" + std::to_string(row.n) + " / contract sidecar", m.csOfContract(),
                             std::nullopt, 0.9});
    }
  }
  return summary;
}

using RatePair = RoundPair<RateRound>;

// The contract sidecar's summary lines under `measure`: the contract's price (information) and
// countersign's own code measured against it.
void summarizeContract(Report& report, const std::string& measure, const RatioSummary& summary) {
  if (!summary.has_contract) return;
  report.summary.push_back({measure + ", the contract's price (contract sidecar / bare sidecar)", "bare sidecar",
                            "contract sidecar", summary.price, "(information)", std::nullopt, true});
  report.summary.push_back({measure + ", countersign's own code (countersign / contract sidecar)",
                            "contract sidecar", "countersign", summary.own_code, ">= 0.9x at each N",
                            summary.own_code_met});
}

struct HoldSetup {
  const std::vector<int>& levels;
  int rounds;
  std::chrono::milliseconds warmup;
  std::chrono::milliseconds window;
};

// A bare sidecar measured beside countersign: where its requests go, and its process.
struct SidecarTarget {
  std::string subject;
  pid_t pid = 0;
};

// Before each round of the ratio phases: until the server and the processes of the phase are
// quiet (at most 3 s), so that what one round left queued is not charged to the next.
constexpr auto kRoundQuietLimit = 3000ms;

// Holds through `cs` against raw KV creates (and, with `side` and `contract`, the bare and the
// contract sidecar's holds), in turn, for each N.
std::vector<RatePair> measureHold(Rig& rig, Connection& conn, kvStore* raw_kv, Countersign& cs,
                                  const std::string& variant, const HoldSetup& setup,
                                  const std::string& record_template, const SidecarTarget* side,
                                  const SidecarTarget* contract, double& quiet_s) {
  static int phase = 0;
  ++phase;
  std::vector<pid_t> pids{rig.server.pid(), cs.pid()};
  if (side != nullptr) pids.push_back(side->pid);
  if (contract != nullptr) pids.push_back(contract->pid);
  auto settle = [&] { quiet_s += waitQuiet(pids, "a hold round", kRoundQuietLimit, true); };
  std::vector<RatePair> rows;
  for (const int n : setup.levels) {
    RatePair row{variant, n, {}, {}, {}, {}};
    for (int r = 0; r < setup.rounds; ++r) {
      std::string prefix = "p";
      prefix += std::to_string(phase) + "n" + std::to_string(n) + "r" + std::to_string(r) + "-";
      const std::string tag = prefix.substr(0, prefix.size() - 1);
      settle();
      row.raw.push_back(threadsRound(
          n,
          [&](int, std::uint64_t i, std::string& error) {
            const std::string id = "raw-" + prefix + std::to_string(i);
            const std::string value = recordFor(record_template, id);
            std::uint64_t revision = 0;
            natsStatus s = kvStore_Create(&revision, raw_kv, id.c_str(), value.data(),
                                          static_cast<int>(value.size()));
            if (s != NATS_OK) error = natsText(s);
            return s == NATS_OK;
          },
          rig.server.pid(), setup.warmup, setup.window));
      auto held = [](const std::string& status) { return status == "approval_required"; };
      // A round of a sidecar (when it runs), after quiet; its ids start with `ids`.
      auto sidecarRound = [&](const SidecarTarget* target, const std::string& kind, const std::string& ids,
                              std::vector<RateRound>& into) {
        if (target == nullptr) return;
        settle();
        into.push_back(requestRound(
            conn, kind + tag, target->subject, n,
            [&](std::uint64_t i) { return holdPayload(ids + prefix + std::to_string(i)); }, held,
            target->pid, rig.server.pid(), setup.warmup, setup.window));
      };
      sidecarRound(side, "sidehold", "sc-", row.side);
      sidecarRound(contract, "conhold", "ct-", row.contract);
      settle();
      row.cs.push_back(requestRound(
          conn, "hold" + tag, kHoldSubject, n,
          [&](std::uint64_t i) { return holdPayload("cs-" + prefix + std::to_string(i)); }, held,
          cs.pid(), rig.server.pid(), setup.warmup, setup.window));
      note("hold (" + variant + ") N=" + std::to_string(n) + " round " + std::to_string(r + 1) +
           ": raw " + fmtRate(row.raw.back().rate) +
           (side != nullptr ? ", bare sidecar " + fmtRate(row.side.back().rate) : std::string()) +
           (contract != nullptr ? ", contract sidecar " + fmtRate(row.contract.back().rate) : std::string()) +
           ", countersign " + fmtRate(row.cs.back().rate));
      if (side != nullptr && row.side.back().failed > 0)
        note("  bare sidecar failures, first: " + row.side.back().first_failure);
      if (contract != nullptr && row.contract.back().failed > 0)
        note("  contract sidecar failures, first: " + row.contract.back().first_failure);
      if (row.cs.back().failed > 0)
        note("  countersign failures, first: " + row.cs.back().first_failure);
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

// Request-reply through a bare responder, with or without send_asap on the responder's
// connection: what a reply published on a connection like countersign's intake costs.
Percentiles echoLatency(const std::string& url, bool send_asap, int count) {
  Connection responder(url, "bench-echo", send_asap);
  Subscription sub(responder, "bench.echo", [&](natsMsg* msg) {
    if (const char* reply = natsMsg_GetReply(msg))
      natsConnection_Publish(responder.raw(), reply, "ok", 2);
  });
  Connection requester(url, "bench-echo-client", true);
  std::vector<std::int64_t> samples;
  for (int i = 0; i < count; ++i) {
    natsMsg* reply = nullptr;
    const std::int64_t t0 = nowNs();
    if (natsConnection_RequestString(&reply, requester.raw(), "bench.echo", "x", 5000) == NATS_OK) {
      samples.push_back(nowNs() - t0);
    }
    natsMsg_Destroy(reply);
  }
  return percentiles(samples);
}

// "0.45x = 0.80 x 0.70 x 0.80": how a ratio to raw splits into the sidecar position's, the
// contract's and countersign's own factors (without a contract sidecar: the first and the rest).
std::string splitText(const RatioRow& m) {
  if (!m.has_contract) return fmt(m.ratio(), 2) + "x = " + fmt(m.sideRatio(), 2) + " x " + fmt(m.csOfSide(), 2);
  return fmt(m.ratio(), 2) + "x = " + fmt(m.sideRatio(), 2) + " x " + fmt(m.contractOfSide(), 2) + " x " +
         fmt(m.csOfContract(), 2);
}

// The words that differ between the hold and the approve paragraphs.
struct SplitWords {
  std::string_view op;        // "hold", "approval"
  std::string_view raw_op;    // what raw does once: "bare create", "bare sequence"
  std::string_view position;  // what the sidecar position costs
  std::string_view adds;      // what countersign adds, in brackets
  std::string_view contract;  // what the contract sidecar adds to the bare one
};

// One paragraph per N: which part of the gap is the sidecar position, which the contract's
// messages and signatures, and which countersign's own code, from the run's own numbers.
// `estimate` (N=1 only) is a sentence computed by the caller.
void writeSplit(std::ostream& d, int n, const RatioRow& m, const SplitWords& w, const std::string& estimate) {
  d << "N=" << n << ": the thinnest cnats sidecar reaches " << fmt(m.sideRatio(), 2) << "x of raw; ";
  if (m.has_contract) {
    d << "the contract sidecar " << fmt(m.contractOfSide(), 2) << "x of the bare sidecar; countersign "
      << fmt(m.csOfContract(), 2) << "x of the contract sidecar and " << fmt(m.csOfSide(), 2)
      << "x of the bare one (";
  } else {
    d << "countersign reaches " << fmt(m.csOfSide(), 2) << "x of the sidecar (";
  }
  d << splitText(m) << "). The sidecar's factor is the position, NATS's cost: " << w.position << ". ";
  if (n == 1) d << estimate;
  if (m.has_contract) {
    d << "The contract's factor is its price (" << w.contract << "): the contract sidecar spends "
      << fmt(m.con_cpu, 0) << " µs of CPU per " << w.op << " against the bare sidecar's " << fmt(m.side_cpu, 0)
      << " µs, and the server " << fmt(m.con_server, 0) << " µs against " << fmt(m.side_server, 0)
      << " µs. countersign's factor is its own code: it spends " << fmt(m.cs_cpu, 0) << " µs of CPU per " << w.op
      << " against the contract sidecar's " << fmt(m.con_cpu, 0) << " µs, and the server spends "
      << fmt(m.cs_server, 0) << " µs per " << w.op << " for it against " << fmt(m.con_server, 0)
      << " µs for the contract sidecar and " << fmt(m.raw_server, 0) << " µs per " << w.raw_op << ".\n\n";
    return;
  }
  d << "countersign's factor is its own work: it spends " << fmt(m.cs_cpu, 0) << " µs of CPU per "
    << w.op << " against the sidecar's " << fmt(m.side_cpu, 0) << " µs, and the server spends "
    << fmt(m.cs_server, 0) << " µs per " << w.op << " for it against " << fmt(m.side_server, 0)
    << " µs for the sidecar and " << fmt(m.raw_server, 0) << " µs per " << w.raw_op << " (" << w.adds
    << ").\n\n";
}

void holdRate(Rig& rig, std::unique_ptr<Countersign>& cs) {
  const bool quick = rig.settings.quick;
  const std::vector<int> levels = quick ? std::vector<int>{16} : std::vector<int>{1, 16};
  const HoldSetup setup{levels, quick ? 1 : 2, 300ms, quick ? 1500ms : 2500ms};
  Connection conn(rig.server.url, "bench-hold", true);
  kvStore* raw_kv = openBucket(conn, "bench_raw_hold");
  // The value a bare client writes: the record countersign stores for the same job.
  const std::string record_template = heldRecordJson(kIdPlaceholder, rig.snapshot);
  // The bare sidecar stores the same record into a bucket of its own with the same settings.
  kvStore_Destroy(openBucket(conn, "bench_side_hold"));
  auto sidecar = startSidecar(rig.dir.path() / "sidecar-hold", rig.server.url, "hold",
                              "sidecar.jobs.>", "bench_side_hold");
  const SidecarTarget side{"sidecar.jobs.finance.payment.execute", sidecar->pid()};
  // The contract sidecar: a fourth bucket, its own audit stream.
  kvStore_Destroy(openBucket(conn, "bench_contract_hold"));
  auto contract_sidecar = startSidecar(rig.dir.path() / "contract-sidecar-hold", rig.server.url, "hold",
                                       "contract.jobs.>", "bench_contract_hold", 0, true);
  const SidecarTarget contract{"contract.jobs.finance.payment.execute", contract_sidecar->pid()};
  double quiet_s = 0;

  std::vector<RatePair> rows =
      measureHold(rig, conn, raw_kv, *cs, "default", setup, record_template, &side, &contract, quiet_s);
  sidecar->stop();
  contract_sidecar->stop();
  // The same at N=1 on a connection without send_asap, as countersign's intake connection is.
  Connection no_asap(rig.server.url, "bench-hold-flusher", false);
  kvStore* flusher_kv = openBucket(no_asap, "bench_raw_hold");
  std::vector<RateRound> flusher_rounds;
  for (int r = 0; r < setup.rounds; ++r) {
    flusher_rounds.push_back(threadsRound(
        1,
        [&](int, std::uint64_t i, std::string& error) {
          const std::string id = "rawflush-r" + std::to_string(r) + "-" + std::to_string(i);
          const std::string value = recordFor(record_template, id);
          std::uint64_t revision = 0;
          natsStatus s = kvStore_Create(&revision, flusher_kv, id.c_str(), value.data(),
                                        static_cast<int>(value.size()));
          if (s != NATS_OK) error = natsText(s);
          return s == NATS_OK;
        },
        rig.server.pid(), setup.warmup, setup.window));
  }
  kvStore_Destroy(flusher_kv);
  note("hold: raw N=1 without send_asap: " +
       fmtRate(medianOf(flusher_rounds, [](const RateRound& x) { return x.rate; })));
  const int echoes = quick ? 300 : 1000;
  const Percentiles echo_default = echoLatency(rig.server.url, false, echoes);
  const Percentiles echo_asap = echoLatency(rig.server.url, true, echoes);
  note("hold: bare responder p50 without send_asap " + fmtUs(echo_default.p50) + ", with " +
       fmtUs(echo_asap.p50));

  // Again without the audit stream (a fresh countersign on a fresh bucket; the two must not run
  // at the same time: they share the intake queue group).
  cs->process->stop();
  if (!defaultOnly()) {
    cs = Countersign::start(
        rig.dir.path() / "cs-hold-audit-off",
        {.url = rig.server.url, .bucket = "cs_hold_audit_off", .extra_yaml = kAuditOff});
    auto audit_off_rows =
        measureHold(rig, conn, raw_kv, *cs, "audit off", setup, record_template, nullptr, nullptr, quiet_s);
    rows.insert(rows.end(), audit_off_rows.begin(), audit_off_rows.end());
    deleteBucket(conn, "cs_hold_audit_off");
  }
  kvStore_Destroy(raw_kv);
  deleteBucket(conn, "bench_raw_hold");
  deleteBucket(conn, "bench_side_hold");
  deleteBucket(conn, "bench_contract_hold");
  note("hold: waited " + fmt(quiet_s, 1) + " s in all for quiet between rounds");

  auto& d = rig.report.details;
  d << "### 3. Hold rate\n\n"
    << "countersign: requests with a reply subject to `agents.jobs.finance.payment.execute` (seed "
       "rule `require-approval-prod-finance`, 256 B JSON with a unique `id`), N requests in flight "
       "on one connection; a hold = a `202 approval_required` reply (KV create of the record, sent "
       "without waiting on the control connection, then on its PubAck the `held` event and the "
       "reply). Raw: N threads on one connection (send_asap) looping `kvStore_Create` of the same "
       "record JSON (~"
    << record_template.size()
    << " B) into another bucket with the same settings. Bare sidecar (`bench_system sidecar`, "
       "its own process): the same requests to `sidecar.jobs.>`, taken on its subscription's "
       "delivery thread, which publishes the same record as a KV create (header "
       "`Nats-Expected-Last-Subject-Sequence: 0`) on a send_asap connection into a third bucket "
       "without waiting, its reply subject on an inbox of its own; the handler of that inbox's "
       "subscription takes the PubAck and sends the `202` reply (as countersign does it: no cnats "
       "asynchronous publish, every message freed in place rather than by cnats' collector "
       "thread); nothing else (no policy, hash, event, audit, replayer). Contract sidecar (`bench_system sidecar ... contract`, a fourth bucket): the bare "
       "sidecar plus what the contract requires of a hold, made with countersign's own event sink "
       "and key: on the PubAck, a `held` event of countersign's shape (chained, `Nats-Msg-Id`, "
       "Ed25519 signature headers) published (core) into an audit stream configured as countersign's "
       "(prefix `benchcontract`, stream `BENCH_CONTRACT_AUDIT`), then the `202`. Rate over a "
    << setup.window.count() << " ms window after " << setup.warmup.count() << " ms warm-up, "
    << setup.rounds
    << " round(s) of raw, bare sidecar, contract sidecar and countersign in turn, each after the server and the "
       "processes are quiet (at most "
    << std::chrono::duration_cast<std::chrono::seconds>(kRoundQuietLimit).count()
    << " s), median. Latency is per request (sidecar, countersign) / per create (raw). CPU per "
       "hold of the sidecars and of countersign from /proc/<pid>/stat. `default` is countersign as "
       "configured; `audit off` is a fresh countersign with `audit.enabled: false` (no stream "
       "stores the `held` events), to show what the audit trail costs the server.\n\n";
  const RatioSummary summary = writeRatioRows(
      d, rig.report, "hold", rows, {"KV creates/s", "holds/s", "hold"},
      [](const RateRound& x) { return x.failed; }, 1);
  d << "\n";
  // Which part of the gap is the sidecar position and which is countersign's own work, from this
  // run's own numbers.
  const SplitWords words{"hold", "bare create",
                         "the request and the reply through the server, cnats' delivery and PubAck threads",
                         "the sidecar adds the request and the reply through the server; countersign adds "
                         "the `held` event stored in the audit stream, see the `audit off` rows",
                         "one signed `held` event per hold, a core publish the audit stream stores"};
  for (const auto& row : rows) {
    if (row.variant != "default" || row.side.empty()) continue;
    const RatioRow m = ratioRow(row);
    const double floor_us = m.raw_p50 + echo_asap.p50;
    writeSplit(d, row.n, m, words,
               "A bare responder (p50 " + fmtUs(echo_asap.p50) + ") plus a bare create (p50 " +
                   fmtUs(m.raw_p50) + ") predict about " + fmt(m.raw_p50 / floor_us, 2) + "x for it at N=1. ");
  }
  d << "Send_asap: a bare request-reply responder answers in p50 " << fmtUs(echo_default.p50)
    << " / p99 " << fmtUs(echo_default.p99) << " on a connection without send_asap and in p50 "
    << fmtUs(echo_asap.p50) << " / p99 " << fmtUs(echo_asap.p99) << " with it (" << echoes
    << " requests each; cnats' flusher holds buffered publishes up to 1 ms, which is why "
       "countersign and the bare sidecar send answers and KV creates on a send_asap connection); "
       "raw KV creates at N=1 without send_asap ran at "
    << fmtRate(medianOf(flusher_rounds, [](const RateRound& x) { return x.rate; })) << " (p50 "
    << fmtUs(medianOf(flusher_rounds, [](const RateRound& x) { return x.latency.p50; }))
    << ").\n\n";
  rig.report.summary.push_back(
      {"3. hold rate (held/s vs KV creates/s; bare sidecar / raw in "
       "brackets)",
       summary.baseline, summary.cs, summary.ratio + " (bare sidecar " + summary.side_ratio + ")",
       ">= 0.7x at each N", summary.all_met});
  if (summary.has_side) {
    rig.report.summary.push_back({"3. hold rate, countersign's own work (countersign / bare sidecar)",
                                  "bare sidecar", "countersign", summary.own, ">= 0.9x at each N",
                                  summary.own_met});
  }
  summarizeContract(rig.report, "3. hold rate", summary);
}

// ---- 4. approve to release ------------------------------------------------------------------

// Tracks approvals in flight: done when both the reply (or the bare sequence) and the worker's
// receipt of the released job are in.
class ApprovalTracker {
 public:
  void start(const std::string& id, std::int64_t at) {
    std::lock_guard lock(mutex_);
    entries_[id].started = at;
  }
  void released(const std::string& id, std::int64_t at) {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(id);
    if (it == entries_.end()) return;
    it->second.released = at;
    finishIfDone(it);
  }
  void answered(const std::string& id, bool ok, const std::string& failure) {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(id);
    if (it == entries_.end()) return;
    it->second.answered = true;
    if (!ok) {
      if (failures_++ == 0) first_failure_ = failure;
      entries_.erase(it);
      cv_.notify_all();
      return;
    }
    finishIfDone(it);
  }
  // Waits until `id` is done (worker got it and it was answered); false on timeout.
  bool waitDone(const std::string& id, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [&] { return !entries_.contains(id); });
  }
  void waitBelow(std::size_t n) {
    std::unique_lock lock(mutex_);
    cv_.wait_for(lock, 30s, [&] { return entries_.size() < n; });
  }
  void setWindow(std::int64_t from, std::int64_t to) {
    std::lock_guard lock(mutex_);
    from_ = from;
    to_ = to;
  }
  std::uint64_t doneInWindow() const {
    std::lock_guard lock(mutex_);
    return done_in_window_;
  }
  std::vector<std::int64_t> latencies() const {
    std::lock_guard lock(mutex_);
    return latencies_;
  }
  std::uint64_t failures() const {
    std::lock_guard lock(mutex_);
    return failures_ + entries_.size();
  }
  std::string firstFailure() const {
    std::lock_guard lock(mutex_);
    return first_failure_;
  }

 private:
  struct Entry {
    std::int64_t started = 0;
    std::int64_t released = 0;
    bool answered = false;
  };
  void finishIfDone(std::unordered_map<std::string, Entry>::iterator it) {
    if (!it->second.answered || it->second.released == 0) return;
    const Entry& e = it->second;
    if (e.released >= from_ && e.released < to_) {
      ++done_in_window_;
      if (e.started >= from_) latencies_.push_back(e.released - e.started);
    }
    entries_.erase(it);
    cv_.notify_all();
  }
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::unordered_map<std::string, Entry> entries_;
  std::int64_t from_ = INT64_MAX, to_ = INT64_MAX;
  std::uint64_t done_in_window_ = 0;
  std::vector<std::int64_t> latencies_;
  std::uint64_t failures_ = 0;
  std::string first_failure_;
};

struct ApproveRound {
  double rate = 0;
  Percentiles latency;
  std::uint64_t failures = 0;
  std::string first_failure;
  std::size_t used = 0;  // ids consumed
  double proc_cpu_us = 0;
  double server_cpu_us = 0;
  double proc_switches = 0;  // context switches per approval of countersign / the bare sidecar
};

const std::string kApproveSubject = "countersign.control.approve";

// countersign (or the bare sidecar, on its own `subject`): approve requests with `concurrency`
// in flight, ids taken in order from `ids`.
ApproveRound approveRound(Connection& conn, Worker& worker, const std::vector<std::string>& ids,
                          std::size_t& cursor, int concurrency, pid_t proc, pid_t server,
                          std::chrono::milliseconds warmup, std::chrono::milliseconds window,
                          bool warn_if_exhausted = true,
                          const std::string& subject = kApproveSubject,
                          const std::map<std::string, std::string>* bodies = nullptr) {
  ApprovalTracker tracker;
  worker.expectApprovals([&](const std::string& id, std::int64_t at) { tracker.released(id, at); });
  static std::atomic<int> round_counter{0};
  const std::string inbox =
      "_INBOX.bench.approve" + std::to_string(round_counter.fetch_add(1)) + ".";
  Subscription replies(conn, inbox + "*", [&](natsMsg* msg) {
    const std::string id = natsMsg_GetSubject(msg) + inbox.size();
    const char* status = nullptr;
    natsMsgHeader_Get(msg, "Countersign-Status", &status);
    const std::string body(natsMsg_GetData(msg) != nullptr ? natsMsg_GetData(msg) : "",
                           static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
    const bool ok = status != nullptr && std::string(status) == "approved" &&
                    body.find("\"code\":200") != std::string::npos;
    tracker.answered(id, ok, body);
  });
  const std::int64_t from =
      nowNs() + std::chrono::duration_cast<std::chrono::nanoseconds>(warmup).count();
  const std::int64_t to =
      from + std::chrono::duration_cast<std::chrono::nanoseconds>(window).count();
  tracker.setWindow(from, to);
  const std::size_t first = cursor;
  double p0 = 0, s0 = 0, w0 = 0;
  bool sampled = false;
  while (cursor < ids.size()) {
    tracker.waitBelow(static_cast<std::size_t>(concurrency));
    const std::int64_t now = nowNs();
    if (!sampled && now >= from) {
      p0 = cpuSeconds(proc);
      s0 = cpuSeconds(server);
      w0 = contextSwitches(proc);
      sampled = true;
    }
    if (now >= to) break;
    const std::string& id = ids[cursor++];
    tracker.start(id, now);
    const std::string body = bodies != nullptr ? bodies->at(id)
                                               : R"({"id":")" + id + R"(","approver":"bench","reason":"benchmark"})";
    auto msg = makeMsg(subject, (inbox + id).c_str(), body, {});
    check(natsConnection_PublishMsg(conn.raw(), msg.get()), "approve request");
  }
  const double p1 = cpuSeconds(proc), s1 = cpuSeconds(server);
  const double w1 = contextSwitches(proc);
  tracker.waitBelow(1);
  worker.countOnly();
  ApproveRound round;
  const double seconds = static_cast<double>(std::min(nowNs(), to) - from) / 1e9;
  const double n = static_cast<double>(tracker.doneInWindow());
  round.rate = seconds > 0 ? n / seconds : 0;
  round.latency = percentiles(tracker.latencies());
  round.failures = tracker.failures();
  round.first_failure = tracker.firstFailure();
  round.used = cursor - first;
  round.proc_cpu_us = n > 0 ? (p1 - p0) * 1e6 / n : 0;
  round.server_cpu_us = n > 0 ? (s1 - s0) * 1e6 / n : 0;
  round.proc_switches = n > 0 ? (w1 - w0) / n : 0;
  if (warn_if_exhausted && cursor >= ids.size())
    note("approve: ran out of pending records; the window was cut short");
  return round;
}

// The bare client: KV get + KV create <id>/decision + JetStream publish (PubAck) + KV create
// <id>/released, `concurrency` threads; done when the worker has the job.
ApproveRound rawApproveRound(Connection& conn, kvStore* kv, Worker& worker,
                             const std::vector<std::string>& ids, std::size_t& cursor,
                             int concurrency, pid_t server, std::chrono::milliseconds warmup,
                             std::chrono::milliseconds window) {
  ApprovalTracker tracker;
  worker.expectApprovals([&](const std::string& id, std::int64_t at) { tracker.released(id, at); });
  const std::size_t first = cursor;
  const std::int64_t from =
      nowNs() + std::chrono::duration_cast<std::chrono::nanoseconds>(warmup).count();
  const std::int64_t to =
      from + std::chrono::duration_cast<std::chrono::nanoseconds>(window).count();
  tracker.setWindow(from, to);
  std::atomic<std::size_t> next{cursor};
  auto sequence = [&](const std::string& id, std::string& error) {
    return approveSequence(conn.js(), kv, id, error, {});
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < concurrency; ++t) {
    threads.emplace_back([&] {
      for (;;) {
        const std::size_t i = next.fetch_add(1);
        if (i >= ids.size()) break;
        const std::int64_t begin = nowNs();
        if (begin >= to) break;
        const std::string& id = ids[i];
        tracker.start(id, begin);
        std::string error;
        const bool ok = sequence(id, error);
        tracker.answered(id, ok, error);
        if (ok && !tracker.waitDone(id, 5s)) note("raw approve: the worker never got " + id);
      }
    });
  }
  std::this_thread::sleep_until(SteadyClock::time_point(std::chrono::nanoseconds(from)));
  const double c0 = cpuSeconds(::getpid()), s0 = cpuSeconds(server);
  std::this_thread::sleep_until(SteadyClock::time_point(std::chrono::nanoseconds(to)));
  const double c1 = cpuSeconds(::getpid()), s1 = cpuSeconds(server);
  for (auto& thread : threads) thread.join();
  worker.countOnly();
  cursor = std::min(next.load(), ids.size());
  ApproveRound round;
  const double n = static_cast<double>(tracker.doneInWindow());
  round.rate = n / (static_cast<double>(to - from) / 1e9);
  round.latency = percentiles(tracker.latencies());
  round.failures = tracker.failures();
  round.first_failure = tracker.firstFailure();
  round.used = cursor - first;
  round.proc_cpu_us = n > 0 ? (c1 - c0) * 1e6 / n : 0;
  round.server_cpu_us = n > 0 ? (s1 - s0) * 1e6 / n : 0;
  return round;
}

std::vector<std::string> makeIds(const std::string& prefix, std::size_t count) {
  std::vector<std::string> ids;
  ids.reserve(count);
  char buffer[32];
  for (std::size_t i = 0; i < count; ++i) {
    std::snprintf(buffer, sizeof buffer, "%08zu", i);
    ids.push_back(prefix + buffer);
  }
  return ids;
}

using ApprovePair = RoundPair<ApproveRound>;

// The first votes of 2-of-2 approvals (`vote_recorded`, no release): `concurrency` requests in
// flight over every id, timed from the first request to the last answer.
struct VoteStats {
  double rate = 0;
  double proc_cpu_us = 0;
  double server_cpu_us = 0;
  std::uint64_t failures = 0;
  std::size_t count = 0;
};

VoteStats firstVotes(Connection& conn, const std::vector<std::string>& ids, const std::string& approver,
                     int concurrency, pid_t proc, pid_t server) {
  std::mutex mutex;
  std::condition_variable cv;
  int in_flight = 0;
  std::uint64_t failures = 0;
  Subscription replies(conn, "_INBOX.bench.vote.*", [&](natsMsg* msg) {
    const std::string body(natsMsg_GetData(msg) != nullptr ? natsMsg_GetData(msg) : "",
                           static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
    std::lock_guard lock(mutex);
    if (body.find("\"vote_recorded\"") == std::string::npos) {
      if (failures++ == 0) note("first vote failed: " + body);
    }
    --in_flight;
    cv.notify_all();
  });
  const double c0 = cpuSeconds(proc), s0 = cpuSeconds(server);
  const auto started = SteadyClock::now();
  for (const auto& id : ids) {
    {
      std::unique_lock lock(mutex);
      cv.wait(lock, [&] { return in_flight < concurrency; });
      ++in_flight;
    }
    const std::string body = R"({"id":")" + id + R"(","approver":")" + approver + R"(","reason":"benchmark"})";
    auto msg = makeMsg(kApproveSubject, ("_INBOX.bench.vote." + id).c_str(), body, {});
    check(natsConnection_PublishMsg(conn.raw(), msg.get()), "vote request");
  }
  {
    std::unique_lock lock(mutex);
    cv.wait_for(lock, 60s, [&] { return in_flight == 0; });
  }
  const double seconds = std::chrono::duration<double>(SteadyClock::now() - started).count();
  const double c1 = cpuSeconds(proc), s1 = cpuSeconds(server);
  VoteStats stats;
  stats.count = ids.size();
  stats.failures = failures;
  const double n = static_cast<double>(ids.size());
  stats.rate = seconds > 0 ? n / seconds : 0;
  stats.proc_cpu_us = n > 0 ? (c1 - c0) * 1e6 / n : 0;
  stats.server_cpu_us = n > 0 ? (s1 - s0) * 1e6 / n : 0;
  return stats;
}

// Seeds fresh buckets, starts a countersign with `extra_yaml` (and, `with_sidecar`, a bare
// sidecar on a bucket of its own), and compares them with the bare sequence for each N (raw,
// sidecar, countersign in turn).
std::vector<ApprovePair> measureApprove(Rig& rig, Worker& worker, Connection& conn,
                                        const std::string& variant, const std::string& extra_yaml,
                                        const std::vector<int>& levels, int rounds,
                                        std::chrono::milliseconds warmup,
                                        std::chrono::milliseconds window, std::size_t per_bucket,
                                        bool with_sidecar, double& quiet_s,
                                        const countersign::nkeys::Seed* signer = nullptr,
                                        VoteStats* quorum_votes = nullptr) {
  static int phase = 0;
  ++phase;
  const std::string tag = std::to_string(phase);
  // 2-of-2 (quorum_votes set): fewer records, each voted once by alice before the rounds (timed
  // into *quorum_votes); bob's vote in the rounds decides and releases.
  const bool quorum = quorum_votes != nullptr;
  const std::string cs_snapshot = quorum ? quorumSnapshot() : rig.snapshot;
  auto cs_ids = makeIds("appr" + tag + "-", quorum ? std::min<std::size_t>(per_bucket, rig.settings.quick ? 3000 : 10000) : per_bucket);
  // The baselines run faster than countersign: half as many records again, so that none runs
  // out of pending records in its last round (the quick run's one round at N=1 needs no more).
  const std::size_t baseline_count = rig.settings.quick ? per_bucket : per_bucket + per_bucket / 2;
  const auto raw_ids = makeIds("rawappr" + tag + "-", baseline_count);
  const auto side_ids = makeIds("sideappr" + tag + "-", with_sidecar ? baseline_count : 0);
  const auto contract_ids = makeIds("conappr" + tag + "-", with_sidecar ? baseline_count : 0);
  const std::string cs_bucket = "cs_approve_" + tag;
  const std::string raw_bucket = "bench_raw_approve_" + tag;
  const std::string side_bucket = "bench_side_approve_" + tag;
  const std::string contract_bucket = "bench_contract_approve_" + tag;
  note("approve (" + variant + "): seeding " + std::to_string(cs_ids.size()) + " held records (" +
       std::to_string(baseline_count) + " in each baseline's bucket)");
  seedRecords(conn, cs_bucket, cs_ids, cs_snapshot, quorum ? 2 : 1);
  seedRecords(conn, raw_bucket, raw_ids, rig.snapshot);
  std::unique_ptr<Child> sidecar, contract_sidecar;
  const std::string side_subject = "sidecar.control.approve";
  const std::string contract_subject = "contract.control.approve";
  if (with_sidecar) {
    seedRecords(conn, side_bucket, side_ids, rig.snapshot);
    seedRecords(conn, contract_bucket, contract_ids, rig.snapshot);
    // concurrency.control (8) queue subscribers, like countersign's.
    sidecar = startSidecar(rig.dir.path() / ("sidecar-approve-" + tag), rig.server.url, "approve",
                           side_subject, side_bucket, 8);
    contract_sidecar = startSidecar(rig.dir.path() / ("contract-sidecar-approve-" + tag), rig.server.url,
                                    "approve", contract_subject, contract_bucket, 8, true);
  }
  // Signed requests are made before the rounds (the client's signing is not what is measured):
  // the same fields a reviewer signs, over the seeded records' hash and snapshot.
  std::map<std::string, std::string> signed_bodies;
  if (signer != nullptr) {
    const std::string key = countersign::nkeys::encodePublicKey(countersign::nkeys::publicKeyOf(*signer));
    const std::string at = countersign::formatRfc3339(std::chrono::system_clock::now());
    for (const auto& id : cs_ids) {
      auto record = countersign::parseApprovalRecord(heldRecordJson(id, rig.snapshot));
      const std::string fields = R"("action":"approve","approver":"bench","at":")" + at + R"(","id":")" + id +
                                 R"(","job_hash":")" + record->job_hash + R"(","key":")" + key +
                                 R"(","policy_snapshot":")" + rig.snapshot + R"(","reason":"benchmark")";
      signed_bodies[id] = "{" + fields + R"(,"signature":")" +
                          countersign::nkeys::base64UrlEncode(countersign::nkeys::sign(*signer, "{" + fields + "}")) +
                          "\"}";
    }
  }
  kvStore* raw_kv = openBucket(conn, raw_bucket);
  auto cs = Countersign::start(
      rig.dir.path() / ("cs-approve-" + tag),
      {.url = rig.server.url, .bucket = cs_bucket, .to_stream = "JOBS", .extra_yaml = extra_yaml,
       .policy_text = quorum ? quorumPolicyText() : std::string()});
  std::map<std::string, std::string> deciding_bodies;
  if (quorum) {
    *quorum_votes = firstVotes(conn, cs_ids, "alice", 8, cs->pid(), rig.server.pid());
    note("approve (" + variant + "): " + std::to_string(cs_ids.size()) + " first votes at " +
         fmtRate(quorum_votes->rate) + ", " + std::to_string(quorum_votes->failures) + " failed");
    for (const auto& id : cs_ids) deciding_bodies[id] = R"({"id":")" + id + R"(","approver":"bob","reason":"benchmark"})";
  }
  std::vector<pid_t> pids{rig.server.pid(), cs->pid()};
  if (sidecar) pids.push_back(sidecar->pid());
  if (contract_sidecar) pids.push_back(contract_sidecar->pid());
  auto settle = [&] { quiet_s += waitQuiet(pids, "an approve round", kRoundQuietLimit, true); };
  std::size_t cs_cursor = 0, raw_cursor = 0, side_cursor = 0, contract_cursor = 0;
  std::vector<ApprovePair> rows;
  for (const int n : levels) {
    ApprovePair row{variant, n, {}, {}, {}, {}};
    for (int r = 0; r < rounds; ++r) {
      settle();
      row.raw.push_back(rawApproveRound(conn, raw_kv, worker, raw_ids, raw_cursor, n,
                                        rig.server.pid(), warmup, window));
      if (sidecar) {
        settle();
        row.side.push_back(approveRound(conn, worker, side_ids, side_cursor, n, sidecar->pid(),
                                        rig.server.pid(), warmup, window, true, side_subject));
      }
      if (contract_sidecar) {
        settle();
        row.contract.push_back(approveRound(conn, worker, contract_ids, contract_cursor, n,
                                            contract_sidecar->pid(), rig.server.pid(), warmup, window, true,
                                            contract_subject));
      }
      settle();
      row.cs.push_back(approveRound(conn, worker, cs_ids, cs_cursor, n, cs->pid(), rig.server.pid(),
                                    warmup, window, true, kApproveSubject,
                                    signer != nullptr ? &signed_bodies
                                    : quorum          ? &deciding_bodies
                                                      : nullptr));
      note("approve (" + variant + ") N=" + std::to_string(n) + " round " + std::to_string(r + 1) +
           ": raw " + fmtRate(row.raw.back().rate) + " p99 " + fmtUs(row.raw.back().latency.p99) +
           (sidecar ? ", bare sidecar " + fmtRate(row.side.back().rate) + " p99 " +
                          fmtUs(row.side.back().latency.p99)
                    : std::string()) +
           (contract_sidecar ? ", contract sidecar " + fmtRate(row.contract.back().rate) + " p99 " +
                                   fmtUs(row.contract.back().latency.p99)
                             : std::string()) +
           ", countersign " + fmtRate(row.cs.back().rate) + " p99 " +
           fmtUs(row.cs.back().latency.p99));
      if (row.cs.back().failures > 0)
        note("  countersign failures, first: " + row.cs.back().first_failure);
      if (sidecar && row.side.back().failures > 0)
        note("  bare sidecar failures, first: " + row.side.back().first_failure);
      if (contract_sidecar && row.contract.back().failures > 0)
        note("  contract sidecar failures, first: " + row.contract.back().first_failure);
      if (row.raw.back().failures > 0)
        note("  raw failures, first: " + row.raw.back().first_failure);
    }
    rows.push_back(std::move(row));
  }
  cs->process->stop();
  if (sidecar) sidecar->stop();
  if (contract_sidecar) contract_sidecar->stop();
  kvStore_Destroy(raw_kv);
  deleteBucket(conn, cs_bucket);
  deleteBucket(conn, raw_bucket);
  if (with_sidecar) {
    deleteBucket(conn, side_bucket);
    deleteBucket(conn, contract_bucket);
  }
  return rows;
}

void approveToRelease(Rig& rig, Worker& worker) {
  const bool quick = rig.settings.quick;
  const std::vector<int> levels = quick ? std::vector<int>{1} : std::vector<int>{1, 8};
  const int rounds = quick ? 1 : 2;
  const auto warmup = 300ms;
  const auto window = quick ? 1500ms : 2500ms;
  const std::size_t per_bucket = quick ? 6000 : 20000;
  Connection conn(rig.server.url, "bench-approver", true);
  double quiet_s = 0;
  auto rows = measureApprove(rig, worker, conn, "default", "", levels, rounds, warmup, window,
                             per_bucket, true, quiet_s);
  VoteStats votes;
  // BENCH_DEFAULT_ONLY=1: only the `default` rows (quicker before/after pairs).
  if (!defaultOnly()) {
    auto idle_rows = measureApprove(rig, worker, conn, "replayer idle", kReplayerIdle, levels, rounds,
                                    warmup, window, per_bucket, false, quiet_s);
    rows.insert(rows.end(), idle_rows.begin(), idle_rows.end());
    auto audit_off_rows = measureApprove(rig, worker, conn, "audit off", kAuditOff, levels, rounds,
                                         warmup, window, per_bucket, false, quiet_s);
    rows.insert(rows.end(), audit_off_rows.begin(), audit_off_rows.end());
    // Signed 1-of-1 approvals: an approver registry that requires signatures, each request signed
    // with the bench approver's nkey. Compared with `default` (unsigned, open mode) in this run.
    const countersign::nkeys::Seed bench_seed = countersign::nkeys::generateSeed();
    const std::string registry = "approvers:\n  require_signature: true\n  people:\n    - name: bench\n      keys: [\"" +
                                 countersign::nkeys::encodePublicKey(countersign::nkeys::publicKeyOf(bench_seed)) +
                                 "\"]\n";
    auto signed_rows = measureApprove(rig, worker, conn, "signed", registry, levels, rounds, warmup, window,
                                      per_bucket, false, quiet_s, &bench_seed);
    for (const auto& row : signed_rows) {
      for (const auto& base : rows) {
        if (base.variant != "default" || base.n != row.n) continue;
        const double signed_rate = medianOf(row.cs, [](const ApproveRound& x) { return x.rate; });
        const double unsigned_rate = medianOf(base.cs, [](const ApproveRound& x) { return x.rate; });
        note("approve signed vs unsigned N=" + std::to_string(row.n) + ": " + fmtRate(signed_rate) + " / " +
             fmtRate(unsigned_rate) + " = " + fmt(unsigned_rate > 0 ? signed_rate / unsigned_rate : 0, 2) + "x");
      }
    }
    rows.insert(rows.end(), signed_rows.begin(), signed_rows.end());
    // 2-of-2: a registry of two people (no signatures), the finance rule with quorum: 2.
    const std::string pair_registry =
        "approvers:\n  people:\n    - name: alice\n      groups: [finance-leads]\n"
        "    - name: bob\n      groups: [finance-leads]\n";
    auto quorum_rows = measureApprove(rig, worker, conn, "2-of-2", pair_registry, levels, rounds, warmup, window,
                                      per_bucket, false, quiet_s, nullptr, &votes);
    rows.insert(rows.end(), quorum_rows.begin(), quorum_rows.end());
  }
  // Governance against the unsigned 1-of-1 path of this run (`default`), per N.
  std::string gov_base, gov_signed, gov_quorum, gov_ratio;
  std::ostringstream gov;
  gov << "| N in flight | unsigned 1-of-1 approvals/s | signed 1-of-1 | ratio | CPU µs/approval unsigned / signed | "
         "2-of-2: deciding votes/s | 2-of-2 approvals/s (first vote + deciding vote) | ratio | CPU µs/approval 2-of-2 (both votes) |\n"
      << "|---|---|---|---|---|---|---|---|---|\n";
  for (const int n : levels) {
    auto find = [&](const std::string& variant) -> const ApprovePair* {
      for (const auto& row : rows)
        if (row.variant == variant && row.n == n) return &row;
      return nullptr;
    };
    const ApprovePair* base = find("default");
    const ApprovePair* sig = find("signed");
    const ApprovePair* quo = find("2-of-2");
    if (base == nullptr || sig == nullptr || quo == nullptr) continue;
    auto rate = [](const ApprovePair& row) { return medianOf(row.cs, [](const ApproveRound& x) { return x.rate; }); };
    auto cpu = [](const ApprovePair& row) { return medianOf(row.cs, [](const ApproveRound& x) { return x.proc_cpu_us; }); };
    const double base_rate = rate(*base), sig_rate = rate(*sig), deciding = rate(*quo);
    // One 2-of-2 approval is a first vote (measured at 8 in flight) and a deciding vote.
    const double pair_rate = votes.rate > 0 && deciding > 0 ? 1 / (1 / votes.rate + 1 / deciding) : 0;
    const double sig_ratio = base_rate > 0 ? sig_rate / base_rate : 0;
    const double pair_ratio = base_rate > 0 ? pair_rate / base_rate : 0;
    gov << "| " << n << " | " << fmtRate(base_rate) << " | " << fmtRate(sig_rate) << " | " << fmt(sig_ratio, 2)
        << "x | " << fmt(cpu(*base), 0) << " / " << fmt(cpu(*sig), 0) << " | " << fmtRate(deciding) << " | "
        << fmtRate(pair_rate) << " | " << fmt(pair_ratio, 2) << "x | " << fmt(votes.proc_cpu_us + cpu(*quo), 0)
        << " |\n";
    const std::string sep = gov_base.empty() ? "" : "; ";
    gov_base += sep + "N=" + std::to_string(n) + ": " + fmtRate(base_rate);
    gov_signed += sep + "N=" + std::to_string(n) + ": " + fmtRate(sig_rate);
    gov_quorum += sep + "N=" + std::to_string(n) + ": " + fmtRate(pair_rate);
    gov_ratio += sep + "N=" + std::to_string(n) + ": signed " + fmt(sig_ratio, 2) + "x, 2-of-2 " + fmt(pair_ratio, 2) + "x";
    rig.report.plot.push_back({"signed / unsigned N=" + std::to_string(n), sig_ratio, std::nullopt, 0.9});
    rig.report.plot.push_back({"2-of-2 / 1-of-1 N=" + std::to_string(n), pair_ratio, std::nullopt, 0.5});
  }
  if (!gov_base.empty()) {
    rig.report.summary.push_back({"7. governance: signed 1-of-1 and 2-of-2 approvals against unsigned 1-of-1 "
                                  "(approvals/s)",
                                  gov_base, "signed " + gov_signed + "; 2-of-2 " + gov_quorum, gov_ratio,
                                  "(information: signed costs one verify, 2-of-2 a second request)",
                                  std::nullopt, true});
  }
  std::ostringstream gov_text;
  gov_text << "### 7. Governance paths\n\n"
           << "From the approve phase's `default` (unsigned 1-of-1, open mode), `signed` (registry with "
              "`require_signature: true`, every request Ed25519-signed by the bench approver) and `2-of-2` "
              "(registry of alice and bob, the finance rule with `quorum: 2`, records seeded under that policy's "
              "snapshot) rows of this run. A 2-of-2 approval is two requests: alice's first votes were cast "
              "before the rounds, 8 in flight, over "
           << votes.count << " records (" << fmtRate(votes.rate) << ", " << fmt(votes.proc_cpu_us, 0)
           << " µs of countersign CPU and " << fmt(votes.server_cpu_us, 0) << " µs of server CPU per vote, "
           << votes.failures
           << " failed); bob's deciding votes are the timed rounds (answer `approved` and the worker has the job). "
              "2-of-2 approvals/s = 1 / (1 / first-vote rate + 1 / deciding-vote rate).\n\n"
           << gov.str() << "\n";
  rig.report.details_after.push_back(gov_text.str());
  note("approve: waited " + fmt(quiet_s, 1) + " s in all for quiet between rounds");

  auto& d = rig.report.details;
  d << "### 4. Approve to release\n\n"
    << "countersign (route with `to_stream: JOBS`, stream JOBS on `jobs.>`, file storage) approves "
       "held records (written straight into a fresh bucket in the record format, "
    << per_bucket << " in countersign's bucket, " << (quick ? per_bucket : per_bucket + per_bucket / 2)
    << " in each baseline's): requests to `countersign.control.approve`, N in flight; an approval counts "
       "when its `200 approved` reply is in and the worker (core subscriber on `jobs.>`) has the "
       "released job. Latency = approve request sent -> worker receives the job. Raw: N threads "
       "running the bare sequence KV get + KV create `<id>/decision` + JetStream publish with the "
       "release headers (waits for the PubAck) + KV create `<id>/released` on another bucket with "
       "the same records; latency = start of the sequence -> worker receives the job. Bare "
       "sidecar (`bench_system sidecar`, its own process, a third bucket with the same records): "
       "8 queue subscribers on `sidecar.control.approve` (as countersign's `concurrency.control`), "
       "each on its own delivery thread and the send_asap connection, run the same sequence per "
       "request and answer `200` after the publish's PubAck, before `<id>/released`, as "
       "countersign does; requests and counting as for countersign. Contract sidecar (`bench_system "
       "sidecar ... contract`, a fourth bucket with the same records, `contract.control.approve`): the "
       "bare sidecar plus what the contract requires of an approval, made with countersign's own event "
       "sink, key and receipt builder: a signed `approved` event (core publish) after `<id>/decision`, "
       "the signed receipt (`Countersign-Receipt`, `Countersign-Receipt-Key`) on the released job, "
       "and after the `200` `<id>/released` and the record's view (an update on the revision read) "
       "sent together with one wait, then a signed `released` event that waits for the PubAck of an "
       "audit stream configured as countersign's. "
    << window.count() << " ms windows after " << warmup.count() << " ms warm-up, " << rounds
    << " round(s) of raw, bare sidecar, contract sidecar and countersign in turn, each after the server "
       "and the processes are quiet (at most "
    << std::chrono::duration_cast<std::chrono::seconds>(kRoundQuietLimit).count()
    << " s), median. `replayer idle`: a second countersign with `release.replay_interval: 3600s` "
       "on fresh buckets (its replayer reads no records during the window; the default one reads "
       "each freshly seeded record once, up to 2,000 a second, to learn its deadline). `audit "
       "off`: a third with `audit.enabled: false` (no audit stream, no event waits for a "
       "PubAck). `signed`: a fourth with an approver registry that requires signatures, every "
       "request signed (Ed25519 over its RFC 8785 form) with the bench approver's nkey before the "
       "rounds; the log line `approve signed vs unsigned` gives its rate over `default`'s.\n\n";
  const RatioSummary summary = writeRatioRows(
      d, rig.report, "approve", rows, {"approvals/s", "approvals/s", "approval"},
      [](const ApproveRound& x) { return x.failures; }, 0);
  d << "\ncountersign's approve path (src/core/control.cpp Control::approve, "
       "src/core/releaser.cpp Releaser::release, src/core/events.cpp EventSink::emit) waits for "
       "these server round trips before it answers: KV get of the record, KV create "
       "`<id>/decision`, JetStream publish of the job (PubAck; the `approved` audit event goes out "
       "before it without waiting); then, after the answer, KV create `<id>/released`, the KV "
       "update of the record's view and the `released` audit event (PubAck, which also confirms "
       "`approved`). The bare sidecar has the same 3 before the answer and 1 after it; the contract "
       "sidecar the same 3 before it and 2 after it (the two writes, then the event).\n\n";
  const Percentiles echo = echoLatency(rig.server.url, true, quick ? 300 : 1000);
  const SplitWords words{"approval", "bare sequence",
                         "the request and the reply through the server, the hand-over to cnats' delivery threads",
                         "countersign adds the audit events, the record's view and the key index's watcher",
                         "the signed `approved` event, the receipt's signature, the record's view written "
                         "with `<id>/released`, the signed `released` event and its PubAck"};
  for (const auto& row : rows) {
    if (row.variant != "default" || row.side.empty()) continue;
    const RatioRow m = ratioRow(row);
    writeSplit(d, row.n, m, words,
               "A bare request-reply responder (p50 " + fmtUs(echo.p50) + ") added to the bare sequence (p50 " +
                   fmtUs(m.raw_p50) + ") predicts about " + fmt(m.raw_p50 / (m.raw_p50 + echo.p50), 2) +
                   "x for it at N=1. ");
  }
  rig.report.summary.push_back(
      {"4. approve to release (approvals/s; bare sidecar / raw in "
       "brackets)",
       summary.baseline, summary.cs, summary.ratio + " (bare sidecar " + summary.side_ratio + ")",
       ">= 0.7x", summary.all_met});
  if (summary.has_side) {
    rig.report.summary.push_back({"4. approve to release, countersign's own work (countersign / bare sidecar)",
                                  "bare sidecar", "countersign", summary.own, ">= 0.9x at each N",
                                  summary.own_met});
  }
  summarizeContract(rig.report, "4. approve to release", summary);
}

// ---- 5. scale -------------------------------------------------------------------------------

// The bare client's approvals at one size (rawSequentialApprovals).
struct RawScaleRound {
  ApproveRound round;
  std::array<double, kApproveSteps + 1> step_p50_ns{};  // the steps, then the view update
};

// One of the bare client's rounds with extras (rawSequentialApprovals), named by what it adds.
struct BareVariantRound {
  std::string name;
  RawScaleRound result;
};

// The bare client's rounds each approve in their own part of the bucket (the scale phase).
constexpr std::size_t kBareRegions = 5;
// The name of the bare client's round that runs in the server state countersign's round finds.
constexpr const char* kBeforeCountersign = "+ view update, countersign up and idle, just before its approvals";

struct ScaleRow {
  std::size_t pending = 0;
  double seed_s = 0;
  double ready_ms = 0;
  std::optional<double> first_scan_ms;
  std::size_t failed_scans_at_start = 0;  // "replay scan failed" lines before the idle window
  std::size_t failed_scans_idle = 0;      // ... during the idle window
  long rss_ready_kb = 0;
  long rss_scanned_kb = 0;
  long rss_end_kb = 0;
  long rss_listed_kb = 0;  // after the `list` pages (the list index loaded)
  double idle_cs_cpu = 0;           // fraction of one core
  double idle_server_cpu = 0;       // fraction of one core
  std::string keys_as_countersign;  // kvStore_Keys with countersign's Timeout (30000)
  double keys_unbounded_ms = 0;     // kvStore_Keys with Timeout 0 (no deadline)
  double gets_per_second =
      0;  // sequential kvStore_Get of records (the first scan's per-record get)
  ApproveRound approve;
  // The bare client's approvals (get, create <id>/decision, publish, create <id>/released) of
  // other records of the same bucket, one at a time, with countersign stopped: what the server's
  // lookups and writes cost at this size, with nothing of countersign's.
  RawScaleRound raw;
  RawScaleRound raw_view;  // the same, each approval also rewriting the record (the view update)
  // What countersign asked of the server during its approvals, by kind (RequestCensus).
  std::map<std::string, std::size_t> census;
  std::map<std::string, std::size_t> raw_census;  // ... of the bare client's plain round
  // The bare client's rounds that add one of countersign's other requests (or its presence) at a
  // time, beyond `raw_view`, in the order they ran.
  std::vector<BareVariantRound> variants;
  double create_cpu_us = 0;          // nats-server CPU per create of a new key, no consumer
  double create_watched_cpu_us = 0;  // ... with a key watcher on the bucket
  double list_first_ms = 0;  // `list` of the first 100 pending, through countersign
  double list_next_ms = 0;   // median of the following pages (`after` the last id)
  std::size_t list_items = 0;  // items of the first page
  bool list_ok = false;
  std::string list_error;  // what the failed page answered
  // One page each, after the first ones: `after` the id in the middle of the bucket; with a
  // topic pattern every record matches; with one none matches (the whole index is walked).
  double list_deep_ms = -1;
  double list_filtered_ms = -1;
  double list_no_match_ms = -1;
  // Replayer scans during the idle window (countersign_replay_scans_total) and their wall time.
  double idle_scans = 0;
  double idle_scan_seconds = 0;
};

// One `list` page: its time in ms and its item count, or -1 (the error in `error`).
double listPage(Connection& conn, const std::string& body, std::size_t& items, std::string& error) {
  natsMsg* reply = nullptr;
  const auto started = SteadyClock::now();
  const natsStatus s = natsConnection_Request(&reply, conn.raw(), "countersign.control.list", body.data(),
                                              static_cast<int>(body.size()), 60000);
  const double ms = std::chrono::duration<double, std::milli>(SteadyClock::now() - started).count();
  std::string answer;
  if (s == NATS_OK) answer.assign(natsMsg_GetData(reply), static_cast<std::size_t>(natsMsg_GetDataLength(reply)));
  natsMsg_Destroy(reply);
  rapidjson::Document doc;
  doc.Parse(answer.data(), answer.size());
  if (s != NATS_OK || doc.HasParseError() || !doc.IsObject() || !doc.HasMember("items") || !doc["items"].IsArray()) {
    error = s != NATS_OK ? natsText(s) + " after " + fmt(ms, 0) + " ms" : answer.substr(0, 160);
    return -1;
  }
  items = doc["items"].Size();
  return ms;
}

// Pages through the pending records with countersign's `list` (100 per page, `after` the last
// id of the page before): the first page's time and the median of the next `pages - 1`.
void listPages(Connection& conn, ScaleRow& row, int pages) {
  std::string after;
  std::vector<double> next;
  row.list_ok = true;
  for (int page = 0; page < pages; ++page) {
    std::string body = R"({"state":"pending","limit":100)";
    if (!after.empty()) body += R"(,"after":")" + after + "\"";
    body += "}";
    natsMsg* reply = nullptr;
    const auto started = SteadyClock::now();
    const natsStatus s = natsConnection_Request(&reply, conn.raw(), "countersign.control.list",
                                                body.data(), static_cast<int>(body.size()), 60000);
    const double ms = std::chrono::duration<double, std::milli>(SteadyClock::now() - started).count();
    rapidjson::Document doc;
    std::string answer;
    if (s == NATS_OK) {
      answer.assign(natsMsg_GetData(reply), static_cast<std::size_t>(natsMsg_GetDataLength(reply)));
      doc.Parse(answer.data(), answer.size());
    }
    natsMsg_Destroy(reply);
    if (s != NATS_OK || doc.HasParseError() || !doc.IsObject() || !doc.HasMember("items") ||
        !doc["items"].IsArray() || (page == 0 && doc["items"].Empty())) {
      row.list_ok = false;
      row.list_error = s != NATS_OK ? natsText(s) + " after " + fmt(ms, 0) + " ms" : answer.substr(0, 160);
      return;
    }
    if (doc["items"].Empty()) break;  // past the last pending record
    const auto& items = doc["items"];
    const auto& last = items[items.Size() - 1];
    if (!last.IsObject() || !last.HasMember("id") || !last["id"].IsString()) {
      row.list_ok = false;
      return;
    }
    after = last["id"].GetString();
    if (page == 0) {
      row.list_first_ms = ms;
      row.list_items = items.Size();
    } else {
      next.push_back(ms);
    }
  }
  row.list_next_ms = next.empty() ? 0 : median(next);
}

// One kvStore_Keys over the bucket from a bare client: "OK n ms" or the error.
std::string listKeys(Connection& conn, const std::string& bucket, std::int64_t timeout_ms,
                     double& elapsed_ms) {
  kvStore* kv = openBucket(conn, bucket);
  kvWatchOptions options;
  kvWatchOptions_Init(&options);
  options.Timeout = timeout_ms;
  kvKeysList list{};
  const auto started = SteadyClock::now();
  natsStatus s = kvStore_Keys(&list, kv, &options);
  elapsed_ms = std::chrono::duration<double, std::milli>(SteadyClock::now() - started).count();
  const int count = list.Count;
  kvKeysList_Destroy(&list);
  kvStore_Destroy(kv);
  if (s != NATS_OK)
    return std::string(natsStatus_GetText(s)) + " after " + fmt(elapsed_ms, 0) + " ms";
  return "OK, " + std::to_string(count) + " keys in " + fmt(elapsed_ms, 0) + " ms";
}

double sequentialGets(Connection& conn, const std::string& bucket,
                      const std::vector<std::string>& ids, std::size_t count) {
  kvStore* kv = openBucket(conn, bucket);
  const auto started = SteadyClock::now();
  std::size_t done = 0;
  for (std::size_t i = 0; i < count && i < ids.size(); ++i) {
    kvEntry* entry = nullptr;
    if (kvStore_Get(&entry, kv, ids[i].c_str()) == NATS_OK) ++done;
    kvEntry_Destroy(entry);
  }
  const double seconds = std::chrono::duration<double>(SteadyClock::now() - started).count();
  kvStore_Destroy(kv);
  return seconds > 0 ? static_cast<double>(done) / seconds : 0;
}

std::size_t countLines(const Countersign& cs, const std::string& needle) {
  std::size_t count = 0;
  std::istringstream in(readFile(cs.dir / "stdout.log") + readFile(cs.dir / "stderr.log"));
  for (std::string line; std::getline(in, line);)
    count += line.find(needle) != std::string::npos ? 1 : 0;
  return count;
}

// CPU and wall time per replayer scan over the idle window: countersign's CPU (nothing else
// runs then) divided by the scans the metric counted.
std::string scanCell(const ScaleRow& row, std::chrono::milliseconds idle) {
  if (row.idle_scans < 1) return "no scan";
  const double cpu_ms = row.idle_cs_cpu * std::chrono::duration<double>(idle).count() * 1000 / row.idle_scans;
  return fmt(row.idle_scans, 0) + " scans: " + fmt(cpu_ms, 1) + " ms / " +
         fmt(row.idle_scan_seconds * 1000 / row.idle_scans, 1) + " ms";
}

// What is asked of the server while it lives: a core subscription on the JetStream API, the
// bucket's subjects and the audit events (a subscriber sees every request and publish there)
// counts them by kind. Direct gets are told apart by key: a record (`approved` ids or another
// record), or a key of a record's group (`<id>/decision`, ...).
class RequestCensus {
 public:
  RequestCensus(const std::string& url, const std::string& bucket, const std::vector<std::string>& approved)
      : conn_(url, "bench-census", true), prefix_("$KV." + bucket + "."), approved_(approved.begin(), approved.end()) {
    for (const std::string& subject : {std::string("$JS.API.>"), prefix_ + ">", std::string("countersign.events.>")}) {
      natsSubscription* sub = nullptr;
      check(natsConnection_Subscribe(&sub, conn_.raw(), subject.c_str(), &RequestCensus::onMessage, this), "census");
      (void)natsSubscription_SetPendingLimits(sub, -1, -1);
      subs_.push_back(sub);
    }
    check(natsConnection_Flush(conn_.raw()), "census flush");
  }
  ~RequestCensus() { stop(); }
  RequestCensus(const RequestCensus&) = delete;
  RequestCensus& operator=(const RequestCensus&) = delete;

  // Stops counting (after a flush, so that what was sent before is counted) and returns the counts.
  std::map<std::string, std::size_t> stop() {
    if (!subs_.empty()) {
      (void)natsConnection_Flush(conn_.raw());
      for (auto* sub : subs_) {
        (void)natsSubscription_Drain(sub);
        (void)natsSubscription_WaitForDrainCompletion(sub, 5000);
        natsSubscription_Destroy(sub);
      }
      subs_.clear();
    }
    const std::lock_guard lock(mutex_);
    return counts_;
  }

 private:
  static void onMessage(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
    auto* self = static_cast<RequestCensus*>(closure);
    const std::string subject = natsMsg_GetSubject(msg);
    const std::string body(natsMsg_GetData(msg), static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
    natsMsg_Destroy(msg);
    std::string kind;
    const std::string direct = "$JS.API.DIRECT.GET.";
    if (subject.starts_with(direct)) {
      // $JS.API.DIRECT.GET.<stream> with {"last_by_subj": ...}, or ...<stream>.<subject> (cnats).
      std::string key;
      const auto stream_end = subject.find('.', direct.size());
      if (stream_end != std::string::npos) {
        key = subject.substr(stream_end + 1);
      } else if (const auto at = body.find(self->prefix_); at != std::string::npos) {
        key = body.substr(at, body.find('"', at) - at);
      }
      kind = "direct get " + self->keyKind(key);
    } else if (subject.starts_with("$JS.API.")) {
      // $JS.API.<WHAT>.<VERB>.<name...>: the kind is the first two tokens.
      const auto first = subject.find('.', 8);
      const auto second = first == std::string::npos ? first : subject.find('.', first + 1);
      kind = "API " + subject.substr(8, second == std::string::npos ? std::string::npos : second - 8);
    } else if (subject.starts_with(self->prefix_)) {
      kind = "KV write " + self->keyKind(subject);
    } else {
      kind = "event " + subject.substr(std::string("countersign.events.").size(),
                                       subject.find('.', std::string("countersign.events.").size()) -
                                           std::string("countersign.events.").size());
    }
    const std::lock_guard lock(self->mutex_);
    ++self->counts_[kind];
  }
  // "record (approved)", "record (other)" or the group key's suffix ("decision", "released", ...).
  std::string keyKind(const std::string& subject) const {
    if (!subject.starts_with(prefix_)) return "other stream";
    const std::string key = subject.substr(prefix_.size());
    if (const auto slash = key.find('/'); slash != std::string::npos) return key.substr(slash + 1);
    return approved_.contains(key) ? "record (approved)" : "record (other)";
  }

  Connection conn_;
  std::string prefix_;
  std::set<std::string> approved_;
  std::vector<natsSubscription*> subs_;
  std::mutex mutex_;
  std::map<std::string, std::size_t> counts_;
};

// "kind: count per approval, ..." of a census over `approvals` approvals.
std::string censusCell(const std::map<std::string, std::size_t>& counts, double approvals) {
  std::string out;
  for (const auto& [kind, count] : counts) {
    if (!out.empty()) out += "; ";
    out += kind + " " + fmt(approvals > 0 ? static_cast<double>(count) / approvals : 0, 2);
  }
  return out.empty() ? "-" : out;
}

// A key watcher on the bucket as countersign keeps one: an ordered consumer of every new message
// (headers only), drained by a thread of its own; what it took in `delivered`.
class KeyWatcher {
 public:
  KeyWatcher(Connection& conn, const std::string& bucket) {
    jsSubOptions so;
    jsSubOptions_Init(&so);
    const std::string stream = "KV_" + bucket;
    so.Stream = stream.c_str();
    so.Ordered = true;
    so.Config.DeliverPolicy = js_DeliverNew;
    so.Config.HeadersOnly = true;
    jsErrCode code{};
    check(js_SubscribeSync(&sub_, conn.js(), ("$KV." + bucket + ".>").c_str(), nullptr, &so, &code), "key watcher");
    drain_ = std::thread([this] {
      while (!stop_) {
        natsMsg* msg = nullptr;
        if (natsSubscription_NextMsg(&msg, sub_, 100) == NATS_OK) {
          ++delivered;
          natsMsg_Destroy(msg);
        }
      }
    });
    std::this_thread::sleep_for(200ms);
  }
  ~KeyWatcher() {
    stop_ = true;
    drain_.join();
    natsSubscription_Unsubscribe(sub_);
    natsSubscription_Destroy(sub_);
  }
  KeyWatcher(const KeyWatcher&) = delete;
  KeyWatcher& operator=(const KeyWatcher&) = delete;

  std::atomic<int> delivered{0};

 private:
  natsSubscription* sub_ = nullptr;
  std::atomic<bool> stop_{false};
  std::thread drain_;
};

// What a bare approval does beyond approveSequence, to find which of countersign's other
// requests costs the server what (the scale phase's variants; each adds one thing).
struct BareExtras {
  bool view = false;     // rewrite the record after the answer: a KV get and an update at its revision
  bool events = false;   // the audit events countersign stores: `approved` before the job's publish
                         // (its PubAck awaited after it), `released` after `<id>/released`
  bool watcher = false;  // a key watcher on the bucket during the round (KeyWatcher)
};

// One audit event as countersign stores it: a JetStream publish to its audit stream's subjects
// with a Nats-Msg-Id (the stream deduplicates), a body of about an event's size.
void publishEvent(jsCtx* js, const std::string& kind, const std::string& id) {
  const std::string body = R"({"event":")" + kind + R"(","approval_id":")" + id + R"(","job_id":"bench","topic":"finance.payments.execute","rule":"bench","job_hash":"sha256:0000000000000000000000000000000000000000000000000000000000000000","policy_snapshot":"sha256:0000000000000000000000000000000000000000000000000000000000000000","actor":"bench","at":"2026-01-01T00:00:00Z"})";
  jsPubOptions options;
  jsPubOptions_Init(&options);
  options.MaxWait = 5000;
  const std::string msg_id = id + ":" + kind + ":bench";
  options.MsgId = msg_id.c_str();
  jsPubAck* ack = nullptr;
  jsErrCode code{};
  const natsStatus s = js_Publish(&ack, js, ("countersign.events." + kind + ".finance.payments.execute").c_str(),
                                  body.data(), static_cast<int>(body.size()), &options, &code);
  jsPubAck_Destroy(ack);
  if (s != NATS_OK) note("scale raw approve: event " + kind + " of " + id + ": " + natsText(s));
}

// The bare client's approvals of `ids`, one at a time (approveSequence: what an approval must
// ask of the server, no more); latency = start -> the worker has the job; server CPU per
// approval; each step's p50. `extras` adds what countersign also does (BareExtras): the view
// update after the worker has the job (a KV get, warm, and an update at its revision), the two
// audit events, a key watcher for the round.
RawScaleRound rawSequentialApprovals(Connection& conn, const std::string& bucket, Worker& worker,
                                     const std::vector<std::string>& ids, pid_t server, BareExtras extras) {
  kvStore* kv = openBucket(conn, bucket);
  std::optional<KeyWatcher> watcher;
  if (extras.watcher) watcher.emplace(conn, bucket);
  ApprovalTracker tracker;
  worker.expectApprovals([&](const std::string& id, std::int64_t at) { tracker.released(id, at); });
  const std::int64_t from = nowNs();
  tracker.setWindow(from, std::numeric_limits<std::int64_t>::max());
  std::array<std::vector<std::int64_t>, kApproveSteps + 1> steps;
  const double s0 = cpuSeconds(server);
  for (const auto& id : ids) {
    tracker.start(id, nowNs());
    std::string error;
    std::array<std::int64_t, kApproveSteps> took{};
    if (extras.events) publishEvent(conn.js(), "approved", id);
    const bool ok = approveSequence(conn.js(), kv, id, error, {}, &took);
    tracker.answered(id, ok, error);
    if (!ok) continue;
    for (std::size_t i = 0; i < took.size(); ++i) steps[i].push_back(took[i]);
    if (!tracker.waitDone(id, 5s)) note("scale raw approve: the worker never got " + id);
    if (extras.view) {
      const std::int64_t began = nowNs();
      kvEntry* entry = nullptr;
      if (kvStore_Get(&entry, kv, id.c_str()) == NATS_OK) {
        std::uint64_t revision = 0;
        const natsStatus s = kvStore_Update(&revision, kv, id.c_str(), kvEntry_Value(entry), kvEntry_ValueLen(entry),
                                            kvEntry_Revision(entry));
        if (s != NATS_OK) note("scale raw approve: view update of " + id + ": " + natsText(s));
      }
      kvEntry_Destroy(entry);
      steps[kApproveSteps].push_back(nowNs() - began);
    }
    if (extras.events) publishEvent(conn.js(), "released", id);
  }
  const double s1 = cpuSeconds(server);
  const double seconds = static_cast<double>(nowNs() - from) / 1e9;
  worker.countOnly();
  watcher.reset();
  kvStore_Destroy(kv);
  RawScaleRound out;
  const double n = static_cast<double>(tracker.doneInWindow());
  out.round.rate = seconds > 0 ? n / seconds : 0;
  out.round.latency = percentiles(tracker.latencies());
  out.round.failures = tracker.failures();
  out.round.first_failure = tracker.firstFailure();
  out.round.used = ids.size();
  out.round.server_cpu_us = n > 0 ? (s1 - s0) * 1e6 / n : 0;
  for (std::size_t i = 0; i < steps.size(); ++i) out.step_p50_ns[i] = percentiles(steps[i]).p50;
  return out;
}

// nats-server's CPU per KV create of a new key (cheap at any size: no earlier message to look
// up), `count` of them one at a time, with or without a key watcher on the bucket as countersign
// has: what each write costs the server for a consumer on a stream of this size.
double serverCpuPerCreate(Connection& conn, const std::string& bucket, const std::string& tag, int count,
                          bool with_watcher, pid_t server) {
  kvStore* kv = openBucket(conn, bucket);
  std::optional<KeyWatcher> watcher;
  if (with_watcher) watcher.emplace(conn, bucket);
  const double s0 = cpuSeconds(server);
  for (int i = 0; i < count; ++i) {
    std::uint64_t revision = 0;
    const std::string key = "probe-" + tag + "-" + std::to_string(i);
    check(kvStore_Create(&revision, kv, key.c_str(), "{}", 2), "probe create");
  }
  const auto until = SteadyClock::now() + 10s;
  while (watcher && watcher->delivered < count && SteadyClock::now() < until) std::this_thread::sleep_for(1ms);
  const double s1 = cpuSeconds(server);
  watcher.reset();
  kvStore_Destroy(kv);
  return (s1 - s0) * 1e6 / count;
}

void scale(Rig& rig, Worker& worker) {
  const bool quick = rig.settings.quick;
  std::vector<std::size_t> sizes =
      quick ? std::vector<std::size_t>{1000, 10000} : std::vector<std::size_t>{1000, 10000, 100000};
  if (rig.settings.scale_max > 0) {
    // --scale-max N (bench/run.sh --scale-1m): 1000, then every tenfold size above 10000 up to N.
    sizes = {1000};
    for (std::size_t n = 100000; n <= rig.settings.scale_max; n *= 10) sizes.push_back(n);
    if (sizes.back() != rig.settings.scale_max) sizes.push_back(rig.settings.scale_max);
  }
  // Long enough for several steady scans (on a large bucket the replayer scans at most a tenth
  // of the time).
  const auto idle = quick ? 2000ms : rig.settings.scale_max >= 1000000 ? 15000ms : 4000ms;
  const std::size_t approvals = quick ? 100 : 300;
  const std::size_t sample_gets = quick ? 1000 : 3000;
  Connection conn(rig.server.url, "bench-scale", true);
  std::vector<ScaleRow> rows;
  for (const std::size_t n : sizes) {
    ScaleRow row;
    row.pending = n;
    const std::string bucket = "cs_scale_" + std::to_string(n);
    const auto ids = makeIds("s" + std::to_string(n) + "-", n);
    note("scale " + std::to_string(n) + ": seeding");
    row.seed_s = seedRecords(conn, bucket, ids, rig.snapshot);
    double ignored = 0;
    row.keys_as_countersign = listKeys(conn, bucket, 30000, ignored);
    listKeys(conn, bucket, 0, row.keys_unbounded_ms);
    row.gets_per_second = sequentialGets(conn, bucket, ids, sample_gets);
    note("scale " + std::to_string(n) + ": seeded in " + fmt(row.seed_s, 1) +
         " s; kvStore_Keys(Timeout 30000): " + row.keys_as_countersign + "; Timeout 0: " +
         fmt(row.keys_unbounded_ms, 0) + " ms; gets " + fmtRate(row.gets_per_second));
    const auto started = SteadyClock::now();
    auto cs = Countersign::start(
        rig.dir.path() / ("cs-scale-" + std::to_string(n)),
        {.url = rig.server.url, .bucket = bucket, .to_stream = "JOBS", .admin = true});
    row.ready_ms = cs->startup_ms;
    row.rss_ready_kb = cs->rss_at_ready_kb;
    // The replayer's first successful scan sets the pending gauge; stop waiting once scans
    // keep failing.
    const auto deadline = started + 300s;
    while (SteadyClock::now() < deadline) {
      auto pending = cs->metric("countersign_pending_approvals");
      if (pending && static_cast<std::size_t>(*pending) == n) {
        row.first_scan_ms =
            std::chrono::duration<double, std::milli>(SteadyClock::now() - started).count();
        break;
      }
      if (countLines(*cs, "replay scan failed") >= 3) break;
      std::this_thread::sleep_for(20ms);
    }
    row.failed_scans_at_start = countLines(*cs, "replay scan failed");
    row.rss_scanned_kb = rssKb(cs->pid());
    note("scale " + std::to_string(n) + ": ready " + fmt(row.ready_ms, 0) + " ms, first scan " +
         (row.first_scan_ms ? fmt(*row.first_scan_ms, 0) + " ms" : std::string("not done")) +
         ", failed scans " + std::to_string(row.failed_scans_at_start));
    // The idle window starts once the first scan is counted (the gauge is set just before).
    const auto counted_by = SteadyClock::now() + 10s;
    while (row.first_scan_ms && cs->metric("countersign_replay_scans_total").value_or(0) < 1 &&
           SteadyClock::now() < counted_by) {
      std::this_thread::sleep_for(10ms);
    }
    const double c0 = cpuSeconds(cs->pid()), s0 = cpuSeconds(rig.server.pid());
    const double scans_before = cs->metric("countersign_replay_scans_total").value_or(0);
    const double scan_s_before = cs->metric("countersign_replay_scan_seconds_total").value_or(0);
    std::this_thread::sleep_for(idle);
    const double c1 = cpuSeconds(cs->pid()), s1 = cpuSeconds(rig.server.pid());
    row.idle_scans = cs->metric("countersign_replay_scans_total").value_or(0) - scans_before;
    row.idle_scan_seconds = cs->metric("countersign_replay_scan_seconds_total").value_or(0) - scan_s_before;
    row.failed_scans_idle = countLines(*cs, "replay scan failed") - row.failed_scans_at_start;
    const double seconds = std::chrono::duration<double>(idle).count();
    row.idle_cs_cpu = (c1 - c0) / seconds;
    row.idle_server_cpu = (s1 - s0) / seconds;
    // Approve ids spread over the whole key space, one at a time.
    std::vector<std::string> picks;
    for (std::size_t i = 0; i < approvals && i < n; ++i) picks.push_back(ids[(i * n) / approvals]);
    // The bare client's rounds approve other records than countersign does (the one after each
    // of its picks), each round in its own fifth of the bucket, so that none reads a block of the
    // stream another has just loaded. The first, with the view update, runs now: countersign up
    // and idle, the server as countersign's approvals will find it (after the idle window); then
    // the idle window again, so that the blocks it loaded expire from the server's cache before
    // countersign's approvals start.
    std::array<std::vector<std::string>, kBareRegions> regions;
    for (std::size_t i = 0; i < approvals && i < n; ++i) {
      regions[(i * kBareRegions) / approvals].push_back(ids[std::min(n - 1, (i * n) / approvals + 1)]);
    }
    {
      const ServerProfile profile("scale-" + std::to_string(n) + "-bare-view-before-countersign", 4);
      row.variants.push_back({kBeforeCountersign,
                              rawSequentialApprovals(conn, bucket, worker, regions[4], rig.server.pid(), {.view = true})});
    }
    std::this_thread::sleep_for(idle);
    std::size_t cursor = 0;
    {
      const ServerProfile profile("scale-" + std::to_string(n) + "-countersign", 10);
      RequestCensus census(rig.server.url, bucket, picks);
      row.approve =
          approveRound(conn, worker, picks, cursor, 1, cs->pid(), rig.server.pid(), 0ms, 120s, false);
      row.census = census.stop();
    }
    row.rss_end_kb = rssKb(cs->pid());
    listPages(conn, row, quick ? 3 : 10);
    if (row.list_ok) {
      std::size_t items = 0;
      const std::string middle = ids[n / 2];
      row.list_deep_ms = listPage(conn, R"({"state":"pending","limit":100,"after":")" + middle + "\"}", items,
                                  row.list_error);
      row.list_filtered_ms = listPage(
          conn, R"({"state":"pending","topic":"finance.*.execute","limit":100,"after":")" + middle + "\"}", items,
          row.list_error);
      row.list_no_match_ms = listPage(conn, R"({"state":"pending","topic":"hr.>","limit":100})", items, row.list_error);
    }
    // Once loaded, the list index hands back what the load buffered (malloc_trim on its thread,
    // which takes a moment over hundreds of MiB): RSS is read after it.
    std::this_thread::sleep_for(2s);
    row.rss_listed_kb = rssKb(cs->pid());
    note("scale " + std::to_string(n) + ": list first page " + fmt(row.list_first_ms, 1) + " ms, next " +
         fmt(row.list_next_ms, 1) + " ms" + (row.list_ok ? "" : " (failed)"));
    note("scale " + std::to_string(n) + ": approve p50 " + fmtUs(row.approve.latency.p50) +
         " p99 " + fmtUs(row.approve.latency.p99) + ", idle CPU countersign " +
         fmt(row.idle_cs_cpu * 100, 0) + "%, server " + fmt(row.idle_server_cpu * 100, 0) +
         "%, RSS " + std::to_string(row.rss_end_kb) + " KiB");
    cs->process->stop();
    {
      const ServerProfile profile("scale-" + std::to_string(n) + "-bare", 4);
      RequestCensus census(rig.server.url, bucket, regions[0]);
      row.raw = rawSequentialApprovals(conn, bucket, worker, regions[0], rig.server.pid(), {});
      row.raw_census = census.stop();
    }
    {
      const ServerProfile profile("scale-" + std::to_string(n) + "-bare-view", 4);
      row.raw_view = rawSequentialApprovals(conn, bucket, worker, regions[1], rig.server.pid(), {.view = true});
    }
    {
      const ServerProfile profile("scale-" + std::to_string(n) + "-bare-view-events", 4);
      row.variants.push_back({"+ view update + audit events",
                              rawSequentialApprovals(conn, bucket, worker, regions[2], rig.server.pid(),
                                                     {.view = true, .events = true})});
    }
    {
      const ServerProfile profile("scale-" + std::to_string(n) + "-bare-view-watcher", 4);
      row.variants.push_back({"+ view update + key watcher",
                              rawSequentialApprovals(conn, bucket, worker, regions[3], rig.server.pid(),
                                                     {.view = true, .watcher = true})});
    }
    {
      // As many approvals as countersign's round, over the whole bucket at the same spacing (the
      // record two after each of its picks), with the view update; after a pause longer than the
      // file store's cache expiry (5 s in nats-server 2.9), so that no block loaded by the
      // rounds before is still held.
      std::vector<std::string> whole;
      for (std::size_t i = 0; i < approvals && i < n; ++i) whole.push_back(ids[std::min(n - 1, (i * n) / approvals + 2)]);
      std::this_thread::sleep_for(6s);
      const ServerProfile profile("scale-" + std::to_string(n) + "-bare-view-whole", 10);
      row.variants.push_back({"+ view update, " + std::to_string(whole.size()) + " approvals over the whole bucket",
                              rawSequentialApprovals(conn, bucket, worker, whole, rig.server.pid(), {.view = true})});
    }
    row.create_cpu_us = serverCpuPerCreate(conn, bucket, "plain", 1000, false, rig.server.pid());
    row.create_watched_cpu_us = serverCpuPerCreate(conn, bucket, "watched", 1000, true, rig.server.pid());
    note("scale " + std::to_string(n) + ": requests per countersign approval: " +
         censusCell(row.census, static_cast<double>(picks.size())) + "; per bare approval: " +
         censusCell(row.raw_census, static_cast<double>(regions[0].size())));
    for (const auto& variant : row.variants) {
      note("scale " + std::to_string(n) + ": bare client " + variant.name + ": p50 " +
           fmtUs(variant.result.round.latency.p50) + ", server CPU " + fmt(variant.result.round.server_cpu_us, 0) +
           " us per approval");
    }
    note("scale " + std::to_string(n) + ": bare client approve p50 " + fmtUs(row.raw.round.latency.p50) +
         ", server CPU " + fmt(row.raw.round.server_cpu_us, 0) + " us per approval, " +
         fmt(row.raw_view.round.server_cpu_us, 0) + " us with the view update (countersign's: " +
         fmt(row.approve.server_cpu_us, 0) + " us, countersign itself " + fmt(row.approve.proc_cpu_us, 0) +
         " us); server CPU per create " + fmt(row.create_cpu_us, 0) + " us, with a key watcher " +
         fmt(row.create_watched_cpu_us, 0) + " us");
    deleteBucket(conn, bucket);
    rows.push_back(row);
  }

  auto& d = rig.report.details;
  d << "### 5. Scale with pending records\n\n"
    << "For each size a fresh bucket is filled with that many pending records, written straight "
       "into the bucket "
       "in the record format (async JetStream publishes to `$KV.<bucket>.<id>`: the same bytes a "
       "hold stores, "
       "store tag included, and the marker key of a bucket with nothing to adopt; faster than holding through "
       "countersign), then countersign starts on it (route with "
       "`to_stream: JOBS`, "
       "admin listener for /metrics). Ready = spawn -> stdout line `countersign ready`; first scan "
       "= spawn -> "
       "`countersign_pending_approvals` on /metrics equals the size (set at the end of a "
       "successful replayer "
       "scan; the wait stops after 3 logged `replay scan failed`). Idle CPU over "
    << idle.count()
    << " ms with no traffic (the replayer scans every `release.replay_interval` = 1 s, or twice "
       "its last scan's time if longer; CPU per scan = countersign's CPU over the window / the scans "
       "`countersign_replay_scans_total` counted in it). Then "
    << approvals
    << " approvals one at a time over ids spread across the bucket; latency = request -> worker "
       "receives the job. Before countersign starts, a bare client lists the keys with "
       "`kvStore_Keys` twice "
       "(with `Timeout = 30000`, which cnats 3.4.1 mishandles on large buckets, and with "
       "`Timeout = 0`, as countersign lists) and times "
    << sample_gets
    << " sequential `kvStore_Get`s (what reading every record once would cost). `list`: 10 pages of "
       "100 pending records (each `after` the last id of the page before: the first page's time and "
       "the median of the others), then one page `after` the id in the middle of the bucket, the same "
       "with `topic: finance.*.execute` (every record matches), and one with `topic: hr.>` (none "
       "matches: the whole index is walked).\n\n"
    << "| pending | seed | kvStore_Keys, Timeout 30000 | kvStore_Keys, Timeout 0 | sequential gets "
       "| ready | first "
       "scan done | failed scans (start / idle) | RSS ready / after scan / end / after `list` | idle CPU "
       "countersign / nats-server "
       "| replayer scans in the idle window: CPU / wall per scan | approve p50 / p99 | approvals/s | failures | `list` "
       "first page / next pages | `list` deep page / filtered / filter matching none |\n"
    << "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& row : rows) {
    d << "| " << row.pending << " | " << fmt(row.seed_s, 1) << " s | " << row.keys_as_countersign
      << " | " << fmt(row.keys_unbounded_ms, 0) << " ms | " << fmtRate(row.gets_per_second) << " | "
      << fmt(row.ready_ms, 0) << " ms | "
      << (row.first_scan_ms ? fmt(*row.first_scan_ms, 0) + " ms" : std::string("never")) << " | "
      << row.failed_scans_at_start << " / " << row.failed_scans_idle << " | "
      << row.rss_ready_kb / 1024 << " / " << row.rss_scanned_kb / 1024 << " / "
      << row.rss_end_kb / 1024 << " / " << row.rss_listed_kb / 1024 << " MiB | " << fmt(row.idle_cs_cpu * 100, 0) << "% / "
      << fmt(row.idle_server_cpu * 100, 0) << "% | " << scanCell(row, idle) << " | "
      << fmtUs(row.approve.latency.p50) << " / "
      << fmtUs(row.approve.latency.p99) << " | " << fmtRate(row.approve.rate) << " | "
      << row.approve.failures << " | "
      << (row.list_ok ? fmt(row.list_first_ms, 1) + " ms (" + std::to_string(row.list_items) +
                            " items) / " + fmt(row.list_next_ms, 1) + " ms"
                      : "failed: `" + row.list_error + "`")
      << " | " << (row.list_ok ? fmt(row.list_deep_ms, 1) + " / " + fmt(row.list_filtered_ms, 1) + " / " +
                                     fmt(row.list_no_match_ms, 1) + " ms"
                               : std::string("-"))
      << " |\n";
  }
  d << "\nWhose is the time of an approval at each size: countersign's approvals above against the "
       "bare client's (`approveSequence`: KV get of the record, KV create `<id>/decision`, JetStream "
    << "publish, KV create `<id>/released`, one at a time, "
    << approvals
    << " / " << kBareRegions << " other records of the first fifth of the bucket, with countersign stopped; then as many "
       "of its second fifth that also rewrite the record after the answer, a KV get and an update at "
       "its revision, as countersign's view update does), and the CPU each takes of countersign and of nats-server per approval "
       "(countersign also stores two audit events). The steps' p50 are the bare client's. Then 1,000 "
       "KV creates of new keys, one at a time, without and with a key watcher on the bucket (an ordered "
       "consumer of every new message, headers only, as countersign keeps): nats-server's CPU per "
       "create. Sequential "
       "gets: the bare client's `kvStore_Get`s before countersign started.\n\n"
    << "| pending | countersign p50 / p99 | countersign approvals/s | countersign CPU per approval | "
       "nats-server CPU per countersign approval | bare client p50 / p99 | bare client approvals/s | "
       "nats-server CPU per bare approval / with the view update | steps p50: get / create decision / "
       "publish / create released / view update | nats-server CPU per create of a new key: alone / with a key "
       "watcher | sequential gets |\n"
    << "|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& row : rows) {
    const ApproveRound& raw = row.raw.round;
    d << "| " << row.pending << " | " << fmtUs(row.approve.latency.p50) << " / " << fmtUs(row.approve.latency.p99)
      << " | " << fmtRate(row.approve.rate) << " | " << fmt(row.approve.proc_cpu_us, 0) << " µs | "
      << fmt(row.approve.server_cpu_us, 0) << " µs | " << fmtUs(raw.latency.p50) << " / " << fmtUs(raw.latency.p99)
      << " | " << fmtRate(raw.rate)
      << (raw.failures > 0 ? " (" + std::to_string(raw.failures) + " failed: `" + raw.first_failure + "`)"
                           : std::string())
      << " | " << fmt(raw.server_cpu_us, 0) << " / " << fmt(row.raw_view.round.server_cpu_us, 0) << " µs | "
      << fmtUs(row.raw.step_p50_ns[kStepGet]) << " / " << fmtUs(row.raw.step_p50_ns[kStepCreateDecision]) << " / "
      << fmtUs(row.raw.step_p50_ns[kStepPublish]) << " / " << fmtUs(row.raw.step_p50_ns[kStepCreateReleased])
      << " / " << fmtUs(row.raw_view.step_p50_ns[kApproveSteps]) << " | " << fmt(row.create_cpu_us, 0) << " / "
      << fmt(row.create_watched_cpu_us, 0) << " µs | " << fmtRate(row.gets_per_second) << " |\n";
  }
  d << "\nWhich of countersign's requests makes the server's work grow: the bare client's approvals "
       "again, adding one thing at a time, each round over its own fifth of the bucket (other "
       "records than countersign approved; the rounds above with and without the view update are "
       "the first two fifths). `just before its approvals`: the round with the view update while "
       "countersign is up and idle, after the idle window, then the idle window again before "
       "countersign's own approvals (the server as countersign's round finds it); the other rounds "
       "run after countersign stopped and after `list` (which passed over every block of the stream). "
       "`+ audit events`: the two events countersign stores per approval (JetStream publishes with a "
       "Nats-Msg-Id to its audit stream, `approved` before the job's publish, `released` after the "
       "view update). `+ key watcher`: an ordered consumer of the bucket's new messages (headers "
       "only) during the round, as countersign keeps. `over the whole bucket`: as many approvals as "
       "countersign's round at its spacing (the record two after each of its picks), 6 s after the "
       "round before (longer than the file store's 5 s cache expiry). Each cell: p50 / nats-server "
       "CPU per approval. Requests: what the server was asked per approval during countersign's "
       "round and the bare client's plain round, counted by a subscriber on `$JS.API.>`, "
       "`$KV.<bucket>.>` and `countersign.events.>` (direct gets by key: the approved record or "
       "another).\n\n"
    << "| pending | countersign | bare client | + view update";
  const std::size_t variant_count = rows.empty() ? 0 : rows.front().variants.size();
  for (std::size_t i = 0; i < variant_count; ++i) d << " | " << rows.front().variants[i].name;
  d << " | requests per countersign approval | requests per bare approval |\n|---|---|---|---";
  for (std::size_t i = 0; i < variant_count; ++i) d << "|---";
  d << "|---|---|\n";
  for (const auto& row : rows) {
    const auto cell = [](const ApproveRound& r) { return fmtUs(r.latency.p50) + " / " + fmt(r.server_cpu_us, 0) + " µs"; };
    d << "| " << row.pending << " | " << cell(row.approve) << " | " << cell(row.raw.round) << " | "
      << cell(row.raw_view.round);
    for (const auto& variant : row.variants) d << " | " << cell(variant.result.round);
    d << " | " << censusCell(row.census, static_cast<double>(row.approve.used)) << " | "
      << censusCell(row.raw_census, static_cast<double>(row.raw.round.used)) << " |\n";
  }
  // countersign against the bare client's round in the same server state (just before its own).
  const auto sameState = [](const ScaleRow& row) -> const RawScaleRound* {
    for (const auto& variant : row.variants) {
      if (variant.name == kBeforeCountersign) return &variant.result;
    }
    return nullptr;
  };
  for (const auto& row : rows) {
    const RawScaleRound* before = sameState(row);
    if (before == nullptr || before->round.latency.p50 <= 0 || before->round.server_cpu_us <= 0) continue;
    d << "At " << row.pending << " pending, against the bare client's round just before its approvals (the same "
      << "requests but the audit events, the server in the same state): countersign's p50 "
      << fmtUs(row.approve.latency.p50) << " is " << fmt(row.approve.latency.p50 / before->round.latency.p50, 2)
      << "x its " << fmtUs(before->round.latency.p50) << ", nats-server's CPU per approval "
      << fmt(row.approve.server_cpu_us, 0) << " µs " << fmt(row.approve.server_cpu_us / before->round.server_cpu_us, 2)
      << "x its " << fmt(before->round.server_cpu_us, 0) << " µs.\n";
  }
  d << "\n";
  if (rows.size() >= 2) {
    const auto& small = rows.front();
    const auto& large = rows.back();
    // countersign's own factor: how much more its p50 grows than the bare client's over the same
    // sizes (1.0: all of the growth is the server's).
    const double raw_growth =
        small.raw.round.latency.p50 > 0 ? large.raw.round.latency.p50 / small.raw.round.latency.p50 : 0;
    const double growth =
        small.approve.latency.p50 > 0 ? large.approve.latency.p50 / small.approve.latency.p50 : 0;
    const double rate_drop = large.approve.rate > 0 ? small.approve.rate / large.approve.rate : 0;
    const double bytes_per_record = static_cast<double>(large.rss_end_kb - small.rss_end_kb) *
                                    1024.0 / static_cast<double>(large.pending - small.pending);
    const bool flat = growth > 0 && growth <= 1.2 && rate_drop > 0 && rate_drop <= 1.2;
    const bool lean = bytes_per_record < 256;  // less than one payload per record
    d << "\nApprove p50 at " << large.pending << " pending is " << fmt(growth, 2) << "x the p50 at "
      << small.pending << ", approvals/s (one at a time, so 1 / mean latency) "
      << fmt(rate_drop > 0 ? 1 / rate_drop : 0, 2)
      << "x (aim: p50 at most 1.2x, rate at least 1/1.2). RSS grows by " << fmt(bytes_per_record, 0)
      << " bytes per pending record (payloads are 256 B; aim: less than one payload per record); "
         "once `list` has loaded the list index, by "
      << fmt(static_cast<double>(large.rss_listed_kb - small.rss_listed_kb) * 1024.0 /
                 static_cast<double>(large.pending - small.pending),
             0)
      << " bytes. A scan that fails early holds no per-record state, so RSS is only meaningful where the "
         "first scan "
         "completed.\n\n";
    rig.report.summary.push_back(
        {"5. scale: approve p50 and approvals/s " + std::to_string(small.pending) + " -> " +
             std::to_string(large.pending) + " pending; RSS per pending record",
         fmtUs(small.approve.latency.p50) + ", " + fmtRate(small.approve.rate),
         fmtUs(large.approve.latency.p50) + ", " + fmtRate(large.approve.rate),
         "p50 " + fmt(growth, 2) + "x, rate " + fmt(rate_drop > 0 ? 1 / rate_drop : 0, 2) + "x; " +
             fmt(bytes_per_record, 0) + " B/record",
         "p50 <= 1.2x, rate >= 0.83x; < 256 B/record", flat && lean});
    const double own = raw_growth > 0 ? growth / raw_growth : 0;
    d << "The bare client's p50 at " << large.pending << " is " << fmt(raw_growth, 2) << "x its p50 at "
      << small.pending << " (nats-server CPU per bare approval " << fmt(small.raw.round.server_cpu_us, 0) << " -> "
      << fmt(large.raw.round.server_cpu_us, 0) << " µs, with the view update "
      << fmt(small.raw_view.round.server_cpu_us, 0) << " -> " << fmt(large.raw_view.round.server_cpu_us, 0)
      << " µs); countersign's own factor (its p50 growth / the bare "
      << "client's) is " << fmt(own, 2) << "x. countersign's CPU per approval "
      << fmt(small.approve.proc_cpu_us, 0) << " -> " << fmt(large.approve.proc_cpu_us, 0)
      << " µs, nats-server's per countersign approval " << fmt(small.approve.server_cpu_us, 0) << " -> "
      << fmt(large.approve.server_cpu_us, 0) << " µs.\n\n";
    rig.report.summary.push_back(
        {"5. scale: approve p50 growth " + std::to_string(small.pending) + " -> " + std::to_string(large.pending) +
             " pending, countersign against the bare client (its own factor = its growth / the bare client's)",
         fmtUs(small.raw.round.latency.p50) + " -> " + fmtUs(large.raw.round.latency.p50) + " (" + fmt(raw_growth, 2) + "x)",
         fmtUs(small.approve.latency.p50) + " -> " + fmtUs(large.approve.latency.p50) + " (" + fmt(growth, 2) + "x)",
         "own " + fmt(own, 2) + "x", "(information)", std::nullopt, true});
    if (sameState(large) != nullptr) {
      const RawScaleRound& before = *sameState(large);
      rig.report.summary.push_back(
          {"5. scale: approve at " + std::to_string(large.pending) +
               " pending against the bare client in the same server state (p50; nats-server CPU per approval)",
           fmtUs(before.round.latency.p50) + "; " + fmt(before.round.server_cpu_us, 0) + " µs",
           fmtUs(large.approve.latency.p50) + "; " + fmt(large.approve.server_cpu_us, 0) + " µs",
           "p50 " + fmt(before.round.latency.p50 > 0 ? large.approve.latency.p50 / before.round.latency.p50 : 0, 2) +
               "x; server CPU " +
               fmt(before.round.server_cpu_us > 0 ? large.approve.server_cpu_us / before.round.server_cpu_us : 0, 2) + "x",
           "(information)", std::nullopt, true});
    }
    rig.report.plot.push_back({"scale rate " + std::to_string(large.pending / 1000) + "k/" +
                                   std::to_string(small.pending / 1000) + "k",
                               rate_drop > 0 ? 1 / rate_drop : 0, std::nullopt, 1 / 1.2});
    bool scans_fail = false;
    for (const auto& row : rows) scans_fail = scans_fail || !row.first_scan_ms;
    rig.report.summary.push_back(
        {"5. scale: replayer first scan at " + std::to_string(large.pending) + " pending", "-",
         large.first_scan_ms ? fmt(*large.first_scan_ms / 1000, 1) + " s after spawn"
                             : std::string("never completes"),
         "-", "completes", !scans_fail});
    rig.report.summary.push_back(
        {"5. scale: `list` of pending at " + std::to_string(large.pending) + " (100 per page)",
         std::to_string(small.pending) + ": " + fmt(small.list_first_ms, 1) + " ms / " + fmt(small.list_next_ms, 1) + " ms",
         large.list_ok ? fmt(large.list_first_ms, 1) + " ms first page, " + fmt(large.list_next_ms, 1) +
                             " ms next, " + fmt(large.list_deep_ms, 1) + " ms deep, " +
                             fmt(large.list_filtered_ms, 1) + " ms filtered, " + fmt(large.list_no_match_ms, 1) +
                             " ms no match"
                       : "failed (section 5)",
         "-", "(information)", std::nullopt, true});
    rig.report.summary.push_back(
        {"5. scale: replayer steady scans at " + std::to_string(large.pending) + " pending (idle): CPU / wall per scan",
         std::to_string(small.pending) + ": " + scanCell(small, idle), scanCell(large, idle), "-", "(information)",
         std::nullopt, true});
    std::ostringstream f;
    f << "Replayer (src/core/replayer.cpp Replayer::scan; keys from src/nats/kv_bucket.cpp "
         "KvBucket::keys, an index fed by a KV watcher): ";
    for (const auto& row : rows) {
      f << row.pending << " pending: first scan "
        << (row.first_scan_ms
                ? "done " + fmt(*row.first_scan_ms / 1000, 2) + " s after spawn"
                : "never done (" +
                      std::to_string(row.failed_scans_at_start + row.failed_scans_idle) +
                      " `replay scan failed` in the first seconds)")
        << "; ";
    }
    f << "a bare kvStore_Keys of " << large.pending << " keys takes "
      << fmt(large.keys_unbounded_ms, 0)
      << " ms without a Timeout (with one, cnats 3.4.1 gives up early: nats.c#916). countersign lists "
         "no key at start: its key watcher's first pass (an ordered consumer from the stream's first "
         "sequence, keys and values, on a connection of its own) is the first scan's listing and gives "
         "the replayer every record's deadline, so no record is read for it (a bare client's sequential "
         "gets run at "
      << fmtRate(large.gets_per_second) << ", about "
      << fmt(static_cast<double>(large.pending) / std::max(1.0, large.gets_per_second), 1)
      << " s for every record at " << large.pending << " pending). Idle CPU at " << large.pending
      << " pending: countersign " << fmt(large.idle_cs_cpu * 100, 0) << "%, nats-server "
      << fmt(large.idle_server_cpu * 100, 0) << "% of a core (at " << small.pending << ": "
      << fmt(small.idle_cs_cpu * 100, 0) << "% / " << fmt(small.idle_server_cpu * 100, 0) << "%).";
    rig.report.findings.push_back(f.str());
  }
}

// ---- 6. soak: memory under a mixed load -----------------------------------------------------

// A fresh countersign under a steady mixed load for `seconds`: 80% allowed jobs, 20% holds, each
// hold approved as soon as its 202 is in (at most 8 approvals in flight). RSS, CPU and the
// pending gauge are sampled every 5 s; RSS must stay flat once warm.
struct SoakSample {
  double t = 0;         // seconds since the load started
  long rss_kb = 0;
  double cpu_s = 0;     // countersign CPU seconds since the start
  std::uint64_t allowed = 0, held = 0, approved = 0;
  double pending = -1;  // countersign_pending_approvals (-1: unreadable)
};

void soak(Rig& rig, Worker& worker) {
  const double seconds = rig.settings.soak_seconds;
  const double rate = 1000;  // jobs per second, 20% of them held
  auto cs = Countersign::start(rig.dir.path() / "cs-soak",
                               {.url = rig.server.url, .bucket = "cs_soak", .admin = true,
                                .extra_yaml = "release:\n  replay_interval: 1s\n"});
  Connection producer(rig.server.url, "bench-soak-producer", true);
  Connection approver(rig.server.url, "bench-soak-approver", true);
  worker.countOnly();
  std::atomic<std::uint64_t> held{0}, approved{0}, approve_failures{0}, allowed_sent{0};
  std::mutex mutex;
  std::condition_variable cv;
  std::deque<std::string> to_approve;
  int in_flight = 0;
  bool stop = false;
  Subscription hold_replies(producer, "_INBOX.bench.soakhold.*", [&](natsMsg* msg) {
    const std::string body(natsMsg_GetData(msg) != nullptr ? natsMsg_GetData(msg) : "",
                           static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
    if (body.find("\"code\":202") == std::string::npos) return;
    held.fetch_add(1);
    std::lock_guard lock(mutex);
    to_approve.emplace_back(natsMsg_GetSubject(msg) + std::strlen("_INBOX.bench.soakhold."));
    cv.notify_all();
  });
  Subscription approve_replies(approver, "_INBOX.bench.soakapprove.*", [&](natsMsg* msg) {
    const std::string body(natsMsg_GetData(msg) != nullptr ? natsMsg_GetData(msg) : "",
                           static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
    (body.find("\"code\":200") != std::string::npos ? approved : approve_failures).fetch_add(1);
    std::lock_guard lock(mutex);
    --in_flight;
    cv.notify_all();
  });
  std::thread approving([&] {
    for (;;) {
      std::unique_lock lock(mutex);
      cv.wait(lock, [&] { return stop || (!to_approve.empty() && in_flight < 8); });
      if (stop) return;
      const std::string id = to_approve.front();
      to_approve.pop_front();
      ++in_flight;
      lock.unlock();
      const std::string body = R"({"id":")" + id + R"(","approver":"bench","reason":"soak"})";
      auto msg = makeMsg(kApproveSubject, ("_INBOX.bench.soakapprove." + id).c_str(), body, {});
      check(natsConnection_PublishMsg(approver.raw(), msg.get()), "approve request");
    }
  });
  std::vector<SoakSample> samples;
  const std::int64_t start = nowNs();
  const std::string allow_payload = allowPayload();
  std::uint64_t sent = 0, holds_sent = 0;
  std::int64_t next_sample = start;
  timespec next{};
  clock_gettime(CLOCK_MONOTONIC, &next);
  note("soak: " + fmt(seconds, 0) + " s at " + fmtRate(rate) + " (80% allowed, 20% held and approved)");
  for (;;) {
    const std::int64_t now = nowNs();
    if (now >= next_sample) {
      SoakSample sample;
      sample.t = static_cast<double>(now - start) / 1e9;
      sample.rss_kb = rssKb(cs->pid());
      sample.cpu_s = cpuSeconds(cs->pid());
      sample.allowed = allowed_sent.load();
      sample.held = held.load();
      sample.approved = approved.load();
      sample.pending = cs->metric("countersign_pending_approvals").value_or(-1);
      samples.push_back(sample);
      if (samples.size() % 12 == 1) {
        note("soak " + fmt(sample.t, 0) + " s: RSS " + std::to_string(sample.rss_kb) + " KiB, held " +
             std::to_string(sample.held) + ", approved " + std::to_string(sample.approved) + ", pending " +
             fmt(sample.pending, 0));
      }
      next_sample += 5'000'000'000;
    }
    if (now - start >= static_cast<std::int64_t>(seconds * 1e9)) break;
    const auto due = static_cast<std::uint64_t>(static_cast<double>(now - start) * rate / 1e9);
    while (sent < due) {
      ++sent;
      if (sent % 5 == 0) {
        const std::string id = "soak-" + std::to_string(++holds_sent);
        auto msg = makeMsg(kHoldSubject, ("_INBOX.bench.soakhold." + id).c_str(), holdPayload(id),
                           kProducerHeaders);
        check(natsConnection_PublishMsg(producer.raw(), msg.get()), "hold request");
      } else {
        auto msg = makeMsg("agents.jobs.knowledge.read", nullptr, allow_payload, kProducerHeaders);
        check(natsConnection_PublishMsg(producer.raw(), msg.get()), "publish");
        allowed_sent.fetch_add(1);
      }
    }
    next.tv_nsec += 1'000'000;
    if (next.tv_nsec >= 1'000'000'000) {
      next.tv_nsec -= 1'000'000'000;
      ++next.tv_sec;
    }
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, nullptr);
  }
  {
    std::lock_guard lock(mutex);
    stop = true;
    cv.notify_all();
  }
  approving.join();

  // Flat: the mean RSS of the last fifth of the samples against that of the second fifth (the
  // first fifth is the warm-up: buffers, caches and the allocator's arenas filling).
  auto meanRss = [&](std::size_t from, std::size_t to) {
    double total = 0;
    for (std::size_t i = from; i < to; ++i) total += static_cast<double>(samples[i].rss_kb);
    return to > from ? total / static_cast<double>(to - from) : 0;
  };
  const std::size_t n = samples.size();
  const double warm = meanRss(n / 5, 2 * n / 5);
  const double last = meanRss(4 * n / 5, n);
  const std::uint64_t ops_between =
      n >= 5 ? (samples[n - 1].allowed + samples[n - 1].held + samples[n - 1].approved) -
                   (samples[n / 5].allowed + samples[n / 5].held + samples[n / 5].approved)
             : 0;
  const double bytes_per_op =
      ops_between > 0 ? (static_cast<double>(samples[n - 1].rss_kb) - static_cast<double>(samples[n / 5].rss_kb)) *
                            1024.0 / static_cast<double>(ops_between)
                      : 0;
  const double growth = warm > 0 ? last / warm : 0;
  const bool flat = n >= 5 && growth > 0 && growth < 1.1;
  rig.report.summary.push_back(
      {"6. soak: countersign RSS over " + fmt(seconds / 60, 1) + " min at " + fmtRate(rate) +
           " (80% allowed, 20% held + approved)",
       "-", fmt(warm / 1024, 1) + " MiB warm -> " + fmt(last / 1024, 1) + " MiB at the end",
       fmt(growth, 3) + "x; " + fmt(bytes_per_op, 2) + " B per operation", "< 1.1x (flat)", flat});
  auto& d = rig.report.details;
  d << "### 6. Memory under a mixed load (soak)\n\n"
    << "A fresh countersign (admin listener for /metrics, replayer every 1 s) gets " << fmtRate(rate)
    << " jobs for " << fmt(seconds, 0)
    << " s from one send_asap producer connection: 4 of 5 to `agents.jobs.knowledge.read` (allowed, "
       "with receipts), every 5th a request to `agents.jobs.finance.payment.execute` (held); each "
       "`202` puts its id on a queue that an approver drains with at most 8 approve requests in "
       "flight. Every 5 s: RSS (/proc/<pid>/status), CPU, and `countersign_pending_approvals`. Flat = "
       "the mean RSS of the last fifth of the samples within 1.1x of the second fifth (the first "
       "fifth is warm-up). Allowed jobs sent: "
    << allowed_sent.load() << "; held: " << held.load() << "; approved: " << approved.load()
    << "; approve failures: " << approve_failures.load()
    << "; growth from the end of the first fifth to the end: " << fmt(bytes_per_op, 2)
    << " bytes per operation.\n\n"
    << "| t | RSS | countersign CPU (cumulative) | allowed | held | approved | pending |\n"
    << "|---|---|---|---|---|---|---|\n";
  for (std::size_t i = 0; i < n; i += std::max<std::size_t>(1, n / 20)) {
    const auto& sample = samples[i];
    d << "| " << fmt(sample.t, 0) << " s | " << fmt(static_cast<double>(sample.rss_kb) / 1024, 1) << " MiB | "
      << fmt(sample.cpu_s - samples.front().cpu_s, 1) << " s | " << sample.allowed << " | " << sample.held
      << " | " << sample.approved << " | " << fmt(sample.pending, 0) << " |\n";
  }
  d << "\n";
  if (!rig.settings.out.empty()) {
    std::ostringstream data;
    data << "# seconds rss_mib pending\n";
    for (const auto& sample : samples)
      data << fmt(sample.t, 1) << ' ' << fmt(static_cast<double>(sample.rss_kb) / 1024, 2) << ' '
           << fmt(std::max(0.0, sample.pending), 0) << '\n';
    writeFile(fs::path(rig.settings.out).replace_extension(".soak.dat"), data.str());
  }
  cs->process->stop();
}

// ---- the run --------------------------------------------------------------------------------

void writeReport(const Settings& settings, const Report& report, const std::string& load_before) {
  std::ostringstream out;
  out << "## Summary\n\n"
      << "| measure | raw NATS baseline | countersign | ratio / added | target | met "
         "|\n|---|---|---|---|---|---|\n";
  for (const auto& t : report.summary) {
    out << "| " << t.measure << " | " << t.baseline << " | " << t.countersign << " | " << t.ratio
        << " | " << t.target << " | " << yesNo(t) << " |\n";
  }
  out << "\nLoad average (1/5/15 min) when the system benchmarks started: " << load_before
      << "; when they ended: " << loadAverage() << ".\n\n";
  if (!report.findings.empty()) {
    out << "## Measured findings\n\n";
    for (const auto& f : report.findings) out << "- " << f << "\n";
    out << "\n";
  }
  out << "## Details\n\n" << report.details.str();
  for (const auto& section : report.details_after) out << section;
  if (settings.out.empty()) {
    std::cout << out.str();
    return;
  }
  writeFile(settings.out, out.str());
  // The ratios with targets, for bench/plot.gp (bench/run.sh draws them): next to the report,
  // <out>.dat; "-" where no bare sidecar was measured.
  if (report.plot.empty()) return;
  std::ostringstream data;
  data << "# bench_system ratios: measure, countersign / baseline, bare sidecar / raw, target\n";
  for (const auto& p : report.plot) {
    data << '"' << p.label << "\" " << fmt(p.ratio, 6) << ' '
         << (p.side_ratio ? fmt(*p.side_ratio, 6) : std::string("-")) << ' ' << fmt(p.target, 6)
         << '\n';
  }
  writeFile(fs::path(settings.out).replace_extension(".dat"), data.str());
}

int runAll(const Settings& settings) {
  nats_Open(-1);
  const std::string load_before = loadAverage();
  TempDir dir;
  note("starting nats-server in " + dir.path().string());
  auto server = NatsServer::start(dir.path() / "nats");
  Report report;
  Rig rig{*server, dir, settings, report, seedSnapshot()};
  auto worker = std::make_unique<Worker>(server->url);

  if (settings.wants("allow") || settings.wants("latency") || settings.wants("hold")) {
    auto cs = Countersign::start(dir.path() / "cs-allow", {.url = server->url});
    note("countersign ready in " + fmt(cs->startup_ms, 0) + " ms");
    if (settings.wants("allow") || settings.wants("latency")) {
      auto relay = startRelay(dir.path() / "relay1", server->url, "relay1.jobs.", false);
      auto relay_asap = startRelay(dir.path() / "relay2", server->url, "relay2.jobs.", true);
      auto relay_receipt = startRelay(dir.path() / "relay3", server->url, "relay3.jobs.", false, true);
      auto cs_plain = Countersign::start(
          dir.path() / "cs-allow-no-receipts",
          {.url = server->url, .bucket = "countersign_plain", .from = "agents2.jobs.>",
           .extra_yaml = "receipts:\n  allowed: false\n"});
      AllowPipelines pipelines{
          .direct = {"direct (no process between)", "jobs.knowledge.read", 0, 0},
          .relay = {"best relay", "relay1.jobs.knowledge.read", relay->pid(), 0},
          .relay_asap = {"best relay, send_asap", "relay2.jobs.knowledge.read", relay_asap->pid(), 0},
          .relay_receipt = {"best relay + receipt", "relay3.jobs.knowledge.read", relay_receipt->pid(), 0},
          .cs = {"countersign", "agents.jobs.knowledge.read", cs->pid(), 0},
          .cs_plain = {"countersign, receipts off", "agents2.jobs.knowledge.read", cs_plain->pid(), 0}};
      allowThroughput(rig, pipelines, *worker, *cs);
      if (settings.wants("latency")) {
        waitQuiet({cs->pid(), cs_plain->pid(), server->pid()}, "latency");
        allowLatency(rig, *worker, pipelines);
      }
    }
    if (settings.wants("hold")) {
      waitQuiet({cs->pid(), server->pid()}, "hold");
      holdRate(rig, cs);
    }
  }
  if (settings.wants("soak")) {
    waitQuiet({server->pid()}, "soak");
    soak(rig, *worker);
  }
  if (settings.wants("approve") || settings.wants("scale")) {
    Connection admin(server->url, "bench-admin", true);
    addJobsStream(admin);
    if (settings.wants("approve")) {
      waitQuiet({server->pid()}, "approve");
      approveToRelease(rig, *worker);
    }
    if (settings.wants("scale")) {
      waitQuiet({server->pid()}, "scale");
      scale(rig, *worker);
    }
  }
  worker.reset();
  writeReport(settings, report, load_before);
  note("done");
  return 0;
}

// ---- micro-benchmark table ------------------------------------------------------------------

int microTable(const std::string& path) {
  const std::string text = readFile(path);
  rapidjson::Document doc;
  doc.Parse(text.data(), text.size());
  if (doc.HasParseError() || !doc.IsObject() || !doc.HasMember("benchmarks"))
    die("not Google Benchmark JSON: " + path);
  struct Aim {
    const char* prefix;
    double ns;
    const char* text;
  };
  const std::vector<Aim> aims{{"BM_PolicySeed", 1000, "< 1 µs"},
                              {"BM_Policy50Rules", 1000, "< 1 µs"},
                              {"BM_JobHashJson", 10000, "< 10 µs (1 KiB)"},
                              {"BM_ParseAndJobHashJson", 10000, "< 10 µs (1 KiB)"},
                              {"BM_ParseAndJobHashBytes", 10000, "< 10 µs (1 KiB)"},
                              {"BM_JobHashBytes/1024", 10000, "< 10 µs (1 KiB)"},
                              {"BM_ReceiptAllowed", 25000, "< 25 µs"},
                              {"BM_SignWithLoadedKey", 25000, "< 25 µs"}};
  std::cout << "| benchmark | time per op | CPU per op | iterations | aim | met "
               "|\n|---|---|---|---|---|---|\n";
  for (const auto& b : doc["benchmarks"].GetArray()) {
    if (b.HasMember("run_type") && std::string(b["run_type"].GetString()) != "iteration") continue;
    const std::string name = b["name"].GetString();
    double scale_to_ns = 1;
    const std::string unit = b.HasMember("time_unit") ? b["time_unit"].GetString() : "ns";
    if (unit == "us") scale_to_ns = 1e3;
    if (unit == "ms") scale_to_ns = 1e6;
    const double real_ns = b["real_time"].GetDouble() * scale_to_ns;
    const double cpu_ns = b["cpu_time"].GetDouble() * scale_to_ns;
    std::string aim = "-", met = "-";
    for (const auto& a : aims) {
      if (name.rfind(a.prefix, 0) == 0) {
        aim = a.text;
        met = cpu_ns < a.ns ? "**met**" : "**missed**";
        break;
      }
    }
    auto show = [](double ns) {
      return ns < 1000 ? fmt(ns, 0) + " ns" : fmt(ns / 1000, 2) + " µs";
    };
    std::cout << "| " << name << " | " << show(real_ns) << " | " << show(cpu_ns) << " | "
              << b["iterations"].GetInt64() << " | " << aim << " | " << met << " |\n";
  }
  return 0;
}

int usage() {
  std::cerr << "usage: bench_system run [--quick] [--out FILE] [--scale-max N] [--only "
               "allow,latency,hold,approve,scale,governance,soak] [--soak-seconds S]\n"
               "       (with --out FILE.md it also writes the chart's ratios to FILE.dat)\n"
               "       bench_system micro-table FILE.json\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  const std::string command = argv[1];
  if (command == "relay") return runRelay(argc, argv);
  if (command == "sidecar") return runSidecar(argc, argv);
  if (command == "micro-table") return argc == 3 ? microTable(argv[2]) : usage();
  if (command != "run") return usage();
  Settings settings;
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--quick") {
      settings.quick = true;
    } else if (arg == "--soak-seconds" && i + 1 < argc) {
      settings.soak_seconds = std::stod(argv[++i]);
    } else if (arg == "--scale-max" && i + 1 < argc) {
      settings.scale_max = std::stoul(argv[++i]);
    } else if (arg == "--out" && i + 1 < argc) {
      settings.out = argv[++i];
    } else if (arg == "--only" && i + 1 < argc) {
      std::istringstream in(argv[++i]);
      for (std::string phase; std::getline(in, phase, ',');) settings.only.insert(phase);
    } else {
      return usage();
    }
  }
  std::signal(SIGPIPE, SIG_IGN);
  return runAll(settings);
}
