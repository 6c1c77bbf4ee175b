// The runtime shell of `countersign run`: every start failure exits 3 with one line (no abort,
// no password), the threads at idle are few and named, and a SIGTERM stops quietly, also in
// the middle of holds and approvals, losing nothing that was answered.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <atomic>
#include <fstream>
#include <mutex>
#include <future>
#include <iostream>
#include <optional>
#include <thread>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "app/gateway.hpp"
#include "countersign/config.hpp"
#include "countersign/events.hpp"
#include "countersign/intake.hpp"
#include "countersign/metrics.hpp"
#include "countersign/policy.hpp"
#include "countersign/services.hpp"
#include "countersign/work_pool.hpp"
#include "integration/harness/harness.hpp"
#include "integration/harness/wire.hpp"
#include "nats/connection.hpp"
#include "nats/kv_bucket.hpp"
#include "nats/nats_publisher.hpp"
#include "nats/subscriber.hpp"

namespace countersign::testing {
namespace {

constexpr const char* kBucket = "countersign_approvals";
constexpr const char* kPassword = "pw-Xq7-never-printed";

constexpr const char* kHoldPolicy = R"(version: v1
rules:
  - id: hold-risky
    when: { topic: "risky.>" }
    decision: require_human
  - id: allow-readonly
    when: { topic: knowledge.read }
    decision: allow
)";

// The lines of a text, without empty ones.
std::vector<std::string> linesOf(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

// Runs `countersign run` on `config` (policy: kHoldPolicy) and checks what every start failure
// must look like: exit 3, exactly one plain "countersign: ..." line on stderr that contains
// `expected` (beside the JSON log lines), no abort, no warning or error log line, and the
// password nowhere.
void expectStartFailure(const std::string& config, const std::string& expected) {
  TempDir dir;
  const auto policy_path = dir.write("policy.yaml", kHoldPolicy);
  std::string text = config;
  text.replace(text.find("file: policy.yaml"), 17, "file: " + policy_path.string());
  const auto config_path = dir.write("countersign.yaml", text);
  const CommandResult r = runCountersign({"run", "--config", config_path.string()}, {}, 60s);
  SCOPED_TRACE("stdout:\n" + r.out + "\nstderr:\n" + r.err);
  EXPECT_EQ(r.exit_code, 3);
  // One plain line, and no warning or error in the log lines beside it (a clean stop of what
  // had started logs only at debug; what happened before the failure, such as the receipt key
  // created on a first start, may be logged at info).
  std::vector<std::string> said;
  for (const std::string& line : linesOf(r.err)) {
    if (line.starts_with("{\"ts\":")) {
      EXPECT_EQ(line.find("\"level\":\"warn\""), std::string::npos) << line;
      EXPECT_EQ(line.find("\"level\":\"error\""), std::string::npos) << line;
      continue;
    }
    said.push_back(line);
  }
  ASSERT_EQ(said.size(), 1u);
  EXPECT_TRUE(said[0].starts_with("countersign: ")) << said[0];
  EXPECT_NE(said[0].find(expected), std::string::npos) << said[0];
  for (const std::string& output : {r.out, r.err}) {
    EXPECT_EQ(output.find("terminate"), std::string::npos);
    EXPECT_EQ(output.find(kPassword), std::string::npos) << "the password was printed";
  }
  EXPECT_EQ(r.out.find("countersign ready"), std::string::npos);
}

// A TCP port bound (and listened on) by this test, so that countersign cannot have it.
class TakenPort {
 public:
  TakenPort() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(fd_, 1), 0);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  ~TakenPort() { ::close(fd_); }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// nats://user:<kPassword>@127.0.0.1:<port>
std::string urlWithPassword(int port, const std::string& password = kPassword) {
  return "nats://alice:" + password + "@127.0.0.1:" + std::to_string(port);
}

constexpr const char* kUserBlock = "authorization {\n  user: alice\n  password: \"pw-Xq7-never-printed\"\n}\n";

TEST(ShellStartTest, AdminPortInUseExitsThreeWithOneLine) {
  auto server = NatsServer::start({.extra_config = kUserBlock});
  TakenPort taken;
  expectStartFailure(basicConfig(urlWithPassword(server->port()), "",
                                 "admin:\n  listen: \"127.0.0.1:" + std::to_string(taken.port()) + "\"\n"),
                     "admin.listen");
}

TEST(ShellStartTest, NatsUnreachableExitsThreeWithOneLine) {
  TakenPort nobody_speaks_nats_here;  // accepts TCP, never says INFO
  // A port nothing listens on: the closed port of a socket that was just released.
  int closed_port = 0;
  {
    TakenPort released;
    closed_port = released.port();
  }
  expectStartFailure(basicConfig(urlWithPassword(closed_port)), "cannot connect to NATS");
}

TEST(ShellStartTest, JetStreamNotEnabledExitsThreeSayingJetStream) {
  auto server = NatsServer::start({.jetstream = false, .extra_config = kUserBlock});
  expectStartFailure(basicConfig(urlWithPassword(server->port())), "JetStream is not enabled");
}

TEST(ShellStartTest, BucketWithOtherSettingsExitsThreeNamingThem) {
  auto server = NatsServer::start({.extra_config = kUserBlock});
  {
    Client admin(urlWithPassword(server->port()));
    kvConfig config;
    kvConfig_Init(&config);
    config.Bucket = kBucket;
    config.History = 1;
    config.StorageType = js_FileStorage;
    config.TTL = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::hours(1)).count();
    kvStore* kv = nullptr;
    ASSERT_EQ(js_CreateKeyValue(&kv, admin.js(), &config), NATS_OK);
    kvStore_Destroy(kv);
  }
  // The config keeps the default max_age (0: never); the bucket ages records out after an hour.
  expectStartFailure(basicConfig(urlWithPassword(server->port())), "exists with other settings");
}

TEST(ShellStartTest, BadCredentialsExitThreeWithoutThePassword) {
  auto server = NatsServer::start({.extra_config = "authorization {\n  user: alice\n  password: right-one\n}\n"});
  expectStartFailure(basicConfig(urlWithPassword(server->port())), "Authorization");
}

// An embedded nats-server that dies at start: the one line says what it complained of (its
// fatal log line, not the whole log) and where its log is.
TEST(ShellStartTest, EmbeddedServerThatDiesExitsThreeWithItsComplaint) {
  TempDir dir;
  const auto fake = dir.write("nats-server",
                              "#!/bin/sh\necho '[7] 2026/12/06 10:00:00.000000 [INF] Starting nats-server'\n"
                              "echo '[7] 2026/12/06 10:00:00.000001 [FTL] Error: could not open the store'\nexit 1\n");
  std::filesystem::permissions(fake, std::filesystem::perms::owner_all);
  expectStartFailure("nats:\n  servers: [\"nats://127.0.0.1:4222\"]\n  embedded: true\n  server_binary: " +
                         fake.string() + "\n  data_dir: " + (dir.path() / "data").string() +
                         "\npolicy:\n  file: policy.yaml\nroutes:\n  - name: jobs\n    from: \"agents.jobs.>\"\n"
                         "    to: \"jobs.>\"\nadmin:\n  listen: \"\"\n",
                     "nats-server exited with status 1 before it was ready: Error: could not open the store (its log: " +
                         (dir.path() / "data" / "nats-server.log").string() + ")");
}

std::map<std::string, int> threadNames(int pid);
std::vector<std::string> loudLinesAfterStop(const std::string& logs);

// ---- to_stream: embedded creates it, an external server must have it --------------------------

// A config with the route agents.jobs.> -> jobs.> releasing into `stream`, on the server `url`.
std::string toStreamConfig(const std::string& url, const std::string& stream) {
  return "nats:\n  servers: [\"" + url + "\"]\n  embedded: false\npolicy:\n  file: policy.yaml\nroutes:\n" +
         "  - name: jobs\n    from: \"agents.jobs.>\"\n    to: \"jobs.>\"\n    to_stream: " + stream +
         "\nadmin:\n  listen: \"\"\n";
}

// The shipped default config (config/countersign.yaml: an embedded nats-server), its route given
// a to_stream, with the port, data dir and admin listener set from the environment.
std::string defaultConfigWithToStream(const std::string& stream) {
  std::ifstream in(std::filesystem::path(COUNTERSIGN_SOURCE_DIR) / "config" / "countersign.yaml");
  std::ostringstream text;
  text << in.rdbuf();
  std::string config = text.str();
  const std::string mode = "    mode: core\n";
  const auto at = config.find(mode);
  if (at == std::string::npos) return "the default config has no route in mode core";
  config.insert(at + mode.size(), "    to_stream: " + stream + "\n");
  const std::string policy = "file: ../policies/approval-policy.yaml";
  if (const auto p = config.find(policy); p != std::string::npos) config.replace(p, policy.size(), "file: policy.yaml");
  return config;
}

// The embedded server is countersign's own: a to_stream it does not have yet is created (logged
// at info with its subjects), an allowed job lands in it once, and an approved job is released
// into it with its PubAck.
TEST(ShellEmbeddedTest, ToStreamIsCreatedAndAllowedAndReleasedJobsLandInItOnce) {
  int port = 0;
  {
    TakenPort released;  // a port free a moment ago
    port = released.port();
  }
  TempDir data;
  const std::string url = "nats://127.0.0.1:" + std::to_string(port);
  CountersignOptions options;
  options.config_yaml = defaultConfigWithToStream("JOBS");
  options.env["COUNTERSIGN_NATS_URL"] = url;
  options.env["COUNTERSIGN_DATA_DIR"] = (data.path() / "nats").string();
  options.env["COUNTERSIGN_ADMIN_LISTEN"] = "";
  options.policy_yaml = kHoldPolicy;
  options.wait_ready = false;  // its server starts with it: the banner says when it is ready
  auto cs = CountersignProcess::start(options);
  ASSERT_TRUE(saysReady(*cs, 30s)) << cs->logs();
  const std::string logs = cs->logs();
  EXPECT_NE(logs.find("stream created"), std::string::npos) << logs;
  EXPECT_NE(logs.find("\"stream\":\"JOBS\""), std::string::npos) << logs;
  EXPECT_NE(logs.find("\"subjects\":\"jobs.>\""), std::string::npos) << logs;

  Client client(url);
  // Allowed: forwarded into the stream, once.
  client.publish("agents.jobs.knowledge.read", R"({"q":1})", {{"Nats-Msg-Id", "read-1"}});
  client.flush();
  ASSERT_TRUE(waitUntil([&] { return client.streamMessageCount("JOBS") == 1; }, 10s)) << cs->logs();

  auto held = client.request("agents.jobs.risky.deploy", R"({"n":1})", {{"Nats-Msg-Id", "job-1"}}, 10s);
  ASSERT_TRUE(held.has_value());
  const Reply hold = toReply(held);
  ASSERT_EQ(hold.status(), "approval_required") << held->payload;
  EXPECT_EQ(client.streamMessageCount("JOBS"), 1u) << "a held job reached the stream before its approval";
  const Reply approved = toReply(client.request(
      "countersign.control.approve", R"({"id":")" + hold.field("approval_id") + R"(","approver":"alice"})", {}, 10s));
  EXPECT_EQ(approved.status(), "approved");
  ASSERT_TRUE(waitUntil([&] { return client.streamMessageCount("JOBS") == 2; }, 10s));
  std::this_thread::sleep_for(500ms);
  const auto stored = readStream(client, "JOBS");
  ASSERT_EQ(stored.size(), 2u);
  EXPECT_EQ(stored[0].msg.subject, "jobs.knowledge.read");
  EXPECT_EQ(stored[0].msg.payload, R"({"q":1})");
  EXPECT_EQ(stored[1].msg.subject, "jobs.risky.deploy");
  EXPECT_EQ(stored[1].msg.payload, R"({"n":1})");
  EXPECT_EQ(cs->stop(), 0);
  EXPECT_EQ(loudLinesAfterStop(cs->logs()), std::vector<std::string>{}) << "its server stopped with a warning";

  // Started again on the same data dir, it uses the stream it made (and says nothing about it);
  // nothing is stored again.
  auto again = CountersignProcess::start(options);
  ASSERT_TRUE(saysReady(*again, 30s)) << again->logs();
  EXPECT_EQ(again->logs().find("stream created"), std::string::npos) << again->logs();
  std::this_thread::sleep_for(1s);
  Client after(url);
  EXPECT_EQ(after.streamMessageCount("JOBS"), 2u);
  EXPECT_EQ(again->stop(), 0);
}

// Someone else's server: countersign does not create streams there; a missing to_stream ends
// the start with one line that names it and says what to do.
TEST(ShellStartTest, MissingToStreamOnAnExternalServerExitsThreeNamingIt) {
  auto server = NatsServer::start({.extra_config = kUserBlock});
  expectStartFailure(toStreamConfig(urlWithPassword(server->port()), "NOSUCH"),
                     "routes[0].to_stream: stream NOSUCH does not exist (create it on the server");
}

// ---- callbacks only hand over -------------------------------------------------------------------

// A hold whose id is taken already is settled on the hold executor (telling a repeat from a
// conflict takes reads). With that executor stuck and its queue full, the PubAck thread that
// hands the repeat over must not wait for room: every other hold's PubAck, and so its 202,
// still comes at once.
TEST(ShellHandOverTest, AStuckHoldExecutorDoesNotHoldUpOtherPubAcks) {
  auto server = NatsServer::start();
  Client client(server->url());
  Config config;
  config.nats.servers = {server->url()};
  config.routes.push_back(RouteConfig{.name = "jobs", .from = "agents.jobs.>", .to = "jobs.>"});
  auto connection = natsio::Connection::connect(config.nats, "test", true);
  ASSERT_TRUE(connection) << connection.error().message;
  auto store = natsio::KvBucket::open(**connection, config.store);
  ASSERT_TRUE(store) << store.error().message;
  natsio::NatsPublisher publisher(**connection);
  SystemClock clock;
  RandomIdSource ids;
  auto policy = Policy::parse(kHoldPolicy);
  ASSERT_TRUE(policy) << policy.error().message;
  PolicyHolder holder(*policy);
  Throttler throttler;
  NullLogger log;
  Metrics metrics;
  EventSink events(publisher, clock, log, EventOptions{});
  const Services services{config, **store, publisher, clock, ids, holder, throttler, events, log, metrics};
  WorkPool executor(1, 1, "test-hold");
  Intake intake(services, &publisher, &executor, &events);
  Collector replies(client, "_INBOX.handover.>");

  auto hold = [&](const std::string& id) {
    Message m{.subject = "agents.jobs.risky.x", .reply = "_INBOX.handover." + id,
              .headers = {{"Nats-Msg-Id", id}}, .payload = R"({"a":1})"};
    intake.onJob(config.routes.front(), std::move(m));
  };
  hold("first");
  ASSERT_EQ(replies.waitFor(1, 5s).size(), 1u);

  // The executor's one thread is stuck and its queue (one task) is full.
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  executor.submit("", [released] { released.wait(); });
  executor.submit("", [] {});
  hold("first");  // the repeat: its PubAck says "exists", and it is handed to the executor
  for (int i = 0; i < 20; ++i) hold("other-" + std::to_string(i));
  const auto got = replies.waitFor(21, 5s);
  std::set<std::string> answered;
  for (const auto& m : got) answered.insert(m.subject);
  for (int i = 0; i < 20; ++i) {
    EXPECT_TRUE(answered.contains("_INBOX.handover.other-" + std::to_string(i))) << "other-" << i << " waited";
  }
  EXPECT_EQ(got.size(), 21u) << "the repeat must wait for the executor, the others not";
  EXPECT_GE(executor.postedOverLimit(), 1u);
  release.set_value();
  EXPECT_EQ(replies.waitFor(22, 5s).size(), 22u) << "the repeat is answered once the executor is free";
  executor.drain();
  EXPECT_TRUE((*store)->waitForCreates(5s));
}

// Pauses the server and returns once it no longer answers at all: SIGSTOP takes effect
// asynchronously, and a request with no responders is answered at once by a running server.
// The probe's connection is returned: it is closed once the server runs again.
std::unique_ptr<Client> pauseUntilSilent(NatsServer& server) {
  auto probe = std::make_unique<Client>(server.url());
  server.pause();
  EXPECT_TRUE(waitUntil(
      [&] {
        const auto sent = std::chrono::steady_clock::now();
        (void)probe->request("nobody.listens", "", {}, 150ms);
        return std::chrono::steady_clock::now() - sent >= 140ms;
      },
      3s, 1ms));
  return probe;
}

// With an executor, the store's create timeouts are a timer on it (no thread of the store's own):
// a create the server never confirms is answered `timeout` after 5 s, on the executor's lane.
TEST(ShellHandOverTest, CreateTimeoutsAreATimerOnTheExecutor) {
  auto server = NatsServer::start();
  NatsConfig nats;
  nats.servers = {server->url()};
  auto connection = natsio::Connection::connect(nats, "test", true);
  ASSERT_TRUE(connection) << connection.error().message;
  WorkPool executor(2, 16, "hold");
  auto store = natsio::KvBucket::open(**connection, StoreConfig{}, 1024, &executor);
  ASSERT_TRUE(store) << store.error().message;
  EXPECT_EQ(threadNames(getpid()).count("cs-kv-sweep"), 0u) << "the store started a thread of its own";
  const auto probe = pauseUntilSilent(*server);
  std::promise<std::pair<Errc, std::string>> answered;
  const auto sent = std::chrono::steady_clock::now();
  (*store)->createAsync("never-confirmed", "v", [&](Result<std::uint64_t> created) {
    char name[16] = {};
    pthread_getname_np(pthread_self(), name, sizeof name);
    answered.set_value({created ? Errc::internal : created.error().code, name});
  });
  auto answer = answered.get_future();
  ASSERT_EQ(answer.wait_for(10s), std::future_status::ready);
  const auto waited = std::chrono::steady_clock::now() - sent;
  const auto [code, thread] = answer.get();
  EXPECT_EQ(code, Errc::timeout);
  EXPECT_TRUE(thread.starts_with("cs-hold-")) << thread;
  EXPECT_GE(waited, 4500ms);
  EXPECT_LT(waited, 8s);
  server->resume();
  EXPECT_TRUE((*store)->waitForCreates(5s));
  store->reset();
}

// The owner of what the completions capture cancels them before it goes: cancelCreates answers
// every create still waiting for its PubAck, at once and on the calling thread, and the PubAck
// that comes later calls nothing.
TEST(ShellHandOverTest, CancelledCreatesAreAnsweredOnceAndLatePubAcksCallNothing) {
  auto server = NatsServer::start();
  NatsConfig nats;
  nats.servers = {server->url()};
  auto connection = natsio::Connection::connect(nats, "test", true);
  ASSERT_TRUE(connection) << connection.error().message;
  StoreConfig store_config;
  auto store = natsio::KvBucket::open(**connection, store_config);
  ASSERT_TRUE(store) << store.error().message;
  std::atomic<int> calls{0};
  std::atomic<int> unavailable{0};
  const auto probe = pauseUntilSilent(*server);  // no PubAck comes while paused
  for (int i = 0; i < 50; ++i) {
    (*store)->createAsync("late-" + std::to_string(i), "v", [&](Result<std::uint64_t> created) {
      calls.fetch_add(1);
      if (!created && created.error().code == Errc::unavailable) unavailable.fetch_add(1);
    });
  }
  EXPECT_FALSE((*store)->waitForCreates(200ms));
  (*store)->cancelCreates();
  EXPECT_EQ(calls.load(), 50);
  EXPECT_EQ(unavailable.load(), 50);
  EXPECT_TRUE((*store)->waitForCreates(10ms));
  server->resume();  // the PubAcks of the 50 arrive now
  Client client(server->url());
  EXPECT_TRUE(waitUntil([&] { return client.kvGet(kBucket, "late-49").has_value(); }, 5s));
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(calls.load(), 50) << "a late PubAck called a cancelled create's callback";
  store->reset();  // cnats' reference to the creates' state is released by the last PubAck
}

// A Subscription's destructor returns only once its handler no longer runs, however long that
// takes (it used to give up after 10 s and let the objects the handler uses go under it).
TEST(ShellHandOverTest, SubscriptionDestructorWaitsForAHandlerLongerThanTenSeconds) {
  auto server = NatsServer::start();
  NatsConfig nats;
  nats.servers = {server->url()};
  auto connection = natsio::Connection::connect(nats, "test", false);
  ASSERT_TRUE(connection) << connection.error().message;
  std::promise<void> entered;
  std::atomic<bool> finished{false};
  auto sub = natsio::Subscription::subscribe(**connection, "slow.handler", "", [&](Message&&) {
    entered.set_value();
    std::this_thread::sleep_for(11s);
    finished = true;
  });
  ASSERT_TRUE(sub) << sub.error().message;
  ASSERT_TRUE((*connection)->flush(5s));
  Client client(server->url());
  client.publish("slow.handler", "x");
  client.flush();
  ASSERT_EQ(entered.get_future().wait_for(5s), std::future_status::ready);
  sub->reset();
  EXPECT_TRUE(finished.load()) << "the destructor returned while the handler still ran";
}

// The place where another process (the Slack bridge, a live event feed) plugs into the shell:
// an endpoint added before start() gets the parts, hands its messages to the control executor,
// and is drained by stop() before the executor and the core objects go.
TEST(ShellGatewayTest, AnAddedEndpointRunsOnTheControlExecutorAndIsDrainedByStop) {
  auto server = NatsServer::start();
  Client client(server->url());
  TempDir dir;
  const auto policy_path = dir.write("policy.yaml", kHoldPolicy);
  auto config = loadConfig(dir.write("countersign.yaml", basicConfig(server->url())).string(), {});
  ASSERT_TRUE(config) << config.error().message;
  config->policy.file = policy_path.string();
  auto policy = Policy::loadFile(config->policy.file);
  ASSERT_TRUE(policy) << policy.error().message;
  NullLogger log;
  std::mutex mutex;
  std::vector<std::pair<std::string, std::string>> seen;  // event subject, thread name
  {
    app::Gateway gateway(*config, *policy, log);
    gateway.addEndpoint([&](app::GatewayParts& parts) {
      return app::subscribeToExecutor(parts.intake_connection, parts.config.control.prefix + ".events.>", "",
                                      parts.control_executor,
                                      [&](Message&& m) {
                                        char name[16] = {0};
                                        pthread_getname_np(pthread_self(), name, sizeof name);
                                        const std::lock_guard lock(mutex);
                                        seen.emplace_back(m.subject, name);
                                      },
                                      "cs-test-feed");
    });
    ASSERT_TRUE(gateway.start());
    // Ready once the replayer's first scan of the bucket is done (moments on an empty bucket).
    EXPECT_TRUE(waitUntil([&] { return gateway.health().ready; }, 5s, 10ms));
    auto held = client.request("agents.jobs.risky.feed", R"({"a":1})", {{"Nats-Msg-Id", "feed-1"}}, 5s);
    ASSERT_TRUE(held.has_value());
    EXPECT_EQ(num(parseJsonQuiet(held->payload), "code"), 202) << held->payload;
    EXPECT_TRUE(waitUntil(
        [&] {
          const std::lock_guard lock(mutex);
          return !seen.empty();
        },
        5s));
    gateway.stop(5s);
    EXPECT_FALSE(gateway.health().ready);
  }
  const std::lock_guard lock(mutex);
  ASSERT_FALSE(seen.empty());
  EXPECT_TRUE(seen.front().first.starts_with("countersign.events.held.")) << seen.front().first;
  EXPECT_TRUE(seen.front().second.starts_with("cs-control-")) << seen.front().second;
}

// ---- threads and a quiet stop ------------------------------------------------------------------

std::map<std::string, int> threadNames(int pid) {
  std::map<std::string, int> names;
  for (const auto& task : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string name;
    std::getline(comm, name);
    ++names[name];
  }
  return names;
}

int threadCount(int pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.starts_with("Threads:")) return std::stoi(line.substr(8));
  }
  return -1;
}

