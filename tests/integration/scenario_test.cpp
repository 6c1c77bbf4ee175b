// The seed scenario end to end (docs/policy.md): the seed's approval-policy.yaml loaded
// unchanged, a read-only job passing straight through, a production payment held for a human,
// approved once and delivered to the worker exactly once.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "integration/harness/harness.hpp"
#include "integration/harness/wire.hpp"

namespace countersign::testing {
namespace {

class SeedScenarioTest : public ::testing::Test {
 protected:
  void SetUp() override {
    stack_ = Stack::start(seedPolicy());
    client_ = stack_.client.get();
  }

  Stack stack_;
  Client* client_ = nullptr;
};

TEST_F(SeedScenarioTest, ReadPassesPaymentIsHeldApprovedOnceAndDeliveredOnce) {
  Collector jobs(*client_, "jobs.>");
  client_->flush();

  // 1. knowledge.read passes straight through.
  const std::string read = R"({"query":"quarterly revenue"})";
  client_->publish("agents.jobs.knowledge.read", read);
  client_->flush();
  auto got = jobs.waitFor(1, 10s);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].subject, "jobs.knowledge.read");
  EXPECT_EQ(got[0].payload, read);
  EXPECT_EQ(headerValues(got[0], "Countersign-Decision"), one("allow"));
  EXPECT_EQ(headerValues(got[0], "Countersign-Rule"), one("allow-readonly"));
  EXPECT_EQ(headerValues(got[0], "Countersign-Approval"), one("none"));

  // 2. a production payment is held.
  const std::string payment =
      R"({"labels":{"env":"production"},"amount":1200,"currency":"EUR","to":"ACME"})";
  auto held = toReply(client_->request("agents.jobs.finance.payment.execute", payment,
                                       {{"Nats-Msg-Id", "pay-2024-001"}}, 10s));
  EXPECT_EQ(held.status(), "approval_required");
  EXPECT_EQ(held.code(), 202);
  EXPECT_EQ(held.field("approval_id"), "pay-2024-001");
  EXPECT_EQ(held.field("rule"), "require-approval-prod-finance");
  const std::string job_hash = held.field("job_hash");
  EXPECT_EQ(job_hash.rfind("sha256:", 0), 0u) << job_hash;
  EXPECT_TRUE(client_->kvGet("countersign_approvals", "pay-2024-001").has_value());

  // 3. approved by a human: released to the worker.
  auto approved = toReply(client_->request("countersign.control.approve",
                                           R"({"id":"pay-2024-001","approver":"alice"})", {}, 10s));
  EXPECT_EQ(approved.status(), "approved");
  EXPECT_EQ(approved.code(), 200);
  EXPECT_EQ(approved.field("msg_id"), "countersign:pay-2024-001");

  // 4. approved again: nothing more.
  auto again = toReply(client_->request("countersign.control.approve",
                                        R"({"id":"pay-2024-001","approver":"alice"})", {}, 10s));
  EXPECT_EQ(again.status(), "already_approved");
  EXPECT_EQ(again.code(), 200);

  // The worker saw the payment exactly once, approved. A later read job shows that everything
  // published before it has arrived.
  client_->publish("agents.jobs.knowledge.read", "last");
  client_->flush();
  jobs.waitFor(3, 10s);
  std::this_thread::sleep_for(300ms);
  got = jobs.messages();
  ASSERT_EQ(countOn(got, "jobs.finance.payment.execute"), 1u);
  EXPECT_EQ(countOn(got, "jobs.knowledge.read"), 2u);
  for (const auto& m : got) {
    if (m.subject != "jobs.finance.payment.execute") continue;
    EXPECT_EQ(m.payload, payment);
    EXPECT_EQ(headerValues(m, "Countersign-Approval"), one("granted"));
    EXPECT_EQ(headerValues(m, "Countersign-Approved-By"), one("alice"));
    EXPECT_EQ(headerValues(m, "Countersign-Approval-Id"), one("pay-2024-001"));
    EXPECT_EQ(headerValues(m, "Countersign-Job-Hash"), one(job_hash));
    EXPECT_EQ(headerValues(m, "Nats-Msg-Id"), one("countersign:pay-2024-001"));
  }
}

TEST_F(SeedScenarioTest, OtherSeedRulesAndTheDefaultDeny) {
  Collector jobs(*client_, "jobs.>");
  client_->flush();
  // A staging payment matches no rule: denied (fail closed).
  auto staging = toReply(client_->request("agents.jobs.finance.payment.execute",
                                          R"({"labels":{"env":"staging"},"amount":5})", {}, 10s));
  EXPECT_EQ(staging.code(), 403);
  EXPECT_EQ(staging.field("rule"), "default");
  // env as a top-level field and as a header are labels too.
  auto top = toReply(client_->request("agents.jobs.finance.payment.execute",
                                      R"({"env":"production","amount":5})",
                                      {{"Nats-Msg-Id", "top-1"}}, 10s));
  EXPECT_EQ(top.code(), 202);
  auto header = toReply(client_->request("agents.jobs.finance.payment.execute", R"({"amount":6})",
                                         {{"Nats-Msg-Id", "hdr-1"}, {"env", "production"}}, 10s));
  EXPECT_EQ(header.code(), 202);
  // A `topic` field in the payload is not the topic.
  auto forged_topic = toReply(client_->request(
      "agents.jobs.finance.payment.execute", R"({"topic":"knowledge.read","amount":7})", {}, 10s));
  EXPECT_EQ(forged_topic.code(), 403);
  // customer.notify: external held, internal denied.
  auto external = toReply(client_->request("agents.jobs.customer.notify",
                                           R"({"labels":{"channel":"external"}})",
                                           {{"Nats-Msg-Id", "notify-1"}}, 10s));
  EXPECT_EQ(external.code(), 202);
  EXPECT_EQ(external.field("rule"), "require-approval-external-notify");
  auto internal = toReply(client_->request("agents.jobs.customer.notify",
                                           R"({"labels":{"channel":"internal"}})", {}, 10s));
  EXPECT_EQ(internal.code(), 403);

  client_->publish("agents.jobs.knowledge.read", "last");
  client_->flush();
  jobs.waitFor(1, 10s);
  std::this_thread::sleep_for(300ms);
  auto got = jobs.messages();
  ASSERT_EQ(got.size(), 1u) << "only the read job may pass; first: " << got[0].subject;
  EXPECT_EQ(got[0].payload, "last");
}

}  // namespace
}  // namespace countersign::testing
