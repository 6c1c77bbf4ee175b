// The replayer's incremental scans, on a fake store that keeps a key index as KvBucket does
// (MemoryKv::index_keys): between full scans a scan looks only at the approvals at work and the
// records new since the last scan, and still finds everything it must act on.
#include <string>

#include "countersign/governance.hpp"
#include "gateway_fixture.hpp"

namespace countersign {
namespace {

using namespace std::chrono_literals;
using testing::GatewayTest;

// The policy of these tests. `sooner`: every rule has an escalation step a minute after the
// hold (otherwise only `pay`, at 10 minutes).
std::string scanPolicy(bool sooner = false) {
  const std::string step =
      sooner ? "    approvers: [alice]\n    escalate:\n      - after: 1m\n        approvers: [carol]\n" : "";
  return R"(version: v1
rules:
  - id: quick
    when: { topic: ops.restart }
    decision: require_human
    timeout: 10s
)" + step + R"(  - id: open
    when: { topic: ops.wait }
    decision: require_human
)" + step + R"(  - id: pay
    when: { topic: finance.payment.execute }
    decision: require_human
    approvers: [alice, bob]
    quorum: 2
    escalate:
      - after: )" + (sooner ? "1m" : "10m") + R"(
        approvers: [carol]
)";
}

class IncrementalScanTest : public GatewayTest {
 protected:
  void SetUp() override {
    ApproverRegistry registry;
    for (const char* name : {"alice", "bob", "carol"}) registry.people.push_back(Person{name, {}, {}, {}, {}});
    config_.approvers = std::move(registry);
    GatewayTest::SetUp();
    auto policy = Policy::parse(scanPolicy());
    ASSERT_TRUE(policy) << policy.error().message;
    policy_->replace(*policy);
    config_.routes[0].to_stream = "JOBS";
    kv_.index_keys = true;
  }

  // A replayer told of every hold and every re-bind, as the gateway's is.
  std::unique_ptr<Replayer> notedReplayer() {
    ReplayerOptions options{.lease = 5s};
    options.duplicate_windows["JOBS"] = 120s;
    auto replay = replayer(std::move(options));
    intake_->onHeld([r = replay.get()](std::string_view id, std::optional<std::chrono::system_clock::time_point> at) {
      r->noteHeld(id, at);
    });
    control_->onRebound([r = replay.get()](std::string_view id,
                                           std::optional<std::chrono::system_clock::time_point> at) {
      r->reschedule(id, at);
    });
    return replay;
  }
  std::string hold(const std::string& topic, const std::string& job_id) {
    const auto outcome = send(topic, R"({"id":")" + job_id + R"("})");
    EXPECT_EQ(wireName(outcome.status), "approval_required") << topic;
    return outcome.approval_id;
  }
  void holdMany(int n, const std::string& prefix = "w-") {
    for (int i = 0; i < n; ++i) hold("ops.wait", prefix + std::to_string(i));
  }
  // A scan that must not look at every key.
  ScanResult incremental(Replayer& replay) {
    const int listings = kv_.listings.load();
    auto result = replay.scan();
    EXPECT_TRUE(result);
    EXPECT_EQ(kv_.listings.load(), listings) << "a full scan";
    return result ? *result : ScanResult{};
  }
  // countersign_pending_approvals on /metrics.
  std::int64_t pendingGauge() const {
    const std::string text = metrics_.renderPrometheus();
    const std::string name = "\ncountersign_pending_approvals ";
    const auto at = text.find(name);
    EXPECT_NE(at, std::string::npos);
    return at == std::string::npos ? -1 : std::stoll(text.substr(at + name.size()));
  }
  // A copy of the record `from` under the id `id`, as another process would have held it.
  void putRecordOfAnotherProcess(const std::string& from, const std::string& id) {
    auto record = parseApprovalRecord(*kv_.value(from));
    ASSERT_TRUE(record);
    record->id = id;
    kv_.put(id, toJson(*record));
  }
  ControlReply approveAs(const std::string& id, const std::string& approver) {
    return control_->handle(ControlOp::approve, R"({"id":")" + id + R"(","approver":")" + approver + R"("})");
  }
};

// Fails on a replayer that visits every key each scan: a thousand pending records, nothing due.
TEST_F(IncrementalScanTest, SteadyScansOfManyPendingRecordsTouchNone) {
  auto replay = notedReplayer();
  holdMany(1000);
  for (int i = 0; i < 100; ++i) hold("ops.restart", "r-" + std::to_string(i));  // due in 10 s
  auto first = replay->scan();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->pending, 1100);
  EXPECT_GE(kv_.visited.load(), 1100) << "the first scan looks at every key";
  kv_.visited = 0;
  kv_.gets = 0;
  for (int scan = 0; scan < 5; ++scan) {
    clock_.advance(1s);
    const auto result = incremental(*replay);
    EXPECT_EQ(result.pending, 1100);
    EXPECT_EQ(result.expired, 0);
  }
  EXPECT_EQ(kv_.visited.load(), 0) << "keys looked at by steady scans";
  EXPECT_EQ(kv_.gets.load(), 0) << "records read by steady scans";
  EXPECT_EQ(pendingGauge(), 1100);
}

