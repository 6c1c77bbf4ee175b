// The seed scenario end to end (DESIGN.md section 3): the seed's approval-policy.yaml loaded
// unchanged, a read-only job passing straight through, a production payment held for a human,
// approved once and delivered to the worker exactly once.
#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "integration/harness/harness.hpp"

namespace countersign::testing {
namespace {

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::vector<std::string> headerValues(const Message& msg, std::string_view name) {
  std::vector<std::string> out;
  const std::string wanted = lower(name);
  for (const auto& [key, value] : msg.headers) {
    if (lower(key) == wanted) out.push_back(value);
  }
  return out;
}

std::vector<std::string> one(std::string value) {
  return {std::move(value)};
}

rapidjson::Document parseJson(const std::string& text) {
  rapidjson::Document doc;
  doc.Parse(text.c_str(), text.size());
  if (doc.HasParseError() || !doc.IsObject()) {
    ADD_FAILURE() << "not a JSON object: " << text;
    doc.SetObject();
  }
  return doc;
}

std::string str(const rapidjson::Value& obj, const char* key) {
  if (!obj.IsObject() || !obj.HasMember(key) || !obj[key].IsString()) return "<missing>";
  return obj[key].GetString();
}
std::int64_t num(const rapidjson::Value& obj, const char* key) {
  if (!obj.IsObject() || !obj.HasMember(key) || !obj[key].IsInt64()) return -1;
  return obj[key].GetInt64();
}

// A countersign reply; its Countersign-Status header must equal the body's status.
rapidjson::Document reply(const std::optional<Message>& msg) {
  if (!msg) {
    ADD_FAILURE() << "no reply from countersign";
    rapidjson::Document none;
    none.SetObject();
    return none;
  }
  auto body = parseJson(msg->payload);
  EXPECT_EQ(headerValues(*msg, "Countersign-Status"), one(str(body, "status"))) << msg->payload;
  return body;
}

std::size_t countOn(const std::vector<Message>& messages, const std::string& subject) {
  std::size_t n = 0;
  for (const auto& m : messages) n += m.subject == subject ? 1 : 0;
  return n;
}

class SeedScenarioTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = NatsServer::start();
    client_ = std::make_unique<Client>(server_->url());
    CountersignOptions options;
    options.config_yaml = basicConfig(server_->url());
    options.policy_yaml = seedPolicy();
    options.nats_url = server_->url();
    countersign_ = CountersignProcess::start(options);
  }

  std::unique_ptr<NatsServer> server_;
  std::unique_ptr<Client> client_;
  std::unique_ptr<CountersignProcess> countersign_;
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
  auto held = reply(client_->request("agents.jobs.finance.payment.execute", payment,
                                     {{"Nats-Msg-Id", "pay-2024-001"}}, 10s));
  EXPECT_EQ(str(held, "status"), "approval_required");
  EXPECT_EQ(num(held, "code"), 202);
  EXPECT_EQ(str(held, "approval_id"), "pay-2024-001");
  EXPECT_EQ(str(held, "rule"), "require-approval-prod-finance");
  const std::string job_hash = str(held, "job_hash");
  EXPECT_EQ(job_hash.rfind("sha256:", 0), 0u) << job_hash;
  EXPECT_TRUE(client_->kvGet("countersign_approvals", "pay-2024-001").has_value());

  // 3. approved by a human: released to the worker.
  auto approved = reply(client_->request("countersign.control.approve",
                                         R"({"id":"pay-2024-001","approver":"alice"})", {}, 10s));
  EXPECT_EQ(str(approved, "status"), "approved");
  EXPECT_EQ(num(approved, "code"), 200);
  EXPECT_EQ(str(approved, "msg_id"), "countersign:pay-2024-001");

  // 4. approved again: nothing more.
  auto again = reply(client_->request("countersign.control.approve",
                                      R"({"id":"pay-2024-001","approver":"alice"})", {}, 10s));
  EXPECT_EQ(str(again, "status"), "already_approved");
  EXPECT_EQ(num(again, "code"), 200);

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
  auto staging = reply(client_->request("agents.jobs.finance.payment.execute",
                                        R"({"labels":{"env":"staging"},"amount":5})", {}, 10s));
  EXPECT_EQ(num(staging, "code"), 403);
  EXPECT_EQ(str(staging, "rule"), "default");
  // env as a top-level field and as a header are labels too.
  auto top = reply(client_->request("agents.jobs.finance.payment.execute",
                                    R"({"env":"production","amount":5})",
                                    {{"Nats-Msg-Id", "top-1"}}, 10s));
  EXPECT_EQ(num(top, "code"), 202);
  auto header = reply(client_->request("agents.jobs.finance.payment.execute", R"({"amount":6})",
                                       {{"Nats-Msg-Id", "hdr-1"}, {"env", "production"}}, 10s));
  EXPECT_EQ(num(header, "code"), 202);
  // A `topic` field in the payload is not the topic.
  auto forged_topic = reply(client_->request("agents.jobs.finance.payment.execute",
                                             R"({"topic":"knowledge.read","amount":7})", {}, 10s));
  EXPECT_EQ(num(forged_topic, "code"), 403);
  // customer.notify: external held, internal denied.
  auto external =
      reply(client_->request("agents.jobs.customer.notify", R"({"labels":{"channel":"external"}})",
                             {{"Nats-Msg-Id", "notify-1"}}, 10s));
  EXPECT_EQ(num(external, "code"), 202);
  EXPECT_EQ(str(external, "rule"), "require-approval-external-notify");
  auto internal = reply(client_->request("agents.jobs.customer.notify",
                                         R"({"labels":{"channel":"internal"}})", {}, 10s));
  EXPECT_EQ(num(internal, "code"), 403);

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
