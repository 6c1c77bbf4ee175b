// JetStream intake end to end (docs/configuration.md, docs/protocol.md, route `mode: jetstream`), with the real
// binary: jobs wait in the ingress stream (a work queue) until countersign has decided them, so
// nothing is lost while countersign is down; forwards carry `Nats-Msg-Id:
// countersign-in:<stream>:<seq>` so that a redelivery is deduplicated by the target stream;
// throttled jobs come back later instead of being dropped; denied jobs are acked and never
// forwarded; answers go to an allowed `Countersign-Reply-To`.
//
// The crash-point and kill -9 tests of JetStream intake are in faults_test.cpp.
#include <gtest/gtest.h>
#include <nats/nats.h>
#include <rapidjson/document.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "integration/harness/harness.hpp"
#include "integration/harness/wire.hpp"
#include "nats/message_convert.hpp"

namespace countersign::testing {
namespace {

constexpr const char* kJobsStream = "JOBS";
constexpr const char* kIngressStream = "COUNTERSIGN_JOBS";  // the default for route "jobs"
constexpr const char* kIngressDurable = "countersign-jobs";

constexpr const char* kPolicy = R"(version: v1
rules:
  - id: hold-risky
    when: { topic: "risky.>" }
    decision: require_human
  - id: allow-safe
    when: { topic: "safe.>" }
    decision: allow
  - id: slow-bulk
    when: { topic: "bulk.>" }
    decision: throttle
    rate: "10/s"
    burst: 1
)";

// A JetStream publish into the ingress stream, retried until the PubAck; the stream sequence
// the job got (0: never confirmed).
std::uint64_t publishDurably(Client& client, const std::string& subject, const std::string& payload,
                             const Headers& headers = {}) {
  for (int attempt = 0; attempt < 50; ++attempt) {
    OutMessage out{.subject = subject, .reply = {}, .headers = &headers, .payload = payload};
    auto msg = natsio::toNatsMsg(out);
    if (!msg) return 0;
    jsPubAck* ack = nullptr;
    jsErrCode js_error{};
    natsStatus s = js_PublishMsg(&ack, client.js(), msg->get(), nullptr, &js_error);
    const std::uint64_t seq = s == NATS_OK ? ack->Sequence : 0;
    jsPubAck_Destroy(ack);
    if (s == NATS_OK) return seq;
    std::this_thread::sleep_for(100ms);
  }
  return 0;
}

// The ingress consumer has delivered everything and nothing waits for an ack.
bool ingressSettled(Client& client) {
  return consumerSettled(client, kIngressStream, kIngressDurable);
}

struct HttpAnswer {
  int status = 0;
  std::string body;
};

// GET http://127.0.0.1:<port><path> through the curl binary.
HttpAnswer httpGet(int port, const std::string& path) {
  HttpAnswer answer;
  const auto run = runCurl({"http://127.0.0.1:" + std::to_string(port) + path}, 5);
  if (!run || run->exit_code != 0) return answer;
  const auto head_end = run->out.find("\r\n\r\n");
  const auto space = run->out.find(' ');
  if (head_end == std::string::npos || space == std::string::npos) return answer;
  answer.status = std::atoi(run->out.c_str() + space + 1);
  answer.body = run->out.substr(head_end + 4);
  return answer;
}

class JetStreamIntakeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = NatsServer::start();
    client_ = std::make_unique<Client>(server_->url());
    client_->addStream(kJobsStream, {"jobs.>"});
  }

  // With `admin_port`: an admin listener on a port of its choosing, written there.
  std::unique_ptr<CountersignProcess> startGateway(int* admin_port = nullptr) {
    CountersignOptions options;
    options.config_yaml =
        gatewayConfig({.servers = {server_->url()}, .mode = "jetstream", .lease = "1s"});
    if (admin_port != nullptr) {
      const std::string none = "admin:\n  listen: \"\"\n";
      const auto at = options.config_yaml.find(none);
      EXPECT_NE(at, std::string::npos) << options.config_yaml;
      if (at != std::string::npos) options.config_yaml.replace(at, none.size(), "admin:\n  listen: \"127.0.0.1:0\"\n");
    }
    options.policy_yaml = kPolicy;
    options.nats_url = server_->url();
    auto process = CountersignProcess::start(options);
    EXPECT_TRUE(saysReady(*process, 15s));
    if (admin_port != nullptr) {
      const std::regex admin_line(R"(\n  admin http://127\.0\.0\.1:([0-9]+) )");
      std::smatch match;
      std::string logs;
      EXPECT_TRUE(waitUntil([&] { return std::regex_search(logs = process->logs(), match, admin_line); }, 10s))
          << "no admin line in the output:\n"
          << logs;
      *admin_port = match.empty() ? 0 : std::stoi(match[1].str());
    }
    return process;
  }

  std::unique_ptr<NatsServer> server_;
  std::unique_ptr<Client> client_;
};

