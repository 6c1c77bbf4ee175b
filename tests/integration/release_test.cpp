// Black-box concurrency tests of the release (docs/protocol.md, docs/exactly-once.md): two countersign
// replicas on one nats-server, a route with to_stream, and many simultaneous approvals from
// separate connections must end in exactly one delivery per approved job.
#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <latch>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "integration/harness/harness.hpp"
#include "integration/harness/wire.hpp"

namespace countersign::testing {
namespace {

constexpr const char* kBucket = "countersign_approvals";
constexpr const char* kTarget = "jobs.finance.payment.execute";
constexpr int kApprovers = 50;
constexpr int kRounds = 10;

constexpr const char* kPolicy = R"(version: v1
rules:
  - id: hold-payments
    when: { topic: finance.payment.execute }
    decision: require_human
)";

// A countersign reply's body; its Countersign-Status header must equal the body's status.
rapidjson::Document replyBody(const Message& reply) {
  auto body = parseJsonQuiet(reply.payload);
  EXPECT_EQ(headerValues(reply, "Countersign-Status"), one(str(body, "status"))) << reply.payload;
  return body;
}

struct Cluster {
  std::unique_ptr<NatsServer> server;
  std::unique_ptr<Client> client;
  std::vector<std::unique_ptr<CountersignProcess>> replicas;
  std::vector<std::unique_ptr<Client>> approvers;
};

// One server, the JOBS stream created before countersign starts (it checks to_stream at
// start), two replicas and one connection per approver.
Cluster startCluster() {
  Cluster c;
  c.server = NatsServer::start();
  c.client = std::make_unique<Client>(c.server->url());
  c.client->addStream("JOBS", {"jobs.>"});
  // The one route releases through the JOBS stream; no admin listener, so replicas can share
  // the machine.
  CountersignOptions options;
  options.config_yaml =
      gatewayConfig({.servers = {c.server->url()}, .store_replicas = 1, .control_block = true});
  options.policy_yaml = kPolicy;
  options.nats_url = c.server->url();
  c.replicas = startReplicas(2, options);
  for (int i = 0; i < kApprovers; ++i) {
    c.approvers.push_back(std::make_unique<Client>(c.server->url()));
  }
  return c;
}

// Sends one request per approver connection at the same moment; returns the replies in
// approver order (nullopt: no reply within 15 s).
std::vector<std::optional<Message>> burst(Cluster& c,
                                          const std::function<std::string(int)>& subject_for,
                                          const std::function<std::string(int)>& body_for) {
  std::vector<std::optional<Message>> replies(kApprovers);
  std::latch go(kApprovers + 1);
  std::vector<std::thread> threads;
  for (int i = 0; i < kApprovers; ++i) {
    threads.emplace_back([&, i] {
      const std::string subject = subject_for(i);
      const std::string body = body_for(i);
      go.arrive_and_wait();
      replies[static_cast<std::size_t>(i)] =
          c.approvers[static_cast<std::size_t>(i)]->request(subject, body, {}, 15s);
    });
  }
  go.arrive_and_wait();
  for (auto& t : threads) t.join();
  return replies;
}

std::string holdJob(Cluster& c, const std::string& id) {
  auto reply =
      c.client->request("agents.jobs.finance.payment.execute",
                        "{\"amount\":100,\"job\":\"" + id + "\"}", {{"Nats-Msg-Id", id}}, 10s);
  if (!reply) return "no reply";
  auto body = replyBody(*reply);
  if (num(body, "code") != 202) return reply->payload;
  return "";
}

TEST(ReleaseTest, FiftyConcurrentApprovalsOnTwoReplicasReleaseExactlyOnce) {
  Cluster c = startCluster();
  Collector jobs(*c.client, "jobs.>");
  c.client->flush();

  std::map<std::string, std::string> winner_of;  // approval id -> approver that won
  for (int round = 0; round < kRounds; ++round) {
    const std::string id = "race-" + std::to_string(round);
    ASSERT_EQ(holdJob(c, id), "") << "round " << round << ": job not held";

    auto replies = burst(
        c, [](int) { return std::string("countersign.control.approve"); },
        [&](int i) {
          return R"({"id":")" + id + R"(","approver":"approver-)" + std::to_string(i) + R"("})";
        });

    int approved = 0, already = 0, lock_busy = 0, missing = 0;
    std::vector<std::string> other;
    std::string winner;
    std::vector<std::string> decided_by;
    for (int i = 0; i < kApprovers; ++i) {
      const auto& reply = replies[static_cast<std::size_t>(i)];
      if (!reply) {
        ++missing;
        continue;
      }
      auto body = replyBody(*reply);
      const std::string status = str(body, "status");
      const auto code = num(body, "code");
      if (status == "approved" && code == 200) {
        ++approved;
        winner = "approver-" + std::to_string(i);
        EXPECT_EQ(str(body, "msg_id"), "countersign:" + id) << reply->payload;
      } else if (status == "already_approved" && code == 200) {
        ++already;
        decided_by.push_back(str(body, "decided_by"));
      } else if (status == "conflict" && code == 409 && str(body, "reason") == "lock_busy") {
        ++lock_busy;
      } else {
        other.push_back(reply->payload);
      }
    }
    EXPECT_EQ(approved, 1) << "round " << round;
    EXPECT_EQ(already, kApprovers - 1) << "round " << round;
    EXPECT_EQ(lock_busy, 0) << "round " << round << ": lock_busy in a healthy setup";
    EXPECT_EQ(missing, 0) << "round " << round << ": requests without a reply";
    EXPECT_TRUE(other.empty()) << "round " << round << ": unexpected replies, first: "
                               << (other.empty() ? "" : other[0]);
    for (const auto& by : decided_by) {
      EXPECT_EQ(by, winner) << "round " << round << ": already_approved names another approver";
    }
    winner_of[id] = winner;
    EXPECT_EQ(c.client->streamMessageCount("JOBS"), static_cast<std::uint64_t>(round + 1))
        << "round " << round << ": the JOBS stream must hold one message per approved job";
  }

  jobs.waitFor(kRounds, 15s);
  std::this_thread::sleep_for(500ms);
  auto got = jobs.messages();
  std::map<std::string, int> deliveries;
  for (const auto& m : got) {
    EXPECT_EQ(m.subject, kTarget);
    auto ids = headerValues(m, "Countersign-Approval-Id");
    ASSERT_EQ(ids.size(), 1u);
    ++deliveries[ids[0]];
    EXPECT_EQ(headerValues(m, "Nats-Msg-Id"), std::vector<std::string>{"countersign:" + ids[0]});
    EXPECT_EQ(headerValues(m, "Countersign-Approval"), std::vector<std::string>{"granted"});
    EXPECT_EQ(headerValues(m, "Countersign-Approved-By"),
              std::vector<std::string>{winner_of[ids[0]]});
  }
  EXPECT_EQ(got.size(), static_cast<std::size_t>(kRounds)) << "core deliveries on jobs.>";
  for (int round = 0; round < kRounds; ++round) {
    const std::string id = "race-" + std::to_string(round);
    EXPECT_EQ(deliveries[id], 1) << id << " delivered " << deliveries[id] << " times";
    EXPECT_TRUE(c.client->kvGet(kBucket, id + "/released").has_value()) << id;
  }
  EXPECT_EQ(c.client->streamMessageCount("JOBS"), static_cast<std::uint64_t>(kRounds));
}

TEST(ReleaseTest, ConcurrentApproveAndRejectDecideOnce) {
  Cluster c = startCluster();
  Collector jobs(*c.client, "jobs.>");
  c.client->flush();

  int released_rounds = 0;
  for (int round = 0; round < kRounds; ++round) {
    const std::string id = "mixed-" + std::to_string(round);
    ASSERT_EQ(holdJob(c, id), "") << "round " << round << ": job not held";
    auto replies = burst(
        c,
        [](int i) {
          return std::string(i % 2 == 0 ? "countersign.control.approve"
                                        : "countersign.control.reject");
        },
        [&](int i) {
          return R"({"id":")" + id + R"(","approver":"person-)" + std::to_string(i) + R"("})";
        });

    std::map<std::string, int> tally;  // "<status>/<reason>"
    for (const auto& reply : replies) {
      if (!reply) {
        ++tally["<no reply>"];
        continue;
      }
      auto body = replyBody(*reply);
      std::string key = str(body, "status") + "/" + std::to_string(num(body, "code"));
      if (str(body, "status") == "conflict") key += "/" + str(body, "reason");
      ++tally[key];
    }
    const int approved = tally["approved/200"];
    const int rejected = tally["rejected/200"];
    EXPECT_EQ(approved + rejected, 1)
        << "round " << round << ": exactly one decision wins; " << ::testing::PrintToString(tally);
    if (approved == 1) {
      ++released_rounds;
      EXPECT_EQ(tally["already_approved/200"], kApprovers / 2 - 1)
          << ::testing::PrintToString(tally);
      EXPECT_EQ(tally["conflict/409/already_approved"], kApprovers / 2)
          << ::testing::PrintToString(tally);
    } else {
      EXPECT_EQ(tally["already_rejected/200"], kApprovers / 2 - 1)
          << ::testing::PrintToString(tally);
      EXPECT_EQ(tally["conflict/409/already_rejected"], kApprovers / 2)
          << ::testing::PrintToString(tally);
    }
    EXPECT_EQ(c.client->streamMessageCount("JOBS"), static_cast<std::uint64_t>(released_rounds))
        << "round " << round;
  }
  jobs.waitFor(static_cast<std::size_t>(released_rounds), 15s);
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(jobs.count(), static_cast<std::size_t>(released_rounds));
}

TEST(ReleaseTest, TheSameJobSentConcurrentlyIsHeldOnce) {
  Cluster c = startCluster();
  // Id-less copies: each gets its own generated id and record.
  auto distinct = burst(
      c, [](int) { return std::string("agents.jobs.finance.payment.execute"); },
      [](int) { return std::string("{\"amount\":5}"); });
  std::set<std::string> generated;
  for (const auto& reply : distinct) {
    ASSERT_TRUE(reply.has_value());
    auto body = replyBody(*reply);
    EXPECT_EQ(num(body, "code"), 202) << reply->payload;
    generated.insert(str(body, "approval_id"));
  }
  EXPECT_EQ(generated.size(), static_cast<std::size_t>(kApprovers));
  // Copies with one id (from the payload) and one content: one record, the same 202 for all.
  auto same = burst(
      c, [](int) { return std::string("agents.jobs.finance.payment.execute"); },
      [](int) { return std::string("{\"id\":\"twin-1\",\"amount\":5}"); });
  int accepted = 0;
  std::vector<std::string> other;
  std::string job_hash;
  for (const auto& reply : same) {
    if (!reply) {
      other.push_back("<no reply>");
      continue;
    }
    auto body = replyBody(*reply);
    if (num(body, "code") == 202 && str(body, "approval_id") == "twin-1") {
      ++accepted;
      if (job_hash.empty()) job_hash = str(body, "job_hash");
      EXPECT_EQ(str(body, "job_hash"), job_hash);
    } else {
      other.push_back(reply->payload);
    }
  }
  EXPECT_EQ(accepted, kApprovers) << "every copy gets the same 202; first other: "
                                  << (other.empty() ? "" : other[0]);
  // One record: the list shows twin-1 once, next to the id-less jobs of the first burst.
  auto list = c.client->request("countersign.control.list", R"({"limit":1000})", {}, 10s);
  ASSERT_TRUE(list.has_value());
  auto body = replyBody(*list);
  ASSERT_TRUE(body.HasMember("items") && body["items"].IsArray()) << list->payload;
  int twins = 0;
  for (const auto& item : body["items"].GetArray()) twins += str(item, "id") == "twin-1" ? 1 : 0;
  EXPECT_EQ(twins, 1) << list->payload;
  EXPECT_EQ(body["items"].Size(), static_cast<rapidjson::SizeType>(kApprovers + 1))
      << "each id-less job gets its own generated id and record";
}

}  // namespace
}  // namespace countersign::testing
