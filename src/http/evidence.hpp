// The evidence behind one held approval, for the reviewer console and
// GET /api/v1/approvals/{id}/evidence: why the policy holds it (each condition of the deciding
// rule and the value it saw), whether its snapshot is the one in force, and its audit timeline.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "countersign/config.hpp"
#include "countersign/control.hpp"
#include "countersign/result.hpp"
#include "countersign/services.hpp"
#include "countersign/store.hpp"

namespace countersign::http {

struct EvidenceSources {
  KvStore& store;
  const PolicyHolder& policy;
  const Config& config;
  // The approval's events (JSON bodies) in the order they happened; empty function: no audit.
  std::function<Result<std::vector<std::string>>(const std::string& id)> timeline;
};

// {"status":"ok","code":200,"approval_id","policy_snapshot_current","snapshot_current",
//  "explain":{"decision","rule","conditions":[{key,test,seen,holds}],"trace":[...]},
//  "timeline":[events],"timeline_error"?}; 404 when there is no such approval. Values of
// conditions that read a redacted payload field are shown as "[REDACTED]".
ControlReply evidenceReply(const EvidenceSources& sources, const std::string& id);

}  // namespace countersign::http
