#include "countersign/metrics.hpp"

#include <algorithm>
#include <array>
#include <cstdio>
#include <mutex>

namespace countersign {
namespace {

constexpr char kSep = '\x1f';

void appendNumber(std::string& out, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  out += buf;
}

// Label values escaped per the exposition format (backslash, quote, newline).
void appendLabel(std::string& out, std::string_view name, std::string_view value) {
  out += name;
  out += "=\"";
  for (const char c : value) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  out += '"';
}

void header(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

void simple(std::string& out, std::string_view name, std::string_view type, std::string_view help,
            double value) {
  header(out, name, type, help);
  out += name;
  out += ' ';
  appendNumber(out, value);
  out += '\n';
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(new std::atomic<std::uint64_t>[bounds_.size() + 1]) {
  for (std::size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0);
}

void Histogram::observe(double seconds) {
  std::size_t i = 0;
  while (i < bounds_.size() && seconds > bounds_[i]) ++i;
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  double sum = sum_.load(std::memory_order_relaxed);
  while (!sum_.compare_exchange_weak(sum, sum + seconds, std::memory_order_relaxed)) {
  }
}

void Histogram::render(std::string& out, std::string_view name) const {
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += counts_[i].load(std::memory_order_relaxed);
    out += name;
    out += "_bucket{le=\"";
    if (i == bounds_.size()) {
      out += "+Inf";
    } else {
      appendNumber(out, bounds_[i]);
    }
    out += "\"} ";
    out += std::to_string(cumulative);
    out += '\n';
  }
  out += name;
  out += "_sum ";
  appendNumber(out, sum_.load(std::memory_order_relaxed));
  out += '\n';
  out += name;
  out += "_count ";
  out += std::to_string(count_.load(std::memory_order_relaxed));
  out += '\n';
}

Metrics::Metrics()
    : evaluation_({1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 1e-4, 1e-3}),
      approve_to_release_({0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                           5, 10}) {}

void Metrics::bump(std::shared_mutex& mutex, Counters& counters, std::string_view key) {
  {
    const std::shared_lock lock(mutex);
    if (const auto it = counters.find(key); it != counters.end()) {
      it->second->fetch_add(1, std::memory_order_relaxed);
      return;
    }
  }
  const std::unique_lock lock(mutex);
  auto& slot = counters[std::string(key)];
  if (!slot) slot = std::make_unique<std::atomic<std::uint64_t>>(0);
  slot->fetch_add(1, std::memory_order_relaxed);
}

std::uint64_t Metrics::read(std::shared_mutex& mutex, const Counters& counters, std::string_view key) {
  const std::shared_lock lock(mutex);
  const auto it = counters.find(key);
  return it == counters.end() ? 0 : it->second->load();
}

void Metrics::decision(std::string_view outcome, std::string_view rule) {
  // Once per job: the key is put together on the stack when it fits (no allocation; the map is
  // searched by string_view and allocates only a key it has not seen).
  std::array<char, 128> buffer;
  const std::size_t size = outcome.size() + 1 + rule.size();
  if (size <= buffer.size()) {
    std::copy(outcome.begin(), outcome.end(), buffer.begin());
    buffer[outcome.size()] = kSep;
    std::copy(rule.begin(), rule.end(), buffer.begin() + static_cast<std::ptrdiff_t>(outcome.size() + 1));
    bump(decisions_mutex_, decisions_, std::string_view(buffer.data(), size));
    return;
  }
  std::string key;
  key.reserve(size);
  key += outcome;
  key += kSep;
  key += rule;
  bump(decisions_mutex_, decisions_, key);
}

void Metrics::approval(std::string_view result) { bump(approvals_mutex_, approvals_, result); }

std::uint64_t Metrics::decisionCount(std::string_view outcome, std::string_view rule) const {
  std::string key(outcome);
  key += kSep;
  key += rule;
  return read(decisions_mutex_, decisions_, key);
}

std::uint64_t Metrics::approvalCount(std::string_view result) const {
  return read(approvals_mutex_, approvals_, result);
}

void Metrics::observeEvaluation(std::chrono::nanoseconds d) {
  evaluation_.observe(std::chrono::duration<double>(d).count());
}

void Metrics::observeApproveToRelease(std::chrono::nanoseconds d) {
  approve_to_release_.observe(std::chrono::duration<double>(d).count());
}

std::string Metrics::renderPrometheus() const {
  std::string out;
  out.reserve(4096);
  header(out, "countersign_decisions_total", "counter", "Intake outcomes by decision and rule.");
  {
    const std::shared_lock lock(decisions_mutex_);
    for (const auto& [key, value] : decisions_) {
      const auto sep = key.find(kSep);
      out += "countersign_decisions_total{";
      appendLabel(out, "decision", std::string_view(key).substr(0, sep));
      out += ',';
      appendLabel(out, "rule", std::string_view(key).substr(sep + 1));
      out += "} ";
      out += std::to_string(value->load());
      out += '\n';
    }
  }
  header(out, "countersign_approvals_total", "counter", "Approve and reject requests by result.");
  {
    const std::shared_lock lock(approvals_mutex_);
    for (const auto& [key, value] : approvals_) {
      out += "countersign_approvals_total{";
      appendLabel(out, "result", key);
      out += "} ";
      out += std::to_string(value->load());
      out += '\n';
    }
  }
  simple(out, "countersign_released_total", "counter", "Approved jobs released (publish confirmed).",
         static_cast<double>(released_.load()));
  simple(out, "countersign_replayed_total", "counter",
         "Approved jobs released by the replayer after an interrupted release.",
         static_cast<double>(replayed_.load()));
  simple(out, "countersign_release_unknown_total", "counter",
         "Approved jobs whose release could not be confirmed within the duplicate window.",
         static_cast<double>(release_unknown_.load()));
  simple(out, "countersign_release_refused_total", "counter",
         "Releases refused because the held record or its decision carries no valid countersign tag.",
         static_cast<double>(release_refused_.load()));
  simple(out, "countersign_votes_refused_total", "counter",
         "Vote keys that count toward no quorum because they carry no valid countersign tag.",
         static_cast<double>(vote_refused_.load()));
  header(out, "countersign_policy_reloads_total", "counter", "Policy reloads by result.");
  out += "countersign_policy_reloads_total{result=\"ok\"} " + std::to_string(reloads_ok_.load()) + '\n';
  out += "countersign_policy_reloads_total{result=\"failed\"} " + std::to_string(reloads_failed_.load()) + '\n';
  simple(out, "countersign_pending_approvals", "gauge", "Held jobs waiting for a decision.",
         static_cast<double>(pending_.load()));
  simple(out, "countersign_replay_scans_total", "counter", "Replayer scans of the bucket (successful or not).",
         static_cast<double>(replay_scans_.load()));
  {
    const std::lock_guard lock(scan_mutex_);
    simple(out, "countersign_replay_scan_seconds_total", "counter", "Wall time spent in replayer scans.",
           replay_scan_seconds_);
  }
  simple(out, "countersign_policy_loaded", "gauge", "1 when a valid policy is in force.",
         policy_loaded_.load() ? 1 : 0);
  header(out, "countersign_policy_evaluation_seconds", "histogram", "Time to evaluate the policy for one job.");
  evaluation_.render(out, "countersign_policy_evaluation_seconds");
  header(out, "countersign_approve_to_release_seconds", "histogram",
         "Time from an approve request to the confirmed release.");
  approve_to_release_.render(out, "countersign_approve_to_release_seconds");
  return out;
}

}  // namespace countersign