TEST_F(IncrementalScanTest, ADueDeadlineExpires) {
  auto replay = notedReplayer();
  holdMany(200);
  hold("ops.restart", "r-1");
  ASSERT_EQ(replay->scan()->pending, 201);
  clock_.advance(5s);
  EXPECT_EQ(incremental(*replay).expired, 0);
  clock_.advance(6s);
  kv_.visited = 0;
  const auto result = incremental(*replay);
  EXPECT_EQ(result.expired, 1);
  EXPECT_LT(kv_.visited.load(), 10);
  const auto decision = kv_.value("r-1/decision");
  ASSERT_TRUE(decision);
  EXPECT_EQ(parseDecisionRecord(*decision)->decision, FinalDecision::expired);
  EXPECT_EQ(parseApprovalRecord(*kv_.value("r-1"))->state, ApprovalState::expired);
  EXPECT_EQ(pub_.on("countersign.events.expired.ops.restart").size(), 1u);
  EXPECT_EQ(pendingGauge(), 200);
  kv_.gets = 0;
  EXPECT_EQ(incremental(*replay).pending, 200);
  EXPECT_EQ(kv_.gets.load(), 0) << "the expired record is not looked at again";
}

// The store did not take the expiry: the next scan tries again.
TEST_F(IncrementalScanTest, AnExpiryThatFailedIsTriedAgain) {
  auto replay = notedReplayer();
  holdMany(20);
  hold("ops.restart", "r-1");
  ASSERT_TRUE(replay->scan());
  clock_.advance(11s);
  kv_.fail_create_suffix = "/decision";
  EXPECT_EQ(incremental(*replay).expired, 0);
  kv_.fail_create_suffix.clear();
  clock_.advance(1s);
  EXPECT_EQ(incremental(*replay).expired, 1);
  EXPECT_TRUE(kv_.value("r-1/decision"));
}

TEST_F(IncrementalScanTest, ADecisionAnotherProcessWroteIsReleasedAfterTheLease) {
  auto replay = notedReplayer();
  holdMany(100);
  const std::string id = hold("ops.wait", "x-1");
  ASSERT_TRUE(replay->scan());
  ASSERT_TRUE(decideElsewhere(id));  // and died before its publish
  clock_.advance(1s);
  auto seen = incremental(*replay);
  EXPECT_EQ(seen.unreleased, 1);
  EXPECT_EQ(seen.replayed, 0);  // the lease starts now
  EXPECT_EQ(seen.pending, 100);
  clock_.advance(3s);
  EXPECT_EQ(incremental(*replay).replayed, 0);
  EXPECT_TRUE(pub_.on("jobs.").empty());
  clock_.advance(3s);
  EXPECT_EQ(incremental(*replay).replayed, 1);
  ASSERT_EQ(pub_.on("jobs.").size(), 1u);
  EXPECT_TRUE(kv_.value(id + "/released"));
  EXPECT_TRUE(kv_.value(replayKey(id, 1)));
  clock_.advance(10s);
  EXPECT_EQ(incremental(*replay).replayed, 0);
  EXPECT_EQ(pub_.on("jobs.").size(), 1u);
  const auto retired = kv_.retired();
  EXPECT_NE(std::find(retired.begin(), retired.end(), id), retired.end());
}