// Jobs published while no countersign runs wait in the ingress stream; once countersign is back
// every one is decided: allowed ones forwarded exactly once, risky ones held exactly once (and
// released exactly once after approval). Nothing is forwarded before a decision.
TEST_F(JetStreamIntakeTest, JobsPublishedWhileCountersignIsDownAreAllDecidedWhenItIsBack) {
  // The first start creates the ingress stream and the durable consumer; then countersign is
  // killed, and the producers go on.
  auto first = startGateway();
  first->kill9();
  constexpr int kJobs = 200;
  std::map<std::uint64_t, std::string> safe_by_seq;  // ingress sequence -> job id
  std::set<std::string> risky;
  for (int i = 0; i < kJobs; ++i) {
    const bool is_risky = i % 2 == 1;
    const std::string id = "down-" + std::to_string(i);
    const std::uint64_t seq =
        publishDurably(*client_, is_risky ? "agents.jobs.risky.transfer" : "agents.jobs.safe.read",
                       R"({"id":")" + id + R"("})");
    ASSERT_GT(seq, 0u) << id << " not stored in the ingress stream";
    if (is_risky) {
      risky.insert(id);
    } else {
      safe_by_seq[seq] = id;
    }
  }
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(client_->streamMessageCount(kJobsStream), 0u) << "forwarded without countersign";

  auto second = startGateway();
  EXPECT_TRUE(waitUntil([&] { return ingressSettled(*client_); }, 30s));
  EXPECT_TRUE(waitUntil([&] { return client_->streamMessageCount(kIngressStream) == 0; }, 10s))
      << "decided jobs must leave the work queue";

  // Allowed: each once, with the ingress position as its message id, and no reply subject.
  std::map<std::string, int> forwarded;
  for (const auto& [seq, m] : readStream(*client_, kJobsStream)) {
    const std::string id = str(parseJsonQuiet(m.payload), "id");
    ++forwarded[id];
    EXPECT_EQ(header(m, "Countersign-Decision"), "allow") << id;
    EXPECT_TRUE(m.reply.empty());
  }
  EXPECT_EQ(forwarded.size(), safe_by_seq.size());
  for (const auto& [seq, id] : safe_by_seq) EXPECT_EQ(forwarded[id], 1) << id;
  // Each allowed job carries the sequence it had in the ingress stream.
  for (const auto& [seq, m] : readStream(*client_, kJobsStream)) {
    const std::string id = str(parseJsonQuiet(m.payload), "id");
    std::uint64_t ingress_seq = 0;
    for (const auto& [s, sid] : safe_by_seq) {
      if (sid == id) ingress_seq = s;
    }
    EXPECT_EQ(header(m, "Nats-Msg-Id"),
              std::string("countersign-in:") + kIngressStream + ":" + std::to_string(ingress_seq));
  }

  // Held: one record each, pending.
  auto list =
      client_->request("countersign.control.list", R"({"state":"pending","limit":1000})", {}, 10s);
  ASSERT_TRUE(list.has_value());
  auto body = parseJsonQuiet(list->payload);
  ASSERT_TRUE(body.HasMember("items") && body["items"].IsArray()) << list->payload;
  std::set<std::string> pending;
  for (const auto& item : body["items"].GetArray()) pending.insert(str(item, "id"));
  EXPECT_EQ(pending, risky);

  for (const auto& id : risky) {
    auto approved = client_->request("countersign.control.approve",
                                     R"({"id":")" + id + R"(","approver":"alice"})", {}, 10s);
    ASSERT_TRUE(approved.has_value()) << id;
    EXPECT_EQ(num(parseJsonQuiet(approved->payload), "code"), 200) << approved->payload;
  }
  std::this_thread::sleep_for(1500ms);
  std::map<std::string, int> stored;
  for (const auto& [seq, m] : readStream(*client_, kJobsStream)) {
    ++stored[str(parseJsonQuiet(m.payload), "id")];
  }
  EXPECT_EQ(stored.size(), static_cast<std::size_t>(kJobs));
  for (const auto& [id, n] : stored) EXPECT_EQ(n, 1) << id;
}

