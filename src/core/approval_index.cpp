#include "countersign/approval_index.hpp"

#include <algorithm>
#include <cstring>
#include <iterator>
#include <limits>
#include <map>
#include <set>
#include <unordered_map>

#include "countersign/clock.hpp"
#include "countersign/id_map.hpp"
#include "countersign/json.hpp"
#include "countersign/subject.hpp"

namespace countersign {

namespace {

// The index of a slot of `items` to use: one given back earlier (from `free`), else a new one at
// the end.
template <typename Items>
std::uint32_t takeSlot(std::vector<std::uint32_t>& free, Items& items) {
  if (!free.empty()) {
    const std::uint32_t slot = free.back();
    free.pop_back();
    return slot;
  }
  items.emplace_back();
  return static_cast<std::uint32_t>(items.size() - 1);
}

std::string stringField(const rapidjson::Value& doc, const char* name) {
  const auto it = doc.FindMember(name);
  if (it == doc.MemberEnd() || !it->value.IsString()) return {};
  return {it->value.GetString(), it->value.GetStringLength()};
}

// Nothing will happen to it any more: let go first when memory is bounded.
bool isFinished(ApprovalState state) {
  return state == ApprovalState::released || state == ApprovalState::rejected || state == ApprovalState::expired;
}

}  // namespace

ApprovalState ApprovalSummary::state() const {
  if (released) return ApprovalState::released;
  if (decided && decision && record_state != ApprovalState::release_unknown) {
    switch (*decision) {
      case FinalDecision::approved: return ApprovalState::approved;
      case FinalDecision::rejected: return ApprovalState::rejected;
      case FinalDecision::expired: return ApprovalState::expired;
    }
  }
  return record_state;
}

std::optional<ApprovalSummary> summarizeRecord(std::string_view json) {
  auto parsed = json::parseStrict(json);
  if (!parsed || !parsed->IsObject()) return std::nullopt;
  const rapidjson::Value& doc = *parsed;
  ApprovalSummary s;
  s.id = stringField(doc, "id");
  const auto state = parseApprovalState(stringField(doc, "state"));
  if (s.id.empty() || !state) return std::nullopt;
  s.record_state = *state;
  s.job_id = stringField(doc, "job_id");
  s.topic = stringField(doc, "topic");
  s.rule = stringField(doc, "rule");
  s.created_at = stringField(doc, "created_at");
  s.expires_at = stringField(doc, "expires_at");
  s.requester = stringField(doc, "requester");
  if (const auto it = doc.FindMember("votes"); it != doc.MemberEnd() && it->value.IsArray()) {
    s.votes = static_cast<int>(it->value.Size());
  }
  if (const auto it = doc.FindMember("quorum"); it != doc.MemberEnd()) {
    if (it->value.IsInt()) {
      s.quorum = it->value.GetInt();
    } else if (it->value.IsObject()) {
      int sum = 0;
      for (const auto& m : it->value.GetObject()) sum += m.value.IsInt() ? m.value.GetInt() : 0;
      s.quorum = sum;
    }
  }
  if (const auto it = doc.FindMember("approvers"); it != doc.MemberEnd() && it->value.IsArray()) {
    for (const auto& a : it->value.GetArray()) {
      if (a.IsString()) s.approvers.emplace_back(a.GetString(), a.GetStringLength());
    }
  }
  return s;
}

namespace {

constexpr std::uint32_t kNone = kProbeEmpty;  // no slot, no interned string
constexpr std::uint32_t kErased = kProbeErased;
constexpr std::int64_t kAsText = std::numeric_limits<std::int64_t>::min();

void putField(std::string& out, std::string_view field) {
  std::size_t n = field.size();
  do {
    const auto low = static_cast<unsigned char>(n & 0x7f);
    n >>= 7;
    out.push_back(static_cast<char>(n != 0 ? low | 0x80 : low));
  } while (n != 0);
  out.append(field);
}

std::string_view takeField(const char*& at) {
  std::size_t n = 0;
  int shift = 0;
  for (;;) {
    const auto byte = static_cast<unsigned char>(*at++);
    n |= static_cast<std::size_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) break;
    shift += 7;
  }
  const std::string_view field(at, n);
  at += n;
  return field;
}

// A timestamp as milliseconds since the epoch, when formatRfc3339 writes it back as the same
// text (what countersign writes); kAsText otherwise.
std::int64_t asTime(std::string_view text) {
  std::chrono::system_clock::time_point t;
  if (text.empty() || !parseRfc3339(text, t) || formatRfc3339(t) != text) return kAsText;
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

std::string timeText(std::int64_t ms) {
  return formatRfc3339(std::chrono::system_clock::time_point(std::chrono::milliseconds(ms)));
}

// Strings that repeat across approvals (topics, rules, requesters, approver lists), held once with
// a count of their users; one that no approval uses any more is let go.
class Interned {
 public:
  std::uint32_t acquire(std::string_view text) {
    if (text.empty()) return kNone;
    if (const auto it = refs_.find(text); it != refs_.end()) {
      ++slots_[it->second].users;
      return it->second;
    }
    const std::uint32_t ref = takeSlot(free_, slots_);
    slots_[ref] = Slot{.text = std::make_unique<std::string>(text), .users = 1};
    refs_.emplace(*slots_[ref].text, ref);
    return ref;
  }
  void release(std::uint32_t ref) {
    if (ref == kNone || --slots_[ref].users > 0) return;
    refs_.erase(std::string_view(*slots_[ref].text));
    slots_[ref].text.reset();
    free_.push_back(ref);
  }
  std::string_view text(std::uint32_t ref) const { return ref == kNone ? std::string_view() : *slots_[ref].text; }
  std::size_t bytes() const {
    std::size_t total = slots_.capacity() * sizeof(Slot) + refs_.size() * 64;
    for (const auto& slot : slots_) total += slot.text ? sizeof(std::string) + slot.text->capacity() : 0;
    return total;
  }

 private:
  struct Slot {
    std::unique_ptr<std::string> text;
    std::uint32_t users = 0;
  };
  std::vector<Slot> slots_;
  std::vector<std::uint32_t> free_;
  std::unordered_map<std::string_view, std::uint32_t> refs_;  // views of slots_' strings
};

// An enumeration's value in one byte (an entry is held per approval, a million times over).
template <typename E>
class InByte {
 public:
  constexpr InByte(E value = E{}) : value_(static_cast<std::uint8_t>(value)) {}
  constexpr operator E() const { return static_cast<E>(value_); }

 private:
  std::uint8_t value_;
};

}  // namespace

// One approval as the table holds it. Topic, rule, requester and the approver list are interned;
// created_at and expires_at are kept as times when they format back to the same text; the id, a
// job id other than the id and timestamps kept as text are one text, in the entry when it fits.
// Entries live in large blocks, not an allocation each: loading a large bucket allocates and
// frees a message per record around them, and small allocations that stay among freed ones
// keep the freed pages from being handed back.
struct ApprovalTableEntry {
  static constexpr std::size_t kInline = 40;  // a 36-character id with its fields' lengths
  // Fields: id, job id ("" when it is the id), created_at, expires_at.
  const char* text() const { return heap ? heap.get() : inline_text; }
  bool hasText() const { return heap || inline_text[0] != '\0'; }  // every id has a length
  char inline_text[kInline] = {};
  std::unique_ptr<char[]> heap;  // the text when longer than kInline
  std::int64_t created_ms = kAsText;
  std::int64_t expires_ms = kAsText;
  std::int64_t written_ns = 0;
  std::uint64_t record_revision = 0;
  std::uint64_t finished_order = 0;  // its place in Data::finished (0: not finished)
  std::uint32_t topic = kNone, rule = kNone, requester = kNone, approvers = kNone;
  std::int32_t votes = 0;
  std::int32_t quorum = 1;
  InByte<ApprovalState> record_state = ApprovalState::pending;
  InByte<FinalDecision> decision = FinalDecision::approved;
  bool has_record = false;
  bool decided = false;
  bool has_decision = false;  // decided, with a readable outcome in `decision`
  bool released = false;
  bool dead = false;  // let go; its slot is reused once the order no longer holds it

