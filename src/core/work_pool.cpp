#include "countersign/work_pool.hpp"

#include <algorithm>

namespace countersign {

WorkPool::WorkPool(std::size_t threads, std::size_t queue_limit)
    : queue_limit_(std::max<std::size_t>(1, queue_limit)) {
  const std::size_t count = std::max<std::size_t>(1, threads);
  lanes_.reserve(count);
  for (std::size_t i = 0; i < count; ++i) lanes_.push_back(std::make_unique<Lane>());
  for (auto& lane : lanes_) lane->thread = std::thread([this, l = lane.get()] { run(*l); });
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

void WorkPool::submit(std::string_view key, Task task) {
  const std::size_t index = key.empty() ? next_.fetch_add(1, std::memory_order_relaxed) % lanes_.size()
                                        : std::hash<std::string_view>{}(key) % lanes_.size();
  Lane& lane = *lanes_[index];
  {
    const std::lock_guard lock(idle_mutex_);
    ++unfinished_;
  }
  {
    std::unique_lock lock(lane.mutex);
    lane.has_room.wait(lock, [&] { return lane.tasks.size() < queue_limit_; });
    lane.tasks.push_back(std::move(task));
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

void WorkPool::run(Lane& lane) {
  for (;;) {
    Task task;
    {
      std::unique_lock lock(lane.mutex);
      lane.has_work.wait(lock, [&] { return lane.stopping || !lane.tasks.empty(); });
      // Stopping still runs what was queued: nothing submitted is dropped.
      if (lane.tasks.empty()) return;
      task = std::move(lane.tasks.front());
      lane.tasks.pop_front();
    }
    lane.has_room.notify_one();
    try {
      task();
    } catch (...) {
      failed_.fetch_add(1);
    }
    finished();
  }
}

}  // namespace countersign
