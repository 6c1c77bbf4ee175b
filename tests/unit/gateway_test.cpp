// Intake, control and release decisions on in-memory fakes (no network, manual clock).
#include <thread>

#include "countersign/trim_memory.hpp"
#include "gateway_fixture.hpp"

namespace countersign {
namespace {

using namespace std::chrono_literals;
using testing::field;
using testing::GatewayTest;
using testing::kPayment;
using testing::parse;

TEST_F(GatewayTest, AllowForwardsBytesHeadersAndReplySubject) {
  const std::string payload = R"({ "q" : "x",  "n":1 })";
  const auto outcome = send("knowledge.read", payload,
                            {{"X-Trace", "1"}, {"X-Trace", "2"}, {"Countersign-Approval", "granted"}});
  EXPECT_TRUE(outcome.forwarded);
  const auto out = pub_.on("jobs.");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].subject, "jobs.knowledge.read");
  EXPECT_EQ(out[0].payload, payload);
  EXPECT_EQ(out[0].reply, "_INBOX.r1");
  int approval_headers = 0;
  std::vector<std::string> traces;
  for (const auto& [k, v] : out[0].headers) {
    if (k == "X-Trace") traces.push_back(v);
    if (equalsIgnoreCase(k, "Countersign-Approval")) {
      ++approval_headers;
      EXPECT_EQ(v, "none");
    }
  }
  EXPECT_EQ(traces, (std::vector<std::string>{"1", "2"}));
  EXPECT_EQ(approval_headers, 1);
  EXPECT_EQ(*findHeader(out[0].headers, "Countersign-Decision"), "allow");
  EXPECT_EQ(*findHeader(out[0].headers, "Countersign-Rule"), "allow-readonly");
  EXPECT_EQ(*findHeader(out[0].headers, "Countersign-Policy-Snapshot"), policy_->current()->snapshot());
  EXPECT_TRUE(pub_.on("_INBOX").empty());  // the worker answers, not countersign
}

TEST_F(GatewayTest, DefaultDenyRepliesAndForwardsNothing) {
  const auto outcome = send("finance.payment.execute", R"({"labels":{"env":"staging"}})");
  EXPECT_EQ(wireName(outcome.status), "denied");
  EXPECT_TRUE(pub_.on("jobs.").empty());
  const auto reply = lastReply();
  EXPECT_EQ(reply["code"].GetInt(), 403);
  EXPECT_EQ(field(reply, "rule"), "default");
  EXPECT_EQ(field(reply, "reason"), "no_rule_matched");
  EXPECT_EQ(pub_.on("countersign.events.denied.finance.payment.execute").size(), 1u);
}

TEST_F(GatewayTest, ReservedMessageIdIsDenied) {
  const auto outcome = send("knowledge.read", "{}", {{"Nats-Msg-Id", "countersign:abc"}});
  EXPECT_EQ(outcome.code, 403);
  EXPECT_EQ(field(lastReply(), "reason"), "reserved_header");
  EXPECT_TRUE(pub_.on("jobs.").empty());
}

TEST_F(GatewayTest, DisallowedReplySubjectGetsNoAnswerButDecisionStands) {
  const auto outcome = send("finance.payment.execute", kPayment, {}, "jobs.evil");
  EXPECT_EQ(wireName(outcome.status), "approval_required");
  EXPECT_FALSE(outcome.replied);
  EXPECT_TRUE(pub_.on("jobs.evil").empty());
  EXPECT_TRUE(kv_.value("pay-1").has_value());
  const auto control = send("knowledge.read", "{}", {}, "countersign.control.approve");
  EXPECT_TRUE(control.forwarded);
  EXPECT_EQ(pub_.on("jobs.")[0].reply, "");  // not carried to the worker either
}

TEST_F(GatewayTest, CountersignReplyToHeaderIsUsedWhenAllowed) {
  send("finance.payment.execute", kPayment, {{"Countersign-Reply-To", "_INBOX.side"}}, "");
  EXPECT_EQ(lastReply("_INBOX.side")["code"].GetInt(), 202);
}

TEST_F(GatewayTest, ThrottleForwardsWithinRateThenRefuses) {
  EXPECT_TRUE(send("bulk.import", "{}").forwarded);
  EXPECT_EQ(*findHeader(pub_.on("jobs.")[0].headers, "Countersign-Rule"), "slow");
  const auto second = send("bulk.import", "{}");
  EXPECT_EQ(second.code, 429);
  const auto reply = lastReply();
  EXPECT_GT(reply["retry_after_ms"].GetInt64(), 0);
  EXPECT_EQ(pub_.on("jobs.").size(), 1u);
  clock_.advance(1100ms);
  EXPECT_TRUE(send("bulk.import", "{}").forwarded);
}

