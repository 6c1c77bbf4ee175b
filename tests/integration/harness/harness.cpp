// Integration-test harness. Failures to set up (a server that does not start, a client that
// cannot connect, a countersign that never gets ready) throw std::runtime_error with the
// child's log: GoogleTest reports the exception as a failure of the running test, and the
// destructors still stop every child.
#include "integration/harness/harness.hpp"

#include "countersign/nkeys.hpp"

#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "nats/child_process.hpp"
#include "nats/connection.hpp"
#include "nats/message_convert.hpp"

extern char** environ;

namespace countersign::testing {
namespace fs = std::filesystem;
using natsio::NatsMsgPtr;

namespace {

constexpr auto kServerStartTimeout = 10s;
constexpr auto kStopGrace = 10s;
constexpr auto kCompleteWait = 10s;
constexpr std::size_t kLogTail = 40;

[[noreturn]] void setupFailure(const std::string& what) {
  throw std::runtime_error(what);
}

std::string natsFailure(natsStatus s, const std::string& what) {
  return natsio::natsError(s, what).message;
}

std::string readFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// The current environment with `extra` set on top (replacing variables of the same name).
std::vector<std::string> environmentWith(const std::map<std::string, std::string>& extra) {
  std::vector<std::string> env;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    std::string_view text(*entry);
    auto eq = text.find('=');
    std::string name(text.substr(0, eq));
    if (!extra.contains(name)) env.emplace_back(text);
  }
  for (const auto& [name, value] : extra) env.push_back(name + "=" + value);
  return env;
}

natsio::OwnedNatsMsg buildMsg(const std::string& subject, const std::string& payload, const Headers& headers,
                    const std::string& reply) {
  OutMessage out{subject, reply, headers.empty() ? nullptr : &headers, payload};
  auto msg = natsio::toNatsMsg(out);
  if (!msg) setupFailure("message to " + subject + ": " + msg.error().message);
  return std::move(*msg);
}

// A message as the test sees it; a malformed header block shows up as no headers.
Message convert(natsMsg* msg) {
  auto converted = natsio::fromNatsMsg(msg);
  if (converted) return std::move(*converted);
  Message partial;
  if (const char* subject = natsMsg_GetSubject(msg)) partial.subject = subject;
  if (const char* reply = natsMsg_GetReply(msg)) partial.reply = reply;
  if (const char* data = natsMsg_GetData(msg)) {
    partial.payload.assign(data, static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
  }
  return partial;
}

kvStore* bindBucket(jsCtx* js, const std::string& bucket, bool create) {
  kvStore* kv = nullptr;
  natsStatus s = js_KeyValue(&kv, js, bucket.c_str());
  if (s == NATS_NOT_FOUND && create) {
    kvConfig config;
    kvConfig_Init(&config);
    config.Bucket = bucket.c_str();
    config.History = 1;
    config.StorageType = js_FileStorage;
    s = js_CreateKeyValue(&kv, js, &config);
  }
  if (s == NATS_NOT_FOUND) return nullptr;
  if (s != NATS_OK) setupFailure(natsFailure(s, "KV bucket " + bucket));
  return kv;
}

// Unsubscribes and waits until cnats has called the subscription's onComplete callback (which
// sets `closed` under `mutex` and notifies `cv`), then destroys it: only then may the callbacks'
// closure go away.
void closeSubscription(natsSubscription* sub, std::mutex& mutex, std::condition_variable& cv,
                       const bool& closed) {
  natsSubscription_Unsubscribe(sub);
  {
    std::unique_lock lock(mutex);
    cv.wait_for(lock, kCompleteWait, [&] { return closed; });
  }
  natsSubscription_Destroy(sub);
}

}  // namespace

// ---- TempDir --------------------------------------------------------------------------------

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern =
      std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/countersign-it-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) {
    setupFailure("mkdtemp " + pattern + ": " + std::strerror(errno));
  }
  path_ = pattern;
}

TempDir::~TempDir() {
  if (std::getenv("KEEP_TEST_DIRS") != nullptr) {
    std::cerr << "[harness] keeping " << path_ << '\n';
    return;
  }
  std::error_code ec;
  fs::remove_all(path_, ec);
}