TEST_F(IncrementalScanTest, AnEscalationStepIsAnnounced) {
  auto replay = notedReplayer();
  holdMany(100);
  const std::string id = hold("finance.payment.execute", "p-1");
  ASSERT_TRUE(replay->scan());
  clock_.advance(599s);
  ASSERT_TRUE(replay->scan());  // a full one (a minute since the last)
  EXPECT_TRUE(pub_.on("countersign.events.escalated.").empty());
  clock_.advance(2s);
  kv_.gets = 0;
  incremental(*replay);
  EXPECT_EQ(pub_.on("countersign.events.escalated.").size(), 1u);
  EXPECT_EQ(kv_.gets.load(), 1) << "the record, to announce its step";
  clock_.advance(1s);
  kv_.gets = 0;
  incremental(*replay);
  EXPECT_EQ(pub_.on("countersign.events.escalated.").size(), 1u);
  EXPECT_EQ(kv_.gets.load(), 0) << "no further step: the record sleeps";
  EXPECT_EQ(approveAs(id, "carol").code, 202) << "carol may vote now";
}

TEST_F(IncrementalScanTest, AVoteReachingQuorumWithoutADecisionIsFinished) {
  auto replay = notedReplayer();
  holdMany(100);
  const std::string id = hold("finance.payment.execute", "p-2");
  ASSERT_TRUE(replay->scan());
  EXPECT_EQ(approveAs(id, "bob").code, 202);
  // alice's vote was stored, then her process died before the decision.
  const auto record = parseApprovalRecord(*kv_.value(id));
  ASSERT_TRUE(record);
  const VoteRecord vote{.approver = "alice", .at = formatRfc3339(clock_.now()), .job_hash = record->job_hash,
                        .policy_snapshot = record->policy_snapshot};
  kv_.put(voteKey(id, 0, "alice"), toJson(vote));
  clock_.advance(1s);
  incremental(*replay);
  EXPECT_FALSE(kv_.value(decisionKey(id)));  // within the lease
  clock_.advance(6s);
  incremental(*replay);
  const auto decided = kv_.value(decisionKey(id));
  ASSERT_TRUE(decided);
  EXPECT_EQ(parseDecisionRecord(*decided)->by, "alice,bob");
  for (int i = 0; i < 3 && pub_.on("jobs.").empty(); ++i) {
    clock_.advance(6s);
    incremental(*replay);
  }
  EXPECT_EQ(pub_.on("jobs.").size(), 1u);
  EXPECT_EQ(pendingGauge(), 100);
}

TEST_F(IncrementalScanTest, ARecordDeletedFromTheBucketLosesItsDeadline) {
  auto replay = notedReplayer();
  holdMany(10);
  hold("ops.restart", "r-1");
  ASSERT_EQ(replay->scan()->pending, 11);
  kv_.remove("r-1");
  EXPECT_EQ(incremental(*replay).pending, 10);
  clock_.advance(11s);
  kv_.gets = 0;
  const auto result = incremental(*replay);
  EXPECT_EQ(result.expired, 0);
  EXPECT_EQ(kv_.gets.load(), 0) << "a deadline of a record that is gone came due";
  EXPECT_FALSE(kv_.value("r-1/decision"));
}

