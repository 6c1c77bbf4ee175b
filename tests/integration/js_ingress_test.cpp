// The JetStream ingress adapter (src/nats/js_ingress.*) against real nats-server processes:
// ack / nak-with-delay / term, order, WorkQueue removal, two replicas on one durable, stop
// keeping the consumer, server restarts, lost consumers and streams, conflicting streams, bad
// options and bad messages, the crash point between a hold and its ack, and throughput.
#include "nats/js_ingress.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "integration/harness/harness.hpp"
#include "integration/harness/wire.hpp"
#include "nats/child_process.hpp"
#include "nats/connection.hpp"
#include "unit/fakes.hpp"

extern char** environ;

namespace countersign::testing {
namespace {

using natsio::Connection;
using natsio::IngressOptions;
using natsio::JetStreamIngress;
using Clock = std::chrono::steady_clock;

constexpr const char* kStream = "IT_JOBS";
constexpr const char* kDurable = "countersign-jobs";

// ---- helpers --------------------------------------------------------------------------------

std::unique_ptr<Connection> connectTo(const std::string& url, const std::string& suffix = "js") {
  NatsConfig config;
  config.servers = {url};
  config.name = "countersign-it";
  auto connection = Connection::connect(config, suffix, false, {});
  if (!connection) throw std::runtime_error("connect: " + connection.error().message);
  return std::move(*connection);
}

IngressOptions defaultOptions() {
  IngressOptions options;
  options.stream = kStream;
  options.subjects = {"agents.jobs.>"};
  options.durable = kDurable;
  options.ack_wait = 2s;
  return options;
}

// Polls `predicate` every 10 ms until it holds or `timeout` passes.
bool eventually(const std::function<bool()>& predicate, std::chrono::milliseconds timeout = 10s) {
  return waitUntil(predicate, timeout, 10ms);
}

IntakeOutcome outcome(IngressAck ack, std::chrono::milliseconds delay = 0ms,
                      Outcome status = Outcome::allowed) {
  IntakeOutcome out;
  out.status = status;
  out.ack = ack;
  out.redeliver_after = delay;
  return out;
}

int indexOf(const Message& message) {
  if (!message.payload.starts_with("job-")) return -1;
  return std::stoi(message.payload.substr(4));
}

// One handler call as the test saw it.
struct Delivery {
  int index = -1;
  int attempt = 0;  // 1 for the first delivery of this index (to any replica), 2, ...
  int replica = 0;
  Message message;
  IngressPosition position;
  Clock::time_point entered;
  Clock::time_point returned;
};

// Records every handler call and decides its outcome with `decide(index, attempt)`.
class Recorder {
 public:
  using Decide = std::function<IntakeOutcome(int index, int attempt)>;
  explicit Recorder(Decide decide = {}) : decide_(std::move(decide)) {}

  natsio::IngressHandler handler(int replica = 0,
                                 std::chrono::microseconds work = std::chrono::microseconds(0)) {
    return [this, replica, work](Message&& message, const IngressPosition& position) {
      Delivery d;
      d.entered = Clock::now();
      d.index = indexOf(message);
      d.replica = replica;
      d.position = position;
      d.message = std::move(message);
      int attempt = 0;
      {
        std::lock_guard lock(mutex_);
        attempt = ++attempts_[d.index];
      }
      if (work.count() > 0) std::this_thread::sleep_for(work);
      IntakeOutcome out = decide_ ? decide_(d.index, attempt) : outcome(IngressAck::ack);
      d.attempt = attempt;
      d.returned = Clock::now();
      std::lock_guard lock(mutex_);
      deliveries_.push_back(std::move(d));
      return out;
    };
  }

  std::vector<Delivery> deliveries() const {
    std::lock_guard lock(mutex_);
    return deliveries_;
  }
  std::size_t calls() const {
    std::lock_guard lock(mutex_);
    return deliveries_.size();
  }
  std::set<int> indexes() const {
    std::lock_guard lock(mutex_);
    std::set<int> seen;
    for (const auto& d : deliveries_) seen.insert(d.index);
    return seen;
  }
  std::size_t unique() const { return indexes().size(); }