fs::path TempDir::write(const std::string& name, const std::string& text) const {
  fs::path target = path_ / name;
  std::ofstream out(target, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) setupFailure("cannot write " + target.string());
  return target;
}

// ---- NatsServer -----------------------------------------------------------------------------

std::unique_ptr<NatsServer> NatsServer::start(NatsServerOptions options) {
  std::unique_ptr<NatsServer> server(new NatsServer());
  server->options_ = std::move(options);
  server->dir_ = std::make_unique<TempDir>();
  server->port_ = server->options_.port > 0 ? server->options_.port : 0;
  server->launch();
  return server;
}

NatsServer::~NatsServer() {
  if (running()) {
    natsio::stopProcess(pid_, kStopGrace);
    pid_ = -1;
  }
}

std::string NatsServer::url() const {
  return "nats://127.0.0.1:" + std::to_string(port_);
}

// nats-server keeps its JetStream files in <store_dir>/jetstream.
const fs::path& NatsServer::storeDir() const {
  return dir_->path();
}

void NatsServer::launch() {
  const fs::path& dir = dir_->path();
  std::ostringstream conf;
  conf << "host: 127.0.0.1\n";
  conf << "port: " << (port_ > 0 ? port_ : -1) << "\n";
  if (options_.jetstream) conf << "jetstream {\n  store_dir: \"" << dir.string() << "\"\n}\n";
  conf << options_.extra_config << "\n";
  const fs::path conf_file = dir_->write("nats-server.conf", conf.str());
  const fs::path log_file = dir / "nats-server.log";

  natsio::SpawnOptions spawn;
  spawn.argv = {NATS_SERVER_BIN, "-c", conf_file.string(), "--ports_file_dir", dir.string()};
  spawn.stdout_path = log_file.string();
  spawn.stderr_path = log_file.string();
  spawn.death_signal = SIGKILL;
  auto pid = natsio::spawnProcess(spawn);
  if (!pid) setupFailure("nats-server: " + pid.error().message);
  pid_ = *pid;

  const auto deadline = std::chrono::steady_clock::now() + kServerStartTimeout;
  for (;;) {
    if (auto status = natsio::waitProcess(pid_, 0ms)) {
      pid_ = -1;
      setupFailure("nats-server exited with status " + std::to_string(*status) +
                   " before it was ready (config " + conf_file.string() + "):\n" +
                   natsio::tailFile(log_file, kLogTail));
    }
    if (auto port = natsio::readNatsPortsFile(dir, pid_)) {
      if (natsio::tcpConnects("127.0.0.1", *port)) {
        port_ = *port;
        return;
      }
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      natsio::stopProcess(pid_, 1s);
      pid_ = -1;
      setupFailure("nats-server not ready after 10 s:\n" + natsio::tailFile(log_file, kLogTail));
    }
    std::this_thread::sleep_for(10ms);
  }
}

void NatsServer::stop() {
  if (!running()) return;
  natsio::stopProcess(pid_, kStopGrace);
  pid_ = -1;
}

void NatsServer::kill9() {
  if (!running()) return;
  ::kill(pid_, SIGKILL);
  natsio::waitProcess(pid_, 30s);
  pid_ = -1;
}

void NatsServer::pause() {
  if (running()) ::kill(pid_, SIGSTOP);
}

void NatsServer::resume() {
  if (running()) ::kill(pid_, SIGCONT);
}

void NatsServer::restart() {
  stop();
  launch();
}

// ---- Client ---------------------------------------------------------------------------------

Client::Client(const std::string& url, const std::string& inbox_prefix) {
  natsOptions* opts = nullptr;
  natsStatus s = natsOptions_Create(&opts);
  if (s == NATS_OK) s = natsOptions_SetURL(opts, url.c_str());
  if (s == NATS_OK && !inbox_prefix.empty()) s = natsOptions_SetCustomInboxPrefix(opts, inbox_prefix.c_str());
  if (s == NATS_OK) s = natsOptions_SetName(opts, "countersign-test-client");
  if (s == NATS_OK) s = natsOptions_SetSendAsap(opts, true);
  // Tests restart servers under a live client: keep reconnecting, quickly.
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(opts, -1);
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(opts, 100);
  if (s == NATS_OK) s = natsConnection_Connect(&conn_, opts);
  natsOptions_Destroy(opts);
  if (s != NATS_OK) {
    conn_ = nullptr;
    setupFailure(natsFailure(s, "test client cannot connect to " + url));
  }
  s = natsConnection_JetStream(&js_, conn_, nullptr);
  if (s != NATS_OK) {
    natsConnection_Destroy(conn_);
    conn_ = nullptr;
    setupFailure(natsFailure(s, "test client JetStream context"));
  }
}

