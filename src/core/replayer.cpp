#include "countersign/replayer.hpp"

#include <algorithm>
#include <unordered_set>

#include "countersign/governance.hpp"

namespace countersign {

Replayer::Replayer(Services services, Releaser& releaser, ReplayerOptions options)
    : s_(services), releaser_(releaser), options_(std::move(options)) {}

std::chrono::nanoseconds Replayer::duplicateWindow(const ApprovalRecord& record) const {
  const RouteConfig* route = routeFor(s_.config, record);
  if (route == nullptr || route->to_stream.empty()) return std::chrono::nanoseconds(0);
  const auto it = options_.duplicate_windows.find(route->to_stream);
  return it == options_.duplicate_windows.end() ? std::chrono::nanoseconds(0) : it->second;
}

namespace {

// When an undecided record next needs the replayer: its deadline or, sooner, its first
// escalation step still to come (nullopt: never).
std::optional<std::chrono::system_clock::time_point> attentionOf(const ApprovalRecord& record) {
  std::chrono::system_clock::time_point held_at{};
  (void)parseRfc3339(record.created_at, held_at);
  return nextAttention(record, held_at);
}

}  // namespace

std::int64_t Replayer::atNs(std::optional<std::chrono::system_clock::time_point> at) {
  if (!at) return kNever;
  return std::chrono::duration_cast<std::chrono::nanoseconds>(at->time_since_epoch()).count();
}

void Replayer::noteHeld(std::string_view id,
                        std::optional<std::chrono::system_clock::time_point> deadline) {
  const std::lock_guard lock(noted_mutex_);
  noted_.set(id, Deadline{.at_ns = atNs(deadline)});
}

void Replayer::noteRecord(std::string_view key, std::string_view value) {
  if (key.find('/') != std::string_view::npos) return;  // not a record
  auto record = parseApprovalRecord(value);
  if (!record || record->id != key) return;  // read by the scan, as any record it knows nothing of
  noteHeld(key, attentionOf(*record));
}

void Replayer::reschedule(std::string_view id, std::optional<std::chrono::system_clock::time_point> at) {
  const std::lock_guard lock(noted_mutex_);
  rescheduled_.set(id, Deadline{.at_ns = atNs(at)});
}

void Replayer::takeNoted() {
  IdMap<Deadline> noted;
  IdMap<Deadline> rescheduled;
  {
    const std::lock_guard lock(noted_mutex_);
    noted = std::move(noted_);
    rescheduled = std::move(rescheduled_);
  }
  // What deadlines_ knows stays (a scan may have moved a deadline on to an escalation step);
  // the larger map is kept, not copied (the store's first pass notes every record at once).
  const bool swapped = noted.size() > deadlines_.size();
  if (swapped) {
    std::swap(noted, deadlines_);
    soon_.clear();  // walked again when next asked
    horizon_ = std::numeric_limits<std::int64_t>::min();
  }
  noted.forEach([&](std::string_view id, const Deadline& known) {
    if (swapped) {
      deadlines_.set(id, known);
    } else if (deadlines_.insert(id, known)) {
      noteSoon(id, known.at_ns);
    }
  });
  // A record changed since its deadline was known: what it says now replaces it (an earlier
  // entry left in `soon_` is looked up, and skipped, when it comes due).
  rescheduled.forEach([&](std::string_view id, const Deadline& next) {
    const auto known = deadlines_.get(id);
    setDeadline(id, Deadline{.at_ns = next.at_ns, .seen = known ? known->seen : 0});
  });
}

void Replayer::setDeadline(std::string_view id, Deadline deadline) {
  deadlines_.set(id, deadline);
  noteSoon(id, deadline.at_ns);
}

void Replayer::noteSoon(std::string_view id, std::int64_t at_ns) {
  if (at_ns >= horizon_) return;  // kNever too
  soon_.emplace(at_ns, std::string(id));
  if (soon_.size() > kSoonMax) {
    // The latest goes; so does the horizon, to it (what is before it is all still here).
    const auto last = std::prev(soon_.end());
    horizon_ = last->first;
    soon_.erase(last);
  }
}

std::vector<std::string> Replayer::dueIds(std::int64_t now_ns) {
  std::vector<std::string> due;
  if (now_ns < horizon_) {
    while (!soon_.empty() && soon_.begin()->first <= now_ns) {
      auto node = soon_.extract(soon_.begin());
      std::string& id = node.value().second;
      if (const auto d = deadlines_.get(id); d && d->at_ns <= now_ns) due.push_back(std::move(id));
    }
    return due;
  }
  // Past the horizon: one walk over every deadline takes what is due and the next kSoon.
  soon_.clear();
  using Soon = std::pair<std::int64_t, std::string>;
  std::vector<Soon> earliest;  // a heap, the latest on top
  earliest.reserve(kSoon);
  deadlines_.forEach([&](std::string_view id, const Deadline& d) {
    if (d.at_ns == kNever) return;
    if (d.at_ns <= now_ns) {
      due.emplace_back(id);
    } else if (earliest.size() < kSoon) {
      earliest.emplace_back(d.at_ns, std::string(id));
      std::push_heap(earliest.begin(), earliest.end());
    } else if (d.at_ns < earliest.front().first) {
      std::pop_heap(earliest.begin(), earliest.end());
      earliest.back() = Soon(d.at_ns, std::string(id));
      std::push_heap(earliest.begin(), earliest.end());
    }
  });
  horizon_ = earliest.size() < kSoon ? kNever : earliest.front().first;
  for (auto& entry : earliest) soon_.insert(std::move(entry));
  return due;
}

// What a scan's visit found. The ids that need more than a mark (a deadline to read, a
// decision, a release, claims, votes: few) are copied into one buffer while the store's index
// is locked; the sets are views into it, made once the visit is over (so filled in place, never
// moved: a moved small buffer would leave the views behind).
struct Replayer::KeysAtWork {
  using Span = std::pair<std::size_t, std::size_t>;
  std::string arena;
  std::vector<Span> unknown_at, settled_at, decided_at, released_at, claim_at, voted_at;
  std::size_t record_keys = 0;