TEST_F(GatewayTest, HoldCreatesOneRecordPerJobId) {
  const std::string id = holdPayment();
  EXPECT_EQ(id, "pay-1");
  const auto first = lastReply();
  EXPECT_EQ(first["code"].GetInt(), 202);
  EXPECT_EQ(field(first, "policy_snapshot"), policy_->current()->snapshot());
  auto record = parseApprovalRecord(*kv_.value("pay-1"));
  ASSERT_TRUE(record);
  EXPECT_EQ(record->state, ApprovalState::pending);
  EXPECT_EQ(record->payload, kPayment);
  EXPECT_TRUE(record->payload_is_json);
  EXPECT_EQ(record->job_hash, field(first, "job_hash"));
  EXPECT_TRUE(pub_.on("jobs.").empty());

  // Same id, same content: the same answer, no second record.
  const std::size_t keys = kv_.size();
  send("finance.payment.execute", R"({"labels":{"env":"production"},"amount":10, "id":"pay-1"})");
  const auto again = lastReply();
  EXPECT_EQ(again["code"].GetInt(), 202);
  EXPECT_EQ(field(again, "approval_id"), "pay-1");
  EXPECT_EQ(field(again, "job_hash"), field(first, "job_hash"));
  EXPECT_EQ(kv_.size(), keys);
  // Undecided: reviewers are told again (the first `held` event may have been lost in a crash).
  EXPECT_EQ(pub_.on("countersign.events.held.").size(), 2u);

  // Same id, other content: refused.
  send("finance.payment.execute", R"({"id":"pay-1","amount":99,"labels":{"env":"production"}})");
  const auto conflict = lastReply();
  EXPECT_EQ(conflict["code"].GetInt(), 409);
  EXPECT_EQ(field(conflict, "reason"), "id_conflict");
}

TEST_F(GatewayTest, HoldFailsClosedWhenTheStoreIsDown) {
  kv_.failNext(Errc::unavailable, 5);
  const auto outcome = send("finance.payment.execute", kPayment);
  EXPECT_EQ(outcome.code, 503);
  EXPECT_EQ(lastReply()["code"].GetInt(), 503);
  EXPECT_TRUE(pub_.on("jobs.").empty());
  EXPECT_EQ(kv_.size(), 0u);
}

TEST_F(GatewayTest, HoldTooLargeIs413) {
  pub_.max_payload = 2048;
  const std::string big = R"({"labels":{"env":"production"},"blob":")" + std::string(1500, 'x') + "\"}";
  const auto outcome = send("finance.payment.execute", big);
  EXPECT_EQ(outcome.code, 413);
  EXPECT_EQ(lastReply()["code"].GetInt(), 413);
  EXPECT_EQ(kv_.size(), 0u);
}

TEST_F(GatewayTest, DuplicateKeysAreBytesSoLabelsDoNotMatch) {
  const auto outcome = send("finance.payment.execute", R"({"env":"staging","env":"production"})");
  EXPECT_EQ(wireName(outcome.status), "denied");
}

TEST_F(GatewayTest, ApproveReleasesOnceWithApprovalHeaders) {
  const std::string id = holdPayment();
  const std::string hash = field(lastReply(), "job_hash");
  const auto answer = approve(id);
  EXPECT_EQ(answer.code, 200) << answer.body;
  auto body = parse(answer.body);
  EXPECT_EQ(field(body, "status"), "approved");
  EXPECT_EQ(field(body, "msg_id"), "countersign:pay-1");
  const auto released = pub_.on("jobs.");
  ASSERT_EQ(released.size(), 1u);
  EXPECT_EQ(released[0].payload, kPayment);
  EXPECT_EQ(released[0].delivery, Delivery::core_flush);
  EXPECT_EQ(*findHeader(released[0].headers, "Nats-Msg-Id"), "countersign:pay-1");
  EXPECT_EQ(*findHeader(released[0].headers, "Countersign-Approval"), "granted");
  EXPECT_EQ(*findHeader(released[0].headers, "Countersign-Approved-By"), "alice");
  EXPECT_EQ(*findHeader(released[0].headers, "Countersign-Job-Hash"), hash);
  EXPECT_TRUE(kv_.value("pay-1/decision"));
  EXPECT_TRUE(kv_.value("pay-1/released"));
  EXPECT_EQ(parseApprovalRecord(*kv_.value("pay-1"))->state, ApprovalState::released);

  const auto again = approve(id);
  EXPECT_EQ(wireName(again.status), "already_approved");
  EXPECT_EQ(again.code, 200);
  EXPECT_EQ(pub_.on("jobs.").size(), 1u);
  EXPECT_EQ(pub_.on("countersign.events.released.").size(), 1u);
}

TEST_F(GatewayTest, ToStreamRoutesReleaseWithJetStream) {
  config_.routes[0].to_stream = "JOBS";
  const std::string id = holdPayment();
  EXPECT_EQ(approve(id).code, 200);
  EXPECT_EQ(pub_.on("jobs.")[0].delivery, Delivery::jetstream);
  EXPECT_NE(kv_.value("pay-1/released")->find("\"stream\":\"JOBS\""), std::string::npos);
}

TEST_F(GatewayTest, ApproveTakesFourStoreRoundTrips) {
  // get the record, create <id>/decision, create <id>/released, update the view from the entry
  // read first: no read of <id>/decision and no second read of the record.
  const std::string id = holdPayment();
  kv_.gets = 0;
  kv_.creates = 0;
  kv_.updates = 0;
  EXPECT_EQ(wireName(approve(id).status), "approved");
  EXPECT_EQ(kv_.gets.load(), 1);
  EXPECT_EQ(kv_.creates.load(), 2);
  EXPECT_EQ(kv_.updates.load(), 1);
  auto record = parseApprovalRecord(*kv_.value(id));
  ASSERT_TRUE(record);
  EXPECT_EQ(record->state, ApprovalState::released);
  ASSERT_EQ(record->approvals.size(), 1u);
  EXPECT_EQ(record->approvals[0].approver, "alice");
}

