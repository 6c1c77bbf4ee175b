#include "countersign/work_pool.hpp"

#include <gtest/gtest.h>
#include <pthread.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <mutex>
#include <set>
#include <string>
#include <thread>
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

TEST(WorkPool, PostNeverWaitsForRoomAndCountsWhatFoundTheLaneFull) {
  WorkPool pool(1, 1);
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  pool.submit("", [released] { released.wait(); });
  pool.submit("", [] {});  // the queue (one task) is full now
  std::atomic<int> ran{0};
  const auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < 100; ++i) pool.post("", [&ran] { ran.fetch_add(1); });
  EXPECT_LT(std::chrono::steady_clock::now() - started, 1s) << "post waited for room";
  EXPECT_EQ(pool.postedOverLimit(), 100u);
  EXPECT_EQ(ran.load(), 0);
  release.set_value();
  pool.drain();
  EXPECT_EQ(ran.load(), 100);
}

TEST(WorkPool, ThreadsAreNamedAfterThePool) {
  WorkPool pool(2, 16, "control");
  std::mutex mutex;
  std::set<std::string> names;
  std::promise<void> both;
  std::shared_future<void> go = both.get_future().share();
  std::atomic<int> arrived{0};
  for (int i = 0; i < 2; ++i) {
    pool.submit("", [&] {
      char name[16] = {0};
      pthread_getname_np(pthread_self(), name, sizeof name);
      {
        const std::lock_guard lock(mutex);
        names.insert(name);
      }
      if (arrived.fetch_add(1) == 1) both.set_value();
      go.wait_for(5s);
    });
  }
  pool.drain();
  EXPECT_EQ(names, (std::set<std::string>{"cs-control-0", "cs-control-1"}));
  // Long names are cut to fit Linux's 15 characters, index included.
  WorkPool long_named(1, 1, "a-very-long-pool-name");
  std::string seen;
  long_named.submit("", [&] {
    char name[16] = {0};
    pthread_getname_np(pthread_self(), name, sizeof name);
    seen = name;
  });
  long_named.drain();
  EXPECT_EQ(seen, "cs-a-very-lon-0");
}

TEST(WorkPool, TimersRunOnTheKeysLaneWhenDueAndInDueOrder) {
  WorkPool pool(2, 16, "tick");
  std::mutex mutex;
  std::vector<int> order;
  std::set<std::string> names;
  std::promise<void> done;
  const auto started = std::chrono::steady_clock::now();
  auto note = [&](int n) {
    char name[16] = {};
    pthread_getname_np(pthread_self(), name, sizeof name);
    const std::lock_guard lock(mutex);
    order.push_back(n);
    names.insert(name);
    if (order.size() == 3) done.set_value();
  };
  pool.postAfter(std::chrono::milliseconds(150), "k", [&] { note(3); });
  pool.postAfter(std::chrono::milliseconds(50), "k", [&] { note(1); });
  pool.postAfter(std::chrono::milliseconds(100), "k", [&] { note(2); });
  ASSERT_EQ(done.get_future().wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_GE(std::chrono::steady_clock::now() - started, std::chrono::milliseconds(150));
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(names.size(), 1u) << "one key, one lane";
}

TEST(WorkPool, APeriodicTaskPostsItselfAgainUntilThePoolGoes) {
  std::atomic<int> ticks{0};
  {
    // Declared before the pool, so it outlives the pool's thread, which copies it on each tick.
    std::function<void()> tick;
    WorkPool pool(1, 16, "tick");
    tick = [&] {
      if (++ticks < 1000) pool.postAfter(std::chrono::milliseconds(10), "", tick);
    };
    pool.postAfter(std::chrono::milliseconds(10), "", tick);
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (ticks < 5 && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    EXPECT_GE(ticks.load(), 5);
    pool.drain();  // does not wait for the next tick
  }
  const int at_destruction = ticks.load();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(ticks.load(), at_destruction) << "a timer ran after the pool was gone";
}

TEST(WorkPool, ADueTimerIsNotStarvedByQueuedTasks) {
  WorkPool pool(1, 100000, "busy");
  std::atomic<bool> fired{false};
  std::atomic<int> ran{0};
  pool.postAfter(std::chrono::milliseconds(20), "", [&] { fired = true; });
  // Far more queued work than fits in 20 ms: the timer runs between tasks once it is due.
  for (int i = 0; i < 2000; ++i) {
    pool.post("", [&] {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      ++ran;
    });
  }
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!fired && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_TRUE(fired.load());
  EXPECT_LT(ran.load(), 2000) << "the timer waited for the whole queue";
  pool.drain();
}

}  // namespace
}  // namespace countersign