 private:
  Decide decide_;
  mutable std::mutex mutex_;
  std::map<int, int> attempts_;
  std::vector<Delivery> deliveries_;
};

// A JetStream publish that waits for the PubAck, retried (with the same Nats-Msg-Id, so the
// stream keeps one copy) until it is confirmed: the message is then durably in the stream.
void publishDurably(Client& client, const std::string& subject, int index,
                    std::chrono::milliseconds timeout = 30s) {
  const std::string payload = "job-" + std::to_string(index);
  const std::string id = "it-" + std::to_string(index);
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    natsMsg* msg = nullptr;
    natsStatus s = natsMsg_Create(&msg, subject.c_str(), nullptr, payload.data(),
                                  static_cast<int>(payload.size()));
    if (s == NATS_OK) s = natsMsgHeader_Set(msg, "X-Job", std::to_string(index).c_str());
    jsPubOptions options;
    jsPubOptions_Init(&options);
    options.MsgId = id.c_str();
    options.MaxWait = 2000;
    jsPubAck* ack = nullptr;
    jsErrCode js_error{};
    if (s == NATS_OK) s = js_PublishMsg(&ack, client.js(), msg, &options, &js_error);
    jsPubAck_Destroy(ack);
    natsMsg_Destroy(msg);
    if (s == NATS_OK) return;
    if (Clock::now() > deadline) {
      throw std::runtime_error("publish " + payload + ": " + natsStatus_GetText(s));
    }
    std::this_thread::sleep_for(50ms);
  }
}

std::string subjectFor(int index, int subjects = 5) {
  return "agents.jobs.s" + std::to_string(index % subjects) + ".run";
}

struct ConsumerState {
  bool exists = false;
  std::int64_t ack_pending = 0;
  std::uint64_t pending = 0;
  std::int64_t ack_wait_ms = 0;
};

ConsumerState consumerState(Client& client, const std::string& stream = kStream,
                            const std::string& durable = kDurable) {
  jsConsumerInfo* info = nullptr;
  jsErrCode js_error{};
  natsStatus s =
      js_GetConsumerInfo(&info, client.js(), stream.c_str(), durable.c_str(), nullptr, &js_error);
  ConsumerState state;
  if (s == NATS_OK) {
    state.exists = true;
    state.ack_pending = info->NumAckPending;
    state.pending = info->NumPending;
    state.ack_wait_ms = info->Config->AckWait / 1'000'000;
  }
  jsConsumerInfo_Destroy(info);
  return state;
}

bool streamExists(Client& client, const std::string& stream = kStream) {
  jsStreamInfo* info = nullptr;
  jsErrCode js_error{};
  natsStatus s = js_GetStreamInfo(&info, client.js(), stream.c_str(), nullptr, &js_error);
  jsStreamInfo_Destroy(info);
  return s == NATS_OK;
}

// What a crash can leave behind, made on purpose: the server stopped, the stream's message files
// removed (its config and the consumer's state file stay), the server started again. The stream's
// sequence starts again at 1.
void restartLosingTheStreamMessages(NatsServer& server) {
  server.stop();
  const auto messages = server.storeDir() / "jetstream" / "$G" / "streams" / kStream / "msgs";
  ASSERT_TRUE(std::filesystem::is_directory(messages)) << messages;
  for (const auto& file : std::filesystem::directory_iterator(messages)) std::filesystem::remove_all(file.path());
  server.restart();
}

std::unique_ptr<JetStreamIngress> startIngress(Connection& connection, IngressOptions options,
                                               natsio::IngressHandler handler) {
  auto ingress = JetStreamIngress::start(connection, std::move(options), std::move(handler),
                                         [](std::string_view line) {
                                           if (std::getenv("JS_INGRESS_VERBOSE") != nullptr) {
                                             std::cerr << "[ingress] " << line << '\n';
                                           }
                                         });
  if (!ingress) throw std::runtime_error("start ingress: " + ingress.error().message);
  return std::move(*ingress);
}

class JsIngressTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server = NatsServer::start();
    connection = connectTo(server->url());
    client = std::make_unique<Client>(server->url());
  }
  std::unique_ptr<NatsServer> server;
  std::unique_ptr<Connection> connection;
  std::unique_ptr<Client> client;
};

// ---- the crash point child ------------------------------------------------------------------

// With JS_INGRESS_CRASH_CHILD_URL set, this binary is the child of CrashAfterHoldBeforeAck...:
// it takes jobs from the ingress stream, reports each as held, and should die at the crash
// point before acking. Exit code 3: it did not die.
int runCrashChild(const char* url) {
  try {
    auto connection = connectTo(url, "crash-child");
    IngressOptions options = defaultOptions();
    options.ack_wait = 1s;
    auto ingress =
        JetStreamIngress::start(*connection, options,
                                [](Message&&, const IngressPosition&) {
                                  return outcome(IngressAck::ack, 0ms, Outcome::approval_required);
                                },
                                {});
    if (!ingress) return 4;
    std::this_thread::sleep_for(20s);
  } catch (...) {
    return 5;
  }
  return 3;
}

[[maybe_unused]] const int kCrashChild = [] {
  if (const char* url = std::getenv("JS_INGRESS_CRASH_CHILD_URL")) ::_exit(runCrashChild(url));
  return 0;
}();

// ---- tests ----------------------------------------------------------------------------------

TEST_F(JsIngressTest, AcksNaksAndTermsEveryMessageInStreamOrderPerSubject) {
  constexpr int kCount = 500;
  constexpr auto kNakDelay = 600ms;
  auto is_term = [](int i) { return i % 25 == 3; };
  auto is_delayed_nak = [](int i) { return i % 25 == 11; };
  auto is_plain_nak = [](int i) { return i % 100 == 50; };
  Recorder recorder([&](int i, int attempt) {
    if (is_term(i)) return outcome(IngressAck::term, 0ms, Outcome::too_large);
    if (is_delayed_nak(i) && attempt == 1) return outcome(IngressAck::nak, kNakDelay, Outcome::throttled);
    if (is_plain_nak(i) && attempt == 1) return outcome(IngressAck::nak, 0ms, Outcome::unavailable);
    return outcome(IngressAck::ack);
  });
  auto ingress = startIngress(*connection, defaultOptions(), recorder.handler());
  ASSERT_TRUE(streamExists(*client));

  int terms = 0, naks = 0;
  for (int i = 0; i < kCount; ++i) {
    publishDurably(*client, subjectFor(i), i);
    terms += is_term(i) ? 1 : 0;
    naks += (is_delayed_nak(i) || is_plain_nak(i)) ? 1 : 0;
  }
  const std::size_t expected_calls = kCount + naks;
  ASSERT_TRUE(eventually([&] { return recorder.calls() >= expected_calls; }, 30s))
      << recorder.calls() << " of " << expected_calls;
  // Terms and acks must not come back, even after ack_wait has passed.
  std::this_thread::sleep_for(defaultOptions().ack_wait + 500ms);

  auto deliveries = recorder.deliveries();
  EXPECT_EQ(deliveries.size(), expected_calls);
  std::map<int, std::vector<Delivery>> by_index;
  for (const auto& d : deliveries) by_index[d.index].push_back(d);
  ASSERT_EQ(by_index.size(), static_cast<std::size_t>(kCount));
  EXPECT_EQ(by_index.begin()->first, 0);
  EXPECT_EQ(by_index.rbegin()->first, kCount - 1);

  std::map<std::string, int> last_first_delivery;  // per subject: index of the last first delivery
  for (const auto& d : deliveries) {
    // Metadata, conversion and the cleared ack subject.
    EXPECT_EQ(d.position.stream, kStream);
    EXPECT_EQ(d.position.sequence, static_cast<std::uint64_t>(d.index + 1));
    EXPECT_EQ(d.message.subject, subjectFor(d.index));
    EXPECT_TRUE(d.message.reply.empty()) << d.message.reply;
    const std::string* header = findHeader(d.message.headers, "X-Job");
    ASSERT_NE(header, nullptr);
    EXPECT_EQ(*header, std::to_string(d.index));
    if (d.attempt != 1) continue;
    auto [it, inserted] = last_first_delivery.emplace(d.message.subject, d.index);
    if (!inserted) {
      EXPECT_LT(it->second, d.index) << "out of order on " << d.message.subject;
      it->second = d.index;
    }
  }
  for (const auto& [index, list] : by_index) {
    const bool nak = is_delayed_nak(index) || is_plain_nak(index);
    ASSERT_EQ(list.size(), nak ? 2u : 1u) << "job " << index;
    if (is_delayed_nak(index)) {
      EXPECT_GE(list[1].entered - list[0].returned, kNakDelay) << "job " << index;
    }
  }

  // WorkQueue: acked and terminated messages leave the stream; nothing waits for an ack.
  EXPECT_TRUE(eventually([&] { return client->streamMessageCount(kStream) == 0; }))
      << client->streamMessageCount(kStream);
  ConsumerState state = consumerState(*client);
  EXPECT_TRUE(state.exists);
  EXPECT_EQ(state.ack_pending, 0);
  EXPECT_EQ(state.pending, 0u);
  EXPECT_EQ(state.ack_wait_ms, 2000);

  auto stats = ingress->stats();
  EXPECT_EQ(stats.handled, expected_calls);
  EXPECT_EQ(stats.acked, static_cast<std::uint64_t>(kCount - terms));
  EXPECT_EQ(stats.terminated, static_cast<std::uint64_t>(terms));
  EXPECT_EQ(stats.naked, static_cast<std::uint64_t>(naks));
  EXPECT_EQ(stats.ack_failures, 0u);
  EXPECT_EQ(stats.malformed, 0u);
}