  std::string_view id() const {
    const char* at = text();
    return takeField(at);
  }
  ApprovalState state() const {
    if (released) return ApprovalState::released;
    if (decided && has_decision && record_state != ApprovalState::release_unknown) {
      switch (decision) {
        case FinalDecision::approved: return ApprovalState::approved;
        case FinalDecision::rejected: return ApprovalState::rejected;
        case FinalDecision::expired: return ApprovalState::expired;
      }
    }
    return record_state;
  }
};

// 120 bytes: the id and times inline, the rest packed (the enumerations in a byte each).
static_assert(sizeof(ApprovalTableEntry) <= 120);

struct ApprovalTable::Data {
  using Entry = ApprovalTableEntry;
  // Slots ordered by their entries' ids (transparent: a string_view cursor finds its place).
  struct ById {
    using is_transparent = void;
    const Data* data;
    std::string_view id(std::uint32_t slot) const { return data->entries[slot].id(); }
    bool operator()(std::uint32_t a, std::uint32_t b) const { return id(a) < id(b); }
    bool operator()(std::string_view a, std::uint32_t b) const { return a < id(b); }
    bool operator()(std::uint32_t a, std::string_view b) const { return id(a) < b; }
  };

  Data(std::chrono::seconds age, std::size_t kept)
      : max_age(age), finished_kept(kept), by_state{{std::set<std::uint32_t, ById>(ById{this}), std::set<std::uint32_t, ById>(ById{this}),
                                                     std::set<std::uint32_t, ById>(ById{this}), std::set<std::uint32_t, ById>(ById{this}),
                                                     std::set<std::uint32_t, ById>(ById{this}), std::set<std::uint32_t, ById>(ById{this})}} {}

