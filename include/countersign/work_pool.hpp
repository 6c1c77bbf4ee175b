// An executor: a fixed set of named threads that run tasks with keys. Tasks with the same key run
// one at a time, in the order they were handed over (a key always lands on the same thread);
// tasks with different keys run in parallel. Client-library threads (cnats' delivery and PubAck
// threads, Asio's I/O thread) only decode and post() here; the work runs on these threads. Used
// for control requests (unkeyed) and for the holds whose id is taken already (keyed by approval
// id, so that two copies of one job are settled in order). postAfter() makes it a timer too:
// periodic work (the replayer's scans, the store's create timeouts) runs on a lane of an
// executor instead of a thread of its own.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace countersign {

class WorkPool {
 public:
  using Task = std::function<void()>;

  // `threads` >= 1, named "cs-<name>-<n>" (n from 0; the name is cut to fit Linux's 15
  // characters). Each thread queues at most `queue_limit` tasks for submit(), which waits for
  // room, so that a burst slows an owner thread instead of growing memory without bound.
  WorkPool(std::size_t threads, std::size_t queue_limit = 1024, std::string_view name = "work");
  // Runs every task already submitted, then joins the threads.
  ~WorkPool();
  WorkPool(const WorkPool&) = delete;
  WorkPool& operator=(const WorkPool&) = delete;

  // Queues `task` on the thread that owns `key`; an empty key takes the threads in turn. A task
  // must not throw (an exception is caught and counted in failedTasks()). Must not be called
  // from a task of this pool with a full queue (it would wait for itself): tasks do not submit.
  void submit(std::string_view key, Task task);
  // The same, but never waits: for threads that must not block (a client library's callback
  // threads). The lane may then hold more than `queue_limit` tasks; postedOverLimit() counts
  // the tasks that found it full. May be called from a task of this pool.
  void post(std::string_view key, Task task);
  // Queues `task` on the thread that owns `key` once `delay` has passed; never waits. The lane's
  // thread waits for the earliest timer itself (no timer thread); a timer that is due runs
  // before the lane's queued tasks. A periodic task posts itself again. Timers not yet due when
  // the pool is destroyed are dropped, and drain() does not wait for them.
  void postAfter(std::chrono::milliseconds delay, std::string_view key, Task task);
  // Returns when every task submitted before the call has run.
  void drain();

  std::size_t threads() const { return lanes_.size(); }
  std::uint64_t failedTasks() const { return failed_.load(); }
  std::uint64_t postedOverLimit() const { return over_limit_.load(); }

 private:
  struct Lane {
    std::mutex mutex;
    std::condition_variable has_work;
    std::condition_variable has_room;
    std::deque<Task> tasks;
    std::multimap<std::chrono::steady_clock::time_point, Task> timers;
    bool stopping = false;
    std::thread thread;
  };
  Lane& laneFor(std::string_view key);
  void enqueue(Lane& lane, Task task, bool wait_for_room);
  void run(Lane& lane, std::string name);
  void finished();

  std::size_t queue_limit_;
  std::vector<std::unique_ptr<Lane>> lanes_;
  std::atomic<std::size_t> next_{0};
  std::atomic<std::uint64_t> failed_{0};
  std::atomic<std::uint64_t> over_limit_{0};
  std::mutex idle_mutex_;
  std::condition_variable idle_;
  std::size_t unfinished_ = 0;  // guarded by idle_mutex_
};

}  // namespace countersign