// Log lines after "shutting down" at warn or error.
std::vector<std::string> loudLinesAfterStop(const std::string& logs) {
  std::vector<std::string> loud;
  bool stopping = false;
  for (const auto& line : linesOf(logs)) {
    if (line.find("\"shutting down\"") != std::string::npos) stopping = true;
    if (stopping && (line.find("\"level\":\"warn\"") != std::string::npos ||
                     line.find("\"level\":\"error\"") != std::string::npos)) {
      loud.push_back(line);
    }
  }
  return loud;
}

// The number docs/architecture.md states: a core route, the admin listener (with the console's
// live event feed), the default concurrency.control (8), the list index (the readiness
// probe's list request starts it), the intake connection's audit signing thread, the store's
// watch connection (its reader, flusher and request-reply inbox) and its PubAck subscription.
constexpr int kIdleThreads = 38;

TEST(ShellThreadsTest, IdleThreadsAreFewNamedAndCountedInMetrics) {
  auto server = NatsServer::start();
  CountersignOptions options;
  options.config_yaml = basicConfig(server->url(), "", "admin:\n  listen: \"127.0.0.1:0\"\n");
  options.policy_yaml = kHoldPolicy;
  options.nats_url = server->url();
  auto cs = CountersignProcess::start(options);
  // Idle: the first replay scan has run (it starts the key index's watcher).
  std::this_thread::sleep_for(1500ms);
  const int threads = threadCount(cs->pid());
  const auto names = threadNames(cs->pid());
  std::string listing;
  for (const auto& [name, n] : names) listing += name + " x" + std::to_string(n) + "\n";
  SCOPED_TRACE(listing);
  EXPECT_LE(threads, kIdleThreads);
  EXPECT_GT(threads, 0);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(names.count("cs-control-" + std::to_string(i)), 1u) << i;
  for (int i = 0; i < 4; ++i) EXPECT_EQ(names.count("cs-hold-" + std::to_string(i)), 1u) << i;
  EXPECT_EQ(names.count("cs-replay-0"), 1u);
  EXPECT_EQ(names.count("cs-kv-sweep"), 0u) << "the store's create timeouts are a timer on cs-hold-N";
  // Every thread has a name of its own, cnats' included; only the main thread keeps the
  // process's name.
  EXPECT_EQ(names.count("countersign"), 1u);
  EXPECT_EQ(names.count("cs-nats-lib"), 1u);
  EXPECT_EQ(names.count("cs-nats-intake"), 1u);
  EXPECT_EQ(names.count("cs-nats-control"), 1u);
  EXPECT_EQ(names.count("cs-sign-inta-0"), 1u);
  EXPECT_EQ(names.count("cs-sign-cont-0"), 0u) << "the control connection signs its events where they are decided";
  for (const auto& [name, n] : names) {
    EXPECT_TRUE(name == "countersign" || name.starts_with("cs-")) << name;
  }

  // /metrics says how many threads there are.
  const auto banner = cs->logs();
  const auto at = banner.find("admin http://127.0.0.1:");
  ASSERT_NE(at, std::string::npos) << banner;
  const std::string port = banner.substr(at + 23, banner.find(' ', at + 23) - at - 23);
  std::string metrics;
  {
    TempDir out;
    const std::string command = "curl -s http://127.0.0.1:" + port + "/metrics > " + (out.path() / "m").string();
    ASSERT_EQ(std::system(command.c_str()), 0);
    std::ifstream in(out.path() / "m");
    metrics.assign(std::istreambuf_iterator<char>(in), {});
  }
  const auto gauge = metrics.find("\ncountersign_threads ");
  ASSERT_NE(gauge, std::string::npos) << metrics;
  const int reported = std::stoi(metrics.substr(gauge + 21));
  EXPECT_GE(reported, threads - 2);
  EXPECT_LE(reported, threads + 2);

  EXPECT_EQ(cs->stop(), 0);
  EXPECT_EQ(loudLinesAfterStop(cs->logs()), std::vector<std::string>{});
}

