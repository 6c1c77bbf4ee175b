// Internal: builds one compact JSON object with RapidJSON's Writer (replies, records, events).
#pragma once

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "countersign/json.hpp"

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace countersign::detail {

// RapidJSON's Writer copies string bytes as they are: text that is not UTF-8 (a producer's subject
// or header) would make invalid JSON. This one writes such text with U+FFFD in place of each bad
// byte; valid text is written as is, after one check.
class Utf8Writer : public rapidjson::Writer<rapidjson::StringBuffer> {
 public:
  using Base = rapidjson::Writer<rapidjson::StringBuffer>;
  using Base::Base;
  bool String(const char* text, rapidjson::SizeType length, bool copy = false) {
    if (json::isValidUtf8({text, length})) return Base::String(text, length, copy);
    const std::string valid = json::toValidUtf8({text, length});
    return Base::String(valid.data(), static_cast<rapidjson::SizeType>(valid.size()), true);
  }
  bool String(const std::string& text) {
    return String(text.data(), static_cast<rapidjson::SizeType>(text.size()));
  }
  bool Key(const char* text, rapidjson::SizeType length, bool copy = false) {
    return String(text, length, copy);
  }
  bool Key(const char* text) { return Key(text, static_cast<rapidjson::SizeType>(std::strlen(text))); }
};

class JsonObjectWriter {
 public:
  JsonObjectWriter() : writer_(buffer_) { writer_.StartObject(); }
  // Starts a reply object: {"status": <status>, "code": <code>, ...
  JsonObjectWriter(std::string_view status, int code) : JsonObjectWriter() {
    field("status", status).field("code", code);
  }
  JsonObjectWriter(const JsonObjectWriter&) = delete;
  JsonObjectWriter& operator=(const JsonObjectWriter&) = delete;

  JsonObjectWriter& key(std::string_view k) {
    writer_.Key(k.data(), static_cast<rapidjson::SizeType>(k.size()));
    return *this;
  }
  JsonObjectWriter& field(std::string_view k, std::string_view v) {
    key(k);
    writer_.String(v.data(), static_cast<rapidjson::SizeType>(v.size()));
    return *this;
  }
  JsonObjectWriter& field(std::string_view k, const char* v) { return field(k, std::string_view(v)); }
  JsonObjectWriter& field(std::string_view k, const std::string& v) {
    return field(k, std::string_view(v));
  }
  // Omitted when empty: optional string fields.
  JsonObjectWriter& optional(std::string_view k, std::string_view v) {
    if (!v.empty()) field(k, v);
    return *this;
  }
  JsonObjectWriter& field(std::string_view k, std::int64_t v) {
    key(k);
    writer_.Int64(v);
    return *this;
  }
  JsonObjectWriter& field(std::string_view k, int v) { return field(k, std::int64_t{v}); }
  JsonObjectWriter& field(std::string_view k, std::uint64_t v) {
    key(k);
    writer_.Uint64(v);
    return *this;
  }
  JsonObjectWriter& field(std::string_view k, bool v) {
    key(k);
    writer_.Bool(v);
    return *this;
  }
  // An array of strings (empty arrays included).
  JsonObjectWriter& strings(std::string_view k, const std::vector<std::string>& items) {
    key(k);
    writer_.StartArray();
    for (const auto& item : items) writer_.String(item);
    writer_.EndArray();
    return *this;
  }
  // Inserts already-serialised JSON text as the value.
  JsonObjectWriter& raw(std::string_view k, std::string_view json) {
    key(k);
    writer_.RawValue(json.data(), json.size(), rapidjson::kObjectType);
    return *this;
  }
  Utf8Writer& writer() { return writer_; }

  std::string finish() {
    writer_.EndObject();
    return std::string(buffer_.GetString(), buffer_.GetSize());
  }

 private:
  rapidjson::StringBuffer buffer_;
  Utf8Writer writer_;
};

}  // namespace countersign::detail
