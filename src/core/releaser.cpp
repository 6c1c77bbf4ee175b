#include "countersign/releaser.hpp"

#include "countersign/faults.hpp"
#include "countersign/receipt.hpp"

namespace countersign {

Headers Releaser::releaseHeaders(const ApprovalRecord& record, const DecisionRecord& decision) {
  Headers headers = record.headers;
  headers.emplace_back("Nats-Msg-Id", "countersign:" + record.id);
  headers.emplace_back("Countersign-Decision", "require_human");
  headers.emplace_back("Countersign-Approval", "granted");
  headers.emplace_back("Countersign-Approval-Id", record.id);
  headers.emplace_back("Countersign-Approved-By", decision.by);
  headers.emplace_back("Countersign-Rule", record.rule);
  headers.emplace_back("Countersign-Policy-Snapshot", decision.policy_snapshot);
  headers.emplace_back("Countersign-Job-Hash", record.job_hash);
  return headers;
}

ReleaseOutcome Releaser::release(const ApprovalRecord& record, const DecisionRecord& decision,
                                 std::string_view by, const ApprovalVote* vote,
                                 const KvEntry* entry, std::function<void()>* tail) {
  ReleaseOutcome outcome;
  outcome.msg_id = "countersign:" + record.id;
  if (s_.tags != nullptr) {
    // What is published, and the decision that lets it out, must be countersign's own: a record
    // rewritten in the bucket (with a recomputed hash) or a <id>/decision written by hand carries
    // no valid tag.
    const std::string_view forged = !s_.tags->recordValid(record)                ? "record_tag"
                                    : !s_.tags->decisionValid(record.id, decision) ? "decision_tag"
                                                                                   : "";
    if (!forged.empty()) {
      s_.metrics.releaseRefused();
      s_.log.error("release refused: the stored record or decision was not written by countersign",
                   {{"approval_id", record.id}, {"reason", forged},
                    {"tag", forged == "record_tag" ? std::string_view(record.tag) : std::string_view(decision.tag)}});
      s_.events.emit(Event{.event = EventKind::release_refused, .approval_id = record.id, .job_id = record.job_id,
                           .topic = record.topic, .subject = record.subject, .rule = record.rule,
                           .job_hash = record.job_hash, .reason = forged});
      outcome.error = Error{Errc::invalid_argument, "release refused: " + std::string(forged) + " missing or wrong"};
      return outcome;
    }
  }
  const RouteConfig* route = routeFor(s_.config, record);
  const bool to_stream = route != nullptr && !route->to_stream.empty();
  Headers headers = releaseHeaders(record, decision);
  if (s_.receipts != nullptr) {
    // Deterministic (Ed25519, and the decision's own time): a replay carries the same receipt.
    receipt::addHeaders(headers, *s_.receipts,
                        receipt::Claims{.approval_id = record.id,
                                        .job_hash = record.job_hash,
                                        .policy_snapshot = decision.policy_snapshot,
                                        .rule = record.rule,
                                        .approvers = receipt::approversOf(decision.by),
                                        .decided_at = decision.at,
                                        .subject = record.subject,
                                        .target = record.target,
                                        .msg_id = outcome.msg_id});
  }
  OutMessage out{.subject = record.target, .reply = {}, .headers = &headers, .payload = record.payload};
  auto sent = s_.publisher.publish(out, to_stream ? Delivery::jetstream : Delivery::core_flush,
                                   s_.config.release.publish_timeout);
  if (!sent) {
    s_.log.error("release publish failed",
                 {{"approval_id", record.id}, {"target", record.target}, {"error", sent.error().message}});
    outcome.error = sent.error();
    return outcome;
  }
  outcome.published = true;
  outcome.ack = *sent;
  s_.metrics.released();
  if (to_stream && sent->stream != route->to_stream) {
    s_.log.warn("release stored by another stream than the route's to_stream",
                {{"approval_id", record.id}, {"stream", sent->stream}, {"to_stream", route->to_stream}});
  }
  crashPoint("after_publish_before_released");

  const std::string now = formatRfc3339(s_.clock.now());
  const ReleasedRecord released{.at = now, .msg_id = outcome.msg_id, .stream = sent->stream,
                                .sequence = sent->sequence, .by = std::string(by)};
  // Recording the release, the view and the event: now, or with `tail` by the caller once it
  // has answered (the job is out: the answer does not wait for the bookkeeping; a crash before
  // <id>/released leaves what a crash right after the publish always left, see
  // docs/exactly-once.md). The closure owns copies of what it needs.
  auto finish = [this, record, decision, now, released, msg_id = outcome.msg_id,
                 vote = vote != nullptr ? std::optional<ApprovalVote>(*vote) : std::nullopt,
                 entry = entry != nullptr ? std::optional<KvEntry>(*entry) : std::nullopt] {
    const auto change = [&](ApprovalRecord& r) {
      if (r.state == ApprovalState::released) return false;
      r.state = ApprovalState::released;
      r.released_at = now;
      r.release_msg_id = msg_id;
      if (r.decided_by.empty()) {
        r.decided_by = decision.by;
        r.decided_at = decision.at;
        r.reason = decision.reason;
      }
      if (vote) r.approvals.push_back(*vote);
      return true;
    };
    // <id>/released and the view's update (on the revision the approval read, when it still
    // stands) are independent writes: sent together, one wait for both.
    const std::string released_json = toJson(released);
    // `record` is what the caller parsed from `entry`: changed as updateRecord would change it.
    std::optional<ApprovalRecord> view;
    std::string view_json;
    const bool read_again = !entry;  // no revision to write on: updateRecord reads the record
    if (entry) {
      ApprovalRecord changed = record;
      if (change(changed)) {
        view = std::move(changed);
        view_json = toJson(*view);
      }
    }
    const std::string released_key = releasedKey(record.id);
    std::vector<KvStore::Write> writes{{.key = released_key, .value = released_json}};
    if (view) writes.push_back({.key = record.id, .value = view_json, .expected_revision = entry->revision});
    auto written = s_.store.writeMany(writes);
    auto& marked = written[0];
    if (!marked && marked.error().code != Errc::exists) {
      // The publish happened; the replayer may publish again with the same Nats-Msg-Id, which
      // the stream drops as a duplicate within its window.
      s_.log.error("release not recorded", {{"approval_id", record.id}, {"error", marked.error().message}});
    }
    Status viewed;
    if (read_again || (view && !written[1] && written[1].error().code == Errc::wrong_revision)) {
      // Not read, or moved on since: read it again.
      if (auto again = updateRecord(s_.store, record.id, change); !again) viewed = std::unexpected(again.error());
    } else if (view && !written[1]) {
      viewed = std::unexpected(written[1].error());
    }
    if (!viewed) {
      s_.log.warn("record view not updated", {{"approval_id", record.id}, {"error", viewed.error().message}});
    }
    s_.events.emit(Event{.event = EventKind::released, .approval_id = record.id, .job_id = record.job_id, .topic = record.topic,
                         .subject = record.subject, .rule = record.rule, .job_hash = record.job_hash,
                         .policy_snapshot = decision.policy_snapshot, .actor = decision.by});
  };
  if (tail != nullptr) {
    *tail = std::move(finish);
  } else {
    finish();
  }
  return outcome;
}

}  // namespace countersign