// A throttled job is not dropped in JetStream mode: it is NAKed with a delay and comes back
// until the rate lets it through. 30 jobs at 10/s with burst 1 all arrive, each once.
TEST_F(JetStreamIntakeTest, ThrottledJobsComeBackLaterAndNoneIsLost) {
  auto gateway = startGateway();
  Collector throttled(*client_, "countersign.events.throttled.>");
  constexpr int kJobs = 30;
  for (int i = 0; i < kJobs; ++i) {
    ASSERT_GT(publishDurably(*client_, "agents.jobs.bulk.import",
                             R"({"id":"bulk-)" + std::to_string(i) + R"("})"),
              0u);
  }
  EXPECT_TRUE(waitUntil([&] { return client_->streamMessageCount(kJobsStream) >= kJobs; }, 30s))
      << client_->streamMessageCount(kJobsStream) << " of " << kJobs << " forwarded";
  EXPECT_TRUE(waitUntil([&] { return ingressSettled(*client_); }, 10s));
  std::this_thread::sleep_for(500ms);
  std::map<std::string, int> forwarded;
  for (const auto& [seq, m] : readStream(*client_, kJobsStream)) {
    ++forwarded[str(parseJsonQuiet(m.payload), "id")];
    EXPECT_EQ(header(m, "Countersign-Rule"), "slow-bulk");
  }
  EXPECT_EQ(forwarded.size(), static_cast<std::size_t>(kJobs));
  for (const auto& [id, n] : forwarded) EXPECT_EQ(n, 1) << id;
  EXPECT_GT(throttled.count(), 0u) << "the rate never held a job back: the test proves nothing";
}

