// Token buckets for throttle rules. One bucket per rule id (per rule id and key value when the
// rule has a `key`), kept across policy reloads; a bucket whose rule changed its rate or burst
// starts again full. Keyed buckets are capped in number, least recently used evicted first: an
// evicted key simply starts again with a full bucket.
#include <algorithm>
#include <cmath>
#include <list>
#include <unordered_map>

#include "countersign/json.hpp"
#include "countersign/policy.hpp"
#include "policy_conditions.hpp"

namespace countersign {

struct Throttler::Bucket {
  double tokens = 0;
  std::chrono::steady_clock::time_point last{};
  double rate = 0;
  double burst = 0;
};

struct Throttler::State {
  using Lru = std::list<std::pair<std::string, Bucket>>;  // front: most recently used

  std::mutex mutex;
  std::size_t max_keyed = 1;
  std::map<std::string, Bucket, std::less<>> per_rule;
  Lru lru;
  std::unordered_map<std::string, Lru::iterator> keyed;
};

namespace {

constexpr std::string_view kHeaderKeyPrefix = "header.";

// "<rule id>\0" then "\1<value>" for a key value, or "\0" for the shared "missing" bucket.
std::string keyedName(const Rule& rule, const JobView& job) {
  std::string name = rule.id;
  name += '\0';
  const std::string_view key = rule.throttle.key;
  if (key.starts_with(kHeaderKeyPrefix)) {
    if (const std::string* value = findHeader(job.headers(), key.substr(kHeaderKeyPrefix.size()))) {
      name += '\1';
      name += *value;
      return name;
    }
  } else {
    const Operand operand = resolveLabel(key, job);
    if (operand.state == Operand::State::text) {
      name += '\1';
      name += operand.text;
      return name;
    }
    if (operand.state == Operand::State::json) {
      name += '\1';
      if (operand.json->IsString()) {
        name.append(operand.json->GetString(), operand.json->GetStringLength());
      } else {
        name += json::canonicalize(*operand.json);
      }
      return name;
    }
  }
  name += '\0';
  return name;
}

Throttler::Admission take(auto& bucket, const ThrottleSpec& spec,
                          std::chrono::steady_clock::time_point now, bool fresh) {
  if (fresh || bucket.rate != spec.rate_per_second || bucket.burst != spec.burst) {
    bucket.tokens = spec.burst;
    bucket.last = now;
    bucket.rate = spec.rate_per_second;
    bucket.burst = spec.burst;
  }
  if (now > bucket.last) {
    const double elapsed = std::chrono::duration<double>(now - bucket.last).count();
    bucket.tokens = std::min(bucket.burst, bucket.tokens + elapsed * bucket.rate);
    bucket.last = now;
  }
  if (bucket.tokens >= 1.0) {
    bucket.tokens -= 1.0;
    return {};
  }
  const double wait_ms = std::ceil((1.0 - bucket.tokens) / bucket.rate * 1000.0);
  const auto retry = std::chrono::milliseconds(static_cast<std::int64_t>(std::max(1.0, wait_ms)));
  return Throttler::Admission{false, retry};
}

}  // namespace

Throttler::Throttler(std::size_t max_keyed_buckets) : state_(std::make_shared<State>()) {
  state_->max_keyed = std::max<std::size_t>(1, max_keyed_buckets);
}

Throttler::Admission Throttler::admit(const Rule& rule, const JobView& job,
                                      std::chrono::steady_clock::time_point now) {
  // A rule without a rate is not a throttle rule: nothing to limit.
  if (!(rule.throttle.rate_per_second > 0)) return {};
  State& state = *state_;
  if (rule.throttle.key.empty()) {
    const std::lock_guard lock(state.mutex);
    auto it = state.per_rule.find(rule.id);
    const bool fresh = it == state.per_rule.end();
    if (fresh) it = state.per_rule.emplace(rule.id, Bucket{}).first;
    return take(it->second, rule.throttle, now, fresh);
  }
  std::string name = keyedName(rule, job);  // built outside the lock
  const std::lock_guard lock(state.mutex);
  if (const auto found = state.keyed.find(name); found != state.keyed.end()) {
    state.lru.splice(state.lru.begin(), state.lru, found->second);
    return take(found->second->second, rule.throttle, now, false);
  }
  if (state.keyed.size() >= state.max_keyed) {
    state.keyed.erase(state.lru.back().first);
    state.lru.pop_back();
  }
  state.lru.emplace_front(name, Bucket{});
  state.keyed.emplace(std::move(name), state.lru.begin());
  return take(state.lru.front().second, rule.throttle, now, true);
}

}  // namespace countersign
