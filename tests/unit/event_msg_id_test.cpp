// The audit events' Nats-Msg-Id: unpredictable with a nonce source, one id per publish.
#include <gtest/gtest.h>

#include <mutex>
#include <set>
#include <thread>

#include "countersign/clock.hpp"
#include "countersign/events.hpp"
#include "fakes.hpp"

namespace countersign::testing {
namespace {

std::vector<std::string> msgIds(const std::vector<fakes::Published>& published) {
  std::vector<std::string> ids;
  for (const auto& m : published) {
    const std::string* id = findHeader(m.headers, "Nats-Msg-Id");
    ids.push_back(id != nullptr ? *id : "");
  }
  return ids;
}

TEST(EventMsgId, CarriesARandomPartWhenGivenANonceSource) {
  fakes::CapturingPublisher pub;
  fakes::ManualClock clock;
  NullLogger log;
  RandomIdSource nonces;
  EventSink sink(pub, clock, log, EventOptions{.chained = true, .chain_id = "abc-control", .msg_id_nonces = &nonces});
  for (int i = 0; i < 3; ++i) sink.emit(Event{.event = EventKind::held, .approval_id = "job-1", .topic = "t"});
  const auto ids = msgIds(pub.all());
  ASSERT_EQ(ids.size(), 3u);
  std::set<std::string> distinct(ids.begin(), ids.end());
  EXPECT_EQ(distinct.size(), 3u);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const std::string prefix = "job-1:held:abc-control-" + std::to_string(i + 1) + "-";
    ASSERT_TRUE(ids[i].starts_with(prefix)) << ids[i];
    EXPECT_EQ(ids[i].size(), prefix.size() + 16) << ids[i];
  }
  // Another process with the same chain name cannot guess them.
  fakes::CapturingPublisher other_pub;
  EventSink other(other_pub, clock, log, EventOptions{.chained = true, .chain_id = "abc-control", .msg_id_nonces = &nonces});
  other.emit(Event{.event = EventKind::held, .approval_id = "job-1", .topic = "t"});
  EXPECT_NE(msgIds(other_pub.all()).front(), ids.front());
}

TEST(EventMsgId, WithoutANonceSourceTheIdIsChainAndSeq) {
  fakes::CapturingPublisher pub;
  fakes::ManualClock clock;
  NullLogger log;
  EventSink sink(pub, clock, log, EventOptions{.chained = true, .chain_id = "abc-intake"});
  sink.emit(Event{.event = EventKind::denied, .topic = "t"});
  EXPECT_EQ(msgIds(pub.all()), std::vector<std::string>{"-:denied:abc-intake-1"});
}

TEST(RandomIds, EveryIdIsNewAcrossThreadsAndRefills) {
  // Each thread draws its ids from a buffer of the generator's bytes, refilled every 32 ids:
  // 4 threads x 1,000 ids cross many refills, and none may repeat.
  RandomIdSource ids;
  std::mutex mutex;
  std::set<std::string> seen;
  std::size_t made = 0;
  std::size_t malformed = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      std::vector<std::string> mine;
      for (int i = 0; i < 1000; ++i) mine.push_back(ids.newId());
      const std::lock_guard lock(mutex);
      for (auto& id : mine) {
        if (id.size() != 32 || id.find_first_not_of("0123456789abcdef") != std::string::npos) ++malformed;
        seen.insert(std::move(id));
        ++made;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(made, 4000u);
  EXPECT_EQ(seen.size(), made);
  EXPECT_EQ(malformed, 0u);
}

}  // namespace
}  // namespace countersign::testing