TEST_F(JsIngressTest, ConfirmedAcksWorkTheSame) {
  IngressOptions options = defaultOptions();
  options.confirm_each_ack = true;
  Recorder recorder;
  auto ingress = startIngress(*connection, options, recorder.handler());
  for (int i = 0; i < 100; ++i) publishDurably(*client, subjectFor(i), i);
  ASSERT_TRUE(eventually([&] { return recorder.calls() >= 100; }));
  EXPECT_TRUE(eventually([&] { return client->streamMessageCount(kStream) == 0; }));
  EXPECT_EQ(ingress->stats().acked, 100u);
  std::this_thread::sleep_for(options.ack_wait + 500ms);
  EXPECT_EQ(recorder.calls(), 100u);
}

TEST_F(JsIngressTest, TwoReplicasShareTheWorkAndNoMessageIsHandledTwice) {
  constexpr int kCount = 500;
  auto second_connection = connectTo(server->url(), "replica-2");
  Recorder recorder;
  IngressOptions options = defaultOptions();
  options.batch = 8;
  // A little work per job, so that one replica cannot drain the stream alone.
  auto first = startIngress(*connection, options, recorder.handler(1, 500us));
  auto second = startIngress(*second_connection, options, recorder.handler(2, 500us));
  for (int i = 0; i < kCount; ++i) publishDurably(*client, subjectFor(i), i);
  ASSERT_TRUE(eventually([&] { return recorder.unique() == kCount; }, 30s)) << recorder.unique();
  std::this_thread::sleep_for(options.ack_wait + 500ms);

  auto deliveries = recorder.deliveries();
  EXPECT_EQ(deliveries.size(), static_cast<std::size_t>(kCount)) << "some job was handled twice";
  std::map<int, int> per_replica;
  for (const auto& d : deliveries) ++per_replica[d.replica];
  EXPECT_GT(per_replica[1], 0);
  EXPECT_GT(per_replica[2], 0);
  EXPECT_EQ(per_replica[1] + per_replica[2], kCount);
  EXPECT_TRUE(eventually([&] { return client->streamMessageCount(kStream) == 0; }));
  std::cout << "[replicas] first " << per_replica[1] << ", second " << per_replica[2] << '\n';
}

TEST_F(JsIngressTest, StopKeepsTheConsumerAndALaterIngressResumesWhereItStopped) {
  Recorder recorder;
  auto ingress = startIngress(*connection, defaultOptions(), recorder.handler());
  for (int i = 0; i < 50; ++i) publishDurably(*client, subjectFor(i), i);
  ASSERT_TRUE(eventually([&] { return recorder.calls() >= 50; }));
  ingress->stop();
  ingress->stop();  // idempotent

  ConsumerState state = consumerState(*client);
  EXPECT_TRUE(state.exists) << "stop() deleted the durable consumer";
  EXPECT_TRUE(streamExists(*client));
  for (int i = 50; i < 100; ++i) publishDurably(*client, subjectFor(i), i);
  EXPECT_EQ(client->streamMessageCount(kStream), 50u);
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(recorder.calls(), 50u) << "a stopped ingress went on fetching";

  // The destructor stops as well, and still leaves the consumer.
  ingress.reset();
  EXPECT_TRUE(consumerState(*client).exists);

  auto resumed = startIngress(*connection, defaultOptions(), recorder.handler());
  ASSERT_TRUE(eventually([&] { return recorder.calls() >= 100; }));
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(recorder.calls(), 100u);
  EXPECT_EQ(recorder.unique(), 100u) << "a job acked before stop() came back";
}

// When the durable consumer was created (nanoseconds since the epoch; 0: none): the same
// consumer, not one deleted and created again, has the same time.
std::int64_t consumerCreated(Client& client) {
  jsConsumerInfo* info = nullptr;
  jsErrCode js_error{};
  std::int64_t created = 0;
  if (js_GetConsumerInfo(&info, client.js(), kStream, kDurable, nullptr, &js_error) == NATS_OK) {
    created = info->Created;
  }
  jsConsumerInfo_Destroy(info);
  return created;
}

