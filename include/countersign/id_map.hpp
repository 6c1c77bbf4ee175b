// A map from short strings (approval ids, key groups) to small fixed-size values, for state kept
// per pending approval. Every key is stored once, with its value, in one byte buffer; an
// open-addressing table of 32-bit offsets into it finds a key. A 32-character id with an
// 8-byte value costs about 50 bytes, against 120-170 for a node of std::unordered_map<std::string,
// ...> (node, heap-allocated string, bucket): at a million pending approvals that is the
// difference between 50 and 170 MB.
//
// Not thread-safe (the owner locks). Iteration order is insertion order (not sorted). Values are
// copied in and out (the buffer keeps no alignment): use get/set/modify, not pointers. Memory
// follows the live keys: erased entries are dropped once they hold half of the buffer.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace countersign {

// No value: a set of strings.
struct IdMapNoValue {};

// Marks of an open-addressing table of 32-bit places (IdMap's; the list index's slots).
inline constexpr std::uint32_t kProbeEmpty = std::numeric_limits<std::uint32_t>::max();
inline constexpr std::uint32_t kProbeErased = kProbeEmpty - 1;

// Linear probing over `table` (a power of two in size, never full): the index of the place
// that `matches`, with true, or the index to insert at (the first erased one passed, else the
// empty one that ended the search), with false.
template <typename Matches>
std::pair<std::size_t, bool> probePlaces(const std::vector<std::uint32_t>& table, std::size_t hash, Matches&& matches) {
  if (table.empty()) return {0, false};
  const std::size_t mask = table.size() - 1;
  std::size_t insert_at = table.size();
  for (std::size_t i = hash & mask;; i = (i + 1) & mask) {
    const std::uint32_t place = table[i];
    if (place == kProbeEmpty) return {insert_at != table.size() ? insert_at : i, false};
    if (place == kProbeErased) {
      if (insert_at == table.size()) insert_at = i;
    } else if (matches(place)) {
      return {i, true};
    }
  }
}

template <typename Value = IdMapNoValue>
  requires std::is_trivially_copyable_v<Value>
class IdMap {
 public:
  IdMap() = default;
  IdMap(IdMap&& other) noexcept { *this = std::move(other); }
  IdMap& operator=(IdMap&& other) noexcept {
    if (this == &other) return *this;
    chunks_ = std::move(other.chunks_);
    table_ = std::move(other.table_);
    live_ = std::exchange(other.live_, 0);
    used_slots_ = std::exchange(other.used_slots_, 0);
    dead_bytes_ = std::exchange(other.dead_bytes_, 0);
    stored_bytes_ = std::exchange(other.stored_bytes_, 0);
    other.clear();
    return *this;
  }
  IdMap(const IdMap&) = delete;
  IdMap& operator=(const IdMap&) = delete;
  ~IdMap() = default;

  std::size_t size() const { return live_; }
  bool empty() const { return live_ == 0; }
  // Bytes held by the buffer and the table.
  std::size_t bytes() const {
    std::size_t total = table_.capacity() * sizeof(std::uint32_t) + chunks_.capacity() * sizeof(Chunk);
    for (const auto& chunk : chunks_) total += chunk.capacity;
    return total;
  }

  bool contains(std::string_view key) const { return findSlot(key).second; }

  std::optional<Value> get(std::string_view key) const {
    const auto [slot, found] = findSlot(key);
    if (!found) return std::nullopt;
    return entryAt(table_[slot]).value();
  }

  // Inserts the key with `value` when absent (true), else leaves it as it is (false).
  bool insert(std::string_view key, const Value& value = Value{}) { return put(key, value, false); }
  // Inserts or overwrites; true when the key was new.
  bool set(std::string_view key, const Value& value) { return put(key, value, true); }

  bool erase(std::string_view key) {
    const auto [slot, found] = findSlot(key);
    if (!found) return false;
    kill(slot);
    maybeCompact();
    return true;
  }

  // f(std::string_view key, const Value& value) for every key, in insertion order.
  template <typename F>
  void forEach(F&& f) const {
    for (const auto& chunk : chunks_) {
      for (std::uint32_t at = 0; at < chunk.used;) {
        const Entry e = decode(chunk.bytes.get() + at);
        if (e.live) f(e.key, e.value());
        at += e.total;
      }
    }
  }

