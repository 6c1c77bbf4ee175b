#include "nats/kv_bucket.hpp"

#include <algorithm>
#include <limits>
#include <string>

namespace countersign::natsio {
namespace {

// A compare-and-swap that lost: the server answers "wrong last sequence: N" (JetStream error
// 10071) and cnats reports it as a generic NATS_ERR.
bool lostCompareAndSwap(natsStatus s) {
  return s == NATS_ERR && lastNatsErrorText().find("wrong last sequence") != std::string::npos;
}

// Generic errors from JetStream (storage full, not the leader, ...) are the environment's.
Error kvError(natsStatus s, std::string_view context) {
  Errc code = errcFor(s);
  if (code == Errc::internal) code = Errc::unavailable;
  return natsError(code, s, context);
}

Status checkValueSize(std::string_view value) {
  if (value.size() > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
    return fail(Errc::too_large, "value too large");
  }
  return {};
}

}  // namespace

Result<std::unique_ptr<KvBucket>> KvBucket::open(Connection& connection,
                                                 const StoreConfig& config) {
  kvStore* kv = nullptr;
  natsStatus s = js_KeyValue(&kv, connection.js(), config.bucket.c_str());
  if (s == NATS_NOT_FOUND) {
    kvConfig kv_config;
    kvConfig_Init(&kv_config);
    kv_config.Bucket = config.bucket.c_str();
    kv_config.History = 1;
    kv_config.StorageType = js_FileStorage;
    kv_config.Replicas = config.replicas;
    kv_config.TTL = std::chrono::duration_cast<std::chrono::nanoseconds>(config.max_age).count();
    s = js_CreateKeyValue(&kv, connection.js(), &kv_config);
    if (s != NATS_OK) {
      Error create_error = kvError(s, "cannot create KV bucket " + config.bucket);
      // Another process may have created it at the same time, with other settings.
      if (js_KeyValue(&kv, connection.js(), config.bucket.c_str()) != NATS_OK) {
        return std::unexpected(std::move(create_error));
      }
      s = NATS_OK;
    }
  }
  if (s != NATS_OK) {
    return std::unexpected(kvError(s, "cannot open KV bucket " + config.bucket));
  }
  return std::unique_ptr<KvBucket>(new KvBucket(connection, kv, config.bucket));
}

KvBucket::~KvBucket() {
  kvStore_Destroy(kv_);
}

Status KvBucket::checkConnected(std::string_view what) const {
  if (connection_.connected()) return {};
  return fail(Errc::unavailable, std::string(what) + ": not connected to NATS");
}

Result<std::uint64_t> KvBucket::create(std::string_view key, std::string_view value) {
  if (auto ok = checkValueSize(value); !ok) return std::unexpected(ok.error());
  std::string k(key);
  if (auto ok = checkConnected("KV create " + k); !ok) return std::unexpected(ok.error());
  std::uint64_t revision = 0;
  natsStatus s =
      kvStore_Create(&revision, kv_, k.c_str(), value.data(), static_cast<int>(value.size()));
  if (s == NATS_OK) return revision;
  if (lostCompareAndSwap(s)) return fail(Errc::exists, "key " + k + " exists");
  Error error = kvError(s, "KV create " + k);
  // On a replicated bucket cnats 3.4.1 checks a lost create with a direct get, which a lagging
  // replica may answer "not found", and then reports a bare error. Ask the stream leader.
  if (auto existing = get(key)) return fail(Errc::exists, "key " + k + " exists");
  return std::unexpected(std::move(error));
}

Result<KvEntry> KvBucket::get(std::string_view key) {
  std::string k(key);
  if (auto ok = checkConnected("KV get " + k); !ok) return std::unexpected(ok.error());
  // Read through the stream leader (STREAM.MSG.GET), not kvStore_Get: cnats 3.4.1 uses direct
  // gets on buckets that allow them, and on a replicated bucket a lagging replica answers those
  // (seen: 14-30 of 300 reads right after a create through another node missed the key). The
  // decisions read here must see every create that was confirmed.
  const std::string stream = "KV_" + bucket_;
  const std::string subject = "$KV." + bucket_ + "." + k;
  natsMsg* raw = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  natsStatus s = js_GetLastMsg(&raw, connection_.js(), stream.c_str(), subject.c_str(), nullptr, &code);
  std::unique_ptr<natsMsg, decltype(&natsMsg_Destroy)> msg(raw, &natsMsg_Destroy);
  if (s == NATS_NOT_FOUND) return fail(Errc::not_found, "key " + k + " not found");
  if (s != NATS_OK) return std::unexpected(kvError(s, "KV get " + k));
  const char* operation = nullptr;
  if (natsMsgHeader_Get(msg.get(), "KV-Operation", &operation) == NATS_OK && operation != nullptr &&
      (std::string_view(operation) == "DEL" || std::string_view(operation) == "PURGE")) {
    return fail(Errc::not_found, "key " + k + " deleted");
  }
  KvEntry out;
  const char* data = natsMsg_GetData(msg.get());
  const int length = natsMsg_GetDataLength(msg.get());
  if (data != nullptr && length > 0) out.value.assign(data, static_cast<std::size_t>(length));
  out.revision = natsMsg_GetSequence(msg.get());
  return out;
}

Result<std::uint64_t> KvBucket::update(std::string_view key, std::string_view value,
                                       std::uint64_t expected_revision) {
  std::string k(key);
  if (expected_revision == 0) {
    return fail(Errc::invalid_argument, "KV update " + k + ": expected revision 0 (use create)");
  }
  if (auto ok = checkValueSize(value); !ok) return std::unexpected(ok.error());
  if (auto ok = checkConnected("KV update " + k); !ok) return std::unexpected(ok.error());
  // cnats writes 0 here when the update fails: never hand that back as a revision.
  std::uint64_t revision = 0;
  natsStatus s = kvStore_Update(&revision, kv_, k.c_str(), value.data(),
                                static_cast<int>(value.size()), expected_revision);
  if (s == NATS_OK) return revision;
  if (lostCompareAndSwap(s)) {
    return fail(Errc::wrong_revision,
                "key " + k + " is no longer at revision " + std::to_string(expected_revision));
  }
  return std::unexpected(kvError(s, "KV update " + k));
}

Result<std::vector<std::string>> KvBucket::keys() {
  if (auto ok = checkConnected("KV keys of " + bucket_); !ok) return std::unexpected(ok.error());
  // No Timeout: with one set, cnats 3.4.1's kvStore_Keys gives up early on larger buckets
  // (nats-io/nats.c#916: failed from about 2,000 keys with 30 s); with none it listed 100k keys
  // in 1.1 s here.
  kvWatchOptions options;
  kvWatchOptions_Init(&options);
  kvKeysList list{};
  natsStatus s = kvStore_Keys(&list, kv_, &options);
  std::vector<std::string> out;
  if (s == NATS_OK) {
    out.reserve(static_cast<std::size_t>(list.Count));
    for (int i = 0; i < list.Count; ++i) out.emplace_back(list.Keys[i]);
  }
  kvKeysList_Destroy(&list);
  // Older cnats versions report an empty bucket as "not found".
  if (s == NATS_NOT_FOUND) return out;
  if (s != NATS_OK) return std::unexpected(kvError(s, "KV keys of " + bucket_));
  return out;
}

}  // namespace countersign::natsio
