// CPU of one steady replayer scan over a bucket of N pending approvals (each with a deadline an
// hour away, a tenth with a Slack key as the bridge writes them), nothing due, nothing decided:
// what an idle gateway pays every release.replay_interval. "full" is a store that can only
// visit every key (what every scan cost before incremental scans, and what a full scan still
// costs); "incremental" is a store with a key index like KvBucket's (KvStore::visitBusyKeys).
// The store reads nothing (a scan that reads a record fails the benchmark).
#include <benchmark/benchmark.h>

#include <cstdio>
#include <memory>
#include <string>

#include "countersign/events.hpp"
#include "countersign/log.hpp"
#include "countersign/metrics.hpp"
#include "countersign/policy.hpp"
#include "countersign/publisher.hpp"
#include "countersign/releaser.hpp"
#include "countersign/replayer.hpp"
#include "countersign/store.hpp"

namespace {

using namespace countersign;

// The bucket's keys in a KeyGroups index, as KvBucket keeps them; no values.
class IndexOnlyStore final : public KvStore {
 public:
  explicit IndexOnlyStore(bool incremental) : incremental_(incremental) {}
  void add(std::string_view key) {
    const auto [group, rest] = KeyGroups::split(key);
    groups_.add(group, rest);
  }
  Result<std::uint64_t> create(std::string_view key, std::string_view) override {
    add(key);
    return ++sequence_;
  }
  Result<KvEntry> get(std::string_view key) override {
    ++reads;
    return fail(Errc::not_found, "no values here: " + std::string(key));
  }
  Result<std::uint64_t> update(std::string_view, std::string_view, std::uint64_t) override {
    return fail(Errc::unavailable, "no updates here");
  }
  Result<std::vector<std::string>> keys() override { return groups_.keys(); }
  Status visitKeys(const KeyVisitor& visit) override {
    groups_.forEach(visit);
    return {};
  }
  Result<BusyVisit> visitBusyKeys(const KeyVisitor& visit, bool all) override {
    if (!incremental_) return KvStore::visitBusyKeys(visit, all);
    return visitBusyGroups(groups_, visit, all);
  }
  std::size_t reads = 0;

 private:
  bool incremental_;
  KeyGroups groups_;
  std::uint64_t sequence_ = 0;
};

class NullPublisher final : public Publisher {
 public:
  Result<PublishAck> publish(const OutMessage&, Delivery, std::chrono::milliseconds) override { return PublishAck{}; }
  std::size_t maxPayload() const override { return 1024 * 1024; }
};

class NoIds final : public IdSource {
 public:
  std::string newId() override { return "id"; }
};

// One bucket and its replayer after the first (full) scan.
struct Rig {
  Rig(std::size_t pending, bool incremental)
      : store(incremental),
        policy(*Policy::parse("version: v1\nrules:\n  - id: hold\n    when: { topic: a.b }\n    decision: require_human\n")),
        events(publisher, clock, log, EventOptions{}),
        services{config, store, publisher, clock, ids, policy, throttler, events, log, metrics},
        releaser(services),
        replayer(services, releaser, ReplayerOptions{}) {
    const auto deadline = clock.now() + std::chrono::hours(1);
    char id[33];
    for (std::size_t i = 0; i < pending; ++i) {
      std::snprintf(id, sizeof id, "%032zx", static_cast<std::size_t>(i * 0x9e3779b97f4a7c15ULL));
      store.add(id);
      if (i % 10 == 0) store.add(std::string(id) + "/slack/C0123456789");
      replayer.noteHeld(id, deadline);
    }
    (void)replayer.scan();
  }
  Config config;
  IndexOnlyStore store;
  NullPublisher publisher;
  SystemClock clock;
  NoIds ids;
  PolicyHolder policy;
  Throttler throttler;
  NullLogger log;
  Metrics metrics;
  EventSink events;
  Services services;
  Releaser releaser;
  Replayer replayer;
};

void steadyScan(benchmark::State& state, bool incremental) {
  const auto pending = static_cast<std::size_t>(state.range(0));
  // One rig alive at a time: a million pending approvals hold about 100 MB.
  static std::unique_ptr<Rig> rig;
  static std::pair<std::size_t, bool> built{0, false};
  if (rig == nullptr || built != std::pair(pending, incremental)) {
    rig.reset();
    rig = std::make_unique<Rig>(pending, incremental);
    built = {pending, incremental};
  }
  for (auto _ : state) {
    auto result = rig->replayer.scan();
    if (!result || static_cast<std::size_t>(result->pending) != pending) state.SkipWithError("wrong scan");
    benchmark::DoNotOptimize(result);
  }
  if (rig->store.reads != 0) state.SkipWithError("a steady scan read records");
  state.counters["pending"] = static_cast<double>(pending);
}

void BM_ReplayerSteadyScanFull(benchmark::State& state) { steadyScan(state, false); }
void BM_ReplayerSteadyScanIncremental(benchmark::State& state) { steadyScan(state, true); }

BENCHMARK(BM_ReplayerSteadyScanFull)->Arg(100000)->Arg(1000000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ReplayerSteadyScanIncremental)->Arg(100000)->Arg(1000000)->Unit(benchmark::kMicrosecond);

}  // namespace
