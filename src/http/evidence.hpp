// The evidence behind one held approval, for the reviewer console and
// GET /api/v1/approvals/{id}/evidence: why the policy holds it (each condition of the deciding
// rule and the value it saw), whether its snapshot is the one in force, and its audit timeline.
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "countersign/config.hpp"
#include "countersign/control.hpp"
#include "countersign/events.hpp"
#include "countersign/result.hpp"
#include "countersign/services.hpp"
#include "countersign/store.hpp"

namespace countersign::http {

// The policies this process had in force before the current one (the last kKept), so that a job
// held under one of them is explained under the policy that held it. Thread-safe.
class PolicyHistory {
 public:
  static constexpr std::size_t kKept = 16;
  // Call with the policy being replaced, before the replacement.
  void remember(std::shared_ptr<const Policy> replaced);
  // The remembered policy with this snapshot; nullptr when none.
  std::shared_ptr<const Policy> find(std::string_view snapshot) const;

 private:
  mutable std::mutex mutex_;
  std::deque<std::shared_ptr<const Policy>> policies_;
};

struct EvidenceSources {
  KvStore& store;
  const PolicyHolder& policy;
  const Config& config;
  const PolicyHistory* earlier = nullptr;  // policies replaced by reloads; nullptr: none kept
  // The approval's events in the order they happened, each with its signature check; empty
  // function: no audit.
  std::function<Result<std::vector<CheckedEvent>>(const std::string& id)> timeline;
};

// {"status":"ok","code":200,"approval_id","policy_snapshot_held","policy_snapshot_current",
//  "snapshot_current",
//  "explain"?:{"decision","rule","conditions":[{key,test,seen,holds}],"trace":[...]},
//  "explain_unavailable"?, "explain_current"?: {same shape},
//  "timeline":[events, each with "signature_check"],"timeline_error"?}; 404 when there is no
//  such approval.
// `explain` is why the job was held: under the snapshot it was held under (the policy in force,
// or one this process replaced). When that policy is not known here any more, `explain` is
// absent and `explain_unavailable` says why. When the policy changed since the hold,
// `explain_current` is what the policy in force now decides for the same job. Values of
// conditions that read a redacted payload field are shown as "[REDACTED]". Each timeline event
// carries "signature_check" (verified, unsigned, unknown_key, bad_signature, not_checked): only
// "verified" ones were made by this countersign (or a key configured as audit.public_key).
ControlReply evidenceReply(const EvidenceSources& sources, const std::string& id);

}  // namespace countersign::http