// Stopped and started again while jobs keep coming, round after round: the consumer is the same
// one all along and every job is handled. Each stop ends a pull subscription that the server may
// still be delivering to (a pull request outlives the fetch that sent it); under valgrind
// (scripts/valgrind-teardown.sh) this also shows that nothing of the freed subscription is touched.
TEST_F(JsIngressTest, StoppedAgainAndAgainWhileJobsFlowKeepsTheConsumerAndLosesNothing) {
  const int rounds = teardownRounds(10);
  const int kJobs = 60 * rounds;
  Recorder recorder;
  auto ingress = startIngress(*connection, defaultOptions(), recorder.handler());
  const std::int64_t created = consumerCreated(*client);
  ASSERT_NE(created, 0);
  std::atomic<int> published{0};
  std::thread producer([&] {
    Client own(server->url());
    for (int i = 0; i < kJobs; ++i) {
      const std::string payload = "job-" + std::to_string(i);
      if (natsConnection_PublishString(own.raw(), subjectFor(i).c_str(), payload.c_str()) != NATS_OK) break;
      if (i % 20 == 19) {
        (void)natsConnection_FlushTimeout(own.raw(), 5000);
        published = i + 1;
        std::this_thread::sleep_for(40ms);
      }
    }
    (void)natsConnection_FlushTimeout(own.raw(), 5000);
    published = kJobs;
  });
  for (int round = 0; round < rounds && published.load() < kJobs; ++round) {
    const std::size_t before = recorder.calls();
    ASSERT_TRUE(eventually([&] { return recorder.calls() > before || published.load() == kJobs; }, 30s));
    ingress.reset();  // stops
    EXPECT_EQ(consumerCreated(*client), created) << "round " << round;
    ingress = startIngress(*connection, defaultOptions(), recorder.handler());
  }
  producer.join();
  ASSERT_TRUE(eventually([&] { return recorder.unique() == static_cast<std::size_t>(kJobs); }, 60s))
      << recorder.unique() << " of " << kJobs << " jobs handled";
  ingress.reset();
  EXPECT_EQ(consumerCreated(*client), created) << "the consumer was deleted and created again";
  EXPECT_EQ(client->streamMessageCount(kStream), 0u);
}

TEST_F(JsIngressTest, StopFinishesTheMessageInHandAndReleasesTheRestOfTheBatchAtOnce) {
  std::mutex mutex;
  std::condition_variable cv;
  bool entered = false, release = false;
  Recorder recorder;
  auto record = recorder.handler();
  IngressOptions options = defaultOptions();
  options.ack_wait = 30s;  // the released rest must come back long before this
  auto ingress = startIngress(*connection, options, [&](Message&& m, const IngressPosition& p) {
    std::unique_lock lock(mutex);
    entered = true;
    cv.notify_all();
    cv.wait(lock, [&] { return release; });
    lock.unlock();
    return record(std::move(m), p);
  });
  for (int i = 0; i < 10; ++i) publishDurably(*client, subjectFor(i, 1), i);
  {
    std::unique_lock lock(mutex);
    ASSERT_TRUE(cv.wait_for(lock, 10s, [&] { return entered; }));
  }
  std::thread stopper([&] { ingress->stop(); });
  std::this_thread::sleep_for(200ms);  // stop() is now waiting for the handler
  {
    std::lock_guard lock(mutex);
    release = true;
  }
  cv.notify_all();
  stopper.join();

  EXPECT_EQ(recorder.calls(), 1u);
  EXPECT_EQ(ingress->stats().acked, 1u);
  EXPECT_TRUE(eventually([&] { return client->streamMessageCount(kStream) == 9; }))
      << "the message in hand was not acked";
  Recorder after;
  const auto restarted = Clock::now();
  auto next = startIngress(*connection, options, after.handler());
  ASSERT_TRUE(eventually([&] { return after.calls() >= 9; }, 10s)) << after.calls();
  EXPECT_LT(Clock::now() - restarted, 10s);
  EXPECT_EQ(after.indexes(), (std::set<int>{1, 2, 3, 4, 5, 6, 7, 8, 9}));
}

// Every job whose PubAck the producer got is handled, across a restart of the server (same
// store, same port) in the middle of a run: graceful, or killed (-9) like a crash.
void restartMidRun(NatsServer& server, Connection& connection, Client& client, bool kill) {
  constexpr int kCount = 400;
  Recorder recorder;
  auto ingress = startIngress(connection, defaultOptions(), recorder.handler(0, 1ms));
  std::atomic<int> published{0};
  std::thread publisher([&] {
    for (int i = 0; i < kCount; ++i) {
      publishDurably(client, subjectFor(i), i, 60s);
      ++published;
    }
  });
  ASSERT_TRUE(eventually([&] { return recorder.unique() >= 100; }, 20s));
  if (kill) server.kill9();
  server.restart();
  publisher.join();
  ASSERT_EQ(published.load(), kCount);
  ASSERT_TRUE(eventually([&] { return recorder.unique() == kCount; }, 60s))
      << recorder.unique() << " of " << kCount;
  // Nothing is left for the consumer: no job waits for a delivery or an ack.
  EXPECT_TRUE(eventually(
      [&] {
        ConsumerState state = consumerState(client);
        return state.exists && state.pending == 0 && state.ack_pending == 0;
      },
      20s));
  EXPECT_EQ(ingress->stats().rebinds, 0u) << "the consumer survived; nothing to re-create";
  // After a graceful stop the acked jobs are gone from the WorkQueue. After kill -9, nats-server
  // 2.9.10 restores messages whose removal (by an ack) had not reached its files, while the
  // consumer's ack floor stays past them: they are never delivered again, only kept.
  if (!kill) {
    EXPECT_TRUE(eventually([&] { return client.streamMessageCount(kStream) == 0; }, 20s))
        << client.streamMessageCount(kStream);
  }
  std::cout << "[restart" << (kill ? " after kill -9" : "") << "] " << recorder.calls()
            << " handler calls for " << kCount << " jobs, " << client.streamMessageCount(kStream)
            << " already-acked messages left in the stream\n";
}

TEST_F(JsIngressTest, ServerRestartInTheMiddleOfARunLosesNothing) {
  restartMidRun(*server, *connection, *client, false);
}

TEST_F(JsIngressTest, ServerKilledAndRestartedInTheMiddleOfARunLosesNothing) {
  restartMidRun(*server, *connection, *client, true);
}

