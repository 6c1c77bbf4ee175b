#include "countersign/store_tags.hpp"

#include "countersign/services.hpp"

#include <atomic>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/params.h>

namespace countersign {
namespace {

constexpr std::string_view kTagVersion = "v1:";

// <length>:<bytes>, so that no two field lists give the same text.
void field(std::string& out, std::string_view value) {
  out += std::to_string(value.size());
  out += ':';
  out += value;
}

std::array<unsigned char, 32> hmacSha256(const unsigned char* key, std::size_t key_size, std::string_view text) {
  std::array<unsigned char, 32> out{};
  unsigned int size = 0;
  HMAC(EVP_sha256(), key, static_cast<int>(key_size), reinterpret_cast<const unsigned char*>(text.data()), text.size(),
       out.data(), &size);
  return out;
}

bool sameTag(const std::string& stored, const std::string& computed) {
  return stored.size() == computed.size() && CRYPTO_memcmp(stored.data(), computed.data(), stored.size()) == 0;
}

}  // namespace

// OpenSSL's one-shot HMAC() looks the algorithm up and sets the key again for every tag. The
// keyed context is made once; each thread works on a copy of its own (a copy only reads the
// original, so threads may copy it at the same time), which it starts again for each tag:
// EVP_MAC_init without a key keeps the key, where a fresh copy per tag cost a dozen allocations.
struct StoreTags::Keyed {
  EVP_MAC* mac = nullptr;
  EVP_MAC_CTX* context = nullptr;
  ~Keyed() {
    EVP_MAC_CTX_free(context);
    EVP_MAC_free(mac);
  }
};

StoreTags::~StoreTags() = default;

StoreTags::StoreTags(const nkeys::Seed& seed) {
  // HKDF-SHA256 (RFC 5869) for one 32-byte block: extract with a fixed salt, expand with the
  // purpose as info. A key of its own: the seed's signing key never meets HMAC.
  constexpr std::string_view salt = "countersign";
  const auto prk = hmacSha256(reinterpret_cast<const unsigned char*>(salt.data()), salt.size(),
                              std::string_view(reinterpret_cast<const char*>(seed.data()), seed.size()));
  key_ = hmacSha256(prk.data(), prk.size(), std::string_view("countersign store tags v1\x01"));
  auto keyed = std::make_unique<Keyed>();
  keyed->mac = EVP_MAC_fetch(nullptr, OSSL_MAC_NAME_HMAC, nullptr);
  if (keyed->mac != nullptr) keyed->context = EVP_MAC_CTX_new(keyed->mac);
  char digest[] = OSSL_DIGEST_NAME_SHA2_256;
  const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                               OSSL_PARAM_construct_end()};
  if (keyed->context != nullptr && EVP_MAC_init(keyed->context, key_.data(), key_.size(), params) == 1) {
    keyed_ = std::move(keyed);
  }
  static std::atomic<std::uint64_t> instances{0};
  instance_ = ++instances;
}

std::string StoreTags::mac(std::string_view text) const {
  static constexpr char kHex[] = "0123456789abcdef";
  struct ThreadCopy {
    std::uint64_t instance = 0;
    EVP_MAC_CTX* context = nullptr;
    ~ThreadCopy() { EVP_MAC_CTX_free(context); }
  };
  thread_local ThreadCopy mine;
  if (mine.instance != instance_) {
    EVP_MAC_CTX_free(mine.context);
    mine.context = keyed_ != nullptr ? EVP_MAC_CTX_dup(keyed_->context) : nullptr;
    mine.instance = instance_;
  }
  std::array<unsigned char, 32> digest{};
  std::size_t size = 0;
  if (mine.context == nullptr || EVP_MAC_init(mine.context, nullptr, 0, nullptr) != 1 ||
      EVP_MAC_update(mine.context, reinterpret_cast<const unsigned char*>(text.data()), text.size()) != 1 ||
      EVP_MAC_final(mine.context, digest.data(), &size, digest.size()) != 1 || size != digest.size()) {
    digest = hmacSha256(key_.data(), key_.size(), text);
  }
  std::string out(kTagVersion);
  for (const unsigned char byte : digest) {
    out += kHex[byte >> 4];
    out += kHex[byte & 15];
  }
  return out;
}

std::string StoreTags::recordTag(const ApprovalRecord& r) const {
  std::string text = "record";
  for (const std::string* value : {&r.id, &r.route, &r.subject, &r.target, &r.topic}) field(text, *value);
  field(text, std::to_string(r.headers.size()));
  for (const auto& [name, value] : r.headers) {
    field(text, name);
    field(text, value);
  }
  field(text, r.payload);
  field(text, r.payload_is_json ? "json" : "base64");
  for (const std::string* value : {&r.job_id, &r.job_hash, &r.created_at}) field(text, *value);
  return mac(text);
}