TEST_F(GatewayTest, TheApproverHearsBeforeTheViewAndTheReleasedEvent) {
  // Over NATS: job out, <id>/released created, then the reply; the record's view and the
  // `released` event follow it (they decide nothing) and are done when onRequest returns.
  const std::string id = holdPayment();
  pub_.clear();
  control_->onRequest(ControlOp::approve,
                      Message{"countersign.control.approve", "_INBOX.approver", {},
                              R"({"id":")" + id + R"(","approver":"alice"})"});
  std::vector<std::string> order;
  for (const auto& m : pub_.all()) order.push_back(m.subject);
  const auto at = [&](std::string_view prefix) {
    for (std::size_t i = 0; i < order.size(); ++i) {
      if (order[i].starts_with(prefix)) return static_cast<int>(i);
    }
    return -1;
  };
  ASSERT_GE(at("jobs."), 0);
  ASSERT_GE(at("_INBOX.approver"), 0);
  ASSERT_GE(at("countersign.events.released."), 0);
  EXPECT_LT(at("jobs."), at("_INBOX.approver"));
  EXPECT_LT(at("_INBOX.approver"), at("countersign.events.released."));
  EXPECT_TRUE(kv_.value(releasedKey(id)).has_value());
  EXPECT_EQ(parseApprovalRecord(*kv_.value(id))->state, ApprovalState::released);
  // handle() (the REST API's path) returns only when all of it is done.
  send("finance.payment.execute", R"({"id":"pay-2","labels":{"env":"production"}})");
  const std::string second = "pay-2";
  EXPECT_EQ(wireName(approve(second).status), "approved");
  EXPECT_EQ(parseApprovalRecord(*kv_.value(second))->state, ApprovalState::released);
  EXPECT_EQ(pub_.on("countersign.events.released.").size(), 2u);
}

TEST_F(GatewayTest, AnExistingDecisionAnswersBeforeAnyOtherCheck) {
  // Decided by another replica whose view update has not landed: the record still says pending.
  const std::string id = holdPayment();
  const DecisionRecord decision{.decision = FinalDecision::approved, .by = "carol", .at = "2026-01-01T00:00:00Z",
                                .reason = "", .policy_snapshot = policy_->current()->snapshot(),
                                .job_hash = parseApprovalRecord(*kv_.value(id))->job_hash};
  kv_.put(decisionKey(id), toJson(decision));
  // Even with a policy change and a reviewer hash that differs, the decision answers.
  auto changed = Policy::parse(std::string(testing::kPolicy) + "  - id: extra\n    when: { topic: x }\n    decision: deny\n");
  ASSERT_TRUE(changed) << changed.error().message;
  policy_->replace(*changed);
  const auto answer = approve(id, R"(,"job_hash":"sha256:other")");
  EXPECT_EQ(wireName(answer.status), "already_approved");
  EXPECT_EQ(answer.code, 200);
  // Nothing re-bound, nothing released by this call.
  EXPECT_EQ(parseApprovalRecord(*kv_.value(id))->policy_snapshot, decision.policy_snapshot);
  EXPECT_TRUE(pub_.on("jobs.").empty());
}

TEST_F(GatewayTest, RejectAndApproveExcludeEachOther) {
  const std::string id = holdPayment();
  EXPECT_EQ(wireName(reject(id).status), "rejected");
  EXPECT_EQ(wireName(reject(id).status), "already_rejected");
  const auto late = approve(id);
  EXPECT_EQ(late.code, 409);
  EXPECT_EQ(field(parse(late.body), "reason"), "already_rejected");
  EXPECT_TRUE(pub_.on("jobs.").empty());

  send("finance.payment.execute", R"({"id":"pay-2","labels":{"env":"production"}})");
  EXPECT_EQ(approve("pay-2").code, 200);
  const auto late_reject = reject("pay-2");
  EXPECT_EQ(late_reject.code, 409);
  EXPECT_EQ(field(parse(late_reject.body), "reason"), "already_approved");
}

TEST_F(GatewayTest, TamperedRecordIsJobChangedAndNotReleased) {
  const std::string id = holdPayment();
  auto record = *parseApprovalRecord(*kv_.value(id));
  record.payload = R"({"id":"pay-1","amount":1000000,"labels":{"env":"production"}})";
  kv_.put(id, toJson(record));
  const auto answer = approve(id);
  EXPECT_EQ(answer.code, 409);
  EXPECT_EQ(field(parse(answer.body), "reason"), "job_changed");
  EXPECT_TRUE(pub_.on("jobs.").empty());
  EXPECT_FALSE(kv_.value(id + "/decision"));
}

TEST_F(GatewayTest, ReviewerHashMustMatch) {
  const std::string id = holdPayment();
  const auto answer = approve(id, R"(,"job_hash":"sha256:00")");
  EXPECT_EQ(field(parse(answer.body), "reason"), "job_changed");
  EXPECT_TRUE(pub_.on("jobs.").empty());
  const std::string hash = parseApprovalRecord(*kv_.value(id))->job_hash;
  EXPECT_EQ(approve(id, R"(,"job_hash":")" + hash + "\"").code, 200);
}

