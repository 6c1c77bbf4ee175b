// Every event names the producer's job id beside the approval id, so a producer that does not
// wait for an answer can match a `denied` or a `released` to the job it sent.
#include <gtest/gtest.h>

#include "gateway_fixture.hpp"

namespace countersign::testing {
namespace {

class EventIdsTest : public GatewayTest {
 protected:
  rapidjson::Document onlyEvent(const std::string& prefix) {
    const auto events = pub_.on(prefix);
    EXPECT_EQ(events.size(), 1u) << prefix;
    return parse(events.empty() ? "{}" : events.back().payload);
  }
};

TEST_F(EventIdsTest, DeniedEventCarriesThePayloadId) {
  send("finance.payment.execute", R"({"id":"job-7","labels":{"env":"staging"}})");
  const auto event = onlyEvent("countersign.events.denied.");
  EXPECT_EQ(field(event, "job_id"), "job-7");
  EXPECT_FALSE(event.HasMember("approval_id"));  // nothing was held
}

TEST_F(EventIdsTest, DeniedEventPrefersTheMessageIdHeader) {
  send("finance.payment.execute", R"({"id":"job-7"})", {{"Nats-Msg-Id", "msg-9"}});
  EXPECT_EQ(field(onlyEvent("countersign.events.denied."), "job_id"), "msg-9");
}

TEST_F(EventIdsTest, DeniedBytesJobWithoutIdHasNoJobId) {
  send("finance.payment.execute", "not json");
  EXPECT_FALSE(onlyEvent("countersign.events.denied.").HasMember("job_id"));
}

TEST_F(EventIdsTest, HeldApprovedReleasedCarryJobIdAndApprovalId) {
  // A job id outside the approval-id characters gets a derived approval id: both are named.
  const std::string payload = R"({"id":"order 42/x","amount":10,"labels":{"env":"production"}})";
  const auto outcome = send("finance.payment.execute", payload);
  ASSERT_EQ(wireName(outcome.status), "approval_required");
  ASSERT_TRUE(outcome.approval_id.starts_with("h-"));
  EXPECT_EQ(wireName(approve(outcome.approval_id).status), "approved");
  for (const char* event : {"countersign.events.held.", "countersign.events.approved.",
                            "countersign.events.released."}) {
    const auto body = onlyEvent(event);
    EXPECT_EQ(field(body, "job_id"), "order 42/x") << event;
    EXPECT_EQ(field(body, "approval_id"), outcome.approval_id) << event;
  }
}

TEST_F(EventIdsTest, AllowedEventCarriesJobIdWhenEnabled) {
  events_ = std::make_unique<EventSink>(pub_, clock_, log_, EventOptions{.allowed_events = true});
  const Services services{config_, kv_, pub_, clock_, ids_, *policy_, throttler_, *events_, log_, metrics_};
  intake_ = std::make_unique<Intake>(services);
  send("knowledge.read", R"({"job_id":"read-1"})");
  EXPECT_EQ(field(onlyEvent("countersign.events.allowed."), "job_id"), "read-1");
}

TEST_F(EventIdsTest, RejectedEventCarriesJobId) {
  const std::string id = holdPayment();
  reject(id);
  EXPECT_EQ(field(onlyEvent("countersign.events.rejected."), "job_id"), "pay-1");
}

}  // namespace
}  // namespace countersign::testing