std::string StoreTags::decisionTag(std::string_view id, const DecisionRecord& d) const {
  std::string text = "decision";
  field(text, id);
  field(text, toString(d.decision));
  for (const std::string* value : {&d.by, &d.at, &d.reason, &d.policy_snapshot, &d.job_hash}) field(text, *value);
  if (!d.via.empty()) field(text, d.via);  // only when set: decisions without one keep their tags
  return mac(text);
}

std::string StoreTags::voteTag(std::string_view key, const VoteRecord& v) const {
  std::string text = "vote";
  field(text, key);
  for (const std::string* value : {&v.approver, &v.at, &v.via, &v.reason, &v.job_hash, &v.policy_snapshot, &v.key,
                                   &v.signature}) {
    field(text, *value);
  }
  return mac(text);
}

bool StoreTags::recordValid(const ApprovalRecord& record) const { return sameTag(record.tag, recordTag(record)); }

bool StoreTags::decisionValid(std::string_view id, const DecisionRecord& decision) const {
  return sameTag(decision.tag, decisionTag(id, decision));
}

bool StoreTags::voteValid(std::string_view key, const VoteRecord& vote) const {
  return sameTag(vote.tag, voteTag(key, vote));
}

Result<Adopted> adoptUntagged(KvStore& store, const StoreTags& tags, std::string_view now,
                              std::vector<std::string>* ids) {
  Adopted adopted;
  const auto missing = [&](std::string_view marker) -> Result<bool> {
    auto entry = store.get(marker);
    if (entry) return false;
    if (entry.error().code != Errc::not_found) return std::unexpected(entry.error());
    return true;
  };
  const auto records_open = missing(kTagsAdoptedKey);
  if (!records_open) return std::unexpected(records_open.error());
  const auto votes_open = missing(kVoteTagsAdoptedKey);
  if (!votes_open) return std::unexpected(votes_open.error());
  if (!*records_open && !*votes_open) return adopted;
  adopted.ran = true;
  auto keys = store.listKeys();
  if (!keys) return std::unexpected(keys.error());
  for (const auto& key : *keys) {
    const auto slash = key.find('/');
    if (*votes_open && slash != std::string::npos && std::string_view(key).substr(slash + 1).starts_with("vote/")) {
      auto entry = store.get(key);
      if (!entry) continue;
      auto vote = parseVoteRecord(entry->value);
      if (!vote || tags.voteValid(key, *vote)) continue;
      vote->tag = tags.voteTag(key, *vote);
      if (auto written = store.update(key, toJson(*vote), entry->revision); !written) {
        return std::unexpected(written.error());
      }
      ++adopted.votes;
      if (ids != nullptr) ids->push_back(key);
      continue;
    }
    if (!*records_open) continue;
    if (slash == std::string::npos) {
      bool tagged_now = false;
      auto updated = updateRecord(store, key, [&](ApprovalRecord& r) {
        if (tags.recordValid(r)) return false;
        r.tag = tags.recordTag(r);
        tagged_now = true;
        return true;
      });
      if (!updated && updated.error().code != Errc::parse_error && updated.error().code != Errc::not_found) {
        return std::unexpected(updated.error());
      }
      if (tagged_now) {
        ++adopted.records;
        if (ids != nullptr) ids->push_back(key);
      }
    } else if (std::string_view(key).substr(slash + 1) == "decision") {
      auto entry = store.get(key);
      if (!entry) continue;
      auto decision = parseDecisionRecord(entry->value);
      if (!decision || tags.decisionValid(std::string_view(key).substr(0, slash), *decision)) continue;
      decision->tag = tags.decisionTag(std::string_view(key).substr(0, slash), *decision);
      if (auto written = store.update(key, toJson(*decision), entry->revision); !written) {
        return std::unexpected(written.error());
      }
      ++adopted.decisions;
      if (ids != nullptr) ids->push_back(key);
    }
  }
  std::string marker = "{\"at\":\"";
  marker += now;
  marker += "\"}";
  for (const auto& [open, name] : {std::pair{*records_open, kTagsAdoptedKey}, std::pair{*votes_open, kVoteTagsAdoptedKey}}) {
    if (!open) continue;
    if (auto created = store.create(name, marker); !created && created.error().code != Errc::exists) {
      return std::unexpected(created.error());
    }
  }
  return adopted;
}

}  // namespace countersign