  // f(Value& value) on the key's value, kept as f leaves it; false when the key is absent.
  template <typename F>
  bool modify(std::string_view key, F&& f) {
    const auto [slot, found] = findSlot(key);
    if (!found) return false;
    char* data = dataAt(table_[slot]);
    const Entry e = decode(data);
    Value value = e.value();
    f(value);
    if constexpr (kValueBytes > 0) std::memcpy(data + e.total - kValueBytes, &value, kValueBytes);
    return true;
  }

  // f(std::string_view key, Value& value) -> bool for every key, in insertion order: false
  // erases it; a changed value is kept.
  template <typename F>
  void keepIf(F&& f) {
    bool erased = false;
    for (std::size_t c = 0; c < chunks_.size(); ++c) {
      for (std::uint32_t at = 0; at < chunks_[c].used;) {
        char* data = chunks_[c].bytes.get() + at;
        const Entry e = decode(data);
        if (e.live) {
          Value value = e.value();
          if (f(e.key, value)) {
            if constexpr (kValueBytes > 0) std::memcpy(data + e.total - kValueBytes, &value, kValueBytes);
          } else {
            const auto [slot, found] = findSlot(e.key);
            if (found) kill(slot);
            erased = true;
          }
        }
        at += e.total;
      }
    }
    if (erased) maybeCompact();
  }

  void clear() {
    std::vector<Chunk>().swap(chunks_);
    std::vector<std::uint32_t>().swap(table_);
    live_ = 0;
    used_slots_ = 0;
    dead_bytes_ = 0;
    stored_bytes_ = 0;
  }

 private:
  // Entries live in chunks of kChunkBytes (one of its own for a larger entry); an entry's place
  // is (chunk << kChunkBits | offset), so 65,534 chunks: 4 GiB.
  static constexpr int kChunkBits = 16;
  static constexpr std::uint32_t kChunkBytes = 1u << kChunkBits;
  static constexpr std::uint32_t kEmpty = kProbeEmpty;
  static constexpr std::uint32_t kErased = kProbeErased;
  // A set (IdMapNoValue) stores no value bytes.
  static constexpr std::size_t kValueBytes = std::is_empty_v<Value> ? 0 : sizeof(Value);

  struct Chunk {
    std::unique_ptr<char[]> bytes;
    std::uint32_t used = 0;
    std::uint32_t capacity = 0;
  };

  // An entry: a varint of (key length << 1 | live), the key's bytes, the value's bytes.
  struct Entry {
    std::string_view key;
    const char* value_at = nullptr;
    std::uint32_t total = 0;  // bytes of the whole entry
    bool live = false;
    Value value() const {
      Value v{};
      if constexpr (kValueBytes > 0) std::memcpy(&v, value_at, kValueBytes);
      return v;
    }
  };

