#include "countersign/ordered_pipeline.hpp"

#include <pthread.h>

#include <algorithm>
#include <string>

namespace countersign {

OrderedPipeline::OrderedPipeline(std::size_t threads, std::size_t max_in_flight, std::string_view name)
    : slots_(std::max<std::size_t>(1, max_in_flight)), thread_count_(std::max<std::size_t>(1, threads)),
      name_(name) {}

void OrderedPipeline::start() {
  threads_.reserve(thread_count_);
  for (std::size_t i = 0; i < thread_count_; ++i) {
    // Linux thread names hold 15 characters: "cs-" + name + "-" + index, the name cut to fit.
    const std::string index = std::to_string(i);
    const std::size_t room = 15 - 4 - index.size();
    const std::string thread_name = "cs-" + name_.substr(0, room) + "-" + index;
    threads_.emplace_back([this] { run(); });
    pthread_setname_np(threads_.back().native_handle(), thread_name.c_str());
  }
}

bool OrderedPipeline::started() const {
  const std::lock_guard lock(mutex_);
  return !threads_.empty();
}

OrderedPipeline::~OrderedPipeline() {
  drain();
  {
    const std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  has_work_.notify_all();
  for (auto& thread : threads_) thread.join();
}

void OrderedPipeline::submit(Work work) {
  {
    std::unique_lock lock(mutex_);
    if (threads_.empty()) start();
    has_room_.wait(lock, [&] { return submitted_ - finished_ < slots_.size(); });
    Slot& slot = slots_[submitted_ % slots_.size()];
    slot.work = std::move(work);
    slot.done = false;
    ++submitted_;
  }
  has_work_.notify_one();
}

void OrderedPipeline::drain() {
  std::unique_lock lock(mutex_);
  const std::uint64_t target = submitted_;
  idle_.wait(lock, [&] { return finished_ >= target; });
}

std::uint64_t OrderedPipeline::failed() const {
  const std::lock_guard lock(mutex_);
  return failed_;
}

std::uint64_t OrderedPipeline::finished() const {
  const std::lock_guard lock(mutex_);
  return finished_;
}

void OrderedPipeline::run() {
  std::unique_lock lock(mutex_);
  while (true) {
    has_work_.wait(lock, [&] { return stopping_ || taken_ < submitted_; });
    if (taken_ == submitted_) return;  // stopping, and nothing left
    Slot& slot = slots_[taken_ % slots_.size()];
    ++taken_;
    Work work = std::move(slot.work);
    lock.unlock();
    Finish finish;
    bool threw = false;
    try {
      finish = work();
    } catch (...) {
      threw = true;
    }
    work = nullptr;  // what it captured goes before the lock is taken again
    lock.lock();
    if (threw) ++failed_;
    slot.finish = std::move(finish);
    slot.done = true;
    if (!finishing_) finishInOrder(lock);
  }
}

void OrderedPipeline::finishInOrder(std::unique_lock<std::mutex>& lock) {
  finishing_ = true;
  while (finished_ < submitted_ && slots_[finished_ % slots_.size()].done) {
    Slot& slot = slots_[finished_ % slots_.size()];
    Finish finish = std::move(slot.finish);
    slot.finish = nullptr;
    slot.done = false;
    lock.unlock();
    bool threw = false;
    if (finish) {
      try {
        finish();
      } catch (...) {
        threw = true;
      }
      finish = nullptr;
    }
    lock.lock();
    if (threw) ++failed_;
    ++finished_;  // its slot is given back only now: an item being finished is still in flight
    has_room_.notify_one();
    idle_.notify_all();
  }
  finishing_ = false;
}

}  // namespace countersign
