// Control requests (docs/protocol.md): approve, reject, get, list. Thread-safe; every
// decisive step is the create of a never-used key, so any number of replicas may answer.
#pragma once

#include <chrono>
#include <expected>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "countersign/approval_index.hpp"
#include "countersign/governance.hpp"
#include "countersign/releaser.hpp"
#include "countersign/services.hpp"

namespace countersign {

enum class ControlOp { approve, reject, get, list };
std::string_view toString(ControlOp op);
std::optional<ControlOp> parseControlOp(std::string_view text);

struct ControlReply {
  Outcome status = Outcome::ok;
  int code = 0;
  std::string body;    // the JSON reply
  std::string reason;  // for conflicts (409): snapshot_changed, job_changed, lock_busy, ...
  // Work that does not decide the answer (the record's view, the `released` event): run after
  // the reply has been sent. handle() runs it before it returns.
  std::function<void()> after;
};

// A control request, parsed once at the edge that received it (the NATS subjects parse the
// body with parseControlRequest; the REST API builds one from the path, the token and the body).
struct ControlRequest {
  ControlOp op = ControlOp::get;
  std::string id;  // as sent: an approval id or the job's own id
  std::string approver;
  std::string reason;
  std::optional<std::string> job_hash;         // what the reviewer saw
  std::optional<std::string> policy_snapshot;  // what the reviewer saw
  std::optional<RequestSignature> signature;
  bool authenticated = false;  // the edge proved `approver` itself (a REST token naming them)
  // list
  std::optional<ApprovalState> state;
  std::string topic;  // a subject pattern (`*`, `>`); empty: every topic
  int limit = 100;
  std::string after;
};

// Parses a control request body (JSON object). A malformed request is the 400 reply naming the
// field. A body with `signature` also yields the signed text (its RFC 8785 form without
// `signature`) and must carry action, id, approver, job_hash, policy_snapshot, at and key.
std::expected<ControlRequest, ControlReply> parseControlRequest(ControlOp op, std::string_view body);

class Control {
 public:
  Control(Services services, Releaser& releaser);

  // Decides a request and returns the reply (does not publish it), with every follow-up done.
  ControlReply handle(const ControlRequest& request);
  ControlReply handle(ControlOp op, std::string_view body);
  // Operator decision on an approved job whose release is not recorded (release_unknown, or a
  // 202): body {"id", "operator", "mode": "force" | "mark_released", "reason"?}. `force`
  // publishes again (same Nats-Msg-Id) whatever the duplicate window; `mark_released` records
  // the release without publishing. Subject <prefix>.control.release.
  ControlReply operatorRelease(std::string_view body);
  // `list` answers from `index` when it can (nullptr, or an index that cannot answer: every
  // record is read). The index must outlive this Control.
  void useIndex(ApprovalIndex* index) { index_ = index; }
  // Told of every record this Control re-bound to a new policy, with when it next needs the
  // replayer (its deadline or first escalation step still to come; nullopt: never): the new
  // rule's escalation steps may come sooner than what the process's replayer knew. Set before
  // the first request.
  using ReboundCallback =
      std::function<void(std::string_view id, std::optional<std::chrono::system_clock::time_point>)>;
  void onRebound(ReboundCallback callback) { on_rebound_ = std::move(callback); }

  // handle() plus publishing the reply (with Countersign-Status) when the reply subject is
  // allowed, before the follow-up work (ControlReply::after). A request without a reply subject
  // is still applied.
  ControlReply onRequest(ControlOp op, const Message& request);
  // Publishes `answer` on the request's reply subject when allowed.
  void answer(const Message& request, const ControlReply& answer);

 private:
  using Request = ControlRequest;
  ControlReply decideRequest(const ControlRequest& request);
  ControlReply decideRequest(ControlOp op, std::string_view body);
  ControlReply counted(ControlReply answer);
  ControlReply approve(const Request& request);
  // The vote path of a rule whose quorum is more than one approver.
  ControlReply vote(const ApprovalRecord& record, const KvEntry& entry, const Actor& actor,
                    const Request& request, std::chrono::steady_clock::time_point started);
  // The votes that count for `record` now (each allowed approver's key read directly; when
  // anyone may vote, the approval's vote keys with every write up to `through_revision`).
  Result<std::vector<std::string>> countVotes(const ApprovalRecord& record, std::uint64_t through_revision = 0);
  ControlReply release(const ApprovalRecord& record, const KvEntry& entry, const DecisionRecord& decision,
                       const ApprovalVote& vote, std::chrono::steady_clock::time_point started);
  ControlReply reject(const Request& request);
  ControlReply get(const Request& request);
  ControlReply list(const Request& request);
  ControlReply fromDecision(ControlOp op, const std::string& id, const DecisionRecord& decision);
  ControlReply expire(const ApprovalRecord& record);
  ControlReply snapshotChanged(const ApprovalRecord& record, const Policy& policy);
  ControlReply jobChanged(const ApprovalRecord& record, std::string_view detail);
  // The answer when <id>/decision exists already (or the store cannot tell); nullopt if undecided.
  std::optional<ControlReply> answerFromDecision(ControlOp op, const std::string& id);
  // Creates <id>/decision; on losing the race, answers from the winner's decision.
  std::optional<ControlReply> decide(ControlOp op, const std::string& id, DecisionRecord& decision);

  Services s_;
  Releaser& releaser_;
  ReplyGuard guard_;
  Governance governance_;
  ApprovalIndex* index_ = nullptr;
  ReboundCallback on_rebound_;
};

}  // namespace countersign
