// An ordered pipeline: items are worked on in parallel and finished in the order they were
// submitted. Each item is a Work that runs on any of the pipeline's threads, at the same time as
// other items' Work, and returns its Finish; the Finishes run one at a time, strictly in
// submission order, on whichever pipeline thread completed the item that was next in line.
// Used by core intake to sign the receipts of allowed jobs on more than one thread while the
// jobs are forwarded in exactly the order they arrived.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace countersign {

class OrderedPipeline {
 public:
  using Finish = std::move_only_function<void()>;
  using Work = std::move_only_function<Finish()>;

  // `threads` >= 1, named "cs-<name>-<n>" (the name cut to fit Linux's 15 characters), started
  // by the first submit() (a pipeline that is never used has no threads). At most
  // `max_in_flight` (>= 1) items are submitted and not finished at once: submit() waits for
  // room beyond it, so memory stays bounded and a burst slows the submitting thread.
  OrderedPipeline(std::size_t threads, std::size_t max_in_flight, std::string_view name = "ordered");
  // Finishes every item already submitted, then joins the threads.
  ~OrderedPipeline();
  OrderedPipeline(const OrderedPipeline&) = delete;
  OrderedPipeline& operator=(const OrderedPipeline&) = delete;

  // Queues an item; waits while max_in_flight items are unfinished. Must not be called from
  // the pipeline's own threads (a Work or Finish would wait for itself). A Work or Finish must
  // not throw: an exception is caught and counted in failed() (a Work that threw has no
  // Finish; the items after it are finished as usual).
  void submit(Work work);
  // Returns when every item submitted before the call is finished (its Finish has returned).
  void drain();

  std::size_t threads() const { return thread_count_; }
  // Whether the threads have been started (by a submit()).
  bool started() const;
  std::size_t maxInFlight() const { return slots_.size(); }
  std::uint64_t failed() const;
  std::uint64_t finished() const;

 private:
  struct Slot {
    Work work;
    Finish finish;
    bool done = false;  // work has run; finish (if any) waits for its turn
  };
  void run();
  void start();  // with the lock held
  // With the lock held and this thread the finisher: runs the Finishes that are next in line.
  void finishInOrder(std::unique_lock<std::mutex>& lock);

  mutable std::mutex mutex_;
  std::condition_variable has_work_;
  std::condition_variable has_room_;
  std::condition_variable idle_;
  std::vector<Slot> slots_;  // a ring: item n lives in slots_[n % size]
  std::uint64_t submitted_ = 0;   // items submitted
  std::uint64_t taken_ = 0;       // items whose Work a thread has taken
  std::uint64_t finished_ = 0;    // items whose Finish has returned: item finished_ is next in line
  bool finishing_ = false;        // a thread is running Finishes
  bool stopping_ = false;
  std::uint64_t failed_ = 0;
  std::size_t thread_count_;
  std::string name_;
  std::vector<std::thread> threads_;
};

}  // namespace countersign