Client::~Client() {
  if (js_ != nullptr) jsCtx_Destroy(js_);
  if (conn_ != nullptr) {
    natsConnection_Close(conn_);
    natsConnection_Destroy(conn_);
  }
}

void Client::publish(const std::string& subject, const std::string& payload, const Headers& headers,
                     const std::string& reply) {
  natsio::OwnedNatsMsg msg = buildMsg(subject, payload, headers, reply);
  natsStatus s = natsConnection_PublishMsg(conn_, msg.get());
  if (s != NATS_OK) setupFailure(natsFailure(s, "publish to " + subject));
}

void Client::flush() {
  natsStatus s = natsConnection_FlushTimeout(conn_, 5000);
  if (s != NATS_OK) setupFailure(natsFailure(s, "flush"));
}

std::optional<Message> Client::request(const std::string& subject, const std::string& payload,
                                       const Headers& headers, std::chrono::milliseconds timeout) {
  natsio::OwnedNatsMsg msg = buildMsg(subject, payload, headers, "");
  natsMsg* raw_reply = nullptr;
  natsStatus s = natsConnection_RequestMsg(&raw_reply, conn_, msg.get(),
                                           std::max<std::int64_t>(1, timeout.count()));
  NatsMsgPtr reply(raw_reply);
  if (s != NATS_OK || reply == nullptr) return std::nullopt;
  return convert(reply.get());
}

void Client::addStream(const std::string& name, const std::vector<std::string>& subjects,
                       std::chrono::seconds duplicate_window) {
  std::vector<const char*> subject_ptrs;
  for (const auto& subject : subjects) subject_ptrs.push_back(subject.c_str());
  jsStreamConfig config;
  jsStreamConfig_Init(&config);
  config.Name = name.c_str();
  config.Subjects = subject_ptrs.data();
  config.SubjectsLen = static_cast<int>(subject_ptrs.size());
  config.Storage = js_FileStorage;
  config.Duplicates =
      std::chrono::duration_cast<std::chrono::nanoseconds>(duplicate_window).count();
  jsStreamInfo* info = nullptr;
  jsErrCode js_error{};
  natsStatus s = js_AddStream(&info, js_, &config, nullptr, &js_error);
  jsStreamInfo_Destroy(info);
  if (s != NATS_OK) setupFailure(natsFailure(s, "add stream " + name));
}

std::optional<std::string> Client::kvGet(const std::string& bucket, const std::string& key) {
  kvStore* kv = bindBucket(js_, bucket, false);
  if (kv == nullptr) return std::nullopt;
  kvEntry* entry = nullptr;
  natsStatus s = kvStore_Get(&entry, kv, key.c_str());
  std::optional<std::string> value;
  if (s == NATS_OK && kvEntry_Operation(entry) == kvOp_Put) {
    const char* data = static_cast<const char*>(kvEntry_Value(entry));
    value =
        std::string(data != nullptr ? data : "", static_cast<std::size_t>(kvEntry_ValueLen(entry)));
  }
  kvEntry_Destroy(entry);
  kvStore_Destroy(kv);
  if (s != NATS_OK && s != NATS_NOT_FOUND) setupFailure(natsFailure(s, "KV get " + key));
  return value;
}

void Client::kvPut(const std::string& bucket, const std::string& key, const std::string& value) {
  kvStore* kv = bindBucket(js_, bucket, true);
  natsStatus s =
      kvStore_Put(nullptr, kv, key.c_str(), value.data(), static_cast<int>(value.size()));
  kvStore_Destroy(kv);
  if (s != NATS_OK) setupFailure(natsFailure(s, "KV put " + key));
}

