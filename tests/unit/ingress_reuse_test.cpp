// Forward ids of JetStream intake after the ingress stream's sequence went back: the recorded
// regressions (one store key per stream, appended by revision-checked writes), the epoch each
// message gets, and intake forwarding again under the recorded epoch when the target stream
// calls a forward a duplicate.
#include "countersign/ingress_reuse.hpp"

#include <gtest/gtest.h>

#include <functional>

#include "fakes.hpp"
#include "gateway_fixture.hpp"

namespace countersign::testing {
namespace {

constexpr std::int64_t kCrash = 1'765'000'000'000'000'000;  // ns: the newest message handled before it

TEST(IngressReuseTest, ForwardIdsAndTheStoreKey) {
  EXPECT_EQ(ingressForwardId("COUNTERSIGN_JOBS", 7, 0), "countersign-in:COUNTERSIGN_JOBS:7");
  EXPECT_EQ(ingressForwardId("COUNTERSIGN_JOBS", 7, 2), "countersign-in:COUNTERSIGN_JOBS:7:2");
  EXPECT_EQ(ingressReuseKey("COUNTERSIGN_JOBS"), "_countersign/ingress_reuse/COUNTERSIGN_JOBS");
  // Bytes a key cannot hold, and '=' itself, are written as =XX: two streams never share a key.
  EXPECT_EQ(ingressReuseKey("jobs$1=x"), "_countersign/ingress_reuse/jobs=241=3Dx");
  EXPECT_NE(ingressReuseKey("a=2Eb"), ingressReuseKey("a.b"));
}

TEST(IngressReuseTest, AMessageGetsTheLatestEpochItsSequenceAndStoreTimeFallUnder) {
  const std::vector<StreamRegression> regressions{{.epoch = 1, .up_to = 1320, .after_ns = kCrash},
                                                  {.epoch = 2, .up_to = 700, .after_ns = kCrash + 60'000'000'000}};
  EXPECT_EQ(epochFor({}, 5, kCrash + 1), 0u);
  // Stored before the first crash: the messages that survived it keep the plain id.
  EXPECT_EQ(epochFor(regressions, 681, kCrash), 0u);
  EXPECT_EQ(epochFor(regressions, 682, kCrash + 1), 1u);
  EXPECT_EQ(epochFor(regressions, 1320, kCrash + 1), 1u);
  EXPECT_EQ(epochFor(regressions, 1321, kCrash + 1), 0u);  // never used before: plain
  // Stored after the second crash, under both ranges: the latest.
  EXPECT_EQ(epochFor(regressions, 600, kCrash + 60'000'000'001), 2u);
  EXPECT_EQ(epochFor(regressions, 900, kCrash + 60'000'000'001), 1u);
}

// Two replicas and two server crashes, as seen in a kill -9 run: replica A handled up to sequence
// 680, replica B up to 674, before the first crash. A recorded it (epoch 1) and forwarded new jobs
// on sequences 661 to 674 under epoch 1. B was reconnecting the whole time and checked only after
// the second crash, finding its 674 replaced. That regression is the first one: recording it as
// epoch 2 (as B did) gave A's forwards a second id on redelivery, and they were stored twice.
TEST(IngressReuseTest, AHandledMessageReplacedInARecordedCrashIsCoveredByIt) {
  const std::int64_t a_newest = kCrash;                // A's 680, stored just before the crash
  const std::int64_t b_newest = kCrash - 2'000'000;    // B's 674, stored 2 ms earlier
  const std::int64_t after_first = kCrash + 2'000'000'000;
  const std::vector<StreamRegression> recorded{{.epoch = 1, .up_to = 680, .after_ns = a_newest, .server = "S2"}};
  EXPECT_EQ(epochFor(recorded, 670, after_first), 1u);  // what A forwarded after the first crash
  const StreamRegression* covering = regressionCovering(recorded, 674, b_newest);
  ASSERT_NE(covering, nullptr);
  EXPECT_EQ(covering->epoch, 1u);
  // Had it been recorded again, on the third server instance, the same message would move:
  auto twice = recorded;
  twice.push_back({.epoch = 2, .up_to = 674, .after_ns = b_newest, .server = "S3"});
  EXPECT_EQ(epochFor(twice, 670, after_first), 2u);
  // Not covered: a message stored after the recorded crash (lost in a later one), one past the
  // recorded range, a process that handled nothing (no store time to tell by), no record.
  EXPECT_EQ(regressionCovering(recorded, 670, after_first), nullptr);
  EXPECT_EQ(regressionCovering(recorded, 681, b_newest), nullptr);
  EXPECT_EQ(regressionCovering(recorded, 600, 0), nullptr);
  EXPECT_EQ(regressionCovering({}, 674, b_newest), nullptr);
}

TEST(IngressReuseTest, TheStoredFormRoundTripsAndBadValuesAreRefused) {
  const std::vector<StreamRegression> regressions{
      {.epoch = 1, .up_to = 1320, .after_ns = kCrash, .server = "NABC", .found_at = "2026-12-06T13:00:00Z"}};
  const std::string text = toJson("COUNTERSIGN_JOBS", regressions);
  auto back = regressionsFromJson(text);
  ASSERT_TRUE(back) << back.error().message;
  ASSERT_EQ(back->size(), 1u);
  EXPECT_EQ((*back)[0].after_ns, kCrash);  // exactly: beyond 2^53, kept as a string
  EXPECT_EQ((*back)[0].up_to, 1320u);
  EXPECT_EQ((*back)[0].server, "NABC");
  for (const char* bad : {"", "[]", "{}", R"({"regressions":{}})", R"({"regressions":[1]})",
                          R"({"regressions":[{"epoch":0,"up_to":1,"after_ns":"1"}]})",
                          R"({"regressions":[{"epoch":1,"up_to":-1,"after_ns":"1"}]})",
                          R"({"regressions":[{"epoch":1,"up_to":1,"after_ns":1}]})",
                          R"({"regressions":[{"epoch":1,"up_to":1,"after_ns":"-1"}]})",
                          R"({"regressions":[{"epoch":1,"up_to":1,"after_ns":"01"}]})",
                          R"({"regressions":[{"epoch":1,"up_to":1,"after_ns":"99999999999999999999"}]})",
                          R"({"regressions":[{"epoch":1,"up_to":1,"after_ns":"9223372036854775808"}]})"}) {
    auto parsed = regressionsFromJson(bad);
    EXPECT_FALSE(parsed) << bad;
    if (!parsed) {
      EXPECT_EQ(parsed.error().code, Errc::parse_error) << bad;
    }
  }
}

// Two replicas find the same regression on the same server instance: one record, one epoch; each
// raises it to cover what it handled itself. A regression on a later instance is the next epoch.
TEST(IngressReuseTest, ReplicasShareOneRecordPerServerInstanceAndRaiseIt) {
  fakes::MemoryKv kv;
  IngressReuse a(kv, "COUNTERSIGN_JOBS");
  IngressReuse b(kv, "COUNTERSIGN_JOBS");
  auto first = a.record("NSERVER2", 1320, kCrash, "t1");
  ASSERT_TRUE(first) << first.error().message;
  EXPECT_EQ(first->epoch, 1u);
  EXPECT_EQ(b.epoch(700, kCrash + 1), 0u);  // b has not read it yet
  auto second = b.record("NSERVER2", 1400, kCrash - 5, "t2");
  ASSERT_TRUE(second);
  EXPECT_EQ(second->epoch, 1u);
  EXPECT_EQ(second->up_to, 1400u);
  EXPECT_EQ(second->after_ns, kCrash);  // never lowered
  auto third = b.record("NSERVER2", 1000, kCrash + 7, "t3");
  ASSERT_TRUE(third);
  EXPECT_EQ(third->up_to, 1400u);
  EXPECT_EQ(third->after_ns, kCrash + 7);
  ASSERT_TRUE(a.load());
  ASSERT_EQ(a.regressions().size(), 1u);
  EXPECT_EQ(a.epoch(1400, kCrash + 8), 1u);
  EXPECT_EQ(a.epoch(1400, kCrash + 7), 0u);

  auto later = a.record("NSERVER3", 500, kCrash + 100, "t4");
  ASSERT_TRUE(later);
  EXPECT_EQ(later->epoch, 2u);
  EXPECT_EQ(b.reloadedEpoch(400, kCrash + 101), 2u);
  EXPECT_EQ(b.regressions().size(), 2u);
}

// The store answers each get with what it held; another replica's write lands between this
// replica's read and its write (once, or every time).
class RacingKv final : public KvStore {
 public:
  explicit RacingKv(std::function<void(KvStore&)> other) : other_(std::move(other)) {}
  Result<std::uint64_t> create(std::string_view key, std::string_view value) override {
    race();
    return kv.create(key, value);
  }
  Result<KvEntry> get(std::string_view key) override { return kv.get(key); }
  Result<std::uint64_t> update(std::string_view key, std::string_view value, std::uint64_t revision) override {
    race();
    return kv.update(key, value, revision);
  }
  Result<std::vector<std::string>> keys() override { return kv.keys(); }

  fakes::MemoryKv kv;
  int races_left = 1;

 private:
  void race() {
    if (races_left == 0) return;
    --races_left;
    other_(kv);
  }
  std::function<void(KvStore&)> other_;
};

TEST(IngressReuseTest, ALostRevisionRaceIsRetriedAndAppendsInsteadOfOverwriting) {
  RacingKv store([](KvStore& kv) {
    IngressReuse other(kv, "S");
    ASSERT_TRUE(other.record("NOTHER", 10, kCrash, "other"));
  });
  IngressReuse mine(store, "S");
  auto recorded = mine.record("NMINE", 20, kCrash + 1, "mine");
  ASSERT_TRUE(recorded) << recorded.error().message;
  EXPECT_EQ(recorded->epoch, 2u);  // the other's record stayed epoch 1
  const auto all = mine.regressions();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].server, "NOTHER");
  EXPECT_EQ(all[1].server, "NMINE");

  // Both on the same instance: the race ends in one record, raised to cover both.
  RacingKv same([](KvStore& kv) {
    IngressReuse other(kv, "S");
    ASSERT_TRUE(other.record("NSAME", 10, kCrash, "other"));
  });
  IngressReuse replica(same, "S");
  auto shared = replica.record("NSAME", 20, kCrash, "mine");
  ASSERT_TRUE(shared);
  EXPECT_EQ(shared->epoch, 1u);
  EXPECT_EQ(shared->up_to, 20u);
  EXPECT_EQ(replica.regressions().size(), 1u);

  // A writer that always wins: an error after bounded retries, never a silent overwrite.
  RacingKv busy([](KvStore& kv) {
    auto entry = kv.get(ingressReuseKey("S"));
    if (entry) {
      ASSERT_TRUE(kv.update(ingressReuseKey("S"), entry->value, entry->revision));
    } else {
      ASSERT_TRUE(kv.create(ingressReuseKey("S"), toJson("S", {})));
    }
  });
  busy.races_left = 1000;
  IngressReuse loser(busy, "S");
  auto lost = loser.record("NX", 1, 0, "x");
  ASSERT_FALSE(lost);
  EXPECT_EQ(lost.error().code, Errc::unavailable);
}

TEST(IngressReuseTest, AnUnreadableRecordKeepsWhatWasKnownAndIsNotOverwritten) {
  fakes::MemoryKv kv;
  IngressReuse reuse(kv, "S");
  ASSERT_TRUE(reuse.record("N1", 10, kCrash, "t"));
  ASSERT_TRUE(kv.update(ingressReuseKey("S"), "not json", kv.get(ingressReuseKey("S"))->revision));
  auto loaded = reuse.load();
  ASSERT_FALSE(loaded);
  EXPECT_EQ(loaded.error().code, Errc::parse_error);
  EXPECT_EQ(reuse.epoch(5, kCrash + 1), 1u);
  EXPECT_EQ(reuse.reloadedEpoch(5, kCrash + 1), 1u);
  auto recorded = reuse.record("N2", 10, kCrash, "t");
  ASSERT_FALSE(recorded);
  EXPECT_EQ(recorded.error().code, Errc::parse_error);
  EXPECT_EQ(kv.get(ingressReuseKey("S"))->value, "not json");
}

// Intake with a target stream that drops ids it has seen.
class ForwardIdTest : public GatewayTest {
 protected:
  void SetUp() override {
    GatewayTest::SetUp();
    config_.routes[0].mode = RouteMode::jetstream;
    config_.routes[0].to_stream = "JOBS";
    pub_.dedup = true;
  }
  IntakeOutcome ingest(std::uint64_t seq, std::int64_t stored_ns, std::uint64_t epoch, const std::string& id,
                       IngressReuse* reuse) {
    const IngressPosition at{
        .stream = "COUNTERSIGN_JOBS", .sequence = seq, .stored_ns = stored_ns, .epoch = epoch, .reuse = reuse};
    return intake_->onJob(config_.routes[0],
                          Message{"agents.jobs.knowledge.read", "", {}, R"({"id":")" + id + R"("})"}, &at);
  }
  std::vector<std::string> forwardedIds() {
    std::vector<std::string> out;
    for (const auto& m : pub_.on("jobs.")) out.push_back(*findHeader(m.headers, "Nats-Msg-Id"));
    return out;
  }
};

TEST_F(ForwardIdTest, ARedeliveryKeepsItsIdAndIsDroppedByTheTarget) {
  IngressReuse reuse(kv_, "COUNTERSIGN_JOBS");
  EXPECT_TRUE(ingest(3, kCrash, 0, "job-3", &reuse).forwarded);
  const auto again = ingest(3, kCrash, 0, "job-3", &reuse);
  EXPECT_TRUE(again.forwarded);
  EXPECT_EQ(again.ack, IngressAck::ack);
  EXPECT_EQ(forwardedIds(), std::vector<std::string>{"countersign-in:COUNTERSIGN_JOBS:3"});
}

// Another replica recorded the regression after this one last read the record: the new job on
// sequence 3 goes out under the plain id, the target calls it a duplicate, intake reads the
// record again and forwards it under epoch 1. Its redeliveries then keep epoch 1.
TEST_F(ForwardIdTest, ADuplicateOnAReusedSequenceIsForwardedAgainUnderTheRecordedEpoch) {
  IngressReuse mine(kv_, "COUNTERSIGN_JOBS");
  ASSERT_TRUE(ingest(3, kCrash, 0, "old-3", &mine).forwarded);
  IngressReuse other(kv_, "COUNTERSIGN_JOBS");
  ASSERT_TRUE(other.record("NSERVER2", 5, kCrash, "t"));

  const auto outcome = ingest(3, kCrash + 1000, mine.epoch(3, kCrash + 1000), "new-3", &mine);
  EXPECT_TRUE(outcome.forwarded);
  EXPECT_EQ(outcome.ack, IngressAck::ack);
  EXPECT_EQ(forwardedIds(), (std::vector<std::string>{"countersign-in:COUNTERSIGN_JOBS:3",
                                                      "countersign-in:COUNTERSIGN_JOBS:3:1"}));
  const auto stored = pub_.on("jobs.");
  EXPECT_EQ(parse(stored[1].payload)["id"].GetString(), std::string("new-3"));

  ASSERT_TRUE(ingest(3, kCrash + 1000, mine.epoch(3, kCrash + 1000), "new-3", &mine).forwarded);
  EXPECT_EQ(pub_.on("jobs.").size(), 2u);
  // Without a record to consult (no store), the plain id is all there is: the job is dropped.
  ASSERT_TRUE(ingest(4, kCrash, 0, "old-4", nullptr).forwarded);
  ASSERT_TRUE(ingest(4, kCrash + 1000, 0, "new-4", nullptr).forwarded);
  EXPECT_EQ(pub_.on("jobs.").size(), 3u);
}

// A producer's own Nats-Msg-Id is its business: never replaced, whatever the record says.
TEST_F(ForwardIdTest, AProducersOwnIdIsKept) {
  IngressReuse reuse(kv_, "COUNTERSIGN_JOBS");
  ASSERT_TRUE(reuse.record("NSERVER2", 5, kCrash, "t"));
  const IngressPosition at{.stream = "COUNTERSIGN_JOBS", .sequence = 3, .stored_ns = kCrash + 1, .epoch = 1,
                           .reuse = &reuse};
  for (int i = 0; i < 2; ++i) {
    intake_->onJob(config_.routes[0], Message{"agents.jobs.knowledge.read", "", {{"Nats-Msg-Id", "mine-1"}}, "{}"},
                   &at);
  }
  EXPECT_EQ(forwardedIds(), std::vector<std::string>{"mine-1"});
}

}  // namespace
}  // namespace countersign::testing