TEST_F(GatewayTest, SnapshotChangeRebindsThenApprovalUnderNewPolicyReleases) {
  const std::string id = holdPayment();
  auto changed = Policy::parse(R"(version: v2
rules:
  - id: pay
    when: { topic: finance.payment.execute }
    decision: require_human
)");
  ASSERT_TRUE(changed) << changed.error().message;
  policy_->replace(*changed);
  const auto answer = approve(id);
  EXPECT_EQ(answer.code, 409);
  auto body = parse(answer.body);
  EXPECT_EQ(field(body, "reason"), "snapshot_changed");
  EXPECT_EQ(field(body, "policy_snapshot"), (*changed)->snapshot());
  EXPECT_TRUE(pub_.on("jobs.").empty());
  EXPECT_EQ(pub_.on("countersign.events.held.").size(), 2u);  // held, then held again
  auto record = *parseApprovalRecord(*kv_.value(id));
  EXPECT_EQ(record.policy_snapshot, (*changed)->snapshot());
  EXPECT_EQ(record.rule, "pay");
  EXPECT_EQ(approve(id).code, 200);
  EXPECT_EQ(pub_.on("jobs.").size(), 1u);
}

TEST_F(GatewayTest, SnapshotChangeToDenyRejects) {
  const std::string id = holdPayment();
  auto changed = Policy::parse("version: v3\nrules: []\n");
  ASSERT_TRUE(changed) << changed.error().message;
  policy_->replace(*changed);
  const auto answer = approve(id);
  EXPECT_EQ(answer.code, 409);
  auto body = parse(answer.body);
  EXPECT_EQ(field(body, "reason"), "snapshot_changed");
  EXPECT_TRUE(body["rejected"].GetBool());
  EXPECT_EQ(parseDecisionRecord(*kv_.value(id + "/decision"))->decision, FinalDecision::rejected);
  EXPECT_EQ(approve(id).code, 409);
  EXPECT_TRUE(pub_.on("jobs.").empty());
}

TEST_F(GatewayTest, ExpiredApprovalIs410) {
  const auto outcome = send("ops.restart", R"({"id":"r-1"})");
  ASSERT_EQ(outcome.code, 202);
  clock_.advance(11s);
  const auto answer = approve("r-1");
  EXPECT_EQ(answer.code, 410);
  EXPECT_EQ(parseDecisionRecord(*kv_.value("r-1/decision"))->decision, FinalDecision::expired);
  const auto again = approve("r-1");
  EXPECT_EQ(again.code, 410);
  EXPECT_EQ(field(parse(again.body), "expires_at"), parseApprovalRecord(*kv_.value("r-1"))->expires_at);
  EXPECT_EQ(reject("r-1").code, 410);
  EXPECT_TRUE(pub_.on("jobs.").empty());
}

TEST_F(GatewayTest, NotFoundAndBadRequests) {
  EXPECT_EQ(approve("nope").code, 404);
  struct Case {
    ControlOp op;
    std::string body;
    std::string field;
  };
  const Case cases[] = {
      {ControlOp::approve, "not json", "body"},
      {ControlOp::approve, "[1]", "body"},
      {ControlOp::approve, R"({"approver":"a"})", "id"},
      {ControlOp::approve, R"({"id":5,"approver":"a"})", "id"},
      {ControlOp::approve, R"({"id":"x"})", "approver"},
      {ControlOp::reject, R"({"id":"x","approver":""})", "approver"},
      {ControlOp::approve, R"({"id":"x","approver":"a","job_hash":1})", "job_hash"},
      {ControlOp::get, R"({})", "id"},
      {ControlOp::list, R"({"limit":0})", "limit"},
      {ControlOp::list, R"({"limit":"ten"})", "limit"},
      {ControlOp::list, R"({"state":"weird"})", "state"},
      {ControlOp::approve, R"({"id":"a","id":"b","approver":"x"})", "body"},
  };
  for (const auto& c : cases) {
    const auto answer = control_->handle(c.op, c.body);
    EXPECT_EQ(answer.code, 400) << c.body;
    EXPECT_EQ(field(parse(answer.body), "field"), c.field) << c.body;
  }
}

TEST_F(GatewayTest, FailedReleaseAnswers202AndKeepsTheDecision) {
  config_.routes[0].to_stream = "JOBS";
  pub_.fail_delivery = Delivery::jetstream;
  const std::string id = holdPayment();
  const auto answer = approve(id);
  EXPECT_EQ(answer.code, 202);
  EXPECT_FALSE(parse(answer.body)["released"].GetBool());
  EXPECT_TRUE(kv_.value(id + "/decision"));
  EXPECT_FALSE(kv_.value(id + "/released"));
  const auto again = approve(id);
  EXPECT_EQ(wireName(again.status), "already_approved");
  EXPECT_FALSE(parse(again.body)["released"].GetBool());
}

TEST_F(GatewayTest, StoreTimeoutOnTheLockIsLockBusy) {
  const std::string id = holdPayment();
  kv_.fail_create_suffix = "/decision";
  const auto answer = approve(id);
  EXPECT_EQ(answer.code, 409);
  auto body = parse(answer.body);
  EXPECT_EQ(field(body, "reason"), "lock_busy");
  EXPECT_TRUE(body["retryable"].GetBool());
  EXPECT_TRUE(pub_.on("jobs.").empty());
  kv_.fail_create_suffix.clear();
  EXPECT_EQ(approve(id).code, 200);
}