jsStreamState Client::streamState(const std::string& stream) {
  jsStreamInfo* info = nullptr;
  jsErrCode js_error{};
  natsStatus s = js_GetStreamInfo(&info, js_, stream.c_str(), nullptr, &js_error);
  if (s != NATS_OK) setupFailure(natsFailure(s, "stream info " + stream));
  jsStreamState state = info->State;
  state.Subjects = nullptr;  // owned by `info`
  state.Deleted = nullptr;
  jsStreamInfo_Destroy(info);
  return state;
}

std::uint64_t Client::streamMessageCount(const std::string& stream) { return streamState(stream).Msgs; }

std::uint64_t Client::streamConsumerCount(const std::string& stream) { return streamState(stream).Consumers; }

// ---- Collector ------------------------------------------------------------------------------

Collector::Collector(Client& client, const std::string& subject) {
  natsStatus s =
      natsConnection_Subscribe(&sub_, client.raw(), subject.c_str(), &Collector::onMessage, this);
  if (s == NATS_OK) s = natsSubscription_SetOnCompleteCB(sub_, &Collector::onComplete, this);
  if (s == NATS_OK) s = natsSubscription_SetPendingLimits(sub_, 1'000'000, 1 << 30);
  // The subscription must be known to the server before the test publishes.
  if (s == NATS_OK) s = natsConnection_FlushTimeout(client.raw(), 5000);
  if (s != NATS_OK) {
    std::string what = natsFailure(s, "collect " + subject);
    if (sub_ != nullptr) closeSubscription(sub_, mutex_, cv_, closed_);
    setupFailure(what);
  }
}

Collector::~Collector() {
  closeSubscription(sub_, mutex_, cv_, closed_);
}

void Collector::onMessage(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
  auto* self = static_cast<Collector*>(closure);
  NatsMsgPtr owned(msg);
  Message message = convert(msg);
  std::lock_guard lock(self->mutex_);
  self->messages_.push_back(std::move(message));
  self->cv_.notify_all();
}

void Collector::onComplete(void* closure) {
  auto* self = static_cast<Collector*>(closure);
  std::lock_guard lock(self->mutex_);
  self->closed_ = true;
  self->cv_.notify_all();
}

std::vector<Message> Collector::waitFor(std::size_t count, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  cv_.wait_for(lock, timeout, [&] { return messages_.size() >= count; });
  return messages_;
}

std::vector<Message> Collector::messages() const {
  std::lock_guard lock(mutex_);
  return messages_;
}

std::size_t Collector::count() const {
  std::lock_guard lock(mutex_);
  return messages_.size();
}

// ---- Responder ------------------------------------------------------------------------------

Responder::Responder(Client& client, const std::string& subject, std::string reply_payload)
    : conn_(client.raw()), reply_payload_(std::move(reply_payload)) {
  natsStatus s =
      natsConnection_Subscribe(&sub_, conn_, subject.c_str(), &Responder::onMessage, this);
  if (s == NATS_OK) s = natsSubscription_SetOnCompleteCB(sub_, &Responder::onComplete, this);
  if (s == NATS_OK) s = natsConnection_FlushTimeout(conn_, 5000);
  if (s != NATS_OK) {
    std::string what = natsFailure(s, "respond on " + subject);
    if (sub_ != nullptr) closeSubscription(sub_, mutex_, cv_, closed_);
    setupFailure(what);
  }
}

Responder::~Responder() {
  closeSubscription(sub_, mutex_, cv_, closed_);
}

void Responder::onMessage(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
  auto* self = static_cast<Responder*>(closure);
  NatsMsgPtr owned(msg);
  Message message = convert(msg);
  const std::string reply = message.reply;
  {
    // Recorded before answering: a test that got the answer must find the request here.
    std::lock_guard lock(self->mutex_);
    self->received_.push_back(std::move(message));
  }
  if (!reply.empty()) {
    natsConnection_Publish(self->conn_, reply.c_str(), self->reply_payload_.data(),
                           static_cast<int>(self->reply_payload_.size()));
  }
}

void Responder::onComplete(void* closure) {
  auto* self = static_cast<Responder*>(closure);
  std::lock_guard lock(self->mutex_);
  self->closed_ = true;
  self->cv_.notify_all();
}