TEST_F(IncrementalScanTest, ThePendingGaugeFollowsEveryChange) {
  auto replay = notedReplayer();
  holdMany(5);
  hold("ops.restart", "r-1");
  ASSERT_EQ(replay->scan()->pending, 6);
  EXPECT_EQ(pendingGauge(), 6);
  ASSERT_EQ(approve("w-0").code, 200);
  EXPECT_EQ(incremental(*replay).pending, 5);
  EXPECT_EQ(pendingGauge(), 5);
  ASSERT_EQ(reject("w-1").code, 200);
  EXPECT_EQ(incremental(*replay).pending, 4);
  EXPECT_EQ(pendingGauge(), 4);
  clock_.advance(11s);
  EXPECT_EQ(incremental(*replay).expired, 1);
  EXPECT_EQ(pendingGauge(), 3);
  putRecordOfAnotherProcess("w-2", "other-1");
  EXPECT_EQ(incremental(*replay).pending, 4);
  EXPECT_EQ(pendingGauge(), 4);
  kv_.remove("w-3");
  EXPECT_EQ(incremental(*replay).pending, 3);
  EXPECT_EQ(pendingGauge(), 3);
  // The full scan a minute on agrees.
  clock_.advance(60s);
  const int listings = kv_.listings.load();
  EXPECT_EQ(replay->scan()->pending, 3);
  EXPECT_EQ(kv_.listings.load(), listings + 1);
  EXPECT_EQ(pendingGauge(), 3);
}

// Records held by another process reach the index without their deadline: the next scan reads
// each once, and expires it in time.
TEST_F(IncrementalScanTest, ARecordAnotherProcessHeldIsReadOnceAndExpires) {
  auto replay = notedReplayer();
  holdMany(50);
  hold("ops.restart", "r-1");
  ASSERT_TRUE(replay->scan());
  putRecordOfAnotherProcess("r-1", "other-1");
  kv_.gets = 0;
  EXPECT_EQ(incremental(*replay).pending, 52);
  EXPECT_EQ(kv_.gets.load(), 1);
  kv_.gets = 0;
  clock_.advance(2s);
  incremental(*replay);
  EXPECT_EQ(kv_.gets.load(), 0);
  clock_.advance(9s);
  EXPECT_EQ(incremental(*replay).expired, 2);
  const auto decision = kv_.value("other-1/decision");
  ASSERT_TRUE(decision);
  EXPECT_EQ(parseDecisionRecord(*decision)->decision, FinalDecision::expired);
}

// More reads than a scan may make: the rest are found by the next scan, a full one.
TEST_F(IncrementalScanTest, RecordsNotReadInOneScanAreFoundByTheNext) {
  ReplayerOptions options;
  options.max_record_reads_per_scan = 2;
  auto replay = replayer(options);  // told of no hold: each is read
  holdMany(10);
  ASSERT_TRUE(replay->scan());  // reads 2
  kv_.gets = 0;
  int full = 0;
  for (int scan = 0; scan < 4; ++scan) {
    const int listings = kv_.listings.load();
    ASSERT_TRUE(replay->scan());
    full += kv_.listings.load() - listings;
  }
  EXPECT_EQ(kv_.gets.load(), 8);
  EXPECT_EQ(full, 4);
  kv_.gets = 0;
  EXPECT_EQ(incremental(*replay).pending, 10);
  EXPECT_EQ(kv_.gets.load(), 0);
}

class RebindScanTest : public IncrementalScanTest {
 protected:
  // The policy changes and `id` is re-bound to it by an approval, which answers 409.
  void rebind(const std::string& id) {
    auto policy = Policy::parse(scanPolicy(true));
    ASSERT_TRUE(policy) << policy.error().message;
    policy_->replace(*policy);
    const auto answer = approveAs(id, "alice");
    ASSERT_EQ(answer.code, 409);
    ASSERT_EQ(parseApprovalRecord(*kv_.value(id))->binding, 1);
  }
  // Scans once a second for `seconds`; the escalated events announced meanwhile.
  std::size_t escalationsWithin(Replayer& replay, int seconds) {
    for (int i = 0; i < seconds; ++i) {
      clock_.advance(1s);
      EXPECT_TRUE(replay.scan());
    }
    return pub_.on("countersign.events.escalated.").size();
  }
};

