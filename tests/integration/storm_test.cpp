// Approval storm: for one held job, 100 approve requests and one reject race each
// other from 101 separate connections through 2 countersign replicas. There must be exactly one
// final decision (`<id>/decision`), every caller must get an answer that agrees with it, and the
// job is delivered at most once: exactly once when approved (counted in the JOBS stream AND on a
// core subscription, so a double release hidden by the stream's dedup still shows), never when
// rejected. Repeated for 20 jobs (200 with COUNTERSIGN_SOAK=1).
#include <gtest/gtest.h>
#include <nats/nats.h>
#include <rapidjson/document.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <latch>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "integration/harness/harness.hpp"
#include "integration/harness/wire.hpp"

namespace countersign::testing {
namespace {

constexpr const char* kBucket = "countersign_approvals";
constexpr const char* kJobsStream = "JOBS";
constexpr int kApprovers = 100;  // plus one rejecter
constexpr int kReplicas = 2;

constexpr const char* kPolicy = R"(version: v1
rules:
  - id: hold-risky
    when: { topic: "risky.>" }
    decision: require_human
)";

struct Answer {
  bool answered = false;
  std::string status;
  std::int64_t code = -1;
  std::string reason;
  std::string decided_by;
  std::string body;
  bool header_matches = false;  // Countersign-Status equals the body's status
};

Answer readAnswer(const std::optional<Message>& reply) {
  Answer a;
  if (!reply) return a;
  a.answered = true;
  a.body = reply->payload;
  auto doc = parseJsonQuiet(reply->payload);
  a.status = str(doc, "status");
  a.code = num(doc, "code");
  if (a.status == "conflict") a.reason = str(doc, "reason");
  a.decided_by = str(doc, "decided_by");
  a.header_matches = header(*reply, "Countersign-Status") == a.status;
  return a;
}

TEST(StormTest, HundredApprovalsAndOneRejectDecideOnceAndDeliverAtMostOnce) {
  const int rounds = soak() ? 200 : 20;
  auto server = NatsServer::start();
  Client client(server->url());
  client.addStream(kJobsStream, {"jobs.>"});
  CountersignOptions options;
  options.config_yaml = gatewayConfig({.servers = {server->url()}, .lease = "1s"});
  options.policy_yaml = kPolicy;
  options.nats_url = server->url();
  auto replicas = startReplicas(kReplicas, options);
  // Both replicas must be in the queue group before the storm, or one takes it all.
  for (auto& replica : replicas) ASSERT_TRUE(saysReady(*replica, 15s, 50ms));
  std::vector<std::unique_ptr<Client>> callers;
  for (int i = 0; i <= kApprovers; ++i) callers.push_back(std::make_unique<Client>(server->url()));
  Collector deliveries(client, "jobs.>");

  int approved_rounds = 0;
  int rejected_rounds = 0;
  std::map<std::string, std::string> decided;  // id -> approved | rejected
  std::map<std::string, std::string> winner;   // id -> who decided
  for (int round = 0; round < rounds; ++round) {
    const std::string id = "storm-" + std::to_string(round);
    auto held =
        client.request("agents.jobs.risky.transfer", R"({"amount":)" + std::to_string(round) + "}",
                       {{"Nats-Msg-Id", id}}, 10s);
    ASSERT_TRUE(held.has_value()) << id << ": not held";
    ASSERT_EQ(num(parseJsonQuiet(held->payload), "code"), 202) << held->payload;

    // Every fourth round the approvers start a moment late, so that the reject also wins
    // sometimes; the assertions below hold whoever wins.
    const bool rejecter_ahead = round % 4 == 3;
    std::vector<Answer> answers(kApprovers + 1);
    std::latch go(kApprovers + 2);
    std::vector<std::thread> threads;
    for (int i = 0; i <= kApprovers; ++i) {
      threads.emplace_back([&, i] {
        const bool rejecter = i == kApprovers;
        const std::string who = rejecter ? "rejecter" : "approver-" + std::to_string(i);
        const std::string body = R"({"id":")" + id + R"(","approver":")" + who + R"("})";
        const std::string subject =
            rejecter ? "countersign.control.reject" : "countersign.control.approve";
        go.arrive_and_wait();
        if (rejecter_ahead && !rejecter) std::this_thread::sleep_for(5ms);
        answers[static_cast<std::size_t>(i)] =
            readAnswer(callers[static_cast<std::size_t>(i)]->request(subject, body, {}, 15s));
      });
    }
    go.arrive_and_wait();
    for (auto& t : threads) t.join();

    // The one decision, as the store has it.
    auto decision_value = client.kvGet(kBucket, id + "/decision");
    ASSERT_TRUE(decision_value.has_value()) << id << ": no decision after the storm";
    auto decision_doc = parseJsonQuiet(*decision_value);
    const std::string decision = str(decision_doc, "decision");
    const std::string by = str(decision_doc, "by");
    decided[id] = decision;
    winner[id] = by;
    ASSERT_TRUE(decision == "approved" || decision == "rejected") << *decision_value;

    std::map<std::string, int> tally;
    std::vector<std::string> incoherent;
    for (int i = 0; i <= kApprovers; ++i) {
      const Answer& a = answers[static_cast<std::size_t>(i)];
      const bool rejecter = i == kApprovers;
      const std::string who = rejecter ? "rejecter" : "approver-" + std::to_string(i);
      std::string key = a.answered ? a.status + "/" + std::to_string(a.code) : "<no answer>";
      if (!a.reason.empty()) key += "/" + a.reason;
      ++tally[(rejecter ? "reject:" : "approve:") + key];
      if (a.answered && !a.header_matches) incoherent.push_back(who + ": header/body " + a.body);
      bool coherent = false;
      if (decision == "approved" && !rejecter) {
        coherent = (a.status == "approved" && a.code == 200 && who == by) ||
                   (a.status == "already_approved" && a.code == 200 && a.decided_by == by);
      } else if (decision == "approved" && rejecter) {
        coherent = a.status == "conflict" && a.code == 409 && a.reason == "already_approved";
      } else if (decision == "rejected" && rejecter) {
        coherent = a.status == "rejected" && a.code == 200 && by == "rejecter";
      } else {
        coherent = a.status == "conflict" && a.code == 409 && a.reason == "already_rejected";
      }
      if (!coherent) incoherent.push_back(who + ": " + (a.answered ? a.body : "<no answer>"));
    }
    EXPECT_TRUE(incoherent.empty())
        << id << " decided " << decision << " by " << by << "; " << incoherent.size()
        << " incoherent answers, first: " << (incoherent.empty() ? "" : incoherent.front())
        << "; tally " << ::testing::PrintToString(tally);
    if (decision == "approved") {
      ++approved_rounds;
      EXPECT_EQ(tally["approve:approved/200"], 1) << id << " " << ::testing::PrintToString(tally);
      EXPECT_TRUE(client.kvGet(kBucket, id + "/released").has_value()) << id;
    } else {
      ++rejected_rounds;
      EXPECT_EQ(tally["reject:rejected/200"], 1) << id << " " << ::testing::PrintToString(tally);
      EXPECT_FALSE(client.kvGet(kBucket, id + "/released").has_value()) << id;
    }
  }
  std::cout << "[storm] " << approved_rounds << " rounds approved, " << rejected_rounds
            << " rejected\n";

  // Count deliveries: give late (double) releases and replays time to show first.
  deliveries.waitFor(static_cast<std::size_t>(approved_rounds), 10s);
  std::this_thread::sleep_for(2500ms);
  std::map<std::string, int> in_stream;
  for (const auto& [seq, m] : readStream(client, kJobsStream)) {
    EXPECT_EQ(header(m, "Countersign-Approval"), "granted") << m.payload;
    const std::string id = header(m, "Countersign-Approval-Id");
    ++in_stream[id];
    EXPECT_EQ(header(m, "Countersign-Approved-By"), winner[id]) << id;
  }
  std::map<std::string, int> on_subject;
  for (const auto& m : deliveries.messages()) ++on_subject[header(m, "Countersign-Approval-Id")];
  for (const auto& [id, decision] : decided) {
    const int expected = decision == "approved" ? 1 : 0;
    EXPECT_EQ(in_stream[id], expected) << id << " (" << decision << ") in JOBS";
    EXPECT_EQ(on_subject[id], expected) << id << " (" << decision << ") published on jobs.>";
  }
  EXPECT_EQ(client.streamMessageCount(kJobsStream), static_cast<std::uint64_t>(approved_rounds));
  EXPECT_EQ(deliveries.count(), static_cast<std::size_t>(approved_rounds));
  for (auto& replica : replicas) EXPECT_FALSE(replica->waitExit(0ms).has_value());
}

}  // namespace
}  // namespace countersign::testing