std::vector<Message> Responder::received() const {
  std::lock_guard lock(mutex_);
  return received_;
}

// ---- CountersignProcess ---------------------------------------------------------------------

std::string CountersignProcess::receiptKey() const {
  auto seed = nkeys::readSeedFile((dir() / "receipt.nk").string());
  EXPECT_TRUE(seed.has_value()) << "no receipt.nk in countersign's dir";
  return seed ? nkeys::encodePublicKey(nkeys::publicKeyOf(*seed)) : std::string();
}

std::unique_ptr<CountersignProcess> CountersignProcess::start(CountersignOptions options) {
  std::unique_ptr<CountersignProcess> process(new CountersignProcess());
  process->options_ = std::move(options);
  process->dir_ = std::make_unique<TempDir>();
  const fs::path config = process->dir_->write("countersign.yaml", process->options_.config_yaml);
  process->dir_->write("policy.yaml", process->options_.policy_yaml);
  if (process->options_.config_yaml.find("seed_file") == std::string::npos) {
    // Every countersign of a test shares one key, as replicas share their seed file: a job held by
    // one is released by another, which checks the tag the first one wrote (docs/security.md).
    static const nkeys::Seed shared = nkeys::generateSeed();
    (void)nkeys::writeSeedFile((process->dir_->path() / "receipt.nk").string(), shared);
  }

  natsio::SpawnOptions spawn;
  spawn.argv = {process->options_.binary, "run", "--config", config.string()};
  spawn.env = environmentWith(process->options_.env);
  spawn.working_dir = process->dir_->path().string();
  spawn.stdout_path = (process->dir_->path() / "stdout.log").string();
  spawn.stderr_path = (process->dir_->path() / "stderr.log").string();
  spawn.death_signal = SIGKILL;
  auto pid = natsio::spawnProcess(spawn);
  if (!pid) setupFailure("countersign: " + pid.error().message);
  process->pid_ = *pid;
  if (process->options_.wait_ready) process->waitReady();
  return process;
}

CountersignProcess::~CountersignProcess() {
  if (::testing::Test::HasFailure() && dir_ != nullptr) {
    std::cerr << "[harness] countersign (pid " << pid_ << ") output, last lines:\n"
              << natsio::tailFile(dir_->path() / "stdout.log", kLogTail)
              << natsio::tailFile(dir_->path() / "stderr.log", kLogTail);
  }
  kill9();
}

const fs::path& CountersignProcess::dir() const {
  return dir_->path();
}

fs::path CountersignProcess::policyPath() const {
  return dir_->path() / "policy.yaml";
}

std::string CountersignProcess::logs() const {
  return readFile(dir_->path() / "stdout.log") + readFile(dir_->path() / "stderr.log");
}