// A denied job is acked (it leaves the work queue) and never forwarded; a held job answers on
// an allowed Countersign-Reply-To (the message's own reply subject belongs to JetStream), and a
// Countersign-Reply-To under the control prefix is not used.
TEST_F(JetStreamIntakeTest, DeniedJobsLeaveTheQueueAndHeldJobsAnswerOnCountersignReplyTo) {
  auto gateway = startGateway();
  Collector answers(*client_, "_INBOX.jsintake.>");
  Collector control(*client_, "countersign.>");
  ASSERT_GT(publishDurably(*client_, "agents.jobs.other.delete", R"({"id":"denied-1"})",
                           {{"Countersign-Reply-To", "_INBOX.jsintake.denied"}}),
            0u);
  ASSERT_GT(publishDurably(*client_, "agents.jobs.risky.transfer", R"({"id":"held-1"})",
                           {{"Countersign-Reply-To", "_INBOX.jsintake.held"}}),
            0u);
  ASSERT_GT(publishDurably(*client_, "agents.jobs.risky.transfer", R"({"id":"held-2"})",
                           {{"Countersign-Reply-To", "countersign.control.approve"}}),
            0u);
  auto got = answers.waitFor(2, 10s);
  ASSERT_EQ(got.size(), 2u);
  std::map<std::string, std::string> by_subject;
  for (const auto& m : got) by_subject[m.subject] = m.payload;
  auto denied = parseJsonQuiet(by_subject["_INBOX.jsintake.denied"]);
  EXPECT_EQ(str(denied, "status"), "denied") << by_subject["_INBOX.jsintake.denied"];
  EXPECT_EQ(num(denied, "code"), 403);
  auto held = parseJsonQuiet(by_subject["_INBOX.jsintake.held"]);
  EXPECT_EQ(str(held, "status"), "approval_required") << by_subject["_INBOX.jsintake.held"];
  EXPECT_EQ(str(held, "approval_id"), "held-1");

  EXPECT_TRUE(waitUntil([&] { return ingressSettled(*client_); }, 10s));
  EXPECT_TRUE(waitUntil([&] { return client_->streamMessageCount(kIngressStream) == 0; }, 10s));
  EXPECT_EQ(client_->streamMessageCount(kJobsStream), 0u);
  // held-2 is held all the same, but nothing was published on the control subject it named.
  auto record = client_->request("countersign.control.get", R"({"id":"held-2"})", {}, 5s);
  ASSERT_TRUE(record.has_value());
  EXPECT_EQ(num(parseJsonQuiet(record->payload), "code"), 200) << record->payload;
  for (const auto& m : control.messages()) {
    EXPECT_NE(m.subject, "countersign.control.approve") << m.payload;
  }
}

