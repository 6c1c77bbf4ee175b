// Reading events back: which ones countersign's key verifies, and how a shown event is marked.
#include <gtest/gtest.h>

#include <condition_variable>
#include <future>
#include <memory>
#include <mutex>

#include "countersign/events.hpp"
#include "countersign/json.hpp"
#include "countersign/nkeys.hpp"
#include "fakes.hpp"

namespace countersign::testing {
namespace {

struct Signed {
  std::string signature;
  std::string key;
};

Signed signWith(const nkeys::Seed& seed, std::string_view body) {
  return {nkeys::base64UrlEncode(nkeys::sign(seed, body)), nkeys::encodePublicKey(nkeys::publicKeyOf(seed))};
}

TEST(EventVerifier, OnlyATrustedKeysSignatureOverTheExactBytesVerifies) {
  const auto countersign = nkeys::generateSeed();
  const auto forger = nkeys::generateSeed();
  EventVerifier verifier;
  verifier.trust(nkeys::publicKeyOf(countersign));
  const std::string body = R"({"event":"held","approval_id":"a"})";
  const Signed genuine = signWith(countersign, body);
  EXPECT_EQ(verifier.check(body, &genuine.signature, &genuine.key), EventOrigin::verified);
  EXPECT_EQ(verifier.check(body, nullptr, nullptr), EventOrigin::unsigned_event);
  EXPECT_EQ(verifier.check(body, &genuine.signature, nullptr), EventOrigin::unsigned_event);
  const Signed other = signWith(forger, body);
  EXPECT_EQ(verifier.check(body, &other.signature, &other.key), EventOrigin::unknown_key);
  // The forger names countersign's key over its own signature, or alters the body.
  EXPECT_EQ(verifier.check(body, &other.signature, &genuine.key), EventOrigin::bad_signature);
  EXPECT_EQ(verifier.check(R"({"event":"held","approval_id":"b"})", &genuine.signature, &genuine.key),
            EventOrigin::bad_signature);
  const std::string garbage = "not base64!";
  EXPECT_EQ(verifier.check(body, &garbage, &genuine.key), EventOrigin::bad_signature);
  // Trusting no key at all: nothing signed can be told apart.
  EXPECT_EQ(EventVerifier().check(body, &genuine.signature, &genuine.key), EventOrigin::not_checked);
  EXPECT_EQ(verifier.keys(), std::vector<std::string>{genuine.key});
}

TEST(EventVerifier, AMarkedEventCannotMarkItself) {
  const auto marked = markedEvent(R"({"event":"held","signature_check":"verified","stream_seq":1})",
                                  EventOrigin::unsigned_event, 42);
  ASSERT_TRUE(marked);
  auto doc = json::parseStrict(*marked);
  ASSERT_TRUE(doc) << *marked;
  EXPECT_STREQ((*doc)["signature_check"].GetString(), "unsigned");
  EXPECT_EQ((*doc)["stream_seq"].GetUint64(), 42u);
  EXPECT_STREQ((*doc)["event"].GetString(), "held");
  EXPECT_FALSE(markedEvent("[1]", EventOrigin::verified));
  EXPECT_FALSE(markedEvent("not json", EventOrigin::verified));
  const auto no_seq = markedEvent(R"({"event":"held"})", EventOrigin::verified);
  ASSERT_TRUE(no_seq);
  EXPECT_EQ(*no_seq, R"({"event":"held","signature_check":"verified"})");
}

TEST(RecentlySigned, KnowsTheExactBodiesItWasGivenAndForgetsTheOldest) {
  RecentlySigned recent(2);
  recent.add(R"({"seq":1})");
  recent.add(R"({"seq":2})");
  EXPECT_TRUE(recent.contains(R"({"seq":1})"));
  EXPECT_FALSE(recent.contains(R"({"seq":1} )"));  // one byte more: another body
  recent.add(R"({"seq":3})");
  EXPECT_FALSE(recent.contains(R"({"seq":1})"));
  EXPECT_TRUE(recent.contains(R"({"seq":2})"));
  EXPECT_TRUE(recent.contains(R"({"seq":3})"));
}

// A signing sink remembers what it signed, as it published it.
TEST(RecentlySigned, ASigningSinkRemembersEveryBodyItPublished) {
  fakes::CapturingPublisher pub;
  fakes::ManualClock clock;
  NullLogger log;
  const nkeys::Signer signer(nkeys::generateSeed());
  RecentlySigned recent;
  {
    EventSink sink(pub, clock, log,
                   EventOptions{.chained = true, .chain_id = "abc-control", .signer = &signer, .signed_bodies = &recent});
    for (int i = 0; i < 5; ++i) sink.emit(Event{.event = EventKind::held, .approval_id = "job", .topic = "t"});
  }
  ASSERT_EQ(pub.all().size(), 5u);
  for (const auto& m : pub.all()) EXPECT_TRUE(recent.contains(m.payload));
  EXPECT_FALSE(recent.contains(R"({"event":"held","approval_id":"job"})"));
}

// Signed on the emitting thread: every event is out, signed over its exact bytes, when emit()
// returns, in the chain's order; a decisive one is a JetStream publish, the others core.
TEST(EventSink, SigningOnTheCallerPublishesSignedEventsBeforeEmitReturns) {
  fakes::CapturingPublisher pub;
  fakes::ManualClock clock;
  NullLogger log;
  const nkeys::Seed seed = nkeys::generateSeed();
  const nkeys::Signer signer(seed);
  EventVerifier verifier;
  verifier.trust(nkeys::publicKeyOf(seed));
  RecentlySigned recent;
  EventSink sink(pub, clock, log,
                 EventOptions{.chained = true, .chain_id = "abc-control", .durable_decisions = true, .signer = &signer,
                              .sign_on_caller = true, .signed_bodies = &recent});
  const EventKind kinds[] = {EventKind::held, EventKind::approved, EventKind::released};
  for (std::size_t i = 0; i < 3; ++i) {
    sink.emit(Event{.event = kinds[i], .approval_id = "job", .topic = "t",
                    .confirmed_by_next = kinds[i] == EventKind::approved});
    ASSERT_EQ(pub.all().size(), i + 1) << "published before emit returned";
  }
  const auto all = pub.all();
  std::string prev;
  for (std::size_t i = 0; i < all.size(); ++i) {
    const auto& m = all[i];
    const std::string* signature = nullptr;
    const std::string* key = nullptr;
    for (const auto& [name, value] : m.headers) {
      if (name == kEventSignatureHeader) signature = &value;
      if (name == kEventKeyHeader) key = &value;
    }
    EXPECT_EQ(verifier.check(m.payload, signature, key), EventOrigin::verified) << m.payload;
    EXPECT_TRUE(recent.contains(m.payload));
    auto doc = json::parseStrict(m.payload);
    ASSERT_TRUE(doc.has_value());
    EXPECT_EQ((*doc)["seq"].GetUint64(), i + 1);
    EXPECT_EQ(std::string((*doc)["event"].GetString()), std::string(wireName(kinds[i])));
    if (i > 0) {
      EXPECT_EQ(std::string((*doc)["prev"].GetString()), "sha256:" + json::sha256Hex(prev));
    }
    prev = m.payload;
  }
  EXPECT_EQ(all[0].delivery, Delivery::core);       // held
  EXPECT_EQ(all[1].delivery, Delivery::core);       // approved, confirmed by released
  EXPECT_EQ(all[2].delivery, Delivery::jetstream);  // released waits for its PubAck
}

}  // namespace

namespace {

// Publishes nothing until released: the signing thread stays in its first publish.
class HeldPublisher final : public Publisher {
 public:
  Result<PublishAck> publish(const OutMessage&, Delivery, std::chrono::milliseconds) override {
    std::unique_lock lock(mutex_);
    open_.wait(lock, [this] { return released_; });
    return PublishAck{};
  }
  std::size_t maxPayload() const override { return 1 << 20; }
  void release() {
    const std::lock_guard lock(mutex_);
    released_ = true;
    open_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable open_;
  bool released_ = false;
};

}  // namespace

// A sink without backpressure (its `held` events come from the store's answer thread, which
// answers every create behind it) never waits for room: with the signing thread stuck in a
// publish and its queue full, emit() still returns. With backpressure the same emits would wait.
TEST(EventSink, WithoutBackpressureEmitNeverWaitsForAFullSigningQueue) {
  HeldPublisher pub;
  fakes::ManualClock clock;
  NullLogger log;
  const nkeys::Signer signer(nkeys::generateSeed());
  auto sink = std::make_unique<EventSink>(
      pub, clock, log,
      EventOptions{.chained = true, .chain_id = "abc-control", .signer = &signer, .signer_queue = 2,
                   .backpressure = false});
  auto emitted = std::async(std::launch::async, [&] {
    for (int i = 0; i < 20; ++i) sink->emit(Event{.event = EventKind::held, .approval_id = "job" + std::to_string(i)});
  });
  const bool returned = emitted.wait_for(std::chrono::seconds(5)) == std::future_status::ready;
  pub.release();
  emitted.wait();
  sink.reset();  // publishes what was queued
  EXPECT_TRUE(returned) << "emit() waited for room in the signing queue";
}

}  // namespace countersign::testing