TEST_F(JsIngressTest, ServerRestartedWithoutItsStoreGetsStreamAndConsumerBack) {
  Recorder recorder;
  auto ingress = startIngress(*connection, defaultOptions(), recorder.handler());
  for (int i = 0; i < 10; ++i) publishDurably(*client, subjectFor(i), i);
  ASSERT_TRUE(eventually([&] { return recorder.calls() == 10; }));
  server->stop();
  std::filesystem::remove_all(server->storeDir() / "jetstream");
  server->restart();
  ASSERT_TRUE(
      eventually([&] { return streamExists(*client) && consumerState(*client).exists; }, 15s));
  for (int i = 10; i < 20; ++i) publishDurably(*client, subjectFor(i), i);
  ASSERT_TRUE(eventually([&] { return recorder.calls() == 20; }));
  EXPECT_EQ(recorder.unique(), 20u);
  // The new stream starts at sequence 1 again, below the 10 handled before: a regression (with
  // no store to record it in, as here, forwards on 1..10 keep the plain id).
  EXPECT_EQ(ingress->stats().regressions, 1u);
  EXPECT_GE(ingress->stats().rebinds, 1u);
}

TEST_F(JsIngressTest, ConsumerAndStreamThatDisappearAreCreatedAgain) {
  Recorder recorder;
  auto ingress = startIngress(*connection, defaultOptions(), recorder.handler());
  publishDurably(*client, subjectFor(0), 0);
  ASSERT_TRUE(eventually([&] { return recorder.calls() == 1; }));

  // As if someone deleted the consumer.
  jsErrCode js_error{};
  ASSERT_EQ(js_DeleteConsumer(client->js(), kStream, kDurable, nullptr, &js_error), NATS_OK);
  ASSERT_TRUE(eventually([&] { return consumerState(*client).exists; }, 15s));
  publishDurably(*client, subjectFor(1), 1);
  // Job 0 may come again first: its ack can reach the server after the consumer was deleted,
  // and the new consumer delivers what the work queue still holds (at least once, by design).
  ASSERT_TRUE(eventually([&] { return recorder.indexes().contains(1); }, 15s));

  // As if the server had restarted without its store: the stream is gone too.
  ASSERT_EQ(js_DeleteStream(client->js(), kStream, nullptr, &js_error), NATS_OK);
  ASSERT_TRUE(
      eventually([&] { return streamExists(*client) && consumerState(*client).exists; }, 15s));
  publishDurably(*client, subjectFor(2), 2);
  ASSERT_TRUE(eventually([&] { return recorder.indexes().contains(2); }, 15s));
  EXPECT_EQ(recorder.indexes(), (std::set<int>{0, 1, 2}));
  EXPECT_GE(ingress->stats().rebinds, 2u);
}

// What a crash can leave behind (nats-server 2.9 writes a stream's message blocks and a
// consumer's state file separately): a stream whose sequence went back, beside a consumer that
// remembers delivering past it. New jobs get sequences the consumer believes it has delivered:
// it skips them and reports nothing pending. An ingress that lived through the restart finds it
// as it reconnects (jetstream_intake_test.cpp); one started afterwards, as here, finds it while
// idle: it reports it (readiness), deletes the consumer, creates it again and takes the jobs.
TEST_F(JsIngressTest, AConsumerPastTheEndOfItsStreamIsCreatedAgainAndTakesTheJobsItSkipped) {
  Recorder recorder;
  auto ingress = startIngress(*connection, defaultOptions(), recorder.handler());
  for (int i = 0; i < 10; ++i) publishDurably(*client, subjectFor(i), i);
  ASSERT_TRUE(eventually([&] { return recorder.calls() == 10; }));
  ASSERT_TRUE(eventually([&] { return consumerState(*client).ack_pending == 0; }));
  ingress->stop();
  ingress.reset();
  restartLosingTheStreamMessages(*server);
  // Sequences 1 to 3 again, which the consumer (at 10) believes it has delivered.
  for (int i = 10; i < 13; ++i) publishDurably(*client, subjectFor(i), i);
  ASSERT_TRUE(eventually([&] { return connection->connected(); }, 15s));
  ingress = startIngress(*connection, defaultOptions(), recorder.handler());
  std::string report;
  EXPECT_TRUE(eventually(
      [&] {
        report = ingress->stalled();
        return report.find("past the stream's last sequence") != std::string::npos;
      },
      15s))
      << "readiness never said why nothing is taken";
  EXPECT_NE(report.find("consumer " + std::string(kDurable) + " has delivered up to stream sequence 10"),
            std::string::npos)
      << report;
  ASSERT_TRUE(eventually(
      [&] {
        auto seen = recorder.indexes();
        return seen.contains(10) && seen.contains(11) && seen.contains(12);
      },
      20s))
      << "the skipped jobs were never taken; handler calls " << recorder.calls();
  EXPECT_EQ(ingress->stats().recreated, 1u);
  EXPECT_GE(ingress->stats().stalls, 1u);
  EXPECT_TRUE(eventually([&] { return ingress->stalled().empty(); })) << ingress->stalled();
  EXPECT_TRUE(eventually([&] { return consumerState(*client).exists && consumerState(*client).ack_pending == 0; }));
}

