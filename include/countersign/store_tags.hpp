// Tags on what decides a release in the bucket: the held record's job (what would be published,
// and where), the <id>/decision key and the votes that make a quorum. HMAC-SHA256 under a key derived with HKDF-SHA256 from
// countersign's own seed (receipts.seed_file): only countersign writes and checks them, so a
// MAC does what a signature would at a fraction of the cost (docs/security.md).
#pragma once

#include <array>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "countersign/nkeys.hpp"
#include "countersign/record.hpp"
#include "countersign/result.hpp"
#include "countersign/store.hpp"

namespace countersign {

class StoreTags {
 public:
  explicit StoreTags(const nkeys::Seed& seed);
  ~StoreTags();
  StoreTags(const StoreTags&) = delete;
  StoreTags& operator=(const StoreTags&) = delete;

  // "v1:" + 64 hex digits, over the record's id, route, subject, target, topic, headers,
  // payload (and its encoding), job id, job hash and created_at: the fields a release publishes
  // or that name the job. The record's other fields (state, votes, the views) may change later.
  std::string recordTag(const ApprovalRecord& record) const;
  // Over the approval id and every field of the decision.
  std::string decisionTag(std::string_view id, const DecisionRecord& decision) const;

  // Over the vote's key (<id>/vote/<binding>/<approver>) and every field of the vote.
  std::string voteTag(std::string_view key, const VoteRecord& vote) const;

  // Constant-time comparisons of the stored tag with the one computed now.
  bool recordValid(const ApprovalRecord& record) const;
  bool decisionValid(std::string_view id, const DecisionRecord& decision) const;
  bool voteValid(std::string_view key, const VoteRecord& vote) const;

 private:
  std::string mac(std::string_view text) const;
  std::array<unsigned char, 32> key_{};
  // HMAC-SHA256 already keyed with key_, copied once per thread (see store_tags.cpp); null when
  // OpenSSL could not make one, and then each tag is computed from the key.
  struct Keyed;
  std::unique_ptr<Keyed> keyed_;
  // Which StoreTags a thread's copy of the keyed context belongs to (never reused).
  std::uint64_t instance_ = 0;
};

// Created once the records and decisions held before tags existed have been tagged.
inline constexpr std::string_view kTagsAdoptedKey = "_countersign/tags_adopted";
// The same for vote keys, which were tagged later: a bucket adopted before has its own marker.
inline constexpr std::string_view kVoteTagsAdoptedKey = "_countersign/vote_tags_adopted";

struct Adopted {
  bool ran = false;  // false: adopted before (both marker keys exist), nothing looked at
  std::size_t records = 0;
  std::size_t decisions = 0;
  std::size_t votes = 0;
};

// The upgrade rule: at the first start of a countersign with tags on a bucket (no
// kTagsAdoptedKey yet), every record and decision without a valid tag is tagged as it stands
// (they were as trustworthy as the bucket before the upgrade); then kTagsAdoptedKey is created,
// and from then on one without a valid tag is refused. Vote keys follow the same rule under
// kVoteTagsAdoptedKey (a vote without a valid tag then counts toward no quorum). An operator deletes the key to adopt
// again (after a key change, or records held by replicas with other seed files). A crash
// half-way leaves no marker: the next start adopts the rest. `ids` gets the adopted keys.
Result<Adopted> adoptUntagged(KvStore& store, const StoreTags& tags, std::string_view now,
                              std::vector<std::string>* ids = nullptr);

}  // namespace countersign
