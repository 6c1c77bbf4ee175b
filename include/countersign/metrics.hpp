// Prometheus metrics of one countersign process. Thread-safe and cheap on the hot path:
// counters are atomics found under a shared lock; new label sets take the exclusive lock once.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

namespace countersign {

// A cumulative histogram with fixed upper bounds (seconds), Prometheus style.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double seconds);
  // Appends `<name>_bucket{le=...}`, `_sum` and `_count` lines.
  void render(std::string& out, std::string_view name) const;

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> counts_;  // one per bound, plus +Inf
  std::atomic<std::uint64_t> count_{0};
  std::atomic<double> sum_{0};
};

class Metrics {
 public:
  Metrics();

  // countersign_decisions_total{decision,rule}: every intake outcome (allowed, denied,
  // throttled, held, conflict, too_large, unavailable).
  void decision(std::string_view outcome, std::string_view rule);
  // countersign_approvals_total{result}: approved, already_approved, rejected,
  // already_rejected, snapshot_changed, job_changed, expired, not_found, bad_request, lock_busy,
  // already_approved_conflict ...
  void approval(std::string_view result);
  void replayed() { replayed_.fetch_add(1, std::memory_order_relaxed); }
  void releaseUnknown() { release_unknown_.fetch_add(1, std::memory_order_relaxed); }
  void released() { released_.fetch_add(1, std::memory_order_relaxed); }
  // A release refused because the record's or the decision's tag is missing or wrong.
  void releaseRefused() { release_refused_.fetch_add(1, std::memory_order_relaxed); }
  std::uint64_t releaseRefusedCount() const { return release_refused_.load(); }
  // A vote key that does not count: its tag is missing or wrong (written by hand in the bucket).
  void voteRefused() { vote_refused_.fetch_add(1, std::memory_order_relaxed); }
  std::uint64_t voteRefusedCount() const { return vote_refused_.load(); }
  void policyReload(bool ok) { (ok ? reloads_ok_ : reloads_failed_).fetch_add(1, std::memory_order_relaxed); }
  void setPending(std::int64_t n) { pending_.store(n, std::memory_order_relaxed); }
  // A replayer scan finished (successful or not) after `seconds`.
  void replayScan(double seconds) {
    replay_scans_.fetch_add(1, std::memory_order_relaxed);
    const std::lock_guard lock(scan_mutex_);
    replay_scan_seconds_ += seconds;
  }
  void setPolicyLoaded(bool loaded) { policy_loaded_.store(loaded, std::memory_order_relaxed); }
  void observeEvaluation(std::chrono::nanoseconds d);
  void observeApproveToRelease(std::chrono::nanoseconds d);

  std::uint64_t decisionCount(std::string_view outcome, std::string_view rule) const;
  std::uint64_t approvalCount(std::string_view result) const;
  std::uint64_t replayedCount() const { return replayed_.load(); }

  // Prometheus text exposition format 0.0.4.
  std::string renderPrometheus() const;

 private:
  using Counters = std::map<std::string, std::unique_ptr<std::atomic<std::uint64_t>>, std::less<>>;
  static void bump(std::shared_mutex& mutex, Counters& counters, std::string_view key);
  static std::uint64_t read(std::shared_mutex& mutex, const Counters& counters, std::string_view key);

  mutable std::shared_mutex decisions_mutex_;
  Counters decisions_;  // key: decision '\x1f' rule
  mutable std::shared_mutex approvals_mutex_;
  Counters approvals_;
  std::atomic<std::uint64_t> replayed_{0};
  std::atomic<std::uint64_t> release_unknown_{0};
  std::atomic<std::uint64_t> released_{0};
  std::atomic<std::uint64_t> release_refused_{0};
  std::atomic<std::uint64_t> vote_refused_{0};
  std::atomic<std::uint64_t> reloads_ok_{0};
  std::atomic<std::uint64_t> reloads_failed_{0};
  std::atomic<std::int64_t> pending_{0};
  std::atomic<std::uint64_t> replay_scans_{0};
  mutable std::mutex scan_mutex_;
  double replay_scan_seconds_ = 0;  // guarded by scan_mutex_
  std::atomic<bool> policy_loaded_{false};
  Histogram evaluation_;
  Histogram approve_to_release_;
};

}  // namespace countersign