  const std::chrono::seconds max_age;
  const std::size_t finished_kept;
  // Entries by slot, in blocks of kBlock (no reallocation, no doubled capacity).
  class Entries {
   public:
    static constexpr std::size_t kBlock = 1024;
    std::size_t size() const { return size_; }
    Entry& operator[](std::size_t slot) { return blocks_[slot / kBlock][slot % kBlock]; }
    const Entry& operator[](std::size_t slot) const { return blocks_[slot / kBlock][slot % kBlock]; }
    void emplace_back() {
      if (size_ == blocks_.size() * kBlock) blocks_.push_back(std::make_unique<Entry[]>(kBlock));
      ++size_;
    }
    std::size_t capacity() const { return blocks_.size() * kBlock; }

   private:
    std::vector<std::unique_ptr<Entry[]>> blocks_;
    std::size_t size_ = 0;
  };
  Entries entries;
  std::vector<std::uint32_t> free;   // slots to reuse
  std::vector<std::uint32_t> table;  // id -> slot, open addressing; kNone empty, kErased
  std::size_t table_used = 0;        // live and erased slots of `table`
  // Every slot in use, in id order: `sorted`, and those added since it was last merged.
  std::vector<std::uint32_t> sorted;
  std::vector<std::uint32_t> added;
  std::size_t dead = 0;  // dead slots still in sorted/added
  // Slots with a record by state, but for pending (walked in id order instead: a million
  // pending approvals need no second index).
  std::array<std::set<std::uint32_t, ById>, 6> by_state;
  // Finished approvals in the order they finished (the oldest is let go first).
  std::map<std::uint64_t, std::uint32_t> finished;
  std::uint64_t finished_count = 0;
  bool forgot_finished = false;
  std::size_t with_record = 0;
  std::size_t text_bytes = 0;
  Interned strings;

  static std::size_t hashOf(std::string_view id) { return std::hash<std::string_view>{}(id); }