// get's state comes from the keys that decide it, not from the record's view (which may lag),
// read together; a failed read of the released or decision key counts as no key, a failed read
// of the record is lock_busy, a missing record not_found.
TEST_F(GatewayTest, GetStateFollowsTheKeysAndAFailedReadAtTheEdges) {
  const std::string id = holdPayment();
  const std::string pending = *kv_.value(id);
  const auto stateOf = [&] {
    const auto got = control_->handle(ControlOp::get, R"({"id":")" + id + R"("})");
    EXPECT_EQ(got.code, 200) << got.body;
    return std::string(parse(got.body)["record"]["state"].GetString());
  };
  EXPECT_EQ(stateOf(), "pending");
  ASSERT_EQ(approve(id).code, 200);
  ASSERT_TRUE(kv_.value(id + "/decision"));
  ASSERT_TRUE(kv_.value(id + "/released"));
  kv_.put(id, pending);  // the record's view not yet updated
  EXPECT_EQ(stateOf(), "released");
  kv_.fail_get_suffix = "/released";
  EXPECT_EQ(stateOf(), "approved");  // the decision key still says so
  kv_.fail_get_suffix = "/decision";
  EXPECT_EQ(stateOf(), "released");
  kv_.fail_get_suffix = id;  // the record itself
  const auto busy = control_->handle(ControlOp::get, R"({"id":")" + id + R"("})");
  EXPECT_EQ(busy.code, 409);
  EXPECT_EQ(field(parse(busy.body), "reason"), "lock_busy");
  kv_.fail_get_suffix.clear();
  const auto missing = control_->handle(ControlOp::get, R"({"id":"no-such-id"})");
  EXPECT_EQ(missing.code, 404);
  EXPECT_EQ(wireName(missing.status), "not_found");

  // Decided (the decision key) but not released, the record still pending: approved; with that
  // read failing too, the record's own view.
  config_.routes[0].to_stream = "JOBS";
  pub_.fail_delivery = Delivery::jetstream;
  send("finance.payment.execute", R"({"id":"pay-9","labels":{"env":"production"}})");
  const std::string other = "pay-9";
  const std::string other_pending = *kv_.value(other);
  const auto decided = approve(other);
  ASSERT_TRUE(kv_.value(other + "/decision"));
  ASSERT_FALSE(kv_.value(other + "/released")) << decided.body;
  kv_.put(other, other_pending);
  const auto got = control_->handle(ControlOp::get, R"({"id":"pay-9"})");
  EXPECT_EQ(std::string(parse(got.body)["record"]["state"].GetString()), "approved");
  kv_.fail_get_suffix = "/decision";
  const auto unread = control_->handle(ControlOp::get, R"({"id":"pay-9"})");
  EXPECT_EQ(std::string(parse(unread.body)["record"]["state"].GetString()), "pending");
  kv_.fail_get_suffix.clear();
}

TEST_F(GatewayTest, GetAndListReflectTheKeys) {
  holdPayment();
  send("finance.payment.execute", R"({"id":"pay-2","labels":{"env":"production"}})");
  send("finance.payment.execute", R"({"id":"pay-3","labels":{"env":"production"}})");
  EXPECT_EQ(approve("pay-2").code, 200);
  const auto got = control_->handle(ControlOp::get, R"({"id":"pay-2"})");
  auto doc = parse(got.body);
  EXPECT_EQ(std::string(doc["record"]["state"].GetString()), "released");
  EXPECT_EQ(std::string(doc["record"]["payload"].GetString()),
            R"({"id":"pay-2","labels":{"env":"production"}})");

  auto page = parse(control_->handle(ControlOp::list, R"({"state":"pending","limit":1})").body);
  ASSERT_EQ(page["items"].Size(), 1u);
  EXPECT_EQ(std::string(page["items"][0]["id"].GetString()), "pay-1");
  EXPECT_EQ(std::string(page["next_after"].GetString()), "pay-1");
  auto next = parse(control_->handle(ControlOp::list, R"({"state":"pending","after":"pay-1"})").body);
  ASSERT_EQ(next["items"].Size(), 1u);
  EXPECT_EQ(std::string(next["items"][0]["id"].GetString()), "pay-3");
  EXPECT_FALSE(next.HasMember("next_after"));
  auto all = parse(control_->handle(ControlOp::list, "").body);
  EXPECT_EQ(all["items"].Size(), 3u);
}

// A list read from the store (no index) over a large bucket sorts the listing in place and
// hands the memory it freed back once the page is written; a small one does not trim. Pages stay
// as the keys say: other keys of a record (votes, claims) are no ids.
TEST_F(GatewayTest, ListFromALargeListingHandsTheMemoryBack) {
  holdPayment();
  send("finance.payment.execute", R"({"id":"pay-2","labels":{"env":"production"}})");
  send("finance.payment.execute", R"({"id":"pay-3","labels":{"env":"production"}})");
  EXPECT_EQ(approve("pay-2").code, 200);
  const auto small_before = trimMemoryCalls().load();
  auto small = parse(control_->handle(ControlOp::list, R"({"state":"pending"})").body);
  EXPECT_EQ(small["items"].Size(), 2u);
  EXPECT_EQ(trimMemoryCalls().load(), small_before);
  // Keys that sort between and around the ids, none of them a record.
  for (int i = 0; i < 10000; ++i) {
    kv_.put("pay-" + std::to_string(i % 4) + "/vote." + std::to_string(i), "{}");
  }
  const auto before = trimMemoryCalls().load();
  auto page = parse(control_->handle(ControlOp::list, R"({"state":"pending","limit":1})").body);
  EXPECT_EQ(trimMemoryCalls().load(), before + 1);
  ASSERT_EQ(page["items"].Size(), 1u);
  EXPECT_EQ(std::string(page["items"][0]["id"].GetString()), "pay-1");
  auto next = parse(control_->handle(ControlOp::list, R"({"state":"pending","after":"pay-1"})").body);
  ASSERT_EQ(next["items"].Size(), 1u);
  EXPECT_EQ(std::string(next["items"][0]["id"].GetString()), "pay-3");
  EXPECT_FALSE(next.HasMember("next_after"));
  auto released = parse(control_->handle(ControlOp::list, R"({"state":"released"})").body);
  ASSERT_EQ(released["items"].Size(), 1u);
  EXPECT_EQ(std::string(released["items"][0]["id"].GetString()), "pay-2");
  EXPECT_EQ(parse(control_->handle(ControlOp::list, "").body)["items"].Size(), 3u);
}

