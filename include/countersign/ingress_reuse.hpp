// Sequences an ingress stream used twice (JetStream intake, docs/protocol.md "Forward ids").
//
// A job forwarded from an ingress stream carries Nats-Msg-Id countersign-in:<stream>:<sequence>,
// so that a redelivery is dropped by the target stream as a duplicate. After a crash, a file-store
// stream can come back with a lower last sequence and give new jobs sequences that were already
// forwarded: under the same id they would be dropped as duplicates and lost. An ingress that finds
// such a regression records it here, in the store, before it takes any of the new jobs; a job whose
// sequence and store time fall under a recorded regression is forwarded as
// countersign-in:<stream>:<sequence>:<epoch> instead, so it is new to the target stream while its
// own redeliveries still share one id.
//
// The record is one key per stream, `_countersign/ingress_reuse/<stream>`, a JSON object written
// with revision checks: replicas append to it and never overwrite each other, and every replica
// finds the same epoch for the same message.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "countersign/result.hpp"
#include "countersign/store.hpp"

namespace countersign {

// One regression of an ingress stream: messages with a sequence <= up_to stored after after_ns
// may reuse a sequence already forwarded; they are forwarded under this epoch.
struct StreamRegression {
  std::uint64_t epoch = 0;        // 1, 2, ... in the order they were recorded
  std::uint64_t up_to = 0;        // highest sequence that may have been forwarded before it
  std::int64_t after_ns = 0;      // messages stored after this (ns since the Unix epoch) are new:
                                  // the newest one any replica handled before the crash
  std::string server;             // the server instance it was found on (one record per instance)
  std::string found_at;           // RFC 3339, for people
};

// The Nats-Msg-Id of a forward: countersign-in:<stream>:<sequence>, with :<epoch> when epoch > 0.
std::string ingressForwardId(std::string_view stream, std::uint64_t sequence, std::uint64_t epoch);

// The store key of a stream's regressions. Bytes a key cannot hold are written as =XX.
std::string ingressReuseKey(std::string_view stream);

// The epoch a message gets: the latest regression with sequence <= up_to and stored_ns > after_ns;
// 0 (the plain id) when none.
std::uint64_t epochFor(const std::vector<StreamRegression>& regressions, std::uint64_t sequence,
                       std::int64_t stored_ns);

// A recorded regression that already accounts for a message handled before a crash (sequence <=
// up_to, stored no later than after_ns): a replica that finds such a message replaced later,
// perhaps only after a further restart, has nothing new to record. nullptr when none does, and
// for stored_ns 0 (nothing handled).
const StreamRegression* regressionCovering(const std::vector<StreamRegression>& regressions, std::uint64_t sequence,
                                           std::int64_t stored_ns);

// The stored form, and back. Errc::parse_error for a value that is not one.
std::string toJson(std::string_view stream, const std::vector<StreamRegression>& regressions);
Result<std::vector<StreamRegression>> regressionsFromJson(std::string_view text);

// A stream's regressions as known to one ingress. Thread-safe.
class IngressReuse {
 public:
  IngressReuse(KvStore& store, std::string stream) : store_(store), stream_(std::move(stream)) {}

  const std::string& stream() const { return stream_; }

  // Reads the record again. On failure the regressions known so far are kept.
  Status load();

  // Records a regression found on `server` (appended as the next epoch), or, when one was
  // already recorded for that server, raises its up_to and after_ns to at least these (never
  // lowers them: every replica adds what it handled before the crash). Returns what the record
  // now says. Retries lost revision races.
  Result<StreamRegression> record(std::string_view server, std::uint64_t up_to, std::int64_t after_ns,
                                  std::string_view found_at);

  std::uint64_t epoch(std::uint64_t sequence, std::int64_t stored_ns) const;
  // After the target stream said "duplicate": load() and then epoch(). A load that fails gives
  // the epoch known before it.
  std::uint64_t reloadedEpoch(std::uint64_t sequence, std::int64_t stored_ns);

  std::vector<StreamRegression> regressions() const;

 private:
  KvStore& store_;
  const std::string stream_;
  mutable std::mutex mutex_;
  std::vector<StreamRegression> regressions_;
};

}  // namespace countersign