  std::pair<std::size_t, bool> findSlot(std::string_view id) const {
    return probePlaces(table, hashOf(id), [&](std::uint32_t slot) { return entries[slot].id() == id; });
  }

  void rehash() {
    std::size_t size = 16;
    while (size < (entries.size() - free.size() + 1) * 2) size *= 2;
    std::vector<std::uint32_t>(size, kNone).swap(table);
    table_used = 0;
    for (std::size_t slot = 0; slot < entries.size(); ++slot) {
      if (!entries[slot].hasText() || entries[slot].dead) continue;
      std::size_t i = hashOf(entries[slot].id()) & (size - 1);
      while (table[i] != kNone) i = (i + 1) & (size - 1);
      table[i] = static_cast<std::uint32_t>(slot);
      ++table_used;
    }
  }

  void setText(Entry& e, std::string_view id, std::string_view job_id, std::string_view created,
               std::string_view expires) {
    std::string text;
    putField(text, id);
    putField(text, job_id == id ? std::string_view() : job_id);
    putField(text, created);
    putField(text, expires);
    if (e.heap) text_bytes -= allocated(e);
    if (text.size() <= Entry::kInline) {
      e.heap.reset();
      std::memcpy(e.inline_text, text.data(), text.size());
    } else {
      e.heap = std::make_unique_for_overwrite<char[]>(text.size());
      std::memcpy(e.heap.get(), text.data(), text.size());
      text_bytes += text.size();
    }
  }
  static std::size_t allocated(const Entry& e) {
    if (!e.heap) return 0;
    const char* at = e.heap.get();
    for (int i = 0; i < 4; ++i) (void)takeField(at);
    return static_cast<std::size_t>(at - e.heap.get());
  }

  std::uint32_t slotOf(std::string_view id) {
    if ((table_used + 1) * 5 > table.size() * 4) rehash();
    const auto [i, found] = findSlot(id);
    if (found) return table[i];
    const std::uint32_t slot = takeSlot(free, entries);
    entries[slot] = Entry{};
    setText(entries[slot], id, id, {}, {});
    if (table[i] == kNone) ++table_used;
    table[i] = slot;
    added.push_back(slot);
    // Merged once the additions are a fair share of the order (a load of a million records
    // costs a few merges, not one per record).
    if (added.size() > std::max<std::size_t>(4096, sorted.size() / 8)) merge();
    return slot;
  }

  void merge() {
    if (added.empty()) return;
    const ById by_id{this};
    std::sort(added.begin(), added.end(), by_id);
    std::vector<std::uint32_t> all;
    all.reserve(sorted.size() + added.size());
    std::merge(sorted.begin(), sorted.end(), added.begin(), added.end(), std::back_inserter(all), by_id);
    sorted.swap(all);
    std::vector<std::uint32_t>().swap(added);
  }

  void releaseStrings(Entry& e) {
    for (const std::uint32_t ref : {e.topic, e.rule, e.requester, e.approvers}) strings.release(ref);
    e.topic = e.rule = e.requester = e.approvers = kNone;
  }

  // Lets the entry go: its slot (and its id, which orders it) is reused once the order no
  // longer holds it.
  void kill(std::uint32_t slot) {
    Entry& e = entries[slot];
    if (const auto [i, found] = findSlot(e.id()); found) table[i] = kErased;
    releaseStrings(e);
    e.dead = true;
    if (++dead > std::max<std::size_t>(1024, (sorted.size() + added.size()) / 8)) dropDead();
  }

  void dropDead() {
    auto gone = [&](std::uint32_t slot) { return entries[slot].dead; };
    std::erase_if(sorted, gone);
    std::erase_if(added, gone);
    for (std::size_t slot = 0; slot < entries.size(); ++slot) {
      if (entries[slot].dead) {
        text_bytes -= allocated(entries[slot]);
        entries[slot] = Entry{};
        free.push_back(static_cast<std::uint32_t>(slot));
      }
    }
    dead = 0;
  }