TEST_F(GatewayTest, JetStreamIntakeAcksOnlyDurableDecisions) {
  config_.routes[0].mode = RouteMode::jetstream;
  config_.routes[0].to_stream = "JOBS";
  const IngressPosition at{"COUNTERSIGN_JOBS", 7};
  auto ingest = [&](const std::string& topic, const std::string& payload, Headers headers = {}) {
    return intake_->onJob(config_.routes[0], Message{"agents.jobs." + topic, "", std::move(headers), payload}, &at);
  };
  const auto allowed = ingest("knowledge.read", "{}");
  EXPECT_EQ(allowed.ack, IngressAck::ack);
  const auto out = pub_.on("jobs.");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].delivery, Delivery::jetstream);
  EXPECT_EQ(*findHeader(out[0].headers, "Nats-Msg-Id"), "countersign-in:COUNTERSIGN_JOBS:7");
  EXPECT_EQ(out[0].reply, "");
  // The producer's own id is kept as the dedup id.
  ingest("knowledge.read", "{}", {{"Nats-Msg-Id", "mine-1"}});
  EXPECT_EQ(*findHeader(pub_.on("jobs.")[1].headers, "Nats-Msg-Id"), "mine-1");

  EXPECT_EQ(ingest("bulk.a", "{}").ack, IngressAck::ack);
  const auto throttled = ingest("bulk.a", "{}");
  EXPECT_EQ(throttled.ack, IngressAck::nak);
  EXPECT_GT(throttled.redeliver_after.count(), 0);

  pub_.fail_delivery = Delivery::jetstream;
  EXPECT_EQ(ingest("knowledge.read", "{}").ack, IngressAck::nak);
  pub_.fail_delivery.reset();

  EXPECT_EQ(ingest("finance.payment.execute", testing::kPayment).ack, IngressAck::ack);
  kv_.failNext(Errc::timeout, 3);
  EXPECT_EQ(ingest("finance.payment.execute", R"({"id":"p9","labels":{"env":"production"}})").ack,
            IngressAck::nak);
  pub_.max_payload = 1500;
  EXPECT_EQ(ingest("finance.payment.execute",
                   R"({"labels":{"env":"production"},"x":")" + std::string(1400, 'y') + R"("})").ack,
            IngressAck::term);
  EXPECT_EQ(ingest("nothing.matches", "{}").ack, IngressAck::ack);  // denied for good
}

TEST_F(GatewayTest, MetricsCountDecisionsAndApprovals) {
  send("knowledge.read", "{}");
  send("nothing.matches", "{}");
  const std::string id = holdPayment();
  approve(id);
  approve(id);
  EXPECT_EQ(metrics_.decisionCount("allowed", "allow-readonly"), 1u);
  EXPECT_EQ(metrics_.decisionCount("denied", "default"), 1u);
  EXPECT_EQ(metrics_.decisionCount("held", "require-approval-prod-finance"), 1u);
  EXPECT_EQ(metrics_.approvalCount("approved"), 1u);
  EXPECT_EQ(metrics_.approvalCount("already_approved"), 1u);
  const std::string text = metrics_.renderPrometheus();
  EXPECT_NE(text.find("countersign_decisions_total{decision=\"held\",rule=\"require-approval-prod-finance\"} 1"),
            std::string::npos);
  EXPECT_NE(text.find("countersign_approvals_total{result=\"already_approved\"} 1"), std::string::npos);
  EXPECT_NE(text.find("countersign_released_total 1"), std::string::npos);
}

TEST_F(GatewayTest, GetRedactsConfiguredPayloadFields) {
  send("finance.payment.execute", R"({"id":"pay-r","card":{"number":"4111"},"labels":{"env":"production"}})");
  config_.events.redact = {"card.number"};
  auto doc = parse(control_->handle(ControlOp::get, R"({"id":"pay-r"})").body);
  const std::string shown = doc["record"]["payload"].GetString();
  EXPECT_EQ(shown.find("4111"), std::string::npos);
  EXPECT_NE(shown.find("[REDACTED]"), std::string::npos);
  EXPECT_TRUE(doc["payload_redacted"].GetBool());
  // The stored record keeps the bytes, so the approval still verifies and releases them.
  EXPECT_EQ(approve("pay-r").code, 200);
  EXPECT_NE(pub_.on("jobs.")[0].payload.find("4111"), std::string::npos);
}

TEST_F(GatewayTest, HeldEventsCarryRedactedPayloadOnlyWhenConfigured) {
  holdPayment();
  EXPECT_EQ(pub_.on("countersign.events.held.")[0].payload.find("amount"), std::string::npos);
  EventOptions options;
  options.include_payload = true;
  options.redact = {"amount"};
  EventSink sink(pub_, clock_, log_, options);
  sink.emit(Event{.event = EventKind::held, .approval_id = "x", .topic = "t", .payload = R"({"amount":10,"to":"bob"})"});
  const auto events = pub_.on("countersign.events.held.t");
  ASSERT_EQ(events.size(), 1u);
  auto body = parse(events[0].payload);
  EXPECT_EQ(std::string(body["payload"].GetString()), R"({"amount":"[REDACTED]","to":"bob"})");
}