// A regression found after a reconnect while the store does not answer: nothing is taken until
// it is recorded (a job taken before could go out under an id the target stream drops), and
// readiness says why. Once the store answers, the jobs on the reused sequences carry epoch 1.
TEST_F(JsIngressTest, ARegressionThatCannotBeRecordedHoldsBackEveryJobUntilItIs) {
  fakes::MemoryKv kv;
  IngressOptions options = defaultOptions();
  options.reuse_store = &kv;
  Recorder recorder;
  auto ingress = startIngress(*connection, options, recorder.handler());
  for (int i = 0; i < 5; ++i) publishDurably(*client, subjectFor(i), i);
  ASSERT_TRUE(eventually([&] { return recorder.calls() == 5; }));
  ASSERT_TRUE(eventually([&] { return consumerState(*client).ack_pending == 0; }));
  kv.failNext(Errc::unavailable, 1'000'000);
  restartLosingTheStreamMessages(*server);
  for (int i = 5; i < 8; ++i) publishDurably(*client, subjectFor(i), i);  // sequences 1 to 3 again
  std::string report;
  EXPECT_TRUE(eventually(
      [&] {
        report = ingress->stalled();
        return report.find("cannot record it in the store, taking nothing until it is") != std::string::npos;
      },
      15s))
      << report;
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(recorder.calls(), 5u) << "a job was taken before the regression was recorded";
  kv.failNext(Errc::unavailable, 0);
  ASSERT_TRUE(eventually(
      [&] {
        const auto seen = recorder.indexes();
        return seen.contains(5) && seen.contains(6) && seen.contains(7);
      },
      15s));
  for (const auto& d : recorder.deliveries()) {
    if (d.index < 5) continue;
    EXPECT_EQ(d.position.sequence, static_cast<std::uint64_t>(d.index - 4)) << d.index;
    EXPECT_EQ(d.position.epoch, 1u) << d.index;
  }
  EXPECT_EQ(ingress->stats().regressions, 1u);
  EXPECT_TRUE(eventually([&] { return ingress->stalled().empty(); })) << ingress->stalled();
}

// The other side: a server restart that loses nothing is no regression. The message on the
// highest sequence handled is still stored (NAKed for later), and what the check reads of it
// (its store time) is what the ingress saw when it handled it: nothing is recorded, the consumer
// is kept.
TEST_F(JsIngressTest, ARestartThatLosesNothingIsNoRegression) {
  fakes::MemoryKv kv;
  IngressOptions options = defaultOptions();
  options.reuse_store = &kv;
  Recorder recorder([](int index, int) {
    return index == 2 || index == 3 ? outcome(IngressAck::nak, std::chrono::milliseconds(60000)) : outcome(IngressAck::ack);
  });
  auto ingress = startIngress(*connection, options, recorder.handler());
  for (int i = 0; i < 3; ++i) publishDurably(*client, subjectFor(i), i);
  ASSERT_TRUE(eventually([&] { return recorder.calls() == 3; }));
  for (const bool kill : {false, true}) {
    if (kill) {
      server->kill9();
    } else {
      server->stop();
    }
    server->restart();
    ASSERT_TRUE(eventually([&] { return connection->connected(); }, 15s));
    publishDurably(*client, subjectFor(kill ? 4 : 3), kill ? 4 : 3);
    ASSERT_TRUE(eventually([&] { return recorder.indexes().contains(kill ? 4 : 3); }, 15s));
  }
  EXPECT_EQ(ingress->stats().regressions, 0u);
  EXPECT_EQ(ingress->stats().recreated, 0u);
  EXPECT_FALSE(kv.get(ingressReuseKey(kStream)).has_value());
}

// A fetch thread that cannot get on (here a handler that does not return) takes nothing while
// jobs wait: readiness says so while it lasts, without the fetch thread's help.
TEST_F(JsIngressTest, AFetchThreadStuckInOneStepIsReportedWhileItLasts) {
  std::mutex mutex;
  std::condition_variable released;
  bool release = false;
  Recorder recorder;
  auto inner = recorder.handler();
  IngressOptions options = defaultOptions();
  options.stuck_after = 500ms;
  auto ingress = startIngress(*connection, options, [&](Message&& message, const IngressPosition& position) {
    if (message.payload == "job-0") {
      std::unique_lock lock(mutex);
      released.wait(lock, [&] { return release; });
    }
    return inner(std::move(message), position);
  });
  EXPECT_EQ(ingress->stalled(), "");
  for (int i = 0; i < 3; ++i) publishDurably(*client, subjectFor(i), i);
  std::string report;
  EXPECT_TRUE(eventually(
      [&] {
        report = ingress->stalled();
        return !report.empty();
      },
      10s));
  EXPECT_EQ(report.rfind("ingress " + std::string(kStream) + ": the fetch thread has been deciding stream sequence 1 for ", 0), 0u)
      << report;
  EXPECT_NE(report.find("taking nothing"), std::string::npos) << report;
  {
    std::lock_guard lock(mutex);
    release = true;
  }
  released.notify_all();
  EXPECT_TRUE(eventually([&] { return recorder.unique() == 3; }));
  EXPECT_EQ(ingress->stalled(), "");
}

TEST_F(JsIngressTest, AnExistingStreamWithAnotherConfigIsRefusedAndLeftAlone) {
  Recorder recorder;
  client->addStream(kStream, {"other.>"});  // limits retention, other subjects
  auto started = JetStreamIngress::start(*connection, defaultOptions(), recorder.handler(), {});
  ASSERT_FALSE(started.has_value());
  EXPECT_EQ(started.error().code, Errc::invalid_argument);
  const std::string& message = started.error().message;
  for (const char* word : {kStream, "limits", "other.>", "workqueue", "agents.jobs.>"}) {
    EXPECT_NE(message.find(word), std::string::npos) << word << " not in: " << message;
  }
  EXPECT_FALSE(consumerState(*client).exists);

  // The same subjects with limits retention is refused too.
  jsErrCode js_error{};
  ASSERT_EQ(js_DeleteStream(client->js(), kStream, nullptr, &js_error), NATS_OK);
  client->addStream(kStream, {"agents.jobs.>"});
  started = JetStreamIngress::start(*connection, defaultOptions(), recorder.handler(), {});
  ASSERT_FALSE(started.has_value());
  EXPECT_EQ(started.error().code, Errc::invalid_argument);
  EXPECT_NE(started.error().message.find("limits"), std::string::npos) << started.error().message;

  // Left as it was.
  jsStreamInfo* info = nullptr;
  ASSERT_EQ(js_GetStreamInfo(&info, client->js(), kStream, nullptr, &js_error), NATS_OK);
  EXPECT_EQ(info->Config->Retention, js_LimitsPolicy);
  jsStreamInfo_Destroy(info);
}

