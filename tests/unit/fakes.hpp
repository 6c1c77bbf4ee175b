// In-memory fakes of the core's interfaces, for unit tests of the pure logic only.
#pragma once

#include <atomic>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "countersign/clock.hpp"
#include "countersign/publisher.hpp"
#include "countersign/store.hpp"

namespace countersign::fakes {

// A KV bucket with per-key revisions, like JetStream's (one global sequence). Failure
// injection: `fail_next` makes the next call of any kind fail with the given code.
class MemoryKv final : public KvStore {
 public:
  Result<std::uint64_t> create(std::string_view key, std::string_view value) override {
    const std::lock_guard lock(mutex_);
    ++creates;
    if (auto e = injected()) return std::unexpected(*e);
    if (!fail_create_suffix.empty() && key.ends_with(fail_create_suffix)) {
      return fail(Errc::timeout, "injected timeout");
    }
    if (data_.contains(std::string(key))) return fail(Errc::exists, "key exists");
    write(std::string(key), std::string(value));
    return sequence_;
  }
  Result<KvEntry> get(std::string_view key) override {
    const std::lock_guard lock(mutex_);
    ++gets;
    if (auto e = injected()) return std::unexpected(*e);
    if (!fail_get_suffix.empty() && key.ends_with(fail_get_suffix)) return fail(Errc::timeout, "injected timeout");
    const auto it = data_.find(std::string(key));
    if (it == data_.end()) return fail(Errc::not_found, "no such key");
    return it->second;
  }
  Result<std::uint64_t> update(std::string_view key, std::string_view value,
                               std::uint64_t expected) override {
    const std::lock_guard lock(mutex_);
    ++updates;
    if (auto e = injected()) return std::unexpected(*e);
    const auto it = data_.find(std::string(key));
    const std::uint64_t current = it == data_.end() ? 0 : it->second.revision;
    if (current != expected) return fail(Errc::wrong_revision, "wrong last sequence");
    write(std::string(key), std::string(value));
    return sequence_;
  }
  Result<std::vector<std::string>> keys() override {
    const std::lock_guard lock(mutex_);
    ++listings;
    if (auto e = injected()) return std::unexpected(*e);
    std::vector<std::string> out;
    for (const auto& [k, v] : data_) out.push_back(k);
    return out;
  }

  // The group's keys from the ordered map (no listing: `listings` tells a path that lists).
  // Every write is in at once, so `through_revision` needs no wait; the last one asked for is
  // recorded for tests.
  Result<std::vector<std::string>> groupKeys(std::string_view group, std::uint64_t through_revision = 0) override {
    const std::lock_guard lock(mutex_);
    group_keys_through = through_revision;
    if (auto e = injected()) return std::unexpected(*e);
    std::vector<std::string> out;
    for (auto it = data_.lower_bound(std::string(group)); it != data_.end() && it->first.starts_with(group); ++it) {
      if (it->first.size() == group.size() || it->first[group.size()] == '/') out.push_back(it->first);
    }
    return out;
  }

  // Every key, handed over as visitKeys does (from the index with index_keys).
  Status visitKeys(const KeyVisitor& visit) override {
    const std::lock_guard lock(mutex_);
    ++listings;
    if (auto e = injected()) return std::unexpected(*e);
    if (index_keys) {
      groups_.forEach(counted(visit));
    } else {
      for (const auto& [k, v] : data_) {
        const auto [group, rest] = KeyGroups::split(k);
        counted(visit)(group, rest);
      }
    }
    return {};
  }
  // With index_keys, as KvBucket's key index answers it; else every key (the default).
  Result<BusyVisit> visitBusyKeys(const KeyVisitor& visit, bool all) override {
    if (!index_keys) return KvStore::visitBusyKeys(visit, all);
    const std::lock_guard lock(mutex_);
    ++busy_visits;
    if (auto e = injected()) return std::unexpected(*e);
    auto out = visitBusyGroups(groups_, counted(visit), all);
    if (out.all) ++listings;
    return out;
  }

  // Listing is unchanged by it (a store may keep listing retired groups), but for the index
  // (index_keys), which forgets the group and indexes none of its keys from then on; recorded
  // for tests.
  void retire(std::string_view group) override {
    const std::lock_guard lock(mutex_);
    retired_.emplace_back(group);
    if (index_keys) {
      groups_.eraseGroup(group);
      retired_groups_.emplace(group);
    }
  }
  std::vector<std::string> retired() const {
    const std::lock_guard lock(mutex_);
    return retired_;
  }

  // Test access, bypassing failure injection.
  std::optional<std::string> value(const std::string& key) const {
    const std::lock_guard lock(mutex_);
    const auto it = data_.find(key);
    if (it == data_.end()) return std::nullopt;
    return it->second.value;
  }
  void put(const std::string& key, const std::string& value) {
    const std::lock_guard lock(mutex_);
    write(key, value);
  }
  // A delete (or an age limit) took the key away.
  void remove(const std::string& key) {
    const std::lock_guard lock(mutex_);
    if (data_.erase(key) == 0) return;
    const auto [group, rest] = KeyGroups::split(key);
    groups_.erase(group, rest);
  }
  std::size_t size() const {
    const std::lock_guard lock(mutex_);
    return data_.size();
  }
  std::string fail_create_suffix;  // creates of keys ending with this time out
  // Calls made (failed ones included), for tests of how many round trips a path takes.
  std::atomic<int> gets{0};
  // Reads of keys that end with it time out (empty: none).
  std::string fail_get_suffix;
  std::atomic<int> creates{0};
  std::atomic<int> updates{0};
  std::atomic<int> listings{0};  // keys() and what lists through it (listKeys, groupKeys, visits of all)
  std::atomic<std::uint64_t> group_keys_through{0};  // the last groupKeys call's through_revision
  // Like KvBucket: an index of the keys (KeyGroups) answers visitKeys and visitBusyKeys, and
  // forgets retired groups. Set it before the first write.
  bool index_keys = false;
  std::atomic<int> visited{0};      // keys handed to visitors
  std::atomic<int> busy_visits{0};  // visitBusyKeys calls with index_keys