  std::vector<std::string_view> unknown_in_order, settled_seen;  // records in the visit's order
  std::unordered_set<std::string_view> unknown, decided, released, voted;
  std::unordered_map<std::string_view, int> claims;

  KeysAtWork() = default;
  KeysAtWork(const KeysAtWork&) = delete;
  KeysAtWork& operator=(const KeysAtWork&) = delete;

  void keep(std::string_view id, std::vector<Span>& into) {
    into.emplace_back(arena.size(), id.size());
    arena.append(id);
  }
  void makeSets() {
    const std::string_view all = arena;
    auto view = [&](const Span& at) { return all.substr(at.first, at.second); };
    for (const auto& at : unknown_at) unknown_in_order.push_back(view(at));
    unknown.insert(unknown_in_order.begin(), unknown_in_order.end());
    for (const auto& at : settled_at) settled_seen.push_back(view(at));
    for (const auto& at : decided_at) decided.insert(view(at));
    for (const auto& at : released_at) released.insert(view(at));
    for (const auto& at : claim_at) ++claims[view(at)];
    for (const auto& at : voted_at) voted.insert(view(at));
  }
};

Result<KvStore::BusyVisit> Replayer::visitKeys(bool want_all, KeysAtWork& keys) {
  // Every key in a full scan; else the approvals at work and the records new since the last
  // scan. A record whose deadline is known is marked, no more.
  bool first_visit = true;
  auto visited = s_.store.visitBusyKeys(
      [&](std::string_view id, std::string_view rest) {
        if (first_visit) {
          // The store's first pass over the bucket has noted every record by now (the visit waits
          // for it): their deadlines are known before the records are looked at.
          takeNoted();
          first_visit = false;
        }
        if (rest.empty()) {
          ++keys.record_keys;
          const bool known = deadlines_.modify(id, [&](Deadline& d) { d.seen = scans_; });
          if (!known) keys.keep(id, keys.unknown_at);
          if (!settled_.empty() && settled_.contains(id)) keys.keep(id, keys.settled_at);
        } else if (rest == "decision") {
          keys.keep(id, keys.decided_at);
        } else if (rest == "released") {
          keys.keep(id, keys.released_at);
        } else if (rest.starts_with("replay/")) {
          keys.keep(id, keys.claim_at);
        } else if (rest.starts_with("vote/")) {
          keys.keep(id, keys.voted_at);
        }
      },
      want_all);
  if (visited) keys.makeSets();
  return visited;
}

Result<ScanResult> Replayer::scan() {
  ++scans_;
  if (scans_ == 0) ++scans_;  // 0 is "not seen yet"
  takeNoted();
  const std::int64_t now_ns = atNs(s_.clock.now());
  const auto steady_now = s_.clock.steady();
  KeysAtWork keys;
  auto visited = visitKeys(full_next_ || steady_now - last_full_ >= kFullScanEvery, keys);
  if (!visited) {
    full_next_ = true;  // the store may have let go of what changed since the last scan
    return std::unexpected(visited.error());
  }
  const bool full = visited->all;
  if (full) {
    last_full_ = steady_now;
    full_next_ = false;
  }
  takeNoted();  // noted while the keys were visited
  std::vector<std::string> retry = std::exchange(retry_, {});
  std::unordered_set<std::string_view> removed;
  for (const auto& id : visited->removed) {
    deadlines_.erase(id);  // deleted, purged, aged out
    removed.insert(id);
  }
  std::erase_if(retry, [&](const std::string& id) { return removed.contains(id); });

  ScanResult result;
  record_reads_ = 0;
  finishDecided(keys, result);
  // Pending: the records without a decision. A decided record's deadline is no longer needed.
  std::size_t decided_records = 0;
  for (const auto id : keys.decided) {
    bool visited_record = keys.unknown.contains(id);
    if (const auto d = deadlines_.get(id)) {
      visited_record = visited_record || d->seen == scans_;
      deadlines_.erase(id);
    }
    decided_records += visited_record ? 1 : 0;
  }
  result.pending = full ? static_cast<int>(keys.record_keys - decided_records)
                        : static_cast<int>(visited->records - visited->decided_records);
  // Settled ids that are still records without a decision (one expired by this scan).
  std::unordered_set<std::string_view> settled_records;
  readNewRecords(keys, retry, full, result, settled_records);
  const std::vector<std::string> due = expireDue(keys, full, now_ns, result, settled_records);
  for (const auto id : keys.settled_seen) {
    if (!keys.decided.contains(id) && settled_.contains(id)) settled_records.insert(id);
  }
  forget(keys, full, due, settled_records);
  s_.metrics.setPending(result.pending - result.expired);
  return result;
}

void Replayer::finishDecided(const KeysAtWork& keys, ScanResult& result) {
  // Released: nothing of it will ever need this replayer again.
  for (const auto id : keys.released) s_.store.retire(id);
  for (const auto id : keys.decided) {
    if (keys.released.contains(id) || settled_.contains(id)) continue;
    const auto it = keys.claims.find(id);
    finishRelease(std::string(id), it == keys.claims.end() ? 0 : it->second, result);
  }
  for (const auto id : keys.voted) {
    if (!keys.decided.contains(id)) finishQuorum(std::string(id), result);
  }
}

void Replayer::readNewRecords(const KeysAtWork& keys, const std::vector<std::string>& retry, bool full,
                              ScanResult& result, std::unordered_set<std::string_view>& settled_records) {
  bool over_reads = false;
  std::vector<std::string> failed;  // records whose read failed now
  auto read = [&](std::string_view id) {
    const Read outcome = expireIfDue(id, result);
    if (settled_.contains(id)) {
      settled_records.insert(id);
    } else if (outcome == Read::over_limit) {
      over_reads = true;
    } else if (outcome == Read::failed) {
      failed.emplace_back(id);
    }
  };
  for (const auto id : keys.unknown_in_order) {
    if (!keys.decided.contains(id)) read(id);
  }
  // The reads that failed in the last scan are made again (a full scan has just met them, if
  // they are still records).
  for (const std::string& id : retry) {
    if (full || keys.unknown.contains(id) || keys.decided.contains(id) || deadlines_.contains(id)) continue;
    read(id);
  }
  // Records left unread for this scan's limit are found by the next scan, a full one. Those whose
  // read failed are read again by the next scan (the first kRetryMax; the periodic full scan
  // finds the others): a full scan would meet the same failure, and so would every scan after.
  if (over_reads) full_next_ = true;
  if (failed.size() > kRetryMax) failed.resize(kRetryMax);
  retry_ = std::move(failed);
}

std::vector<std::string> Replayer::expireDue(const KeysAtWork& keys, bool full, std::int64_t now_ns,
                                             ScanResult& result,
                                             std::unordered_set<std::string_view>& settled_records) {
  // Due: from the earliest deadlines, not from the keys (a full scan leaves out those its visit
  // did not find, as it drops their deadlines: see forget).
  std::vector<std::string> due = dueIds(now_ns);
  std::sort(due.begin(), due.end());
  due.erase(std::unique(due.begin(), due.end()), due.end());
  for (const std::string& id : due) {
    if (keys.decided.contains(id)) continue;
    if (full) {
      const auto d = deadlines_.get(id);
      if (!d || d->seen != scans_) continue;
    }
    expireIfDue(id, result);
    if (const auto settled = settled_.find(id); settled != settled_.end()) settled_records.insert(*settled);
  }
  return due;
}

void Replayer::forget(const KeysAtWork& keys, bool full, const std::vector<std::string>& due,
                      const std::unordered_set<std::string_view>& settled_records) {
  // What is finished goes, so memory follows the open work, not the bucket's history (the
  // store's index forgets the retired ids; `settled_` goes with their keys).
  std::erase_if(sightings_, [&](const auto& entry) {
    return keys.released.contains(entry.first) || !keys.decided.contains(entry.first);
  });
  std::erase_if(vote_sightings_, [&](const auto& entry) {
    return keys.decided.contains(entry.first) || !keys.voted.contains(entry.first);
  });
  if (full) {
    // Deadlines no visit found are dropped by their mark, not by a lookup of each; one noted
    // (seen 0) after the visit is kept until the next full scan.
    deadlines_.keepIf([&](std::string_view, Deadline& d) {
      if (d.seen == 0) d.seen = scans_;
      return d.seen == scans_;
    });
  }
  // A due deadline still here (not expired: decided meanwhile, the store not answering, a
  // record not there yet) is looked at again by the next scan.
  for (const std::string& id : due) {
    if (const auto d = deadlines_.get(id)) noteSoon(id, d->at_ns);
  }
  // Aged out of the bucket (an id expired by this scan is not in `decided` yet, but a record).
  std::erase_if(settled_, [&](const auto& id) {
    return !keys.decided.contains(id) && !settled_records.contains(id);
  });
}

void Replayer::finishRelease(const std::string& id, int claims, ScanResult& result) {
  auto decision_entry = s_.store.get(decisionKey(id));
  if (!decision_entry) return;
  auto decision = parseDecisionRecord(decision_entry->value);
  if (!decision) return;
  if (decision->decision != FinalDecision::approved) {
    settled_.insert(id);  // rejected or expired: nothing to release, ever
    s_.store.retire(id);
    return;
  }
  auto entry = s_.store.get(id);
  if (!entry) return;
  auto record = parseApprovalRecord(entry->value);
  if (!record) {
    s_.log.error("approved record unreadable; not replayed", {{"approval_id", id}});
    return;
  }
  if (record->state == ApprovalState::release_unknown) return;  // an operator decides
  ++result.unreleased;

  // The lease starts when this process first sees the unfinished release, and again whenever
  // another replayer claims an attempt: the approver (or that replayer) may still be publishing.
  const auto now = s_.clock.steady();
  auto [sighting, first] = sightings_.try_emplace(id, Sighting{now, claims});
  if (first || sighting->second.claims != claims) {
    sighting->second = Sighting{now, claims};
    return;
  }
  if (now - sighting->second.since < options_.lease) return;

  // Past the stream's duplicate window a republish could deliver twice: an operator decides.
  const auto window = duplicateWindow(*record);
  std::chrono::system_clock::time_point decided_at;
  const bool known = parseRfc3339(decision->at, decided_at);
  if (!known || s_.clock.now() - decided_at > window - window / 10) {
    (void)updateRecord(s_.store, id, [](ApprovalRecord& r) {
      if (r.state == ApprovalState::released || r.state == ApprovalState::release_unknown) return false;
      r.state = ApprovalState::release_unknown;
      return true;
    });
    s_.metrics.releaseUnknown();
    s_.events.emit(Event{.event = EventKind::release_unknown, .approval_id = id, .job_id = record->job_id, .topic = record->topic,
                         .subject = record->subject, .rule = record->rule, .job_hash = record->job_hash,
                         .policy_snapshot = decision->policy_snapshot,
                         .reason = window.count() == 0 ? "no_stream_dedup" : "past_duplicate_window"});
    s_.log.warn("release unknown: an operator must decide (countersign release ID --force|--mark-released)",
                {{"approval_id", id}});
    ++result.release_unknown;
    sightings_.erase(id);
    return;
  }

  const int attempt = claims + 1;
  auto claimed = s_.store.create(replayKey(id, attempt), decision->by);
  sighting->second = Sighting{now, attempt};
  if (!claimed) return;  // another replayer has this attempt (or the store is down): next scan

  const ReleaseOutcome outcome = releaser_.release(*record, *decision, "replay");
  if (!outcome.published) return;
  s_.metrics.replayed();
  (void)updateRecord(s_.store, id, [&](ApprovalRecord& r) {
    if (r.replays >= attempt) return false;
    r.replays = attempt;
    return true;
  });
  s_.events.emit(Event{.event = EventKind::replayed, .approval_id = id, .job_id = record->job_id, .topic = record->topic,
                       .subject = record->subject, .rule = record->rule, .job_hash = record->job_hash,
                       .policy_snapshot = decision->policy_snapshot, .actor = decision->by});
  ++result.replayed;
  sightings_.erase(id);
}

void Replayer::escalate(const ApprovalRecord& record, int step) {
  // Once per step and binding across every replica: the first create announces it.
  if (!s_.store.create(escalatedKey(record.id, record.binding, step), record.escalations[static_cast<std::size_t>(step)].at)) {
    return;
  }
  std::string widened;
  for (const auto& name : record.escalations[static_cast<std::size_t>(step)].approvers) {
    widened += widened.empty() ? name : "," + name;
  }
  s_.events.emit(Event{.event = EventKind::escalated, .approval_id = record.id, .job_id = record.job_id, .topic = record.topic,
                       .subject = record.subject, .rule = record.rule, .job_hash = record.job_hash,
                       .policy_snapshot = record.policy_snapshot, .actor = widened,
                       .reason = "escalation_step_" + std::to_string(step)});
}

void Replayer::finishQuorum(const std::string& id, ScanResult& result) {
  // A vote reached the quorum but its voter did not create the decision (a crash between
  // the two): decide and let the release path finish it. The lease runs from the last change to
  // the vote keys this process saw, not from its first sight of them: a voter whose vote has
  // just landed is creating the decision itself (and must hear `approved` from its own request).
  const auto now = s_.clock.steady();
  const auto seen = vote_sightings_.find(id);
  if (seen != vote_sightings_.end() && now - seen->second.since < options_.lease) return;
  auto entry = s_.store.get(id);
  if (!entry) return;
  auto record = parseApprovalRecord(entry->value);
  if (!record || record->quorum.single()) return;
  const Governance governance(s_.config.approvers ? &*s_.config.approvers : nullptr);
  // Only votes countersign wrote count (their tags), as on the approve path.
  VoteStamp votes;
  auto counted = countVotes(s_, *record, governance.voters(*record, s_.clock.now()), &votes);
  if (!counted) return;  // next scan
  if (seen == vote_sightings_.end() || seen->second.votes != votes) {
    vote_sightings_.insert_or_assign(id, VoteSighting{now, votes});  // first seen, or a voter at work
    return;
  }
  const std::vector<std::string>& voters = *counted;
  if (!governance.reached(record->quorum, voters)) return;
  DecisionRecord decision{.decision = FinalDecision::approved, .by = joinVoters(voters),
                                .at = formatRfc3339(s_.clock.now()), .reason = "quorum_reached",
                                .policy_snapshot = record->policy_snapshot, .job_hash = record->job_hash};
  if (!s_.store.create(decisionKey(id), decisionValue(s_, id, decision))) return;  // decided meanwhile
  s_.events.emit(Event{.event = EventKind::approved, .approval_id = id, .job_id = record->job_id, .topic = record->topic,
                       .subject = record->subject, .rule = record->rule, .job_hash = record->job_hash,
                       .policy_snapshot = record->policy_snapshot, .actor = decision.by,
                       .reason = "quorum_reached"});
  ++result.unreleased;
}

Replayer::Read Replayer::expireIfDue(std::string_view id, ScanResult& result) {
  auto cached = deadlines_.get(id);
  if (!cached) {
    if (record_reads_ >= options_.max_record_reads_per_scan) return Read::over_limit;  // next scan
    ++record_reads_;
    std::optional<std::chrono::system_clock::time_point> deadline;
    auto entry = s_.store.get(id);
    if (!entry) return Read::failed;
    if (auto record = parseApprovalRecord(entry->value)) deadline = attentionOf(*record);
    cached = Deadline{.at_ns = atNs(deadline), .seen = scans_};
    setDeadline(id, *cached);
  }
  if (cached->at_ns == kNever || atNs(s_.clock.now()) < cached->at_ns) return Read::known;

  auto entry = s_.store.get(id);
  if (!entry) return Read::known;
  auto record = parseApprovalRecord(entry->value);
  if (!record) return Read::known;
  // The wake-up may be an escalation step rather than the deadline: announce the steps due,
  // then sleep until the next step or the deadline.
  const auto now = s_.clock.now();
  for (int step = 0; step < Governance::stepsApplied(*record, now); ++step) escalate(*record, step);
  const auto next = nextAttention(*record, now);
  if (!next || now < *next) {
    setDeadline(id, Deadline{.at_ns = atNs(next), .seen = scans_});
    return Read::known;
  }
  const bool allow = record->on_timeout == "allow";
  DecisionRecord decision{.decision = allow ? FinalDecision::approved : FinalDecision::expired,
                                .by = "countersign", .at = formatRfc3339(s_.clock.now()),
                                .reason = allow ? "on_timeout_allow" : "timeout",
                                .policy_snapshot = record->policy_snapshot, .job_hash = record->job_hash};
  if (!s_.store.create(decisionKey(id), decisionValue(s_, id, decision))) return Read::known;  // decided meanwhile
  if (allow) {
    // The policy author chose (and acknowledged) release on timeout: release it like an approval.
    s_.events.emit(Event{.event = EventKind::approved, .approval_id = id, .job_id = record->job_id, .topic = record->topic,
                         .subject = record->subject, .rule = record->rule, .job_hash = record->job_hash,
                         .policy_snapshot = record->policy_snapshot, .actor = "countersign",
                         .reason = "on_timeout_allow"});
    (void)releaser_.release(*record, decision, "timeout");
    ++result.expired;
    return Read::known;
  }
  markDecided(s_.store, id, ApprovalState::expired, decision);
  settled_.insert(std::string(id));
  s_.store.retire(id);
  deadlines_.erase(id);  // retired: no scan finds its decision to drop it
  s_.events.emit(Event{.event = EventKind::expired, .approval_id = id, .job_id = record->job_id, .topic = record->topic,
                       .subject = record->subject, .rule = record->rule, .job_hash = record->job_hash,
                       .policy_snapshot = record->policy_snapshot, .reason = "timeout"});
  ++result.expired;
  return Read::known;
}

}  // namespace countersign
