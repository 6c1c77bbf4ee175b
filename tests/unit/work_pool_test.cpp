#include "countersign/work_pool.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <string>
#include <vector>

namespace countersign {
namespace {

using namespace std::chrono_literals;

TEST(WorkPool, TasksWithOneKeyRunInSubmitOrderOneAtATime) {
  WorkPool pool(4);
  std::mutex mutex;
  std::vector<int> seen;
  std::atomic<int> running{0};
  std::atomic<int> overlaps{0};
  for (int i = 0; i < 500; ++i) {
    pool.submit("approval-1", [&, i] {
      if (running.fetch_add(1) != 0) overlaps.fetch_add(1);
      {
        const std::lock_guard lock(mutex);
        seen.push_back(i);
      }
      running.fetch_sub(1);
    });
  }
  pool.drain();
  ASSERT_EQ(seen.size(), 500u);
  for (int i = 0; i < 500; ++i) EXPECT_EQ(seen[static_cast<std::size_t>(i)], i);
  EXPECT_EQ(overlaps.load(), 0);
}

TEST(WorkPool, TasksOnDifferentThreadsRunInParallel) {
  // Two tasks that each wait for the other: they finish only if they run at the same time.
  // Empty keys take the threads in turn, so the two land on different threads.
  WorkPool pool(2);
  std::promise<void> first_started;
  std::promise<void> second_started;
  auto first = first_started.get_future().share();
  auto second = second_started.get_future().share();
  std::atomic<int> met{0};
  pool.submit("", [&] {
    first_started.set_value();
    if (second.wait_for(5s) == std::future_status::ready) met.fetch_add(1);
  });
  pool.submit("", [&] {
    second_started.set_value();
    if (first.wait_for(5s) == std::future_status::ready) met.fetch_add(1);
  });
  pool.drain();
  EXPECT_EQ(met.load(), 2);
}

TEST(WorkPool, DrainWaitsForRunningAndQueuedTasks) {
  WorkPool pool(3);
  std::atomic<int> done{0};
  for (int i = 0; i < 60; ++i) {
    pool.submit("k" + std::to_string(i % 7), [&] {
      std::this_thread::sleep_for(1ms);
      done.fetch_add(1);
    });
  }
  pool.drain();
  EXPECT_EQ(done.load(), 60);
  pool.drain();  // nothing pending: returns at once
  EXPECT_EQ(done.load(), 60);
}

TEST(WorkPool, AThrowingTaskIsCountedAndTheThreadGoesOn) {
  WorkPool pool(1);
  std::atomic<int> done{0};
  pool.submit("a", [] { throw std::runtime_error("boom"); });
  pool.submit("a", [&] { done.fetch_add(1); });
  pool.drain();
  EXPECT_EQ(pool.failedTasks(), 1u);
  EXPECT_EQ(done.load(), 1);
}

TEST(WorkPool, DestructionRunsEverythingQueued) {
  std::atomic<int> done{0};
  {
    WorkPool pool(2);
    for (int i = 0; i < 100; ++i) {
      pool.submit(std::to_string(i), [&] {
        std::this_thread::sleep_for(100us);
        done.fetch_add(1);
      });
    }
  }
  EXPECT_EQ(done.load(), 100);
}

TEST(WorkPool, AFullQueueMakesTheSubmitterWait) {
  WorkPool pool(1, 2);
  std::promise<void> release;
  auto gate = release.get_future().share();
  std::atomic<int> done{0};
  // One running (blocked on the gate) and two queued fill the lane.
  for (int i = 0; i < 3; ++i) {
    pool.submit("x", [&, gate] {
      (void)gate.wait_for(10s);
      done.fetch_add(1);
    });
  }
  std::atomic<bool> submitted{false};
  std::thread submitter([&] {
    pool.submit("x", [&] { done.fetch_add(1); });
    submitted.store(true);
  });
  std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(submitted.load()) << "submit() returned although the queue was full";
  release.set_value();
  submitter.join();
  EXPECT_TRUE(submitted.load());
  pool.drain();
  EXPECT_EQ(done.load(), 4);
}

TEST(WorkPool, ZeroThreadsMeansOne) {
  WorkPool pool(0);
  EXPECT_EQ(pool.threads(), 1u);
  std::atomic<int> done{0};
  pool.submit("", [&] { done.fetch_add(1); });
  pool.drain();
  EXPECT_EQ(done.load(), 1);
}

}  // namespace
}  // namespace countersign
