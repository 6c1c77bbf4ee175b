// The replayer and the expiry sweep on in-memory fakes with a manual clock.
#include "gateway_fixture.hpp"

namespace countersign {
namespace {

using namespace std::chrono_literals;
using testing::field;
using testing::GatewayTest;
using testing::parse;

class ReplayerTest : public GatewayTest {
 protected:
  // An approval whose release failed: decision approved, no <id>/released.
  std::string interruptedRelease() {
    config_.routes[0].to_stream = "JOBS";
    pub_.fail_delivery = Delivery::jetstream;
    const std::string id = holdPayment();
    EXPECT_EQ(approve(id).code, 202);
    pub_.fail_delivery.reset();
    return id;
  }
  ReplayerOptions withWindow(std::chrono::nanoseconds window) {
    ReplayerOptions options{.lease = 5s};
    options.duplicate_windows["JOBS"] = window;
    return options;
  }
};

TEST_F(ReplayerTest, FinishesAnInterruptedReleaseAfterTheLease) {
  const std::string id = interruptedRelease();
  auto replay = replayer(withWindow(120s));
  auto first = replay->scan();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->unreleased, 1);
  EXPECT_EQ(first->replayed, 0);  // the lease starts now
  clock_.advance(3s);
  EXPECT_EQ(replay->scan()->replayed, 0);
  EXPECT_TRUE(pub_.on("jobs.").empty());
  clock_.advance(3s);
  EXPECT_EQ(replay->scan()->replayed, 1);
  const auto released = pub_.on("jobs.");
  ASSERT_EQ(released.size(), 1u);
  EXPECT_EQ(*findHeader(released[0].headers, "Nats-Msg-Id"), "countersign:" + id);
  EXPECT_EQ(*findHeader(released[0].headers, "Countersign-Approved-By"), "alice");
  EXPECT_TRUE(kv_.value(id + "/released"));
  EXPECT_TRUE(kv_.value(id + "/replay/1"));
  EXPECT_EQ(parseApprovalRecord(*kv_.value(id))->replays, 1);
  EXPECT_EQ(metrics_.replayedCount(), 1u);
  EXPECT_EQ(pub_.on("countersign.events.replayed.").size(), 1u);
  clock_.advance(10s);
  EXPECT_EQ(replay->scan()->replayed, 0);
  EXPECT_EQ(pub_.on("jobs.").size(), 1u);
}

// A gateway mid-release: its decision is stored and its publish not yet confirmed. The decision
// is the last write it makes before <id>/released, and the replayer's lease starts when it first
// sees that decision (never before it exists), so a gateway that finishes within the lease is
// left to finish alone: nothing published twice, no `replayed`.
TEST_F(ReplayerTest, AGatewayThatFinishesItsReleaseWithinTheLeaseIsLeftAlone) {
  config_.routes[0].to_stream = "JOBS";
  const std::string id = holdPayment();
  auto replay = replayer(withWindow(120s));
  clock_.advance(60s);
  ASSERT_TRUE(replay->scan());  // watched undecided for a minute: no lease runs for it yet
  const auto decided = decideElsewhere(id);
  ASSERT_TRUE(decided);
  const auto& [record, decision] = *decided;
  clock_.advance(1s);
  EXPECT_EQ(replay->scan()->replayed, 0);
  clock_.advance(3s);
  EXPECT_EQ(replay->scan()->replayed, 0);
  EXPECT_TRUE(pub_.on("jobs.").empty());
  // The gateway's PubAck arrives, 4 s after its decision: it records the release.
  EXPECT_TRUE(releaser_->release(record, decision, "approve").published);
  clock_.advance(10s);
  EXPECT_EQ(replay->scan()->replayed, 0);
  EXPECT_EQ(pub_.on("jobs.").size(), 1u);
  EXPECT_TRUE(pub_.on("countersign.events.replayed.").empty());
}

TEST_F(ReplayerTest, TwoReplayersNeverBothPublish) {
  interruptedRelease();
  auto a = replayer(withWindow(120s));
  auto b = replayer(withWindow(120s));
  ASSERT_TRUE(a->scan());
  ASSERT_TRUE(b->scan());
  clock_.advance(6s);
  const int replayed = a->scan()->replayed + b->scan()->replayed;
  EXPECT_EQ(replayed, 1);
  clock_.advance(6s);
  EXPECT_EQ(a->scan()->replayed + b->scan()->replayed, 0);
  EXPECT_EQ(pub_.on("jobs.").size(), 1u);
}

TEST_F(ReplayerTest, PastTheDuplicateWindowAnOperatorDecides) {
  const std::string id = interruptedRelease();
  clock_.advance(200s);  // longer than the 120 s window
  auto replay = replayer(withWindow(120s));
  ASSERT_TRUE(replay->scan());
  clock_.advance(6s);
  const auto result = replay->scan();
  EXPECT_EQ(result->release_unknown, 1);
  EXPECT_TRUE(pub_.on("jobs.").empty());
  EXPECT_EQ(parseApprovalRecord(*kv_.value(id))->state, ApprovalState::release_unknown);
  clock_.advance(6s);
  EXPECT_EQ(replay->scan()->release_unknown, 0);  // reported once

  ASSERT_FALSE(kv_.value(replayKey(id, 1)));
  kv_.put(replayKey(id, 1), "replayer");  // a claim of an attempt that did not finish
  kv_.listings = 0;
  const auto forced = control_->operatorRelease(R"({"id":")" + id + R"(","operator":"ops","mode":"force"})");
  EXPECT_EQ(forced.code, 200) << forced.body;
  EXPECT_EQ(pub_.on("jobs.").size(), 1u);
  // The next replay claim after that one, counted from the approval's keys alone.
  EXPECT_EQ(kv_.value(replayKey(id, 2)), "operator:ops");
  EXPECT_EQ(kv_.listings.load(), 0);
  const auto again = control_->operatorRelease(R"({"id":")" + id + R"(","operator":"ops","mode":"force"})");
  EXPECT_EQ(wireName(again.status), "already_released");
  EXPECT_EQ(pub_.on("jobs.").size(), 1u);
}

TEST_F(ReplayerTest, CoreRoutesAreNeverRepublished) {
  config_.routes[0].to_stream.clear();
  pub_.fail_delivery = Delivery::core_flush;
  const std::string id = holdPayment();
  EXPECT_EQ(approve(id).code, 202);
  pub_.fail_delivery.reset();
  auto replay = replayer();
  ASSERT_TRUE(replay->scan());
  clock_.advance(6s);
  EXPECT_EQ(replay->scan()->release_unknown, 1);
  EXPECT_TRUE(pub_.on("jobs.").empty());
  const auto marked = control_->operatorRelease(R"({"id":")" + id + R"(","operator":"ops","mode":"mark_released"})");
  EXPECT_EQ(marked.code, 200);
  EXPECT_TRUE(pub_.on("jobs.").empty());
  EXPECT_EQ(parseApprovalRecord(*kv_.value(id))->state, ApprovalState::released);
}

TEST_F(ReplayerTest, OperatorReleaseRefusesWhatIsNotApproved) {
  const std::string id = holdPayment();
  const auto answer = control_->operatorRelease(R"({"id":")" + id + R"(","operator":"ops","mode":"force"})");
  EXPECT_EQ(answer.code, 409);
  EXPECT_EQ(field(parse(answer.body), "reason"), "not_approved");
  EXPECT_EQ(control_->operatorRelease(R"({"id":"x","operator":"ops","mode":"maybe"})").code, 400);
  EXPECT_EQ(control_->operatorRelease(R"({"id":"nope","operator":"ops","mode":"force"})").code, 404);
  EXPECT_TRUE(pub_.on("jobs.").empty());
}

TEST_F(ReplayerTest, ExpiresHeldJobsPastTheirDeadline) {
  ASSERT_EQ(send("ops.restart", R"({"id":"r-1"})").code, 202);
  const std::string pay = holdPayment();  // no deadline
  auto replay = replayer();
  auto before = replay->scan();
  EXPECT_EQ(before->pending, 2);
  EXPECT_EQ(before->expired, 0);
  clock_.advance(11s);
  auto after = replay->scan();
  EXPECT_EQ(after->expired, 1);
  EXPECT_EQ(parseDecisionRecord(*kv_.value("r-1/decision"))->decision, FinalDecision::expired);
  EXPECT_EQ(parseApprovalRecord(*kv_.value("r-1"))->state, ApprovalState::expired);
  EXPECT_EQ(pub_.on("countersign.events.expired.ops.restart").size(), 1u);
  EXPECT_EQ(approve("r-1").code, 410);
  EXPECT_EQ(replay->scan()->pending, 1);
  EXPECT_FALSE(kv_.value(pay + "/decision"));
}

TEST_F(ReplayerTest, HoldsThisProcessMadeAreNotReadAgain) {
  auto replay = replayer();
  intake_->onHeld([&](std::string_view id, std::optional<std::chrono::system_clock::time_point> deadline) {
    replay->noteHeld(id, deadline);
  });
  ASSERT_EQ(send("ops.restart", R"({"id":"r-1"})").code, 202);  // deadline in 10 s
  const std::string pay = holdPayment();                         // none
  kv_.gets = 0;
  EXPECT_EQ(replay->scan()->pending, 2);
  EXPECT_EQ(kv_.gets.load(), 0) << "the deadlines came from intake";
  clock_.advance(11s);
  EXPECT_EQ(replay->scan()->expired, 1);
  EXPECT_EQ(parseDecisionRecord(*kv_.value("r-1/decision"))->decision, FinalDecision::expired);
  EXPECT_FALSE(kv_.value(pay + "/decision"));
  // A record another process held is still read once; the expired one is not read again.
  kv_.put("other-1", *kv_.value(pay));
  kv_.gets = 0;
  EXPECT_EQ(replay->scan()->pending, 2);
  EXPECT_EQ(kv_.gets.load(), 1);
  kv_.gets = 0;
  EXPECT_EQ(replay->scan()->pending, 2);
  EXPECT_EQ(kv_.gets.load(), 0);
}

// Records found by the store's first pass (KvBucket::onFirstPass) are not read again either:
// their deadlines come with the pass's values; keys that are no records, and values that are
// not, are ignored (such a record is read once by the scan, as before).
TEST_F(ReplayerTest, RecordsFromTheStoresFirstPassAreNotReadAgain) {
  ASSERT_EQ(send("ops.restart", R"({"id":"r-1"})").code, 202);  // deadline in 10 s
  const std::string pay = holdPayment();                         // none
  kv_.put("broken", "{not a record");
  auto replay = replayer();
  for (const std::string& key : {std::string("r-1"), pay, std::string("broken")}) {
    replay->noteRecord(key, *kv_.value(key));
  }
  replay->noteRecord("r-1/decision", "{}");  // not a record key: ignored
  kv_.gets = 0;
  EXPECT_EQ(replay->scan()->pending, 3);
  EXPECT_EQ(kv_.gets.load(), 1) << "only the value that was no record is read";
  clock_.advance(11s);
  EXPECT_EQ(replay->scan()->expired, 1);
  EXPECT_EQ(parseDecisionRecord(*kv_.value("r-1/decision"))->decision, FinalDecision::expired);
  EXPECT_FALSE(kv_.value(pay + "/decision"));
}

TEST_F(ReplayerTest, RejectedJobsAreLookedAtOnceNotEveryScan) {
  auto replay = replayer();
  for (int i = 0; i < 3; ++i) {
    send("finance.payment.execute", R"({"id":"p-)" + std::to_string(i) + R"(","labels":{"env":"production"}})");
    ASSERT_EQ(reject("p-" + std::to_string(i)).code, 200);
  }
  (void)replay->scan();
  kv_.gets = 0;
  for (int scan = 0; scan < 5; ++scan) {
    const auto result = replay->scan();
    ASSERT_TRUE(result);
    EXPECT_EQ(result->pending, 0);
  }
  EXPECT_EQ(kv_.gets.load(), 0) << "rejected decisions never change: read once";
}

TEST_F(ReplayerTest, FinishedApprovalsAreRetiredOpenOnesAreNot) {
  auto replay = replayer();
  ASSERT_EQ(send("ops.restart", R"({"id":"r-1"})").code, 202);  // expires in 10 s
  auto hold = [&](const std::string& id) {
    const auto outcome = send("finance.payment.execute", R"({"id":")" + id + R"(","labels":{"env":"production"}})");
    EXPECT_EQ(wireName(outcome.status), "approval_required");
    return outcome.approval_id;
  };
  const std::string released = hold("p-1");
  ASSERT_EQ(approve(released).code, 200);
  const std::string rejected = hold("p-2");
  ASSERT_EQ(reject(rejected).code, 200);
  const std::string open = hold("p-3");
  ASSERT_TRUE(replay->scan());
  auto retired = kv_.retired();
  std::sort(retired.begin(), retired.end());
  std::vector<std::string> expected{released, rejected};
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(retired, expected) << "released at once; rejected once its decision was read";
  clock_.advance(11s);
  EXPECT_EQ(replay->scan()->expired, 1);
  retired = kv_.retired();
  EXPECT_NE(std::find(retired.begin(), retired.end(), "r-1"), retired.end()) << "expired by this scan";
  EXPECT_EQ(std::find(retired.begin(), retired.end(), open), retired.end()) << "still pending";
  EXPECT_EQ(replay->scan()->pending, 1);
}

TEST_F(ReplayerTest, LargeBacklogsAreReadOverSeveralScans) {
  for (int i = 0; i < 5; ++i) send("ops.restart", R"({"id":"r-)" + std::to_string(i) + R"("})");
  clock_.advance(11s);
  ReplayerOptions options;
  options.max_record_reads_per_scan = 2;
  auto replay = replayer(options);
  EXPECT_EQ(replay->scan()->expired, 2);
  EXPECT_EQ(replay->scan()->expired, 2);
  EXPECT_EQ(replay->scan()->expired, 1);
  EXPECT_EQ(replay->scan()->pending, 0);
}

TEST_F(ReplayerTest, OnTimeoutAllowReleasesAtTheDeadline) {
  ASSERT_EQ(send("ops.lowrisk", R"({"id":"low-1"})").code, 202);
  auto replay = replayer();
  ASSERT_TRUE(replay->scan());
  EXPECT_TRUE(pub_.on("jobs.").empty());
  clock_.advance(11s);
  ASSERT_TRUE(replay->scan());
  const auto released = pub_.on("jobs.");
  ASSERT_EQ(released.size(), 1u);
  EXPECT_EQ(*findHeader(released[0].headers, "Countersign-Approved-By"), "countersign");
  EXPECT_EQ(parseDecisionRecord(*kv_.value("low-1/decision"))->reason, "on_timeout_allow");
}

}  // namespace
}  // namespace countersign