// What a crash of nats-server 2.9 can leave behind: a stream whose sequence went back (its
// message files lost their end) beside a consumer that remembers delivering past it. New jobs
// get sequences the consumer believes delivered: it skips them and reports nothing pending, so
// nothing would ever take them. A countersign that lived through the restart finds it as soon
// as it reconnects (the next test); one started afterwards, as here, finds it while idle:
// /readyz says so with the reason, countersign deletes the consumer and creates it again, the
// waiting job is held, /readyz is ready again and /metrics counts the re-creation.
TEST_F(JetStreamIntakeTest, AConsumerPastTheEndOfItsStreamIsReportedOnReadyzAndCreatedAgain) {
  auto first = startGateway();
  for (int i = 0; i < 5; ++i) {
    ASSERT_GT(publishDurably(*client_, "agents.jobs.risky.transfer", R"({"id":"before-)" + std::to_string(i) + R"("})"),
              0u);
  }
  ASSERT_TRUE(waitUntil([&] { return ingressSettled(*client_) && client_->streamMessageCount(kIngressStream) == 0; }, 20s));
  first->stop();

  server_->stop();
  const auto messages = server_->storeDir() / "jetstream" / "$G" / "streams" / kIngressStream / "msgs";
  ASSERT_TRUE(std::filesystem::is_directory(messages)) << messages;
  for (const auto& file : std::filesystem::directory_iterator(messages)) std::filesystem::remove_all(file.path());
  server_->restart();
  // Stream sequence 1 again; the consumer believes it delivered up to 5.
  ASSERT_EQ(publishDurably(*client_, "agents.jobs.risky.transfer", R"({"id":"after-1"})"), 1u);
  int admin = 0;
  auto gateway = startGateway(&admin);
  ASSERT_GT(admin, 0);

  HttpAnswer ready;
  EXPECT_TRUE(waitUntil(
      [&] {
        ready = httpGet(admin, "/readyz");
        return ready.status == 503 && ready.body.find("past the stream's last sequence") != std::string::npos;
      },
      20s, 50ms))
      << "last /readyz: " << ready.status << " " << ready.body << "\n"
      << gateway->logs();
  EXPECT_NE(ready.body.find("ingress COUNTERSIGN_JOBS: consumer countersign-jobs has delivered up to stream "
                            "sequence 5, past the stream's last sequence 1"),
            std::string::npos)
      << ready.body;

  EXPECT_TRUE(waitUntil(
      [&] {
        auto reply = client_->request("countersign.control.get", R"({"id":"after-1"})", {}, 5s);
        if (!reply) return false;
        auto body = parseJsonQuiet(reply->payload);
        return body.HasMember("record") && str(body["record"], "state") == "pending";
      },
      20s))
      << "the job the consumer skipped was never held:\n"
      << gateway->logs();
  EXPECT_TRUE(waitUntil([&] { return httpGet(admin, "/readyz").status == 200; }, 10s))
      << httpGet(admin, "/readyz").body;
  const std::string metrics = httpGet(admin, "/metrics").body;
  EXPECT_NE(metrics.find("countersign_ingress_consumer_recreated_total{stream=\"COUNTERSIGN_JOBS\"} 1\n"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("countersign_ingress_stalled{stream=\"COUNTERSIGN_JOBS\"} 0\n"), std::string::npos)
      << metrics;
  EXPECT_NE(gateway->logs().find("deleting the consumer and creating it again"), std::string::npos);
}

// The same crash, seen from the target stream. The forwards before it carried
// countersign-in:<stream>:1..5; new jobs that get sequences 1..5 again would carry the same ids
// and, within the target's duplicate window, be dropped as duplicates (acked, and lost).
// countersign records the reused range before it takes any of them, so they go out as
// countersign-in:<stream>:<seq>:1 and arrive once each; a sequence past the range keeps the
// plain id.
class StreamRegressionTest : public JetStreamIntakeTest {
 protected:
  // Five allowed jobs forwarded (ingress sequences 1..5), then the ingress stream's message
  // files lost over a server restart: its sequence starts again at 1, while its consumer
  // remembers delivering up to 5. `before_stop` runs just before the server stops, `after_restart`
  // once it is back (countersign may not have looked yet).
  void forwardFiveThenLoseTheStreamEnd(const std::function<void()>& before_stop,
                                       const std::function<void()>& after_restart) {
    for (int i = 1; i <= 5; ++i) {
      ASSERT_EQ(publishDurably(*client_, "agents.jobs.safe.read", R"({"id":"before-)" + std::to_string(i) + R"("})"),
                static_cast<std::uint64_t>(i));
    }
    ASSERT_TRUE(waitUntil([&] { return client_->streamMessageCount(kJobsStream) == 5; }, 20s));
    ASSERT_TRUE(
        waitUntil([&] { return ingressSettled(*client_) && client_->streamMessageCount(kIngressStream) == 0; }, 20s));
    before_stop();
    server_->stop();
    const auto messages = server_->storeDir() / "jetstream" / "$G" / "streams" / kIngressStream / "msgs";
    ASSERT_TRUE(std::filesystem::is_directory(messages)) << messages;
    for (const auto& file : std::filesystem::directory_iterator(messages)) std::filesystem::remove_all(file.path());
    server_->restart();
    after_restart();
  }

  void publishAfter(int from, int to) {
    for (int i = from; i <= to; ++i) {
      ASSERT_EQ(publishDurably(*client_, "agents.jobs.safe.read", R"({"id":"after-)" + std::to_string(i) + R"("})"),
                static_cast<std::uint64_t>(i));
    }
  }

  // Every job in JOBS once: before-1..5 with their plain ids, after-1..`reused` under epoch 1,
  // after-(reused+1)..`last` plain again.
  void expectEachOnce(int reused, int last, CountersignProcess& gateway) {
    const std::size_t want = 5 + static_cast<std::size_t>(last);
    EXPECT_TRUE(waitUntil([&] { return client_->streamMessageCount(kJobsStream) >= want; }, 20s))
        << client_->streamMessageCount(kJobsStream) << " of " << want << " jobs in " << kJobsStream << "\n"
        << gateway.logs();
    EXPECT_TRUE(waitUntil([&] { return ingressSettled(*client_); }, 10s));
    std::this_thread::sleep_for(1s);  // a second copy, if any, shows up

    std::map<std::string, int> forwarded;
    std::map<std::string, std::string> msg_ids;
    for (const auto& [seq, m] : readStream(*client_, kJobsStream)) {
      const std::string id = str(parseJsonQuiet(m.payload), "id");
      ++forwarded[id];
      msg_ids[id] = header(m, "Nats-Msg-Id");
    }
    EXPECT_EQ(forwarded.size(), want);
    for (const auto& [id, n] : forwarded) EXPECT_EQ(n, 1) << id;
    const std::string prefix = std::string("countersign-in:") + kIngressStream + ":";
    for (int i = 1; i <= 5; ++i) EXPECT_EQ(msg_ids["before-" + std::to_string(i)], prefix + std::to_string(i));
    for (int i = 1; i <= last; ++i) {
      EXPECT_EQ(msg_ids["after-" + std::to_string(i)], prefix + std::to_string(i) + (i <= reused ? ":1" : ""));
    }
  }
};

// countersign finds the regression as it reconnects, before it takes anything, and creates the
// consumer again (which would skip the new jobs on 1..5).
TEST_F(StreamRegressionTest, JobsOnReusedSequencesAreForwardedUnderAnEpochIdNotDroppedAsDuplicates) {
  int admin = 0;
  auto gateway = startGateway(&admin);
  ASSERT_GT(admin, 0);
  forwardFiveThenLoseTheStreamEnd([] {}, [&] { publishAfter(1, 2); });
  EXPECT_TRUE(waitUntil(
      [&] {
        return httpGet(admin, "/metrics")
                   .body.find("countersign_ingress_regressions_total{stream=\"COUNTERSIGN_JOBS\"} 1\n") !=
               std::string::npos;
      },
      20s))
      << httpGet(admin, "/metrics").body << gateway->logs();
  publishAfter(3, 6);  // 3..5 reused as well, 6 is new
  expectEachOnce(5, 6, *gateway);
  EXPECT_NE(httpGet(admin, "/metrics").body.find(
                "countersign_ingress_consumer_recreated_total{stream=\"COUNTERSIGN_JOBS\"} 1\n"),
            std::string::npos);
}

// Two replicas live through it: both find it as they reconnect, and race to record it and to
// create the consumer again. One record (epoch 1), one id per job, every job once.
TEST_F(StreamRegressionTest, TwoReplicasRecordOneRegressionAndForwardEachJobOnce) {
  auto first = startGateway();
  auto second = startGateway();
  forwardFiveThenLoseTheStreamEnd([] {}, [&] { publishAfter(1, 2); });
  const auto logs = [&] { return first->logs() + second->logs(); };
  EXPECT_TRUE(waitUntil([&] { return logs().find("recorded as epoch 1") != std::string::npos; }, 20s)) << logs();
  publishAfter(3, 6);
  expectEachOnce(5, 6, *first);
  EXPECT_EQ(logs().find("recorded as epoch 2"), std::string::npos) << logs();
}

// New jobs took the stream past its old end before countersign looked (it was stopped with
// SIGSTOP meanwhile): the consumer, at 5, would deliver 6 and 7 and skip 1..5 for good, and no
// sequence is past the stream's end. countersign finds another message on the sequence it handled
// last (5), records the regression and creates the consumer again.
TEST_F(StreamRegressionTest, NewJobsPastTheOldEndBeforeCountersignLooksAreFoundByTheirStoreTime) {
  auto gateway = startGateway();
  forwardFiveThenLoseTheStreamEnd([&] { gateway->signal(SIGSTOP); },
                                  [&] {
                                    publishAfter(1, 7);
                                    gateway->signal(SIGCONT);
                                  });
  expectEachOnce(5, 7, *gateway);
  EXPECT_NE(gateway->logs().find("sequence 5, handled before a reconnect, holds another message now"), std::string::npos)
      << gateway->logs();
}

}  // namespace
}  // namespace countersign::testing