void CountersignProcess::waitReady(std::chrono::milliseconds timeout) {
  if (options_.nats_url.empty()) {
    setupFailure("CountersignOptions.nats_url is empty: cannot probe readiness");
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  Client probe(options_.nats_url);
  const std::string subject = options_.prefix + ".control.list";
  for (;;) {
    if (auto status = waitExit(0ms)) {
      setupFailure("countersign exited with status " + std::to_string(*status) +
                   " before it was ready:\n" + logs());
    }
    auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (remaining <= 0ms) {
      setupFailure("countersign not ready after " + std::to_string(timeout.count()) + " ms:\n" +
                   logs());
    }
    if (probe.request(subject, "{}", {}, std::min<std::chrono::milliseconds>(remaining, 1s))) {
      // Control answers a moment before the start banner is written (its last line names the
      // receipt key): tests that read it right after waitReady must find it, and a sanitized
      // build is slow enough to lose that race. Not fatal: the tests that read it say so.
      const auto banner_deadline = std::chrono::steady_clock::now() + 5s;
      while (readFile(dir_->path() / "stdout.log").find("  receipts signed by ") == std::string::npos &&
             std::chrono::steady_clock::now() < banner_deadline && !waitExit(0ms)) {
        std::this_thread::sleep_for(10ms);
      }
      return;
    }
    std::this_thread::sleep_for(100ms);
  }
}

void CountersignProcess::signal(int signo) {
  if (pid_ > 0 && !exit_status_) ::kill(pid_, signo);
}

int CountersignProcess::stop(std::chrono::milliseconds timeout) {
  if (exit_status_) return *exit_status_;
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  if (auto status = waitExit(timeout)) return *status;
  ADD_FAILURE() << "countersign did not stop within " << timeout.count()
                << " ms of SIGTERM; killed";
  kill9();
  return exit_status_.value_or(-1);
}

void CountersignProcess::kill9() {
  if (pid_ <= 0 || exit_status_) return;
  ::kill(pid_, SIGKILL);
  exit_status_ = natsio::waitProcess(pid_, 30s);
}

std::optional<int> CountersignProcess::waitExit(std::chrono::milliseconds timeout) {
  if (exit_status_) return exit_status_;
  if (pid_ <= 0) return std::nullopt;
  exit_status_ = natsio::waitProcess(pid_, timeout);
  return exit_status_;
}

// ---- free functions -------------------------------------------------------------------------

CommandResult runCountersign(const std::vector<std::string>& args,
                             const std::map<std::string, std::string>& env,
                             std::chrono::milliseconds timeout) {
  TempDir dir;
  natsio::SpawnOptions spawn;
  spawn.argv.push_back(COUNTERSIGN_BIN);
  spawn.argv.insert(spawn.argv.end(), args.begin(), args.end());
  spawn.env = environmentWith(env);
  spawn.stdout_path = (dir.path() / "out").string();
  spawn.stderr_path = (dir.path() / "err").string();
  spawn.death_signal = SIGKILL;
  CommandResult result;
  auto pid = natsio::spawnProcess(spawn);
  if (!pid) {
    ADD_FAILURE() << "cannot run countersign: " << pid.error().message;
    return result;
  }
  auto status = natsio::waitProcess(*pid, timeout);
  if (!status) {
    ::kill(*pid, SIGKILL);
    natsio::waitProcess(*pid, 30s);
    ADD_FAILURE() << "countersign did not finish within " << timeout.count() << " ms; killed";
  } else {
    result.exit_code = *status;
  }
  result.out = readFile(dir.path() / "out");
  result.err = readFile(dir.path() / "err");
  return result;
}

std::string basicConfig(const std::string& nats_url, const std::string& extra,
                        const std::string& admin) {
  std::string config =
      "nats:\n"
      "  servers: [\"" +
      nats_url +
      "\"]\n"
      "  embedded: false\n"
      "policy:\n"
      "  file: policy.yaml\n"
      "routes:\n"
      "  - name: jobs\n"
      "    from: \"agents.jobs.>\"\n"
      "    to: \"jobs.>\"\n" +
      admin;
  if (!extra.empty()) {
    config += extra;
    if (extra.back() != '\n') config += "\n";
  }
  return config;
}

std::string seedPolicy() {
  const fs::path path = fs::path(COUNTERSIGN_SOURCE_DIR) / "policies" / "approval-policy.yaml";
  if (!fs::exists(path)) setupFailure("seed policy missing: " + path.string());
  return readFile(path);
}

std::map<std::string, std::string> jsonFields(const std::string& body) {
  rapidjson::Document doc;
  doc.Parse(body.data(), body.size());
  if (doc.HasParseError() || !doc.IsObject()) {
    ADD_FAILURE() << "not a JSON object: " << body;
    return {};
  }
  std::map<std::string, std::string> fields;
  for (const auto& member : doc.GetObject()) {
    std::string name(member.name.GetString(), member.name.GetStringLength());
    if (member.value.IsString()) {
      fields[name] = std::string(member.value.GetString(), member.value.GetStringLength());
    } else {
      rapidjson::StringBuffer buffer;
      rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
      member.value.Accept(writer);
      fields[name] = std::string(buffer.GetString(), buffer.GetSize());
    }
  }
  return fields;
}

int teardownRounds(int normal) {
  const char* rounds = std::getenv("TEARDOWN_ROUNDS");
  if (rounds == nullptr) return normal;
  const int asked = std::atoi(rounds);
  return asked > 0 ? asked : normal;
}

}  // namespace countersign::testing