  static Entry decode(const char* data) {
    std::uint64_t word = 0;
    int shift = 0;
    std::size_t size = 0;
    for (;;) {
      const auto byte = static_cast<unsigned char>(data[size++]);
      word |= static_cast<std::uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) break;
      shift += 7;
    }
    const auto length = static_cast<std::size_t>(word >> 1);
    return Entry{.key = std::string_view(data + size, length),
                 .value_at = data + size + length,
                 .total = static_cast<std::uint32_t>(size + length + kValueBytes),
                 .live = (word & 1) != 0};
  }

  char* dataAt(std::uint32_t place) const {
    return chunks_[place >> kChunkBits].bytes.get() + (place & (kChunkBytes - 1));
  }
  Entry entryAt(std::uint32_t place) const { return decode(dataAt(place)); }

  static std::size_t hashOf(std::string_view key) { return std::hash<std::string_view>{}(key); }

  // The slot holding `key` (true), or the slot to insert it at (false).
  std::pair<std::size_t, bool> findSlot(std::string_view key) const {
    return probePlaces(table_, hashOf(key), [&](std::uint32_t place) { return entryAt(place).key == key; });
  }

  void kill(std::size_t slot) {
    char* data = dataAt(table_[slot]);
    const Entry e = decode(data);
    // The live bit is the varint's lowest: clearing it keeps the varint's size.
    data[0] = static_cast<char>(data[0] & ~1);
    dead_bytes_ += e.total;
    table_[slot] = kErased;
    --live_;
  }

  bool put(std::string_view key, const Value& value, bool overwrite) {
    if ((used_slots_ + 1) * 5 > table_.size() * 4) rehash(std::max<std::size_t>(16, (live_ + 1) * 2));
    const auto [slot, found] = findSlot(key);
    if (found) {
      if (overwrite && kValueBytes > 0) {
        char* data = dataAt(table_[slot]);
        std::memcpy(data + decode(data).total - kValueBytes, &value, kValueBytes);
      }
      return false;
    }
    if (table_[slot] == kEmpty) ++used_slots_;
    table_[slot] = append(key, value);
    ++live_;
    return true;
  }

  std::uint32_t append(std::string_view key, const Value& value) {
    char varint[10];
    std::size_t size = 0;
    std::uint64_t word = (static_cast<std::uint64_t>(key.size()) << 1) | 1;
    do {
      const auto low = static_cast<unsigned char>(word & 0x7f);
      word >>= 7;
      varint[size++] = static_cast<char>(word != 0 ? low | 0x80 : low);
    } while (word != 0);
    const std::size_t total = size + key.size() + kValueBytes;
    if (chunks_.empty() || chunks_.back().capacity - chunks_.back().used < total) {
      if (chunks_.size() >= (kEmpty >> kChunkBits)) throw std::length_error("IdMap: more than 4 GiB of keys");
      const auto capacity = static_cast<std::uint32_t>(std::max<std::size_t>(kChunkBytes, total));
      chunks_.push_back(Chunk{.bytes = std::make_unique_for_overwrite<char[]>(capacity), .used = 0, .capacity = capacity});
    }
    Chunk& chunk = chunks_.back();
    char* data = chunk.bytes.get() + chunk.used;
    std::memcpy(data, varint, size);
    std::memcpy(data + size, key.data(), key.size());
    if constexpr (kValueBytes > 0) std::memcpy(data + size + key.size(), &value, kValueBytes);
    const auto place = static_cast<std::uint32_t>(((chunks_.size() - 1) << kChunkBits) | chunk.used);
    // A large entry's chunk takes nothing after it (its offset would not fit the place).
    chunk.used = total >= kChunkBytes ? chunk.capacity : static_cast<std::uint32_t>(chunk.used + total);
    stored_bytes_ += total;
    return place;
  }

  // A new table of at least `want` slots (a power of two) over the same entries.
  void rehash(std::size_t want) {
    std::size_t slots = 16;
    while (slots < want) slots *= 2;
    std::vector<std::uint32_t>(slots, kEmpty).swap(table_);
    used_slots_ = 0;
    for (std::size_t c = 0; c < chunks_.size(); ++c) {
      for (std::uint32_t at = 0; at < chunks_[c].used;) {
        const Entry e = decode(chunks_[c].bytes.get() + at);
        if (e.live) place(e.key, static_cast<std::uint32_t>((c << kChunkBits) | at));
        at += e.total;
      }
    }
  }

  void place(std::string_view key, std::uint32_t where) {
    const std::size_t mask = table_.size() - 1;
    std::size_t i = hashOf(key) & mask;
    while (table_[i] != kEmpty) i = (i + 1) & mask;
    table_[i] = where;
    ++used_slots_;
  }

  // Once erased entries hold more than half of what is stored, the live ones are written again
  // into new chunks (and the table shrinks with them).
  void maybeCompact() {
    if (live_ == 0) {
      clear();
      return;
    }
    if (dead_bytes_ * 2 <= stored_bytes_ || stored_bytes_ < kChunkBytes) return;
    std::vector<Chunk> old;
    old.swap(chunks_);
    stored_bytes_ = 0;
    dead_bytes_ = 0;
    std::size_t slots = 16;
    while (slots < live_ * 2) slots *= 2;
    std::vector<std::uint32_t>(slots, kEmpty).swap(table_);
    used_slots_ = 0;
    for (const auto& chunk : old) {
      for (std::uint32_t at = 0; at < chunk.used;) {
        const Entry e = decode(chunk.bytes.get() + at);
        if (e.live) place(e.key, append(e.key, e.value()));
        at += e.total;
      }
    }
  }

  std::vector<Chunk> chunks_;
  std::vector<std::uint32_t> table_;  // places of entries; kEmpty, kErased
  std::size_t live_ = 0;
  std::size_t used_slots_ = 0;    // live and erased slots
  std::size_t dead_bytes_ = 0;    // bytes of erased entries in chunks_
  std::size_t stored_bytes_ = 0;  // bytes of all entries in chunks_
};

}  // namespace countersign