// A record without a deadline is known as "never" to the replayer; re-bound to a rule with an
// escalation step, the step is announced when it comes.
TEST_F(RebindScanTest, ARecordWithoutADeadlineReboundToAnEscalatingRuleEscalates) {
  auto replay = notedReplayer();
  holdMany(20);
  const std::string id = hold("ops.wait", "x-1");
  ASSERT_TRUE(replay->scan());
  rebind(id);
  EXPECT_EQ(escalationsWithin(*replay, 59), 0u);
  EXPECT_EQ(escalationsWithin(*replay, 71), 1u);
  EXPECT_TRUE(kv_.value(escalatedKey(id, 1, 0)));
}

// Re-bound to a rule whose step comes before the one the replayer knew: the new one is on time.
TEST_F(RebindScanTest, ARecordReboundToASoonerStepEscalatesOnTime) {
  auto replay = notedReplayer();
  holdMany(20);
  const std::string id = hold("finance.payment.execute", "p-1");  // a step at 10 minutes
  ASSERT_TRUE(replay->scan());
  rebind(id);
  EXPECT_EQ(escalationsWithin(*replay, 59), 0u);
  EXPECT_EQ(escalationsWithin(*replay, 2), 1u);
  EXPECT_EQ(approveAs(id, "carol").code, 202) << "carol may vote now";
}

// A re-bind keeps the hold's deadline (and tells the replayer so): the job expires on time.
TEST_F(RebindScanTest, AReboundRecordStillExpiresOnTime) {
  auto replay = notedReplayer();
  holdMany(20);
  const std::string id = hold("ops.restart", "r-1");  // 10 s
  ASSERT_TRUE(replay->scan());
  rebind(id);
  clock_.advance(5s);
  EXPECT_EQ(incremental(*replay).expired, 0);
  clock_.advance(6s);
  EXPECT_EQ(incremental(*replay).expired, 1);
  const auto decision = kv_.value(decisionKey(id));
  ASSERT_TRUE(decision);
  EXPECT_EQ(parseDecisionRecord(*decision)->decision, FinalDecision::expired);
}

// A record whose read keeps failing (the store does not answer for it, or a key whose record is
// gone) is read again by each scan, not found again by a full one: a full scan would fail on it
// too, and every scan after would be a full one.
TEST_F(IncrementalScanTest, ARecordThatCannotBeReadIsRetriedWithoutFullScans) {
  auto replay = notedReplayer();
  holdMany(100);
  ASSERT_TRUE(replay->scan());
  putRecordOfAnotherProcess("w-0", "ghost");
  kv_.fail_get_suffix = "ghost";
  kv_.gets = 0;
  int full = 0;
  for (int scan = 0; scan < 10; ++scan) {
    clock_.advance(1s);
    const int listings = kv_.listings.load();
    const auto result = replay->scan();
    ASSERT_TRUE(result);
    EXPECT_EQ(result->pending, 101);
    full += kv_.listings.load() - listings;
  }
  EXPECT_EQ(full, 0) << "full scans of ten";
  EXPECT_EQ(kv_.gets.load(), 10) << "the ghost is read once per scan, nothing else";
  // Readable again: read once more, then it sleeps.
  kv_.fail_get_suffix.clear();
  kv_.gets = 0;
  incremental(*replay);
  EXPECT_EQ(kv_.gets.load(), 1);
  kv_.gets = 0;
  incremental(*replay);
  EXPECT_EQ(kv_.gets.load(), 0);
}

// A record whose first read fails gets its deadline from the next read, and expires on time.
TEST_F(IncrementalScanTest, ARecordWhoseReadFailedOnceExpiresOnTime) {
  auto replay = notedReplayer();
  holdMany(50);
  hold("ops.restart", "r-1");
  ASSERT_TRUE(replay->scan());
  putRecordOfAnotherProcess("r-1", "flaky");
  kv_.fail_get_suffix = "flaky";
  EXPECT_EQ(incremental(*replay).pending, 52);
  kv_.fail_get_suffix.clear();
  kv_.gets = 0;
  clock_.advance(1s);
  incremental(*replay);
  EXPECT_EQ(kv_.gets.load(), 1) << "read again";
  clock_.advance(4s);
  EXPECT_EQ(incremental(*replay).expired, 0);
  clock_.advance(6s);
  EXPECT_EQ(incremental(*replay).expired, 2);
  const auto decision = kv_.value("flaky/decision");
  ASSERT_TRUE(decision);
  EXPECT_EQ(parseDecisionRecord(*decision)->decision, FinalDecision::expired);
}

