// Shared fixture: the core's intake, control, release and replay on in-memory fakes.
#pragma once

#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <memory>

#include "countersign/control.hpp"
#include "countersign/events.hpp"
#include "countersign/intake.hpp"
#include "countersign/job.hpp"
#include "countersign/json.hpp"
#include "countersign/releaser.hpp"
#include "countersign/replayer.hpp"
#include "fakes.hpp"

namespace countersign::testing {

using namespace std::chrono_literals;

inline constexpr const char* kPolicy = R"(version: v1
rules:
  - id: allow-readonly
    when: { topic: knowledge.read }
    decision: allow
  - id: require-approval-prod-finance
    when: { topic: finance.payment.execute, env: production }
    decision: require_human
  - id: slow
    when: { topic: bulk.> }
    decision: throttle
    rate: "1/s"
    burst: 1
  - id: quick-decision
    when: { topic: ops.restart }
    decision: require_human
    timeout: 10s
  - id: auto-after-timeout
    when: { topic: ops.lowrisk }
    decision: require_human
    timeout: 10s
    on_timeout: allow
    allow_on_timeout_acknowledged: true
)";

inline constexpr const char* kPayment = R"({"id":"pay-1","amount":10,"labels":{"env":"production"}})";

inline rapidjson::Document parse(const std::string& text) {
  rapidjson::Document doc;
  doc.Parse(text.data(), text.size());
  EXPECT_FALSE(doc.HasParseError()) << text;
  return doc;
}

inline std::string field(const rapidjson::Document& doc, const char* name) {
  if (!doc.IsObject() || !doc.HasMember(name) || !doc[name].IsString()) return {};
  return doc[name].GetString();
}

class GatewayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_.routes.push_back(RouteConfig{.name = "jobs", .from = "agents.jobs.>", .to = "jobs.>"});
    auto policy = Policy::parse(kPolicy);
    ASSERT_TRUE(policy) << policy.error().message;
    policy_ = std::make_unique<PolicyHolder>(*policy);
    events_ = std::make_unique<EventSink>(pub_, clock_, log_, EventOptions{});
    const Services services{config_, kv_, pub_, clock_, ids_, *policy_, throttler_, *events_, log_, metrics_};
    intake_ = std::make_unique<Intake>(services);
    releaser_ = std::make_unique<Releaser>(services);
    control_ = std::make_unique<Control>(services, *releaser_);
  }

  std::unique_ptr<Replayer> replayer(ReplayerOptions options = {}) {
    const Services services{config_, kv_, pub_, clock_, ids_, *policy_, throttler_, *events_, log_, metrics_};
    return std::make_unique<Replayer>(services, *releaser_, std::move(options));
  }

  IntakeOutcome send(const std::string& topic, const std::string& payload, Headers headers = {},
                     const std::string& reply = "_INBOX.r1") {
    return intake_->onJob(config_.routes[0],
                          Message{"agents.jobs." + topic, reply, std::move(headers), payload});
  }
  rapidjson::Document lastReply(const std::string& reply = "_INBOX.r1") {
    const auto replies = pub_.on(reply);
    EXPECT_FALSE(replies.empty());
    if (replies.empty()) return parse("{}");
    const auto& last = replies.back();
    const std::string* status = findHeader(last.headers, "Countersign-Status");
    EXPECT_NE(status, nullptr);
    auto doc = parse(last.payload);
    if (status) {
      EXPECT_EQ(*status, field(doc, "status"));
    }
    return doc;
  }
  ControlReply approve(const std::string& id, const std::string& extra = "") {
    return control_->handle(ControlOp::approve,
                            R"({"id":")" + id + R"(","approver":"alice")" + extra + "}");
  }
  ControlReply reject(const std::string& id) {
    return control_->handle(ControlOp::reject, R"({"id":")" + id + R"(","approver":"bob","reason":"no"})");
  }
  // The approved <id>/decision another process creates (alice's, now), with the record it decides.
  std::optional<std::pair<ApprovalRecord, DecisionRecord>> decideElsewhere(const std::string& id) {
    const auto value = kv_.value(id);
    EXPECT_TRUE(value) << id;
    if (!value) return std::nullopt;
    auto record = parseApprovalRecord(*value);
    EXPECT_TRUE(record) << id;
    if (!record) return std::nullopt;
    const DecisionRecord decision{.decision = FinalDecision::approved, .by = "alice", .at = formatRfc3339(clock_.now()),
                                  .policy_snapshot = record->policy_snapshot, .job_hash = record->job_hash};
    EXPECT_TRUE(kv_.create(decisionKey(id), toJson(decision)));
    return std::pair(*record, decision);
  }
  std::string holdPayment() {
    const auto outcome = send("finance.payment.execute", kPayment);
    EXPECT_EQ(wireName(outcome.status), "approval_required");
    return outcome.approval_id;
  }

  Config config_;
  fakes::MemoryKv kv_;
  fakes::CapturingPublisher pub_;
  fakes::ManualClock clock_;
  fakes::SequentialIds ids_;
  NullLogger log_;
  Metrics metrics_;
  Throttler throttler_;
  std::unique_ptr<PolicyHolder> policy_;
  std::unique_ptr<EventSink> events_;
  std::unique_ptr<Intake> intake_;
  std::unique_ptr<Releaser> releaser_;
  std::unique_ptr<Control> control_;
};

}  // namespace countersign::testing