TEST_F(GatewayTest, ApprovedIsConfirmedByTheReleasedEventThatFollows) {
  EventSink sink(pub_, clock_, log_, EventOptions{.chained = true, .chain_id = "c", .durable_decisions = true});
  sink.emit(Event{.event = EventKind::approved, .approval_id = "a", .confirmed_by_next = true});
  sink.emit(Event{.event = EventKind::released, .approval_id = "a"});
  sink.emit(Event{.event = EventKind::rejected, .approval_id = "b"});
  sink.emit(Event{.event = EventKind::held, .approval_id = "c"});
  ASSERT_EQ(pub_.on("countersign.events.approved.").size(), 1u);
  EXPECT_EQ(pub_.on("countersign.events.approved.")[0].delivery, Delivery::core);
  EXPECT_EQ(pub_.on("countersign.events.released.")[0].delivery, Delivery::jetstream);
  EXPECT_EQ(pub_.on("countersign.events.rejected.")[0].delivery, Delivery::jetstream);
  EXPECT_EQ(pub_.on("countersign.events.held.")[0].delivery, Delivery::core);
}

TEST_F(GatewayTest, ChainedEventsLinkEachToThePrevious) {
  EventOptions options;
  options.chained = true;
  options.chain_id = "c1";
  EventSink sink(pub_, clock_, log_, options);
  sink.emit(Event{.event = EventKind::held, .approval_id = "a", .topic = "t"});
  sink.emit(Event{.event = EventKind::approved, .approval_id = "a", .topic = "t"});
  const auto first = pub_.on("countersign.events.held.t");
  const auto second = pub_.on("countersign.events.approved.t");
  ASSERT_EQ(first.size(), 1u);
  ASSERT_EQ(second.size(), 1u);
  auto a = parse(first[0].payload);
  auto b = parse(second[0].payload);
  EXPECT_EQ(a["seq"].GetUint64(), 1u);
  EXPECT_EQ(std::string(a["prev"].GetString()), "");
  EXPECT_EQ(b["seq"].GetUint64(), 2u);
  EXPECT_EQ(std::string(b["prev"].GetString()), "sha256:" + json::sha256Hex(first[0].payload));
  EXPECT_EQ(*findHeader(second[0].headers, "Nats-Msg-Id"), "a:approved:c1-2");
}

TEST_F(GatewayTest, LabelsOfAnEmptyPayloadComeFromHeaders) {
  EXPECT_EQ(send("finance.payment.execute", "", {{"env", "production"}}).code, 202);
  // Bytes that are not strict JSON could hide a label from the policy: the header does not count.
  EXPECT_EQ(send("finance.payment.execute", R"({"env":"x","env":"y"})", {{"env", "production"}}).code, 403);
}