TEST_F(IncrementalScanTest, AfterAFailedScanTheNextIsAFullOne) {
  auto replay = notedReplayer();
  holdMany(10);
  ASSERT_TRUE(replay->scan());
  kv_.failNext(Errc::unavailable);
  EXPECT_FALSE(replay->scan());
  const int listings = kv_.listings.load();
  EXPECT_EQ(replay->scan()->pending, 10);
  EXPECT_EQ(kv_.listings.load(), listings + 1);
  EXPECT_EQ(incremental(*replay).pending, 10);
}

TEST_F(IncrementalScanTest, AFullScanRunsEveryMinute) {
  auto replay = notedReplayer();
  holdMany(100);
  ASSERT_TRUE(replay->scan());
  clock_.advance(30s);
  incremental(*replay);
  clock_.advance(30s);
  kv_.visited = 0;
  const int listings = kv_.listings.load();
  EXPECT_EQ(replay->scan()->pending, 100);
  EXPECT_EQ(kv_.listings.load(), listings + 1);
  EXPECT_EQ(kv_.visited.load(), 100);
}

// Deadlines spread over time, more than the replayer keeps in its list of the earliest: every
// record expires in the first scan after its deadline, never before. Held before the first scan
// (its walk over the deadlines keeps the earliest), while it scans, and in a burst between two
// scans (more than the list holds), beside more records without a deadline.
TEST_F(IncrementalScanTest, ManyDeadlinesExpireEachInTheFirstScanAfterIt) {
  auto replay = notedReplayer();
  constexpr int kWaiting = 7000;
  holdMany(kWaiting);
  std::vector<std::pair<std::chrono::system_clock::time_point, std::string>> deadlines;
  auto last_scan = clock_.now();
  bool scanned = false;
  bool wrong = false;
  auto scan = [&] {
    const auto result = replay->scan();
    ASSERT_TRUE(result);
    scanned = true;
    last_scan = clock_.now();
    int due = 0;
    for (const auto& [at, id] : deadlines) {
      const bool decided = kv_.value(decisionKey(id)).has_value();
      if (!wrong) {
        EXPECT_EQ(decided, at <= clock_.now()) << id;
      }
      wrong = wrong || decided != (at <= clock_.now());
      due += at <= clock_.now() ? 1 : 0;
    }
    EXPECT_EQ(result->pending - result->expired, kWaiting + static_cast<int>(deadlines.size()) - due);
  };
  auto holdSpread = [&](int n, std::chrono::microseconds every) {
    for (int i = 0; i < n && !wrong; ++i) {
      const std::string id = hold("ops.restart", "r-" + std::to_string(deadlines.size()));
      std::chrono::system_clock::time_point at;
      ASSERT_TRUE(parseRfc3339(parseApprovalRecord(*kv_.value(id))->expires_at, at));
      deadlines.emplace_back(at, id);
      clock_.advance(std::chrono::duration_cast<std::chrono::milliseconds>(every * (i + 1)) -
                     std::chrono::duration_cast<std::chrono::milliseconds>(every * i));
      if (scanned && clock_.now() - last_scan >= 1s) scan();
    }
  };
  auto scanFor = [&](int seconds) {
    for (int i = 0; i < seconds && !wrong; ++i) {
      clock_.advance(1s);
      scan();
    }
  };
  holdSpread(3000, 3000us);  // 9 s: none due yet
  scan();
  holdSpread(2000, 3000us);
  scanFor(12);
  holdSpread(6000, 150us);  // 0.9 s, between two scans
  scanFor(12);
  ASSERT_LT(deadlines.front().first, deadlines.back().first);
  EXPECT_FALSE(wrong);
  EXPECT_EQ(pendingGauge(), kWaiting);
}

}  // namespace
}  // namespace countersign