// SIGTERM while 1,000 holds and 100 approvals are on their way: countersign exits 0 within its
// drain deadline without a warning, every hold it stored was answered (one it did not take is
// neither stored nor answered: the producer's request times out and it sends again), every
// approval is decided once, and every approved job is delivered exactly once (after a restart
// whose replayer finishes a release the stop interrupted).
TEST(ShellStopTest, SigtermDuringHoldsAndApprovalsLosesNothingAndStaysQuiet) {
  constexpr int kHolds = 1000;
  constexpr int kApprovals = 100;
  auto server = NatsServer::start();
  Client client(server->url());
  client.addStream("JOBS", {"jobs.>"});
  CountersignOptions options;
  options.config_yaml = gatewayConfig({.servers = {server->url()}});
  options.policy_yaml = kHoldPolicy;
  options.nats_url = server->url();
  auto cs = CountersignProcess::start(options);

  auto approvalId = [](int i) { return "appr-" + std::to_string(i); };
  auto holdId = [](int i) { return "load-" + std::to_string(i); };
  for (int i = 0; i < kApprovals; ++i) {
    auto held = client.request("agents.jobs.risky.approve-me", R"({"n":)" + std::to_string(i) + "}",
                               {{"Nats-Msg-Id", approvalId(i)}}, 10s);
    ASSERT_TRUE(held.has_value()) << i;
    ASSERT_EQ(num(parseJsonQuiet(held->payload), "code"), 202) << held->payload;
  }
  Collector jobs(client, "jobs.>");
  Collector hold_replies(client, "_INBOX.shell.hold.>");
  Collector approve_replies(client, "_INBOX.shell.appr.>");

  // Half of it, then SIGTERM, then the rest while countersign stops.
  const auto started = std::chrono::steady_clock::now();
  std::optional<std::chrono::steady_clock::time_point> signalled;
  for (int i = 0; i < kHolds; ++i) {
    client.publish("agents.jobs.risky.load", R"({"i":)" + std::to_string(i) + "}", {{"Nats-Msg-Id", holdId(i)}},
                   "_INBOX.shell.hold." + std::to_string(i));
    if (i % (kHolds / kApprovals) == 0) {
      const int k = i / (kHolds / kApprovals);
      client.publish("countersign.control.approve", R"({"id":")" + approvalId(k) + R"(","approver":"alice"})", {},
                     "_INBOX.shell.appr." + std::to_string(k));
    }
    if (i == kHolds / 2) {
      client.flush();
      cs->signal(SIGTERM);
      signalled = std::chrono::steady_clock::now();
    }
  }
  client.flush();
  const auto status = cs->waitExit(15s);
  ASSERT_TRUE(status.has_value()) << "still running 15 s after SIGTERM";
  EXPECT_EQ(*status, 0);
  EXPECT_LT(std::chrono::steady_clock::now() - *signalled, 12s) << "past the 10 s drain deadline";
  const std::string logs = cs->logs();
  EXPECT_EQ(loudLinesAfterStop(logs), std::vector<std::string>{}) << logs.substr(0, 4000);
  (void)started;

  // Holds: stored => answered; answered 202 => stored.
  std::this_thread::sleep_for(300ms);  // replies already on their way reach the collector
  std::map<std::string, std::string> hold_status;
  for (const auto& m : hold_replies.messages()) {
    // The server's "no responders" (empty, status 503) for a job sent once countersign was gone.
    if (m.payload.empty()) continue;
    hold_status[m.subject.substr(std::string("_INBOX.shell.hold.").size())] = str(parseJsonQuiet(m.payload), "status");
  }
  int stored = 0;
  int answered = 0;
  for (int i = 0; i < kHolds; ++i) {
    const bool has_record = client.kvGet(kBucket, holdId(i)).has_value();
    const auto it = hold_status.find(std::to_string(i));
    const bool replied = it != hold_status.end();
    stored += has_record ? 1 : 0;
    answered += replied ? 1 : 0;
    if (has_record) {
      EXPECT_TRUE(replied) << holdId(i) << " stored but never answered";
    }
    if (replied && it->second == "approval_required") {
      EXPECT_TRUE(has_record) << holdId(i) << " answered 202 but not stored";
    }
    if (replied) {
      EXPECT_TRUE(it->second == "approval_required" || it->second == "unavailable") << it->second;
    }
  }
  std::cout << "holds: " << stored << " stored, " << answered << " answered of " << kHolds << "\n";
  EXPECT_GT(stored, 0);

  // Approvals: a reply says what the store says; then a restart finishes any release.
  std::map<std::string, std::string> approve_status;
  for (const auto& m : approve_replies.messages()) {
    if (m.payload.empty()) continue;  // no responders
    approve_status[m.subject.substr(std::string("_INBOX.shell.appr.").size())] = str(parseJsonQuiet(m.payload), "status");
  }
  std::set<std::string> approved;
  for (int k = 0; k < kApprovals; ++k) {
    const auto decision = client.kvGet(kBucket, approvalId(k) + "/decision");
    if (decision) {
      EXPECT_EQ(str(parseJsonQuiet(*decision), "decision"), "approved") << *decision;
      approved.insert(approvalId(k));
    }
    if (const auto it = approve_status.find(std::to_string(k)); it != approve_status.end() && it->second == "approved") {
      EXPECT_TRUE(decision.has_value()) << approvalId(k) << " answered approved without a decision";
    }
  }
  std::cout << "approvals: " << approved.size() << " decided, " << approve_status.size() << " answered of "
            << kApprovals << "\n";
  EXPECT_GT(approved.size(), 0u);

  auto again = CountersignProcess::start(options);
  auto deliveries = [&] {
    std::map<std::string, int> count;
    for (const auto& m : jobs.messages()) ++count[header(m, "Countersign-Approval-Id")];
    return count;
  };
  EXPECT_TRUE(waitUntil(
      [&] {
        const auto count = deliveries();
        for (const auto& id : approved) {
          if (!count.contains(id)) return false;
        }
        return true;
      },
      20s))
      << "not every approved job was delivered";
  std::this_thread::sleep_for(500ms);
  for (const auto& [id, n] : deliveries()) {
    EXPECT_EQ(n, 1) << id << " delivered " << n << " times";
    EXPECT_TRUE(approved.contains(id)) << id << " delivered without an approval";
  }
  EXPECT_EQ(again->stop(), 0);
}

}  // namespace
}  // namespace countersign::testing
