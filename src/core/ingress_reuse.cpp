#include "countersign/ingress_reuse.hpp"

#include <algorithm>
#include <limits>

#include "countersign/json.hpp"

namespace countersign {
namespace {

constexpr int kRecordAttempts = 20;

bool plainKeyByte(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

void appendField(std::string& out, std::string_view name) {
  out += ',';
  json::appendJsonString(out, name);
  out += ':';
}

Result<std::uint64_t> unsignedField(const rapidjson::Value& item, const char* name) {
  if (!item.HasMember(name) || !item[name].IsUint64()) {
    return fail(Errc::parse_error, std::string("regression without a whole number \"") + name + "\"");
  }
  return item[name].GetUint64();
}

// "after_ns": a string of decimal digits (no sign, no leading zeros beyond "0").
Result<std::int64_t> parseNanoseconds(const rapidjson::Value& item) {
  const auto bad = [] { return fail(Errc::parse_error, "regression without \"after_ns\" as a string of digits"); };
  if (!item.HasMember("after_ns") || !item["after_ns"].IsString()) return bad();
  const std::string_view text(item["after_ns"].GetString(), item["after_ns"].GetStringLength());
  if (text.empty() || text.size() > 19 || (text.size() > 1 && text.front() == '0')) return bad();
  std::uint64_t value = 0;  // 19 digits fit; beyond int64 is refused below
  for (const char c : text) {
    if (c < '0' || c > '9') return bad();
    value = value * 10 + static_cast<std::uint64_t>(c - '0');
  }
  if (value > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) return bad();
  return static_cast<std::int64_t>(value);
}

}  // namespace

std::string ingressForwardId(std::string_view stream, std::uint64_t sequence, std::uint64_t epoch) {
  std::string id = "countersign-in:";
  id += stream;
  id += ':';
  id += std::to_string(sequence);
  if (epoch > 0) {
    id += ':';
    id += std::to_string(epoch);
  }
  return id;
}

std::string ingressReuseKey(std::string_view stream) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string key = "_countersign/ingress_reuse/";
  for (const char c : stream) {
    if (plainKeyByte(c)) {
      key += c;
    } else {
      const auto byte = static_cast<unsigned char>(c);
      key += '=';
      key += kHex[byte >> 4];
      key += kHex[byte & 0xf];
    }
  }
  return key;
}

std::uint64_t epochFor(const std::vector<StreamRegression>& regressions, std::uint64_t sequence,
                       std::int64_t stored_ns) {
  std::uint64_t epoch = 0;
  for (const auto& r : regressions) {
    if (sequence <= r.up_to && stored_ns > r.after_ns) epoch = std::max(epoch, r.epoch);
  }
  return epoch;
}

const StreamRegression* regressionCovering(const std::vector<StreamRegression>& regressions, std::uint64_t sequence,
                                           std::int64_t stored_ns) {
  if (stored_ns <= 0) return nullptr;  // nothing handled: no store time to tell by
  for (const auto& r : regressions) {
    if (sequence <= r.up_to && stored_ns <= r.after_ns) return &r;
  }
  return nullptr;
}

std::string toJson(std::string_view stream, const std::vector<StreamRegression>& regressions) {
  std::string out = "{\"stream\":";
  json::appendJsonString(out, stream);
  out += ",\"regressions\":[";
  bool first = true;
  for (const auto& r : regressions) {
    out += first ? "{" : ",{";
    first = false;
    out += "\"epoch\":" + std::to_string(r.epoch);
    appendField(out, "up_to");
    out += std::to_string(r.up_to);
    // A string: nanoseconds since 1970 are beyond the integers JSON readers keep exactly.
    appendField(out, "after_ns");
    json::appendJsonString(out, std::to_string(r.after_ns));
    appendField(out, "server");
    json::appendJsonString(out, r.server);
    appendField(out, "found_at");
    json::appendJsonString(out, r.found_at);
    out += '}';
  }
  out += "]}";
  return out;
}

Result<std::vector<StreamRegression>> regressionsFromJson(std::string_view text) {
  auto doc = json::parseStrict(text);
  if (!doc) return std::unexpected(doc.error());
  if (!doc->IsObject() || !doc->HasMember("regressions") || !(*doc)["regressions"].IsArray()) {
    return fail(Errc::parse_error, "not an object with a \"regressions\" array");
  }
  std::vector<StreamRegression> out;
  for (const auto& item : (*doc)["regressions"].GetArray()) {
    if (!item.IsObject()) return fail(Errc::parse_error, "a regression that is not an object");
    StreamRegression r;
    auto epoch = unsignedField(item, "epoch");
    if (!epoch) return std::unexpected(epoch.error());
    auto up_to = unsignedField(item, "up_to");
    if (!up_to) return std::unexpected(up_to.error());
    if (*epoch == 0) return fail(Errc::parse_error, "a regression with epoch 0");
    r.epoch = *epoch;
    r.up_to = *up_to;
    const auto after = parseNanoseconds(item);
    if (!after) return std::unexpected(after.error());
    r.after_ns = *after;
    if (item.HasMember("server") && item["server"].IsString()) r.server = item["server"].GetString();
    if (item.HasMember("found_at") && item["found_at"].IsString()) r.found_at = item["found_at"].GetString();
    out.push_back(std::move(r));
  }
  return out;
}

Status IngressReuse::load() {
  auto entry = store_.get(ingressReuseKey(stream_));
  if (!entry) {
    if (entry.error().code != Errc::not_found) return std::unexpected(entry.error());
    std::lock_guard lock(mutex_);
    regressions_.clear();
    return {};
  }
  auto parsed = regressionsFromJson(entry->value);
  if (!parsed) {
    return fail(Errc::parse_error, ingressReuseKey(stream_) + ": " + parsed.error().message);
  }
  std::lock_guard lock(mutex_);
  regressions_ = std::move(*parsed);
  return {};
}

Result<StreamRegression> IngressReuse::record(std::string_view server, std::uint64_t up_to, std::int64_t after_ns,
                                              std::string_view found_at) {
  const std::string key = ingressReuseKey(stream_);
  for (int attempt = 0; attempt < kRecordAttempts; ++attempt) {
    auto entry = store_.get(key);
    if (!entry && entry.error().code != Errc::not_found) return std::unexpected(entry.error());
    std::vector<StreamRegression> regressions;
    if (entry) {
      auto parsed = regressionsFromJson(entry->value);
      if (!parsed) return fail(Errc::parse_error, key + ": " + parsed.error().message);
      regressions = std::move(*parsed);
    }
    auto same = std::find_if(regressions.begin(), regressions.end(),
                             [&](const StreamRegression& r) { return r.server == server; });
    StreamRegression result;
    if (same != regressions.end() && same->up_to >= up_to && same->after_ns >= after_ns) {
      result = *same;
    } else {
      if (same != regressions.end()) {
        same->up_to = std::max(same->up_to, up_to);
        same->after_ns = std::max(same->after_ns, after_ns);
        result = *same;
      } else {
        std::uint64_t last = 0;
        for (const auto& r : regressions) last = std::max(last, r.epoch);
        result = StreamRegression{.epoch = last + 1,
                                  .up_to = up_to,
                                  .after_ns = after_ns,
                                  .server = std::string(server),
                                  .found_at = std::string(found_at)};
        regressions.push_back(result);
      }
      const std::string value = toJson(stream_, regressions);
      auto written = entry ? store_.update(key, value, entry->revision) : store_.create(key, value);
      if (!written) {
        if (written.error().code == Errc::wrong_revision || written.error().code == Errc::exists) continue;
        return std::unexpected(written.error());
      }
    }
    std::lock_guard lock(mutex_);
    regressions_ = std::move(regressions);
    return result;
  }
  return fail(Errc::unavailable, key + ": other writers kept changing it; not recorded");
}

std::uint64_t IngressReuse::epoch(std::uint64_t sequence, std::int64_t stored_ns) const {
  std::lock_guard lock(mutex_);
  return epochFor(regressions_, sequence, stored_ns);
}

std::uint64_t IngressReuse::reloadedEpoch(std::uint64_t sequence, std::int64_t stored_ns) {
  (void)load();
  return epoch(sequence, stored_ns);
}

std::vector<StreamRegression> IngressReuse::regressions() const {
  std::lock_guard lock(mutex_);
  return regressions_;
}

}  // namespace countersign