TEST_F(JsIngressTest, SubjectsTakenByAnotherStreamAreRefusedClearly) {
  Recorder recorder;
  client->addStream("SOMEONE_ELSE", {"agents.>"});
  auto started = JetStreamIngress::start(*connection, defaultOptions(), recorder.handler(), {});
  ASSERT_FALSE(started.has_value());
  EXPECT_EQ(started.error().code, Errc::invalid_argument);
  EXPECT_NE(started.error().message.find("agents.jobs.>"), std::string::npos)
      << started.error().message;
}

TEST_F(JsIngressTest, AnExistingMatchingStreamAndPushConsumerAreHandledCorrectly) {
  // A matching WorkQueue stream made by someone else is adopted.
  jsStreamConfig config;
  jsStreamConfig_Init(&config);
  const char* subjects[] = {"agents.jobs.>"};
  config.Name = kStream;
  config.Subjects = subjects;
  config.SubjectsLen = 1;
  config.Retention = js_WorkQueuePolicy;
  config.Storage = js_FileStorage;
  jsErrCode js_error{};
  ASSERT_EQ(js_AddStream(nullptr, client->js(), &config, nullptr, &js_error), NATS_OK);
  // ... but a push consumer under the durable name is not ours to use.
  jsConsumerConfig consumer;
  jsConsumerConfig_Init(&consumer);
  consumer.Durable = kDurable;
  consumer.DeliverSubject = "push.here";
  consumer.AckPolicy = js_AckExplicit;
  ASSERT_EQ(js_AddConsumer(nullptr, client->js(), kStream, &consumer, nullptr, &js_error), NATS_OK);
  Recorder recorder;
  auto started = JetStreamIngress::start(*connection, defaultOptions(), recorder.handler(), {});
  ASSERT_FALSE(started.has_value());
  EXPECT_EQ(started.error().code, Errc::invalid_argument);
  EXPECT_NE(started.error().message.find("push"), std::string::npos) << started.error().message;

  EXPECT_NE(started.error().message.find(kDurable), std::string::npos) << started.error().message;

  // Without it, the adopted stream works (a WorkQueue allows one unfiltered consumer).
  ASSERT_EQ(js_DeleteConsumer(client->js(), kStream, kDurable, nullptr, &js_error), NATS_OK);
  auto ingress = startIngress(*connection, defaultOptions(), recorder.handler());
  publishDurably(*client, subjectFor(0), 0);
  EXPECT_TRUE(eventually([&] { return recorder.calls() == 1; }));
}

TEST(JsIngressOptions, BadOptionsAreRefusedBeforeAnythingIsCreated) {
  auto server = NatsServer::start();
  auto connection = connectTo(server->url());
  Client client(server->url());
  auto handler = [](Message&&, const IngressPosition&) { return outcome(IngressAck::ack); };
  std::vector<std::pair<std::string, std::function<void(IngressOptions&)>>> cases = {
      {"empty stream", [](IngressOptions& o) { o.stream = ""; }},
      {"stream with a dot", [](IngressOptions& o) { o.stream = "JOBS.IN"; }},
      {"stream with a wildcard", [](IngressOptions& o) { o.stream = "JOBS*"; }},
      {"stream with a blank", [](IngressOptions& o) { o.stream = "MY JOBS"; }},
      {"stream with a slash", [](IngressOptions& o) { o.stream = "../JOBS"; }},
      {"empty durable", [](IngressOptions& o) { o.durable = ""; }},
      {"durable with a dot", [](IngressOptions& o) { o.durable = "countersign.jobs"; }},
      {"no subjects", [](IngressOptions& o) { o.subjects.clear(); }},
      {"empty subject", [](IngressOptions& o) { o.subjects = {""}; }},
      {"empty token", [](IngressOptions& o) { o.subjects = {"agents..jobs"}; }},
      {"leading dot", [](IngressOptions& o) { o.subjects = {".agents"}; }},
      {"'>' not last", [](IngressOptions& o) { o.subjects = {"agents.>.jobs"}; }},
      {"partial wildcard", [](IngressOptions& o) { o.subjects = {"agents.jobs*"}; }},
      {"blank in subject", [](IngressOptions& o) { o.subjects = {"agents jobs"}; }},
      {"duplicate subject",
       [](IngressOptions& o) {
         o.subjects = {"a.>", "a.>"};
       }},
      {"zero replicas", [](IngressOptions& o) { o.replicas = 0; }},
      {"six replicas", [](IngressOptions& o) { o.replicas = 6; }},
      {"zero ack_wait", [](IngressOptions& o) { o.ack_wait = 0ms; }},
      {"zero batch", [](IngressOptions& o) { o.batch = 0; }},
      {"huge batch", [](IngressOptions& o) { o.batch = 1'000'000; }},
      {"zero max_ack_pending", [](IngressOptions& o) { o.max_ack_pending = 0; }},
  };
  for (const auto& [name, mutate] : cases) {
    IngressOptions options = defaultOptions();
    mutate(options);
    auto started = JetStreamIngress::start(*connection, options, handler, {});
    ASSERT_FALSE(started.has_value()) << name;
    EXPECT_EQ(started.error().code, Errc::invalid_argument) << name;
    EXPECT_FALSE(started.error().message.empty()) << name;
  }
  auto no_handler = JetStreamIngress::start(*connection, defaultOptions(), {}, {});
  ASSERT_FALSE(no_handler.has_value());
  EXPECT_EQ(no_handler.error().code, Errc::invalid_argument);
  EXPECT_FALSE(streamExists(client)) << "a refused start created the stream";
}

TEST(JsIngressStart, FailsWithoutJetStreamOrWithoutAServer) {
  NatsServerOptions no_js;
  no_js.jetstream = false;
  auto server = NatsServer::start(no_js);
  auto connection = connectTo(server->url());
  auto handler = [](Message&&, const IngressPosition&) { return outcome(IngressAck::ack); };
  auto started = JetStreamIngress::start(*connection, defaultOptions(), handler, {});
  ASSERT_FALSE(started.has_value());
  EXPECT_EQ(started.error().code, Errc::unavailable) << started.error().message;

  server->stop();
  ASSERT_TRUE(eventually([&] { return !connection->connected(); }));
  const auto begun = Clock::now();
  started = JetStreamIngress::start(*connection, defaultOptions(), handler, {});
  ASSERT_FALSE(started.has_value());
  EXPECT_EQ(started.error().code, Errc::unavailable) << started.error().message;
  EXPECT_LT(Clock::now() - begun, 3s);
}