  void failNext(Errc code, int calls = 1) {
    const std::lock_guard lock(mutex_);
    fail_code_ = code;
    fail_calls_ = calls;
  }

 private:
  std::optional<Error> injected() {
    if (fail_calls_ <= 0) return std::nullopt;
    --fail_calls_;
    return Error{fail_code_, "injected failure"};
  }
  // With mutex_ held.
  void write(const std::string& key, std::string value) {
    const bool added = !data_.contains(key);
    data_[key] = KvEntry{std::move(value), ++sequence_};
    const auto [group, rest] = KeyGroups::split(key);
    if (added && index_keys && !retired_groups_.contains(std::string(group))) groups_.add(group, rest);
  }
  KeyVisitor counted(const KeyVisitor& visit) {
    return [this, &visit](std::string_view group, std::string_view rest) {
      ++visited;
      visit(group, rest);
    };
  }
  mutable std::mutex mutex_;
  std::map<std::string, KvEntry> data_;
  KeyGroups groups_;  // index_keys
  std::set<std::string> retired_groups_;
  std::vector<std::string> retired_;
  std::uint64_t sequence_ = 0;
  Errc fail_code_ = Errc::unavailable;
  int fail_calls_ = 0;
};

struct Published {
  std::string subject;
  std::string reply;
  Headers headers;
  std::string payload;
  Delivery delivery = Delivery::core;
};

// Records every publish. `fail_deliveries` makes publishes of that kind fail.
class CapturingPublisher final : public Publisher {
 public:
  Result<PublishAck> publish(const OutMessage& m, Delivery delivery,
                             std::chrono::milliseconds) override {
    const std::lock_guard lock(mutex_);
    std::size_t size = m.payload.size();
    Headers headers = m.headers ? *m.headers : Headers{};
    if (m.more_headers) headers.insert(headers.end(), m.more_headers->begin(), m.more_headers->end());
    for (const auto& [k, v] : headers) size += k.size() + v.size() + 4;
    if (size > max_payload) return fail(Errc::too_large, "too large");
    if (fail_delivery && *fail_delivery == delivery) return fail(Errc::timeout, "injected timeout");
    if (dedup && delivery == Delivery::jetstream) {
      // Like a stream's duplicate window: an id seen before is acknowledged, not stored again.
      for (const auto& [k, v] : headers) {
        if (k == "Nats-Msg-Id" && !msg_ids_.insert(v).second) return PublishAck{.stream = "JOBS", .duplicate = true};
      }
    }
    messages_.push_back(Published{std::string(m.subject), std::string(m.reply), std::move(headers),
                                  std::string(m.payload), delivery});
    PublishAck ack;
    if (delivery == Delivery::jetstream) {
      ack.stream = "JOBS";
      ack.sequence = ++sequence_;
    }
    return ack;
  }
  std::size_t maxPayload() const override { return max_payload; }

  std::vector<Published> on(std::string_view prefix) const {
    const std::lock_guard lock(mutex_);
    std::vector<Published> out;
    for (const auto& m : messages_) {
      if (m.subject.starts_with(prefix)) out.push_back(m);
    }
    return out;
  }
  std::vector<Published> all() const {
    const std::lock_guard lock(mutex_);
    return messages_;
  }
  void clear() {
    const std::lock_guard lock(mutex_);
    messages_.clear();
  }

  std::size_t max_payload = 1024 * 1024;
  std::optional<Delivery> fail_delivery;
  bool dedup = false;  // JetStream publishes: a Nats-Msg-Id seen before is a duplicate

 private:
  mutable std::mutex mutex_;
  std::vector<Published> messages_;
  std::set<std::string> msg_ids_;
  std::uint64_t sequence_ = 0;
};

// A clock that only moves when told.
class ManualClock final : public Clock {
 public:
  std::chrono::system_clock::time_point now() const override {
    const std::lock_guard lock(mutex_);
    return wall_;
  }
  std::chrono::steady_clock::time_point steady() const override {
    const std::lock_guard lock(mutex_);
    return steady_;
  }
  void advance(std::chrono::milliseconds d) {
    const std::lock_guard lock(mutex_);
    wall_ += d;
    steady_ += d;
  }

 private:
  mutable std::mutex mutex_;
  std::chrono::system_clock::time_point wall_{std::chrono::seconds(1'790'000'000)};
  std::chrono::steady_clock::time_point steady_{std::chrono::seconds(1000)};
};

class SequentialIds final : public IdSource {
 public:
  std::string newId() override { return "gen-" + std::to_string(++next_); }

 private:
  std::atomic<int> next_{0};
};

}  // namespace countersign::fakes