  // `had_record`: the entry was listed before, in state `before`.
  void place(std::uint32_t slot, bool had_record, ApprovalState before) {
    Entry& e = entries[slot];
    if (had_record && before != ApprovalState::pending) by_state[static_cast<std::size_t>(before)].erase(slot);
    if (!e.has_record) return;
    const ApprovalState now = e.state();
    if (now != ApprovalState::pending) by_state[static_cast<std::size_t>(now)].insert(slot);
    if (isFinished(now) && e.finished_order == 0) {
      e.finished_order = ++finished_count;
      finished.emplace(e.finished_order, slot);
    } else if (!isFinished(now) && e.finished_order != 0) {
      finished.erase(e.finished_order);
      e.finished_order = 0;
    }
  }

  void forgetOldestFinished() {
    while (finished.size() > finished_kept) {
      const auto oldest = finished.begin();
      const std::uint32_t slot = oldest->second;
      finished.erase(oldest);
      Entry& e = entries[slot];
      if (!e.dead) {
        if (e.has_record) {
          if (const ApprovalState state = e.state(); state != ApprovalState::pending) {
            by_state[static_cast<std::size_t>(state)].erase(slot);
          }
          --with_record;
        }
        kill(slot);
      }
      forgot_finished = true;
    }
  }

  ApprovalSummary summaryOf(const Entry& e) const {
    ApprovalSummary s;
    const char* at = e.text();
    s.id = std::string(takeField(at));
    const std::string_view job = takeField(at);
    s.job_id = job.empty() ? s.id : std::string(job);
    const std::string_view created = takeField(at);
    const std::string_view expires = takeField(at);
    s.created_at = e.created_ms != kAsText ? timeText(e.created_ms) : std::string(created);
    s.expires_at = e.expires_ms != kAsText ? timeText(e.expires_ms) : std::string(expires);
    s.topic = std::string(strings.text(e.topic));
    s.rule = std::string(strings.text(e.rule));
    s.requester = std::string(strings.text(e.requester));
    const std::string_view approvers = strings.text(e.approvers);
    for (const char* a = approvers.data(); a < approvers.data() + approvers.size();) {
      s.approvers.emplace_back(takeField(a));
    }
    s.record_state = e.record_state;
    s.votes = e.votes;
    s.quorum = e.quorum;
    s.decided = e.decided;
    if (e.has_decision) s.decision = e.decision;
    s.released = e.released;
    return s;
  }
};

ApprovalTable::ApprovalTable(std::chrono::seconds max_age, std::size_t finished_kept)
    : d_(std::make_unique<Data>(max_age, finished_kept)) {}

ApprovalTable::~ApprovalTable() = default;

void ApprovalTable::put(std::string_view key, std::string_view value, std::uint64_t revision,
                        Clock::time_point written) {
  const auto slash = key.find('/');
  const std::string_view id = key.substr(0, slash);
  const std::string_view rest = slash == std::string_view::npos ? std::string_view() : key.substr(slash + 1);
  if (!rest.empty() && rest != "decision" && rest != "released") return;  // votes, claims, ...
  if (id.empty()) return;

  // Parsed before the lock: a record's JSON is the costly part.
  std::optional<ApprovalSummary> summary;
  std::optional<DecisionRecord> decision;
  if (rest.empty()) {
    summary = summarizeRecord(value);
    if (!summary) return;  // not a record of ours
  } else if (rest == "decision") {
    if (auto d = parseDecisionRecord(value)) decision = std::move(*d);
  }
  std::string approvers;
  if (summary) {
    for (const auto& name : summary->approvers) putField(approvers, name);
  }

  const std::lock_guard lock(mutex_);
  Data& d = *d_;
  const std::uint32_t slot = d.slotOf(id);
  ApprovalTableEntry& e = d.entries[slot];
  const bool had_record = e.has_record;
  const ApprovalState before = e.state();
  if (rest.empty()) {
    if (e.has_record && revision <= e.record_revision) return;  // an older write
    // The decisive keys are kept: they arrive independently of the record's writes.
    const std::uint32_t topic = d.strings.acquire(summary->topic), rule = d.strings.acquire(summary->rule),
                        requester = d.strings.acquire(summary->requester), listed = d.strings.acquire(approvers);
    d.releaseStrings(e);
    e.topic = topic;
    e.rule = rule;
    e.requester = requester;
    e.approvers = listed;
    e.created_ms = asTime(summary->created_at);
    e.expires_ms = asTime(summary->expires_at);
    d.setText(e, id, summary->job_id, e.created_ms == kAsText ? std::string_view(summary->created_at) : std::string_view(),
              e.expires_ms == kAsText ? std::string_view(summary->expires_at) : std::string_view());
    e.votes = summary->votes;
    e.quorum = summary->quorum;
    e.record_state = summary->record_state;
    if (!e.has_record) ++d.with_record;
    e.has_record = true;
    e.record_revision = revision;
    e.written_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(written.time_since_epoch()).count();
  } else if (rest == "decision") {
    e.decided = true;  // created once: its value never changes
    if (decision) {
      e.has_decision = true;
      e.decision = decision->decision;
    }
  } else {
    e.released = true;
  }
  d.place(slot, had_record, before);
  d.forgetOldestFinished();
}

std::optional<ApprovalPage> ApprovalTable::page(const ApprovalQuery& query, Clock::time_point now) const {
  ApprovalPage page;
  const int limit = std::max(1, query.limit);
  const std::lock_guard lock(mutex_);
  Data& d = *d_;
  const bool ages = d.max_age.count() > 0;
  const std::int64_t oldest_ns =
      ages ? std::chrono::duration_cast<std::chrono::nanoseconds>((now - d.max_age).time_since_epoch()).count() : 0;
  if (d.forgot_finished && (!query.state || isFinished(*query.state))) return std::nullopt;
  auto take = [&](std::uint32_t slot) {
    const ApprovalTableEntry& e = d.entries[slot];
    if (e.dead || !e.has_record) return true;
    if (query.state && e.state() != *query.state) return true;
    if (ages && e.written_ns < oldest_ns) return true;  // aged out of the bucket
    if (!query.topic.empty() && !subject::matches(query.topic, d.strings.text(e.topic))) return true;
    if (static_cast<int>(page.items.size()) == limit) {
      page.next_after = page.items.back().id;
      return false;
    }
    page.items.push_back(d.summaryOf(e));
    return true;
  };
  const Data::ById by_id{&d};
  if (query.state && *query.state != ApprovalState::pending) {
    const auto& slots = d.by_state[static_cast<std::size_t>(*query.state)];
    for (auto it = query.after.empty() ? slots.begin() : slots.upper_bound(std::string_view(query.after));
         it != slots.end(); ++it) {
      if (!take(*it)) break;
    }
    return page;
  }
  // Pending, or every state: the whole order (the additions merged in first).
  d.merge();
  auto it = query.after.empty() ? d.sorted.begin()
                                : std::upper_bound(d.sorted.begin(), d.sorted.end(), std::string_view(query.after), by_id);
  for (; it != d.sorted.end(); ++it) {
    if (!take(*it)) break;
  }
  return page;
}

bool ApprovalTable::forgotFinished() const {
  const std::lock_guard lock(mutex_);
  return d_->forgot_finished;
}

std::size_t ApprovalTable::size() const {
  const std::lock_guard lock(mutex_);
  return d_->with_record;
}

std::size_t ApprovalTable::bytes() const {
  const std::lock_guard lock(mutex_);
  const Data& d = *d_;
  std::size_t set_nodes = d.finished.size();
  for (const auto& slots : d.by_state) set_nodes += slots.size();
  return d.entries.capacity() * sizeof(ApprovalTableEntry) + d.text_bytes + (d.entries.size() - d.free.size()) * 16 +
         (d.table.capacity() + d.sorted.capacity() + d.added.capacity() + d.free.capacity()) * sizeof(std::uint32_t) +
         set_nodes * 48 + d.strings.bytes();
}

}  // namespace countersign