TEST_F(GatewayTest, ConcurrentApprovalsReleaseExactlyOnce) {
  const std::string id = holdPayment();
  std::atomic<int> approved{0};
  std::atomic<int> already{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 16; ++i) {
    threads.emplace_back([&] {
      const auto answer = approve(id);
      if (wireName(answer.status) == "approved") ++approved;
      if (wireName(answer.status) == "already_approved") ++already;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(approved.load(), 1);
  EXPECT_EQ(already.load(), 15);
  EXPECT_EQ(pub_.on("jobs.").size(), 1u);
}


// Anyone may vote (`*`): the votes counted are the keys under the approval's binding, found
// without listing the bucket; another binding's, another approval's (even one whose id starts
// with this one's) and votes on other fields do not count.
TEST_F(GatewayTest, VotesOfAnyoneAreCountedFromTheApprovalsOwnKeys) {
  ApprovalRecord record{.id = "pay-1", .job_hash = "h1", .policy_snapshot = "p1", .binding = 2};
  const auto vote = [&](const std::string& key, const std::string& approver, const std::string& job_hash) {
    kv_.put(key, toJson(VoteRecord{.approver = approver, .job_hash = job_hash, .policy_snapshot = "p1"}));
  };
  kv_.put("pay-1", "{}");
  vote(voteKey("pay-1", 2, "alice"), "alice", "h1");
  vote(voteKey("pay-1", 2, "bob"), "bob", "h1");
  vote(voteKey("pay-1", 1, "carol"), "carol", "h1");     // an earlier binding's
  vote(voteKey("pay-10", 2, "dave"), "dave", "h1");      // another approval (its id extends this one)
  vote(voteKey("pay-2", 2, "erin"), "erin", "h1");       // another approval
  vote(voteKey("pay-1", 2, "frank"), "frank", "other");  // cast on another job
  kv_.put("pay-1/replay/1", "x");
  const Services services{config_, kv_, pub_, clock_, ids_, *policy_, throttler_, *events_, log_, metrics_};
  VoteStamp stamp;
  auto counted = countVotes(services, record, std::nullopt, &stamp);
  ASSERT_TRUE(counted.has_value()) << counted.error().message;
  std::sort(counted->begin(), counted->end());
  EXPECT_EQ(*counted, (std::vector<std::string>{"alice", "bob"}));
  EXPECT_EQ(stamp.keys, 3u);  // alice's, bob's and frank's keys under binding 2
  EXPECT_EQ(kv_.listings.load(), 0);  // the approval's keys, not the bucket's
  kv_.failNext(Errc::unavailable);
  EXPECT_EQ(countVotes(services, record, std::nullopt).error().code, Errc::unavailable);
}

// Core intake with a hold pool: the delivery thread hands the KV round trip over and goes on.
class PooledHoldTest : public GatewayTest {
 protected:
  void SetUp() override {
    GatewayTest::SetUp();
    pool_ = std::make_unique<WorkPool>(4);
    const Services services{config_, kv_, pub_, clock_, ids_, *policy_, throttler_, *events_, log_, metrics_};
    intake_ = std::make_unique<Intake>(services, nullptr, pool_.get());
  }
  void TearDown() override { pool_->drain(); }
  std::unique_ptr<WorkPool> pool_;
};

TEST_F(PooledHoldTest, HoldIsQueuedThenStoredAnsweredAndCounted) {
  const auto outcome = send("finance.payment.execute", kPayment);
  EXPECT_EQ(wireName(outcome.status), "queued");
  EXPECT_EQ(outcome.approval_id, "pay-1");
  pool_->drain();
  const auto answer = lastReply();
  EXPECT_EQ(answer["code"].GetInt(), 202);
  EXPECT_EQ(field(answer, "approval_id"), "pay-1");
  ASSERT_TRUE(kv_.value("pay-1"));
  EXPECT_EQ(pub_.on("countersign.events.held.").size(), 1u);
  EXPECT_EQ(metrics_.decisionCount("held", "require-approval-prod-finance"), 1u);
  EXPECT_EQ(metrics_.decisionCount("queued", "require-approval-prod-finance"), 0u);
  // Other decisions stay in line: answered before onJob returns.
  EXPECT_EQ(wireName(send("knowledge.read", "{}", {}, "_INBOX.r2").status), "allowed");
  EXPECT_EQ(wireName(send("nothing.matches", "{}", {}, "_INBOX.r3").status), "denied");
  EXPECT_EQ(lastReply("_INBOX.r3")["code"].GetInt(), 403);
}

TEST_F(PooledHoldTest, ManyJobsAreHeldOnceEachAndRepeatsAnswerTheSame) {
  // 200 distinct jobs, each sent twice, the second copy with other reply subjects: every copy
  // gets a 202 with its job's id, and each job has exactly one record and one held event
  // plus one re-announcement (undecided repeat).
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < 200; ++i) {
      const std::string id = "pay-" + std::to_string(i);
      send("finance.payment.execute", R"({"id":")" + id + R"(","labels":{"env":"production"}})", {},
           "_INBOX." + std::to_string(round) + "." + std::to_string(i) + ".r");
    }
  }
  pool_->drain();
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < 200; ++i) {
      const auto answer = lastReply("_INBOX." + std::to_string(round) + "." + std::to_string(i) + ".r");
      EXPECT_EQ(answer["code"].GetInt(), 202);
      EXPECT_EQ(field(answer, "approval_id"), "pay-" + std::to_string(i));
    }
  }
  EXPECT_EQ(kv_.size(), 200u);
  EXPECT_EQ(pub_.on("countersign.events.held.").size(), 400u);
  EXPECT_EQ(metrics_.decisionCount("held", "require-approval-prod-finance"), 400u);
}

// As run.cpp wires it: answers and `held` events on the send-at-once connection, everything
// else on the batching one; the event first, so no approval can precede it in the trail.
TEST_F(PooledHoldTest, HeldEventPrecedesTheAnswerOnTheAnswerConnection) {
  fakes::CapturingPublisher asap;
  EventSink asap_events(asap, clock_, log_, EventOptions{});
  const Services services{config_, kv_, pub_, clock_, ids_, *policy_, throttler_, *events_, log_, metrics_};
  intake_ = std::make_unique<Intake>(services, &asap, pool_.get(), &asap_events);

  EXPECT_EQ(wireName(send("finance.payment.execute", kPayment).status), "queued");
  EXPECT_EQ(wireName(send("nothing.matches", "{}", {}, "_INBOX.r2").status), "denied");
  pool_->drain();

  const auto sent = asap.on("");
  ASSERT_EQ(sent.size(), 3u);  // the 202, the held event and the 403
  std::size_t answer = sent.size();
  std::size_t held = sent.size();
  for (std::size_t i = 0; i < sent.size(); ++i) {
    if (sent[i].subject == "_INBOX.r1") answer = i;
    if (sent[i].subject.starts_with("countersign.events.held.")) held = i;
  }
  ASSERT_LT(answer, sent.size());
  ASSERT_LT(held, sent.size());
  EXPECT_LT(held, answer);  // reviewers' event first, then the producer's id
  EXPECT_EQ(field(parse(sent[answer].payload), "status"), "approval_required");
  EXPECT_EQ(field(parse(sent[held].payload), "approval_id"), "pay-1");
  EXPECT_TRUE(pub_.on("countersign.events.held.").empty());
  EXPECT_EQ(pub_.on("countersign.events.denied.").size(), 1u);  // other events stay batched
}

TEST_F(PooledHoldTest, StoreDownFailsClosedFromThePool) {
  kv_.failNext(Errc::unavailable, 5);
  EXPECT_EQ(wireName(send("finance.payment.execute", kPayment).status), "queued");
  pool_->drain();
  EXPECT_EQ(lastReply()["code"].GetInt(), 503);
  EXPECT_EQ(kv_.size(), 0u);
  EXPECT_EQ(metrics_.decisionCount("unavailable", "require-approval-prod-finance"), 1u);
}

}  // namespace
}  // namespace countersign
