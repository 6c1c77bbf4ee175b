// Strict JSON parsing and RFC 8785 (JCS) canonical form, on RapidJSON.
#pragma once

#include <rapidjson/document.h>

#include <string>
#include <string_view>

#include "countersign/result.hpp"

namespace countersign::json {

// Parses `text` as JSON only if it is valid UTF-8 JSON with no BOM, no duplicate object keys
// (compared after unescaping), no lone surrogates (escaped or raw), no NaN/Infinity, and no
// integer literal beyond +-2^53. Anything else fails with Errc::parse_error and a message that
// says which rule was broken and where (byte offset). Never throws.
// The message starts with the rule's token: bom, invalid_json, invalid_utf8, lone_surrogate,
// duplicate_key, non_finite_number, integer_out_of_range, too_deep (nesting beyond 512).
// `-0` parses as the integer 0, `-0.0` as the double -0.0; both canonicalise to "0".
Result<rapidjson::Document> parseStrict(std::string_view text);

// RFC 8785 canonical serialisation: object members sorted by their UTF-16 code units,
// numbers in ES6 Number.prototype.toString form, strings with the minimal JCS escaping,
// no whitespace. `value` must come from parseStrict or be built with finite numbers.
std::string canonicalize(const rapidjson::Value& value);

// ES6 Number.prototype.toString of a finite double (e.g. 1e21, 1e-7, 0.1, -0 -> "0").
// A non-finite value (parseStrict never yields one) gives "null", as JSON.stringify does.
std::string formatNumberEs6(double value);

// Lower-case hex SHA-256 of bytes (OpenSSL EVP).
std::string sha256Hex(std::string_view bytes);

// RFC 4648 standard base64 with padding.
std::string base64Encode(std::string_view bytes);
Result<std::string> base64Decode(std::string_view text);

// Whether bytes are well-formed UTF-8 (no overlong forms, no surrogates, nothing above
// U+10FFFF).
bool isValidUtf8(std::string_view text);
// The text with each byte that does not start a well-formed UTF-8 sequence replaced by U+FFFD,
// so that it can go into JSON (a reply or event naming a subject or header that is not UTF-8).
std::string toValidUtf8(std::string_view text);

// Compact serialisation (RapidJSON Writer), for building replies and records.
std::string toString(const rapidjson::Value& value);

// Building blocks of the canonical form, for callers that stream canonical JSON into one buffer
// (the job hash) instead of building a document first.

// Appends canonicalize(value) to `out`.
void appendCanonical(std::string& out, const rapidjson::Value& value);
// Appends `text` as a JCS string literal (quotes included). Bytes are copied as they are apart
// from the JCS escapes, so invalid UTF-8 (e.g. in a NATS subject) still maps one-to-one.
void appendJsonString(std::string& out, std::string_view text);
// Appends formatNumberEs6(value) to `out`.
void appendNumberEs6(std::string& out, double value);
// Appends base64Encode(bytes) to `out`.
void appendBase64(std::string& out, std::string_view bytes);
// RFC 8785 key order: true when UTF-8 `a` sorts before `b` by UTF-16 code units.
bool lessUtf16(std::string_view a, std::string_view b);

}  // namespace countersign::json
