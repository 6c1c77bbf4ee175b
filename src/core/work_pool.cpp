#include "countersign/work_pool.hpp"

#include <pthread.h>

#include <algorithm>

namespace countersign {

WorkPool::WorkPool(std::size_t threads, std::size_t queue_limit, std::string_view name)
    : queue_limit_(std::max<std::size_t>(1, queue_limit)) {
  const std::size_t count = std::max<std::size_t>(1, threads);
  lanes_.reserve(count);
  for (std::size_t i = 0; i < count; ++i) lanes_.push_back(std::make_unique<Lane>());
  for (std::size_t i = 0; i < count; ++i) {
    // Linux thread names hold 15 characters: "cs-" + name + "-" + index, the name cut to fit.
    const std::string index = std::to_string(i);
    const std::size_t room = 15 - 4 - index.size();
    std::string thread_name = "cs-" + std::string(name.substr(0, room)) + "-" + index;
    Lane* lane = lanes_[i].get();
    lane->thread = std::thread([this, lane, thread_name] { run(*lane, thread_name); });
    // Named here too, so that the name is there when the constructor returns (threads that
    // appear unnamed during a step may be named after it by whoever started that step).
    pthread_setname_np(lane->thread.native_handle(), thread_name.c_str());
  }
}

WorkPool::~WorkPool() {
  for (auto& lane : lanes_) {
    {
      const std::lock_guard lock(lane->mutex);
      lane->stopping = true;
    }
    lane->has_work.notify_all();
  }
  for (auto& lane : lanes_) lane->thread.join();
}

WorkPool::Lane& WorkPool::laneFor(std::string_view key) {
  const std::size_t index = key.empty() ? next_.fetch_add(1, std::memory_order_relaxed) % lanes_.size()
                                        : std::hash<std::string_view>{}(key) % lanes_.size();
  return *lanes_[index];
}

void WorkPool::enqueue(Lane& lane, Task task, bool wait_for_room) {
  {
    const std::lock_guard lock(idle_mutex_);
    ++unfinished_;
  }
  {
    std::unique_lock lock(lane.mutex);
    if (wait_for_room) {
      lane.has_room.wait(lock, [&] { return lane.tasks.size() < queue_limit_; });
    } else if (lane.tasks.size() >= queue_limit_) {
      over_limit_.fetch_add(1, std::memory_order_relaxed);
    }
    lane.tasks.push_back(std::move(task));
  }
  lane.has_work.notify_one();
}

void WorkPool::submit(std::string_view key, Task task) {
  enqueue(laneFor(key), std::move(task), true);
}

void WorkPool::post(std::string_view key, Task task) {
  enqueue(laneFor(key), std::move(task), false);
}

void WorkPool::postAfter(std::chrono::milliseconds delay, std::string_view key, Task task) {
  Lane& lane = laneFor(key);
  {
    const std::lock_guard lock(lane.mutex);
    if (lane.stopping) return;
    lane.timers.emplace(std::chrono::steady_clock::now() + delay, std::move(task));
  }
  lane.has_work.notify_one();
}

void WorkPool::drain() {
  std::unique_lock lock(idle_mutex_);
  idle_.wait(lock, [this] { return unfinished_ == 0; });
}

void WorkPool::finished() {
  bool idle = false;
  {
    const std::lock_guard lock(idle_mutex_);
    idle = --unfinished_ == 0;
  }
  if (idle) idle_.notify_all();
}

void WorkPool::run(Lane& lane, std::string name) {
  pthread_setname_np(pthread_self(), name.c_str());
  for (;;) {
    Task task;
    bool timer = false;
    {
      std::unique_lock lock(lane.mutex);
      for (;;) {
        if (!lane.timers.empty() && lane.timers.begin()->first <= std::chrono::steady_clock::now()) {
          task = std::move(lane.timers.begin()->second);
          lane.timers.erase(lane.timers.begin());
          timer = true;
          break;
        }
        if (!lane.tasks.empty()) break;
        // Stopping still runs what was queued (nothing submitted is dropped); timers not yet
        // due are dropped.
        if (lane.stopping) return;
        if (lane.timers.empty()) {
          lane.has_work.wait(lock);
        } else {
          lane.has_work.wait_until(lock, lane.timers.begin()->first);
        }
      }
      if (!timer) {
        task = std::move(lane.tasks.front());
        lane.tasks.pop_front();
      }
    }
    if (!timer) lane.has_room.notify_one();
    try {
      task();
    } catch (...) {
      failed_.fetch_add(1);
    }
    if (!timer) finished();
  }
}

}  // namespace countersign
