// A fixed set of threads that run tasks with keys: tasks with the same key run one at a time, in
// the order they were submitted (a key always lands on the same thread); tasks with different
// keys run in parallel. Used for the holds whose id is taken already (telling a repeat from a
// conflict takes reads, which must not run on the store's answer thread), keyed by approval id
// so that two copies of one job are settled in order.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string_view>
#include <thread>
#include <vector>

namespace countersign {

class WorkPool {
 public:
  using Task = std::function<void()>;

  // `threads` >= 1. Each thread queues at most `queue_limit` tasks; submit() waits for room, so
  // a burst slows the submitter (for a subscription: the server buffers for it) instead of
  // growing memory without bound.
  WorkPool(std::size_t threads, std::size_t queue_limit = 1024);
  // Runs every task already submitted, then joins the threads.
  ~WorkPool();
  WorkPool(const WorkPool&) = delete;
  WorkPool& operator=(const WorkPool&) = delete;

  // Queues `task` on the thread that owns `key`; an empty key takes the threads in turn. A task
  // must not throw (an exception is caught and counted in failedTasks()). Must not be called
  // from a task of this pool with a full queue (it would wait for itself): tasks do not submit.
  void submit(std::string_view key, Task task);
  // Returns when every task submitted before the call has run.
  void drain();

  std::size_t threads() const { return lanes_.size(); }
  std::uint64_t failedTasks() const { return failed_.load(); }

 private:
  struct Lane {
    std::mutex mutex;
    std::condition_variable has_work;
    std::condition_variable has_room;
    std::deque<Task> tasks;
    bool stopping = false;
    std::thread thread;
  };
  void run(Lane& lane);
  void finished();

  std::size_t queue_limit_;
  std::vector<std::unique_ptr<Lane>> lanes_;
  std::atomic<std::size_t> next_{0};
  std::atomic<std::uint64_t> failed_{0};
  std::mutex idle_mutex_;
  std::condition_variable idle_;
  std::size_t unfinished_ = 0;  // guarded by idle_mutex_
};

}  // namespace countersign
