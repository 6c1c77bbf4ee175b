#include "countersign/ordered_pipeline.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

namespace countersign {
namespace {

using namespace std::chrono_literals;

// Work that takes longer for some items than for later ones, so that items complete out of
// order on several threads.
void busyFor(int item) { std::this_thread::sleep_for(std::chrono::microseconds((item * 7919) % 13 * 20)); }

TEST(OrderedPipelineTest, FinishesInSubmissionOrderOneAtATime) {
  std::vector<int> order;
  std::atomic<int> finishing{0};
  std::atomic<int> overlapped{0};
  std::atomic<int> worked_at_once{0};
  std::atomic<int> working{0};
  constexpr int kItems = 3000;
  {
    OrderedPipeline pipeline(3, 12, "test");
    for (int i = 0; i < kItems; ++i) {
      pipeline.submit([&, i]() -> OrderedPipeline::Finish {
        const int now = ++working;
        int seen = worked_at_once.load();
        while (now > seen && !worked_at_once.compare_exchange_weak(seen, now)) {
        }
        busyFor(i);
        --working;
        return [&, i] {
          if (++finishing > 1) ++overlapped;
          order.push_back(i);  // no lock: finishes never overlap
          --finishing;
        };
      });
    }
  }  // the destructor finishes everything
  ASSERT_EQ(order.size(), static_cast<std::size_t>(kItems));
  for (int i = 0; i < kItems; ++i) ASSERT_EQ(order[i], i);
  EXPECT_EQ(overlapped.load(), 0);
  EXPECT_GT(worked_at_once.load(), 1) << "the work ran on one thread only";
}

TEST(OrderedPipelineTest, AnEarlySlowItemHoldsBackLaterFinishesOnly) {
  OrderedPipeline pipeline(2, 8, "test");
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::mutex mutex;
  std::vector<int> finished;
  std::atomic<int> worked{0};
  pipeline.submit([&]() -> OrderedPipeline::Finish {
    released.wait();
    return [&] {
      const std::lock_guard lock(mutex);
      finished.push_back(0);
    };
  });
  for (int i = 1; i <= 4; ++i) {
    pipeline.submit([&, i]() -> OrderedPipeline::Finish {
      ++worked;
      return [&, i] {
        const std::lock_guard lock(mutex);
        finished.push_back(i);
      };
    });
  }
  // The later items' work runs while the first waits; none of them is finished before it.
  for (int i = 0; i < 500 && worked.load() < 4; ++i) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(worked.load(), 4);
  {
    const std::lock_guard lock(mutex);
    EXPECT_TRUE(finished.empty());
  }
  release.set_value();
  pipeline.drain();
  EXPECT_EQ(finished, (std::vector<int>{0, 1, 2, 3, 4}));
  EXPECT_EQ(pipeline.finished(), 5u);
}

// What is captured by an item lives at most as long as the item: counts the live ones.
struct Tracked {
  static inline std::atomic<int> live{0};
  static inline std::atomic<int> peak{0};
  Tracked() { note(++live); }
  Tracked(const Tracked&) { note(++live); }
  ~Tracked() { --live; }
  static void note(int now) {
    int seen = peak.load();
    while (now > seen && !peak.compare_exchange_weak(seen, now)) {
    }
  }
};

TEST(OrderedPipelineTest, SubmitWaitsBeyondMaxInFlightSoMemoryIsBounded) {
  constexpr std::size_t kMax = 4;
  OrderedPipeline pipeline(2, kMax, "test");
  EXPECT_EQ(pipeline.maxInFlight(), kMax);
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<int> submitted{0};
  std::thread producer([&] {
    for (int i = 0; i < 10; ++i) {
      pipeline.submit([released, tracked = std::make_shared<Tracked>()]() -> OrderedPipeline::Finish {
        released.wait();
        return [tracked] {};
      });
      ++submitted;
    }
  });
  for (int i = 0; i < 10000 && submitted.load() < static_cast<int>(kMax); ++i) std::this_thread::sleep_for(1ms);
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(submitted.load(), static_cast<int>(kMax)) << "the fifth submit did not wait for room";
  release.set_value();
  producer.join();
  pipeline.drain();
  EXPECT_EQ(submitted.load(), 10);
  EXPECT_EQ(pipeline.finished(), 10u);
  EXPECT_LE(Tracked::peak.load(), static_cast<int>(kMax) + 1);  // the one being submitted
  EXPECT_EQ(Tracked::live.load(), 0) << "an item's captures outlived it";
}

TEST(OrderedPipelineTest, DrainAndDestructionLoseNothing) {
  std::atomic<int> finished{0};
  {
    OrderedPipeline pipeline(2, 16, "test");
    for (int i = 0; i < 200; ++i) {
      pipeline.submit([&, i]() -> OrderedPipeline::Finish {
        busyFor(i);
        return [&] { ++finished; };
      });
    }
    pipeline.drain();
    EXPECT_EQ(finished.load(), 200);  // drain returned only once every item was finished
    for (int i = 0; i < 200; ++i) {
      pipeline.submit([&, i]() -> OrderedPipeline::Finish {
        busyFor(i);
        return [&] { ++finished; };
      });
    }
  }  // destroyed with items in flight: they are finished first
  EXPECT_EQ(finished.load(), 400);
}

TEST(OrderedPipelineTest, AThrowingItemIsCountedAndTheOthersFinishInOrder) {
  std::vector<int> order;
  OrderedPipeline pipeline(2, 4, "test");
  for (int i = 0; i < 6; ++i) {
    pipeline.submit([&, i]() -> OrderedPipeline::Finish {
      if (i == 2) throw std::runtime_error("work failed");
      return [&, i] {
        if (i == 4) throw std::runtime_error("finish failed");
        order.push_back(i);
      };
    });
  }
  pipeline.drain();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 3, 5}));
  EXPECT_EQ(pipeline.failed(), 2u);
  EXPECT_EQ(pipeline.finished(), 6u);
}

TEST(OrderedPipelineTest, ZeroThreadsOrSlotsMeanOneAndThreadsStartWithTheFirstItem) {
  OrderedPipeline none(0, 0, "test");
  EXPECT_EQ(none.threads(), 1u);
  EXPECT_EQ(none.maxInFlight(), 1u);
  EXPECT_FALSE(none.started()) << "a pipeline that is not used has no threads";
  std::atomic<bool> ran{false};
  none.submit([&]() -> OrderedPipeline::Finish { return [&] { ran = true; }; });
  EXPECT_TRUE(none.started());
  none.drain();
  EXPECT_TRUE(ran.load());
}

}  // namespace
}  // namespace countersign