TEST_F(JsIngressTest, MalformedHeadersAreTerminatedWithoutReachingTheHandler) {
  Recorder recorder;
  auto ingress = startIngress(*connection, defaultOptions(), recorder.handler());
  rawHeaderPublish(server->port(), "agents.jobs.bad", "NATS/1.0\r\nno colon here\r\n\r\n", "job-0");
  publishDurably(*client, subjectFor(1), 1);
  ASSERT_TRUE(eventually([&] { return recorder.calls() == 1; }));
  ASSERT_TRUE(eventually([&] { return ingress->stats().terminated == 1; }));
  EXPECT_EQ(recorder.indexes(), (std::set<int>{1}));
  EXPECT_EQ(ingress->stats().malformed, 1u);
  EXPECT_TRUE(eventually([&] { return client->streamMessageCount(kStream) == 0; }));
  std::this_thread::sleep_for(defaultOptions().ack_wait + 500ms);
  EXPECT_EQ(ingress->stats().malformed, 1u) << "the malformed message came back";
}

TEST_F(JsIngressTest, AThrowingHandlerGetsTheMessageAgainLater) {
  std::atomic<int> calls{0};
  auto ingress = startIngress(*connection, defaultOptions(),
                              [&](Message&&, const IngressPosition&) -> IntakeOutcome {
                                if (++calls == 1) throw std::runtime_error("boom");
                                return outcome(IngressAck::ack);
                              });
  publishDurably(*client, subjectFor(0), 0);
  ASSERT_TRUE(eventually([&] { return calls.load() == 2; }));
  EXPECT_TRUE(eventually([&] { return client->streamMessageCount(kStream) == 0; }));
  EXPECT_EQ(ingress->stats().naked, 1u);
  EXPECT_EQ(ingress->stats().acked, 1u);
}

TEST_F(JsIngressTest, CrashAfterHoldBeforeAckLeavesTheJobForRedelivery) {
#ifndef COUNTERSIGN_FAULTS
  GTEST_SKIP() << "crash points are compiled out (COUNTERSIGN_FAULTS=OFF)";
#else
  // Stream and consumer first (the child binds to them), then the job.
  Recorder before;
  startIngress(*connection, defaultOptions(), before.handler())->stop();
  publishDurably(*client, subjectFor(0), 0);
  std::vector<std::string> env;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    env.emplace_back(*entry);
  }
  env.push_back("JS_INGRESS_CRASH_CHILD_URL=" + server->url());
  env.push_back("COUNTERSIGN_CRASH_AT=after_hold_before_ack");
  natsio::SpawnOptions spawn;
  spawn.argv = {"/proc/self/exe"};
  spawn.env = env;
  auto pid = natsio::spawnProcess(spawn);
  ASSERT_TRUE(pid.has_value()) << pid.error().message;
  auto status = natsio::waitProcess(*pid, 30s);
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(*status, 128 + SIGKILL) << "the child did not die at the crash point";

  // The held job was not acked: still in the stream, and delivered again.
  EXPECT_EQ(client->streamMessageCount(kStream), 1u);
  Recorder recorder;
  auto ingress = startIngress(*connection, defaultOptions(), recorder.handler());
  ASSERT_TRUE(eventually([&] { return recorder.calls() == 1; }, 15s));
  EXPECT_EQ(recorder.deliveries().front().position.sequence, 1u);
  EXPECT_TRUE(eventually([&] { return client->streamMessageCount(kStream) == 0; }));
#endif
}

// Not a pass/fail benchmark: prints the loop's rate with a trivial handler in both ack modes
// (the numbers in the report), and checks that every message was taken exactly once.
TEST_F(JsIngressTest, ThroughputWithATrivialHandler) {
  const int count = std::getenv("JS_INGRESS_BENCH_COUNT") != nullptr
                        ? std::atoi(std::getenv("JS_INGRESS_BENCH_COUNT"))
                        : 20000;
  for (bool confirm : {false, true}) {
    IngressOptions options = defaultOptions();
    options.confirm_each_ack = confirm;
    options.ack_wait = 30s;
    options.durable = confirm ? "bench-confirmed" : "bench-async";
    // Each run has its own stream (and so its own consumer on a WorkQueue).
    options.stream = confirm ? "BENCH_CONFIRMED" : "BENCH_ASYNC";
    options.subjects = {confirm ? "bench.confirmed.>" : "bench.async.>"};
    const std::string prefix = confirm ? "bench.confirmed." : "bench.async.";
    std::atomic<int> handled{0};
    auto handler = [&](Message&&, const IngressPosition&) {
      ++handled;
      return outcome(IngressAck::ack);
    };
    // Create stream and consumer, then stop: the messages wait in the stream for the timed run.
    startIngress(*connection, options, handler)->stop();
    for (int i = 0; i < count; ++i) {
      client->publish(prefix + std::to_string(i % 8), "job-" + std::to_string(i));
    }
    client->flush();
    ASSERT_TRUE(eventually([&] {
      return client->streamMessageCount(options.stream) == static_cast<std::uint64_t>(count);
    })) << client->streamMessageCount(options.stream);
    const auto begun = Clock::now();
    auto ingress = startIngress(*connection, options, handler);
    ASSERT_TRUE(eventually([&] { return handled.load() >= count; }, 120s)) << handled.load();
    const double seconds = std::chrono::duration<double>(Clock::now() - begun).count();
    ingress->stop();
    EXPECT_EQ(handled.load(), count);
    EXPECT_TRUE(eventually([&] { return client->streamMessageCount(options.stream) == 0; }, 20s));
    std::cout << "[throughput] " << (confirm ? "AckSync per message" : "async Ack + flush/batch")
              << ": " << count << " messages in " << seconds
              << " s = " << static_cast<long>(count / seconds) << " msg/s\n";
  }
}

}  // namespace
}  // namespace countersign::testing
