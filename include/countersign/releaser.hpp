// Release (docs/exactly-once.md): publishes an approved job with its dedup id and approval
// headers, then records <id>/released and moves the record's view to `released`.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "countersign/events.hpp"
#include "countersign/record.hpp"
#include "countersign/services.hpp"

namespace countersign {

struct ReleaseOutcome {
  bool published = false;  // the server confirmed (PubAck, or flush for core routes)
  std::string msg_id;      // countersign:<approval id>
  PublishAck ack;
  std::optional<Error> error;
};

// Thread-safe. The caller must hold the decision: an approved <id>/decision it created, or a
// replay claim <id>/replay/<n>. Publishing twice is harmless for to_stream routes within the
// stream's duplicate window (same Nats-Msg-Id); the callers make sure it does not happen.
class Releaser {
 public:
  explicit Releaser(Services services) : s_(services) {}
  // `by`: "approve" or "replay" (recorded in <id>/released).
  // `vote`: the approval that decided it, folded into the record's view in the same write
  // (one compare-and-swap instead of two on the approve path). `entry`: the record's KV entry
  // as the caller read it (`record` is parsed from it), so that the view's update is written on
  // its revision without reading or parsing it again. `tail`: when
  // given and the publish was confirmed, the create of <id>/released, the view's update and the
  // `released` event are not done here but handed back to run later (after answering).
  ReleaseOutcome release(const ApprovalRecord& record, const DecisionRecord& decision,
                         std::string_view by, const ApprovalVote* vote = nullptr,
                         const KvEntry* entry = nullptr, std::function<void()>* tail = nullptr);
  // The message a release publishes (headers included), for tests and `show`.
  static Headers releaseHeaders(const ApprovalRecord& record, const DecisionRecord& decision);

 private:
  Services s_;
};

}  // namespace countersign
