// Store tags (held records, decisions and votes) and signed audit events, without a network.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "countersign/events.hpp"
#include "countersign/json.hpp"
#include "countersign/store_tags.hpp"
#include "fakes.hpp"

namespace countersign::testing {
namespace {

nkeys::Seed seedOf(unsigned char fill) {
  nkeys::Seed seed;
  seed.fill(fill);
  return seed;
}

ApprovalRecord sampleRecord() {
  ApprovalRecord r;
  r.id = "pay-1";
  r.route = "jobs";
  r.subject = "agents.jobs.finance.pay";
  r.target = "jobs.finance.pay";
  r.topic = "finance.pay";
  r.headers = {{"X-A", "1"}, {"X-A", "2"}};
  r.payload = R"({"amount":10})";
  r.payload_is_json = true;
  r.job_id = "pay-1";
  r.job_hash = "sha256:00";
  r.created_at = "2026-01-01T00:00:00Z";
  return r;
}

TEST(StoreTags, RecordTagCoversWhatIsReleasedAndSurvivesTheJsonRoundTrip) {
  const StoreTags tags(seedOf(7));
  ApprovalRecord r = sampleRecord();
  r.tag = tags.recordTag(r);
  EXPECT_TRUE(r.tag.starts_with("v1:")) << r.tag;
  EXPECT_EQ(r.tag.size(), 3u + 64u);
  auto parsed = parseApprovalRecord(toJson(r));
  ASSERT_TRUE(parsed.has_value());
  EXPECT_TRUE(tags.recordValid(*parsed));
  // The view may change (state, votes, decided_by): the tag stays valid.
  parsed->state = ApprovalState::released;
  parsed->decided_by = "alice";
  parsed->policy_snapshot = "v1:other";
  EXPECT_TRUE(tags.recordValid(*parsed));

  // Each released field is covered.
  const auto changed = [&](auto&& change) {
    ApprovalRecord copy = r;
    change(copy);
    return tags.recordValid(copy);
  };
  EXPECT_FALSE(changed([](ApprovalRecord& c) { c.payload = R"({"amount":666})"; }));
  EXPECT_FALSE(changed([](ApprovalRecord& c) { c.target = "jobs.other"; }));
  EXPECT_FALSE(changed([](ApprovalRecord& c) { c.headers.back().second = "3"; }));
  EXPECT_FALSE(changed([](ApprovalRecord& c) { c.headers.pop_back(); }));
  EXPECT_FALSE(changed([](ApprovalRecord& c) { c.id = "pay-2"; }));
  EXPECT_FALSE(changed([](ApprovalRecord& c) { c.job_hash = "sha256:11"; }));
  EXPECT_FALSE(changed([](ApprovalRecord& c) { c.payload_is_json = false; }));
  EXPECT_FALSE(changed([](ApprovalRecord& c) { c.route = "other"; }));
  EXPECT_FALSE(changed([](ApprovalRecord& c) { c.tag.clear(); }));
  // Fields cannot be shifted into one another.
  EXPECT_FALSE(changed([](ApprovalRecord& c) {
    c.subject += c.target.substr(0, 1);
    c.target = c.target.substr(1);
  }));
  // Another key (another countersign, or a guess) does not make a valid tag.
  EXPECT_FALSE(StoreTags(seedOf(8)).recordValid(r));
}

// sampleRecord()'s tag under seedOf(7), as every version has written it.
constexpr std::string_view kRecordTag = "v1:6e79b698719f1bc6f944a5c3a70ac4e405746ad7dfc6cdcbeddc46fef65082a8";

TEST(StoreTags, TagsAreTheSameBytesWhateverTheThread) {
  // Known answers: tags written by earlier versions must stay valid, so how the MAC is computed
  // may change, never what it is. Several threads at once share one StoreTags, as the control
  // threads do.
  const StoreTags tags(seedOf(7));
  const DecisionRecord d{.decision = FinalDecision::approved, .by = "alice", .at = "2026-01-01T00:00:00Z",
                         .reason = "ok", .policy_snapshot = "v1:x", .job_hash = "sha256:00"};
  constexpr std::string_view kDecisionTag = "v1:cfb06bd91c009bcafed2e0f611e2ae8af5c280b601c6905375c045583a1dd9eb";
  EXPECT_EQ(tags.recordTag(sampleRecord()), kRecordTag);
  EXPECT_EQ(tags.decisionTag("pay-1", d), kDecisionTag);
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 500; ++i) {
        if (tags.recordTag(sampleRecord()) != kRecordTag || tags.decisionTag("pay-1", d) != kDecisionTag) ++wrong;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(wrong.load(), 0);
}

TEST(StoreTags, InstancesWithOtherKeysTakeTurnsOnTheSameThreads) {
  // Each thread keeps one keyed context at a time: tags of two keys in turn, and a StoreTags
  // made after another was destroyed (perhaps at the same address), are each their own key's.
  const StoreTags seven(seedOf(7));
  const auto other = std::make_unique<StoreTags>(seedOf(8));
  const std::string eight_tag = other->recordTag(sampleRecord());
  ASSERT_NE(eight_tag, kRecordTag);
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        if (seven.recordTag(sampleRecord()) != kRecordTag || other->recordTag(sampleRecord()) != eight_tag) ++wrong;
        auto again = std::make_unique<StoreTags>(seedOf(i % 2 == 0 ? 7 : 8));
        if (again->recordTag(sampleRecord()) != (i % 2 == 0 ? std::string(kRecordTag) : eight_tag)) ++wrong;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(wrong.load(), 0);
}

TEST(StoreTags, DecisionTagBindsTheApprovalIdAndEveryField) {
  const StoreTags tags(seedOf(7));
  DecisionRecord d{.decision = FinalDecision::approved, .by = "alice", .at = "2026-01-01T00:00:00Z",
                   .reason = "ok", .policy_snapshot = "v1:x", .job_hash = "sha256:00"};
  d.tag = tags.decisionTag("pay-1", d);
  auto parsed = parseDecisionRecord(toJson(d));
  ASSERT_TRUE(parsed.has_value());
  EXPECT_TRUE(tags.decisionValid("pay-1", *parsed));
  EXPECT_FALSE(tags.decisionValid("pay-2", *parsed));  // copied onto another approval
  parsed->by = "mallory";
  EXPECT_FALSE(tags.decisionValid("pay-1", *parsed));
  DecisionRecord by_hand = d;
  by_hand.tag.clear();
  EXPECT_FALSE(tags.decisionValid("pay-1", by_hand));
  DecisionRecord rejected = d;
  rejected.decision = FinalDecision::rejected;
  EXPECT_FALSE(tags.decisionValid("pay-1", rejected));
  // The channel is covered too: a via added, changed or removed by hand is not believed.
  DecisionRecord via_slack = d;
  via_slack.via = "slack";
  via_slack.tag = tags.decisionTag("pay-1", via_slack);
  auto with_via = parseDecisionRecord(toJson(via_slack));
  ASSERT_TRUE(with_via.has_value());
  EXPECT_TRUE(tags.decisionValid("pay-1", *with_via));
  with_via->via = "console";
  EXPECT_FALSE(tags.decisionValid("pay-1", *with_via));
  DecisionRecord added = d;
  added.via = "slack";
  EXPECT_FALSE(tags.decisionValid("pay-1", added));
}

TEST(StoreTags, AdoptionTagsWhatCarriesNoValidTagOnceThenLeavesTheRestToTheCheck) {
  fakes::MemoryKv store;
  const StoreTags tags(seedOf(7));
  ApprovalRecord old = sampleRecord();
  ASSERT_TRUE(store.create("pay-1", toJson(old)));
  DecisionRecord decision{.decision = FinalDecision::approved, .by = "alice", .at = "2026-01-01T00:00:00Z"};
  ASSERT_TRUE(store.create("pay-1/decision", toJson(decision)));

  std::vector<std::string> ids;
  auto adopted = adoptUntagged(store, tags, "2026-02-01T00:00:00Z", &ids);
  ASSERT_TRUE(adopted.has_value());
  EXPECT_TRUE(adopted->ran);
  EXPECT_EQ(adopted->records, 1u);
  EXPECT_EQ(adopted->decisions, 1u);
  EXPECT_EQ(ids, (std::vector<std::string>{"pay-1", "pay-1/decision"}));
  EXPECT_TRUE(tags.recordValid(*parseApprovalRecord(store.get("pay-1")->value)));
  EXPECT_TRUE(tags.decisionValid("pay-1", *parseDecisionRecord(store.get("pay-1/decision")->value)));
  EXPECT_TRUE(store.get(kTagsAdoptedKey).has_value());

  // Written after the adoption: not adopted by the next start.
  ApprovalRecord later = sampleRecord();
  later.id = "pay-2";
  ASSERT_TRUE(store.create("pay-2", toJson(later)));
  auto again = adoptUntagged(store, tags, "2026-02-02T00:00:00Z");
  ASSERT_TRUE(again.has_value());
  EXPECT_FALSE(again->ran);
  EXPECT_FALSE(tags.recordValid(*parseApprovalRecord(store.get("pay-2")->value)));
}

VoteRecord sampleVote(const std::string& approver) {
  return VoteRecord{.approver = approver, .at = "2026-01-01T00:00:00Z", .via = "", .reason = "ok",
                    .job_hash = "sha256:00", .policy_snapshot = "v1:x", .key = "", .signature = ""};
}

TEST(StoreTags, VoteTagBindsItsKeyAndEveryField) {
  const StoreTags tags(seedOf(7));
  VoteRecord alice = sampleVote("alice");
  alice.tag = tags.voteTag("pay-1/vote/0/alice", alice);
  auto parsed = parseVoteRecord(toJson(alice));
  ASSERT_TRUE(parsed.has_value());
  EXPECT_TRUE(tags.voteValid("pay-1/vote/0/alice", *parsed));
  // Copied under another approver's, binding's or approval's key, or edited: not valid.
  EXPECT_FALSE(tags.voteValid("pay-1/vote/0/bob", *parsed));
  EXPECT_FALSE(tags.voteValid("pay-1/vote/1/alice", *parsed));
  EXPECT_FALSE(tags.voteValid("pay-2/vote/0/alice", *parsed));
  VoteRecord as_bob = *parsed;
  as_bob.approver = "bob";
  EXPECT_FALSE(tags.voteValid("pay-1/vote/0/bob", as_bob));
  VoteRecord other_job = *parsed;
  other_job.job_hash = "sha256:11";
  EXPECT_FALSE(tags.voteValid("pay-1/vote/0/alice", other_job));
  VoteRecord by_hand = sampleVote("bob");
  EXPECT_FALSE(tags.voteValid("pay-1/vote/0/bob", by_hand));
  EXPECT_FALSE(StoreTags(seedOf(8)).voteValid("pay-1/vote/0/alice", *parsed));
}

TEST(StoreTags, VotesAreAdoptedOnceUnderTheirOwnMarkerOnABucketAdoptedBefore) {
  fakes::MemoryKv store;
  const StoreTags tags(seedOf(7));
  // A bucket whose records and decisions were adopted before votes had tags: an untagged record
  // stays refused, the votes written before this version are adopted once.
  ASSERT_TRUE(store.create(std::string(kTagsAdoptedKey), R"({"at":"2026-01-01T00:00:00Z"})"));
  ASSERT_TRUE(store.create("pay-1", toJson(sampleRecord())));
  ASSERT_TRUE(store.create("pay-1/vote/0/alice", toJson(sampleVote("alice"))));
  std::vector<std::string> ids;
  auto adopted = adoptUntagged(store, tags, "2026-02-01T00:00:00Z", &ids);
  ASSERT_TRUE(adopted.has_value());
  EXPECT_TRUE(adopted->ran);
  EXPECT_EQ(adopted->records, 0u);
  EXPECT_EQ(adopted->votes, 1u);
  EXPECT_EQ(ids, (std::vector<std::string>{"pay-1/vote/0/alice"}));
  EXPECT_TRUE(tags.voteValid("pay-1/vote/0/alice", *parseVoteRecord(store.get("pay-1/vote/0/alice")->value)));
  EXPECT_FALSE(tags.recordValid(*parseApprovalRecord(store.get("pay-1")->value)));
  EXPECT_TRUE(store.get(kVoteTagsAdoptedKey).has_value());

  // A vote written by hand after that: not adopted by the next start, and it does not count.
  ASSERT_TRUE(store.create("pay-1/vote/0/bob", toJson(sampleVote("bob"))));
  auto again = adoptUntagged(store, tags, "2026-02-02T00:00:00Z");
  ASSERT_TRUE(again.has_value());
  EXPECT_FALSE(again->ran);
  EXPECT_FALSE(tags.voteValid("pay-1/vote/0/bob", *parseVoteRecord(store.get("pay-1/vote/0/bob")->value)));
}

// Signed events: every event carries a signature of its exact body by the signer's key, in the
// chain's order, published by the sink's own thread.
TEST(SignedEvents, EveryEventIsSignedInChainOrder) {
  fakes::CapturingPublisher pub;
  fakes::ManualClock clock;
  NullLogger log;
  const nkeys::Seed seed = seedOf(9);
  const nkeys::Signer signer(seed);
  {
    EventSink sink(pub, clock, log,
                   EventOptions{.chained = true, .chain_id = "abc-control", .durable_decisions = true, .signer = &signer});
    for (int i = 0; i < 50; ++i) sink.emit(Event{.event = EventKind::held, .approval_id = "job-" + std::to_string(i), .topic = "t"});
    // A decisive event is published (and confirmed) before emit returns.
    sink.emit(Event{.event = EventKind::released, .approval_id = "job-0", .topic = "t"});
    EXPECT_EQ(pub.all().size(), 51u);
  }
  const auto published = pub.all();
  ASSERT_EQ(published.size(), 51u);
  std::string prev;
  for (std::size_t i = 0; i < published.size(); ++i) {
    const auto& m = published[i];
    const std::string* signature = findHeader(m.headers, std::string(kEventSignatureHeader));
    const std::string* key = findHeader(m.headers, std::string(kEventKeyHeader));
    ASSERT_NE(signature, nullptr);
    ASSERT_NE(key, nullptr);
    EXPECT_EQ(*key, signer.encodedPublicKey());
    const auto raw = nkeys::base64UrlDecode(*signature);
    ASSERT_TRUE(raw.has_value());
    EXPECT_TRUE(nkeys::verify(signer.publicKey(), m.payload, *raw)) << i;
    EXPECT_FALSE(nkeys::verify(signer.publicKey(), m.payload + " ", *raw));
    auto doc = json::parseStrict(m.payload);
    ASSERT_TRUE(doc.has_value());
    EXPECT_EQ((*doc)["seq"].GetUint64(), i + 1);
    EXPECT_EQ(std::string((*doc)["prev"].GetString()), prev);
    prev = "sha256:" + json::sha256Hex(m.payload);
  }
  EXPECT_EQ(published.back().delivery, Delivery::jetstream);
}

}  // namespace
}  // namespace countersign::testing
