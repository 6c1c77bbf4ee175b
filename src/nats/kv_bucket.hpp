// KvStore on a JetStream KV bucket (cnats kvStore). Thread-safe: cnats' kvStore is.
#pragma once

#include <nats/nats.h>

#include <chrono>
#include <memory>

#include "countersign/config.hpp"
#include "countersign/store.hpp"
#include "nats/connection.hpp"

namespace countersign::natsio {

class KvBucket : public KvStore {
 public:
  // Binds to config.bucket, or creates it (file storage, history 1, config.replicas replicas,
  // config.max_age as the age limit; 0 = none) when it does not exist. An existing bucket is
  // used as it is (its replicas and age limit are not changed). Errc::unavailable when
  // JetStream does not answer. The Connection must outlive the bucket.
  //
  // Every call fails at once with Errc::unavailable while the connection is down (instead of
  // being buffered by cnats and sent, maybe after the caller gave up, once it reconnects).
  // Errc::timeout (no answer within the JetStream context's 5 s) leaves the outcome unknown.
  static Result<std::unique_ptr<KvBucket>> open(Connection& connection, const StoreConfig& config);
  ~KvBucket() override;
  KvBucket(const KvBucket&) = delete;
  KvBucket& operator=(const KvBucket&) = delete;

  // Keys may use A-Z a-z 0-9 _ - / = \ and non-leading, non-trailing, non-repeated '.';
  // anything else is Errc::invalid_argument.
  //
  // Errc::exists when the key has a value. Note (DESIGN.md section 10): on a key that was
  // deleted or purged, cnats turns the create into an update, which is not a safe lock on
  // replicated buckets before nats-server 2.9.21; countersign never deletes keys.
  Result<std::uint64_t> create(std::string_view key, std::string_view value) override;
  // Errc::not_found for a key never written, deleted or purged.
  Result<KvEntry> get(std::string_view key) override;
  // Errc::wrong_revision when the key's last revision is not `expected_revision` (including a
  // key without value). expected_revision 0 is Errc::invalid_argument: cnats would turn it into
  // an unconditional put; use create().
  Result<std::uint64_t> update(std::string_view key, std::string_view value,
                               std::uint64_t expected_revision) override;
  // Keys that currently have a value; an empty bucket gives an empty list.
  Result<std::vector<std::string>> keys() override;

  const std::string& bucket() const { return bucket_; }

 private:
  KvBucket(Connection& connection, kvStore* kv, std::string bucket)
      : connection_(connection), kv_(kv), bucket_(std::move(bucket)) {}
  Status checkConnected(std::string_view what) const;
  Connection& connection_;
  kvStore* kv_;
  std::string bucket_;
};

}  // namespace countersign::natsio
