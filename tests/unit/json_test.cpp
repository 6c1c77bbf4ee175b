#include "countersign/json.hpp"

#include "core/json_writer.hpp"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>

namespace countersign::json {
namespace {

using namespace std::string_literals;

std::string canonicalOf(std::string_view text) {
  auto parsed = parseStrict(text);
  EXPECT_TRUE(parsed.has_value()) << text << ": " << (parsed ? "" : parsed.error().message);
  return parsed ? canonicalize(*parsed) : std::string("<parse failed>");
}

// The rule token at the start of the error message ("duplicate_key: ..." -> "duplicate_key").
std::string rejectionRule(std::string_view text) {
  auto parsed = parseStrict(text);
  if (parsed) return "<accepted>";
  EXPECT_EQ(parsed.error().code, Errc::parse_error);
  const std::string& message = parsed.error().message;
  EXPECT_NE(message.find("at byte offset"), std::string::npos) << message;
  return message.substr(0, message.find(':'));
}

std::string rejectionMessage(std::string_view text) {
  auto parsed = parseStrict(text);
  return parsed ? "<accepted>" : parsed.error().message;
}

// ---- RFC 8785 -------------------------------------------------------------------------------

TEST(Canonicalize, Rfc8785MainExample) {
  const std::string input = R"({
    "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
    "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
    "literals": [null, true, false]
  })";
  EXPECT_EQ(canonicalOf(input),
            "{\"literals\":[null,true,false],"
            "\"numbers\":[333333333.3333333,1e+30,4.5,0.002,1e-27],"
            "\"string\":\"\xE2\x82\xAC$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}");
}

TEST(Canonicalize, Rfc8785NumberLiterals) {
  EXPECT_EQ(canonicalOf("[1e+21]"), "[1e+21]");
  EXPECT_EQ(canonicalOf("[333333333.33333329]"), "[333333333.3333333]");
  EXPECT_EQ(canonicalOf("[1E30]"), "[1e+30]");
  EXPECT_EQ(canonicalOf("[4.50]"), "[4.5]");
  EXPECT_EQ(canonicalOf("[2e-3]"), "[0.002]");
  EXPECT_EQ(canonicalOf("[0.000000000000000000000000001]"), "[1e-27]");
  EXPECT_EQ(canonicalOf("[1e20]"), "[100000000000000000000]");
  EXPECT_EQ(canonicalOf("[1e-7, 1e-6, 0.1, 10.0, 5e-324]"), "[1e-7,0.000001,0.1,10,5e-324]");
}

TEST(Canonicalize, Rfc8785Utf16KeyOrder) {
  const std::string input = R"({
    "\u20ac": "Euro Sign",
    "\r": "Carriage Return",
    "\ufb33": "Hebrew Letter Dalet With Dagesh",
    "1": "One",
    "\ud83d\ude00": "Emoji: Grinning Face",
    "\u0080": "Control",
    "\u00f6": "Latin Small Letter O With Diaeresis"
  })";
  EXPECT_EQ(canonicalOf(input),
            "{\"\\r\":\"Carriage Return\","
            "\"1\":\"One\","
            "\"\xC2\x80\":\"Control\","
            "\"\xC3\xB6\":\"Latin Small Letter O With Diaeresis\","
            "\"\xE2\x82\xAC\":\"Euro Sign\","
            "\"\xF0\x9F\x98\x80\":\"Emoji: Grinning Face\","
            "\"\xEF\xAC\xB3\":\"Hebrew Letter Dalet With Dagesh\"}");
}

TEST(Canonicalize, LessUtf16DiffersFromByteOrderAboveBmp) {
  const std::string emoji = "\xF0\x9F\x98\x80";    // U+1F600, UTF-16 D83D DE00
  const std::string private_use = "\xEE\x80\x80";  // U+E000
  const std::string replacement = "\xEF\xBF\xBD";  // U+FFFD
  const std::string cjk = "\xE4\xB8\x80";          // U+4E00
  EXPECT_TRUE(lessUtf16(emoji, private_use));
  EXPECT_FALSE(lessUtf16(private_use, emoji));
  EXPECT_TRUE(lessUtf16(emoji, replacement));
  EXPECT_TRUE(lessUtf16(cjk, emoji));
  EXPECT_FALSE(lessUtf16(emoji, cjk));
  EXPECT_TRUE(lessUtf16("a", "ab"));
  EXPECT_FALSE(lessUtf16("ab", "ab"));
  EXPECT_TRUE(lessUtf16("B", "a"));  // code units, not case-folded
  EXPECT_TRUE(lessUtf16("\xF0\x9F\x98\x80", "\xF0\x9F\x98\x81"));
}

TEST(Canonicalize, KeyOrderAndWhitespaceDoNotMatter) {
  const std::string a = R"({"b":[1,2,{"y":true,"x":null}],"a":"s","c":{"e":1.5,"d":-2}})";
  const std::string b =
      " {\n \"c\" : { \"d\" : -2 , \"e\" : 15e-1 } ,\t\"a\":\"s\",\r\n\"b\":[ 1 , 2 ,"
      " {\"x\":null,\"y\":true} ] } \n";
  EXPECT_EQ(canonicalOf(a), canonicalOf(b));
  EXPECT_EQ(canonicalOf(a), R"({"a":"s","b":[1,2,{"x":null,"y":true}],"c":{"d":-2,"e":1.5}})");
}

TEST(Canonicalize, ArrayOrderMatters) {
  EXPECT_NE(canonicalOf("[1,2]"), canonicalOf("[2,1]"));
}

TEST(Canonicalize, StringEscapes) {
  EXPECT_EQ(canonicalOf(R"(["\b\t\n\f\r\"\\\/\u0000\u001f\u007f\u00e9"])"),
            "[\"\\b\\t\\n\\f\\r\\\"\\\\/\\u0000\\u001f\x7f\xC3\xA9\"]");
}

// Every byte at every position of a word-sized window, against a byte-by-byte reference.
TEST(Canonicalize, StringEscapingMatchesReferenceAtEveryPosition) {
  const auto reference = [](std::string_view text) {
    std::string out = "\"";
    for (const char ch : text) {
      const auto c = static_cast<unsigned char>(ch);
      if (c == '"' || c == '\\') {
        out += '\\';
        out += ch;
      } else if (c == '\b') {
        out += "\\b";
      } else if (c == '\t') {
        out += "\\t";
      } else if (c == '\n') {
        out += "\\n";
      } else if (c == '\f') {
        out += "\\f";
      } else if (c == '\r') {
        out += "\\r";
      } else if (c < 0x20) {
        const char* hex = "0123456789abcdef";
        out += "\\u00";
        out += hex[c >> 4];
        out += hex[c & 0xF];
      } else {
        out += ch;
      }
    }
    return out + "\"";
  };
  for (int byte = 0; byte < 256; ++byte) {
    for (std::size_t position = 0; position < 19; ++position) {
      std::string text(19, 'x');
      text[position] = static_cast<char>(byte);
      std::string out;
      appendJsonString(out, text);
      ASSERT_EQ(out, reference(text)) << "byte " << byte << " at " << position;
    }
  }
}

TEST(Canonicalize, LargeObjectIsSorted) {
  std::string input = "{";
  for (int i = 39; i >= 0; --i) {
    input += "\"k" + std::to_string(i) + "\":" + std::to_string(i) + (i > 0 ? "," : "}");
  }
  const std::string canonical = canonicalOf(input);
  EXPECT_TRUE(canonical.starts_with(R"({"k0":0,"k1":1,"k10":10,"k11":11,)")) << canonical;
  EXPECT_TRUE(canonical.ends_with(R"("k8":8,"k9":9})")) << canonical;
}

TEST(Canonicalize, NegativeZero) {
  auto integer_zero = parseStrict("-0");
  ASSERT_TRUE(integer_zero);
  EXPECT_TRUE(integer_zero->IsInt64());
  EXPECT_EQ(canonicalize(*integer_zero), "0");
  auto double_zero = parseStrict("-0.0");
  ASSERT_TRUE(double_zero);
  ASSERT_TRUE(double_zero->IsDouble());
  EXPECT_TRUE(std::signbit(double_zero->GetDouble()));
  EXPECT_EQ(canonicalize(*double_zero), "0");
}

TEST(Canonicalize, BuiltIntegersBeyondSafeRangePrintAsDoubles) {
  rapidjson::Value big(std::uint64_t{1000000000000000000});  // 1e18: exact as a double
  EXPECT_EQ(canonicalize(big), "1000000000000000000");
  rapidjson::Value odd(std::uint64_t{9007199254740993});  // rounds to ...992 as a double
  EXPECT_EQ(canonicalize(odd), "9007199254740992");
  rapidjson::Value max(std::uint64_t{18446744073709551615u});
  EXPECT_EQ(canonicalize(max), "18446744073709552000");
  rapidjson::Value min(std::int64_t{INT64_MIN});
  EXPECT_EQ(canonicalize(min), "-9223372036854776000");
}

// ---- ES6 number formatting (RFC 8785 appendix B) ---------------------------------------------

TEST(FormatNumberEs6, Rfc8785AppendixB) {
  const std::pair<std::uint64_t, const char*> cases[] = {
      {0x0000000000000000, "0"},
      {0x8000000000000000, "0"},
      {0x0000000000000001, "5e-324"},
      {0x8000000000000001, "-5e-324"},
      {0x7fefffffffffffff, "1.7976931348623157e+308"},
      {0xffefffffffffffff, "-1.7976931348623157e+308"},
      {0x4340000000000000, "9007199254740992"},
      {0xc340000000000000, "-9007199254740992"},
      {0x4430000000000000, "295147905179352830000"},
      {0x44b52d02c7e14af5, "9.999999999999997e+22"},
      {0x44b52d02c7e14af6, "1e+23"},
      {0x44b52d02c7e14af7, "1.0000000000000001e+23"},
      {0x444b1ae4d6e2ef4e, "999999999999999700000"},
      {0x444b1ae4d6e2ef4f, "999999999999999900000"},
      {0x444b1ae4d6e2ef50, "1e+21"},
      {0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"},
      {0x3eb0c6f7a0b5ed8d, "0.000001"},
      {0x41b3de4355555553, "333333333.3333332"},
      {0x41b3de4355555554, "333333333.33333325"},
      {0x41b3de4355555555, "333333333.3333333"},
      {0x41b3de4355555556, "333333333.3333334"},
      {0x41b3de4355555557, "333333333.33333343"},
      {0xbecbf647612f3696, "-0.0000033333333333333333"},
      {0x43143ff3c1cb0959, "1424953923781206.2"},
  };
  for (const auto& [bits, expected] : cases) {
    EXPECT_EQ(formatNumberEs6(std::bit_cast<double>(bits)), expected) << std::hex << bits;
  }
}

TEST(FormatNumberEs6, LayoutBoundaries) {
  EXPECT_EQ(formatNumberEs6(1e21), "1e+21");
  EXPECT_EQ(formatNumberEs6(1e20), "100000000000000000000");
  EXPECT_EQ(formatNumberEs6(123e18), "123000000000000000000");
  EXPECT_EQ(formatNumberEs6(1.5e21), "1.5e+21");
  EXPECT_EQ(formatNumberEs6(1e-7), "1e-7");
  EXPECT_EQ(formatNumberEs6(1.25e-7), "1.25e-7");
  EXPECT_EQ(formatNumberEs6(1e-6), "0.000001");
  EXPECT_EQ(formatNumberEs6(-1.5), "-1.5");
  EXPECT_EQ(formatNumberEs6(123.456), "123.456");
  EXPECT_EQ(formatNumberEs6(0.1 + 0.2), "0.30000000000000004");
  EXPECT_EQ(formatNumberEs6(-0.0), "0");
  EXPECT_EQ(formatNumberEs6(42.0), "42");
  EXPECT_EQ(formatNumberEs6(-9007199254740991.0), "-9007199254740991");
  EXPECT_EQ(formatNumberEs6(1e300), "1e+300");
  EXPECT_EQ(formatNumberEs6(std::nan("")), "null");
  EXPECT_EQ(formatNumberEs6(INFINITY), "null");
}

// ---- parseStrict: accepted ------------------------------------------------------------------

TEST(ParseStrict, AcceptsOrdinaryJson) {
  for (const char* text :
       {"{}", "[]", "0", "\"s\"", "null", "true", " {\"a\" : [1, 2.5, \"x\"]} \n",
        "{\"a\":{\"a\":{\"a\":1}}}", "[{\"a\":1},{\"a\":2}]"}) {
    EXPECT_TRUE(parseStrict(text).has_value()) << text;
  }
}

TEST(ParseStrict, SafeIntegerBoundariesAreAccepted) {
  auto max = parseStrict("[9007199254740992, -9007199254740992]");
  ASSERT_TRUE(max) << max.error().message;
  EXPECT_EQ((*max)[0].GetUint64(), 9007199254740992u);
  EXPECT_EQ((*max)[1].GetInt64(), -9007199254740992);
  EXPECT_EQ(canonicalize(*max), "[9007199254740992,-9007199254740992]");
}

TEST(ParseStrict, FractionAndExponentLiteralsAreDoubles) {
  auto parsed = parseStrict("[9007199254740993.0, 1e20, 1e-400, -1e-400, 2.5E+3]");
  ASSERT_TRUE(parsed) << parsed.error().message;
  EXPECT_TRUE((*parsed)[0].IsDouble());
  EXPECT_EQ((*parsed)[0].GetDouble(), 9007199254740992.0);
  EXPECT_EQ((*parsed)[1].GetDouble(), 1e20);
  EXPECT_EQ((*parsed)[2].GetDouble(), 0.0);  // underflow rounds to zero
  EXPECT_TRUE(std::signbit((*parsed)[3].GetDouble()));
  EXPECT_EQ((*parsed)[4].GetDouble(), 2500.0);
}

TEST(ParseStrict, DoublesParseExactly) {
  auto parsed = parseStrict(
      "[0.1, 2.2250738585072014e-308, 1.7976931348623157e308, "
      "0.1000000000000000055511151231257827021181583404541015625]");
  ASSERT_TRUE(parsed) << parsed.error().message;
  EXPECT_EQ((*parsed)[0].GetDouble(), 0.1);
  EXPECT_EQ((*parsed)[1].GetDouble(), 2.2250738585072014e-308);
  EXPECT_EQ((*parsed)[2].GetDouble(), 1.7976931348623157e308);
  EXPECT_EQ((*parsed)[3].GetDouble(), 0.1);
}

TEST(ParseStrict, SurrogatePairsAndEscapedNulAreKept) {
  auto parsed = parseStrict(R"({"k\u0000":"\ud83d\ude00", "k":"\u0000"})");
  ASSERT_TRUE(parsed) << parsed.error().message;
  EXPECT_EQ(std::string((*parsed)["k\0"s].GetString(), (*parsed)["k\0"s].GetStringLength()),
            "\xF0\x9F\x98\x80");
  EXPECT_EQ((*parsed)["k"].GetStringLength(), 1u);
}

TEST(ParseStrict, ValidMultiByteUtf8IsAccepted) {
  EXPECT_TRUE(
      parseStrict("[\"\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\xF4\x8F\xBF\xBF\xEF\xBF\xBF\"]"));
}

TEST(ParseStrict, LargeObjectWithoutDuplicatesIsAccepted) {
  std::string input = "{";
  for (int i = 0; i < 100; ++i) input += (i ? ",\"k" : "\"k") + std::to_string(i) + "\":1";
  input += "}";
  EXPECT_TRUE(parseStrict(input).has_value());
}

TEST(ParseStrict, NestingUpTo512IsAccepted) {
  EXPECT_TRUE(parseStrict(std::string(512, '[') + std::string(512, ']')).has_value());
}

// ---- parseStrict: every rejection class ----------------------------------------------------

TEST(ParseStrict, RejectsDuplicateKeys) {
  EXPECT_EQ(rejectionRule(R"({"a":1,"a":2})"), "duplicate_key");
  EXPECT_EQ(rejectionRule(R"({"a":1,"a":1})"), "duplicate_key");
  EXPECT_EQ(rejectionRule(R"({"x":{"a":1,"b":2,"a":3}})"), "duplicate_key");
  EXPECT_EQ(rejectionRule(R"([1,{"x":[{"a":1,"a":2}]}])"), "duplicate_key");
  EXPECT_EQ(rejectionRule(R"({"a":1,"\u0061":2})"), "duplicate_key");
  EXPECT_EQ(rejectionRule(R"({"\ud83d\ude00":1,"😀":2})"), "duplicate_key");
  EXPECT_EQ(rejectionRule(R"({"env":"staging","env":"production"})"), "duplicate_key");
}

TEST(ParseStrict, DuplicateKeyMessageNamesKeyAndOffset) {
  EXPECT_EQ(rejectionMessage(R"({"a":1,"a":2})"),
            "duplicate_key: duplicate object key \"a\" at byte offset 7");
  EXPECT_EQ(rejectionMessage(R"({"q\"":1, "q\"":2})"),
            "duplicate_key: duplicate object key \"q\\\"\" at byte offset 10");
}

TEST(ParseStrict, RejectsDuplicateKeysInLargeObjects) {
  std::string input = "{";
  for (int i = 0; i < 40; ++i) input += "\"k" + std::to_string(i) + "\":1,";
  input += "\"k17\":2}";
  EXPECT_EQ(rejectionRule(input), "duplicate_key");
}

TEST(ParseStrict, KeysThatDifferAfterNulAreNotDuplicates) {
  EXPECT_TRUE(parseStrict(R"({"a\u0000b":1,"a\u0000c":2,"a":3,"a\u0000":4})").has_value());
}

TEST(ParseStrict, RejectsInvalidUtf8) {
  EXPECT_EQ(rejectionRule("[\"\xFF\"]"), "invalid_utf8");
  EXPECT_EQ(rejectionRule("[\"\x80\"]"), "invalid_utf8");      // lone continuation byte
  EXPECT_EQ(rejectionRule("[\"\xC3\"]"), "invalid_utf8");      // truncated sequence
  EXPECT_EQ(rejectionRule("[\"\xE2\x82\"]"), "invalid_utf8");  // truncated sequence
  EXPECT_EQ(rejectionRule("[\"\xF5\x80\x80\x80\"]"), "invalid_utf8");
  EXPECT_EQ(rejectionRule("[\"\xF4\x90\x80\x80\"]"), "invalid_utf8");  // above U+10FFFF
  EXPECT_EQ(rejectionRule("{\"\xFE\":1}"), "invalid_utf8");            // in a key
}

TEST(ParseStrict, RejectsOverlongEncodings) {
  EXPECT_EQ(rejectionRule("[\"\xC0\xAF\"]"), "invalid_utf8");  // '/' in 2 bytes
  EXPECT_EQ(rejectionRule("[\"\xC1\xBF\"]"), "invalid_utf8");
  EXPECT_EQ(rejectionRule("[\"\xE0\x80\xAF\"]"), "invalid_utf8");      // '/' in 3 bytes
  EXPECT_EQ(rejectionRule("[\"\xF0\x80\x80\xAF\"]"), "invalid_utf8");  // '/' in 4 bytes
}

TEST(ParseStrict, RejectsRawSurrogatesInUtf8) {
  EXPECT_EQ(rejectionRule("[\"\xED\xA0\x80\"]"), "invalid_utf8");  // U+D800 encoded
  EXPECT_EQ(rejectionRule("[\"\xED\xBF\xBF\"]"), "invalid_utf8");  // U+DFFF encoded
}

TEST(ParseStrict, RejectsInvalidUtf8AnywhereAndSaysWhere) {
  EXPECT_EQ(rejectionRule("[\xFF]"), "invalid_utf8");
  EXPECT_EQ(rejectionMessage("{\"a\":\"\xE2\x82\xAC\xE2\x82\"}"),
            "invalid_utf8: invalid UTF-8 sequence at byte offset 9");
}

TEST(ParseStrict, RejectsByteOrderMark) {
  EXPECT_EQ(rejectionMessage("\xEF\xBB\xBF{}"), "bom: UTF-8 byte order mark at byte offset 0");
}

TEST(ParseStrict, RejectsLoneSurrogates) {
  EXPECT_EQ(rejectionRule(R"(["\ud800"])"), "lone_surrogate");
  EXPECT_EQ(rejectionRule(R"(["\ud800x"])"), "lone_surrogate");
  EXPECT_EQ(rejectionRule(R"(["\ud800\u0041"])"), "lone_surrogate");
  EXPECT_EQ(rejectionRule(R"(["\ud800\ud800"])"), "lone_surrogate");
  EXPECT_EQ(rejectionRule(R"(["\udc00"])"), "lone_surrogate");
  EXPECT_EQ(rejectionRule(R"(["\uDFFF"])"), "lone_surrogate");
  EXPECT_EQ(rejectionRule(R"(["\ude00\ud83d"])"), "lone_surrogate");  // pair in wrong order
  EXPECT_EQ(rejectionRule(R"({"\udc00":1})"), "lone_surrogate");      // in a key
  EXPECT_EQ(rejectionMessage(R"({"ok":1, "k":"x\udc00"})"),
            "lone_surrogate: unpaired UTF-16 surrogate escape in string at byte offset 13");
}

TEST(ParseStrict, RejectsNonFiniteNumbers) {
  EXPECT_EQ(rejectionRule("[NaN]"), "non_finite_number");
  EXPECT_EQ(rejectionRule("[Infinity]"), "non_finite_number");
  EXPECT_EQ(rejectionRule("[-Infinity]"), "non_finite_number");
  EXPECT_EQ(rejectionRule("{\"a\":NaN}"), "non_finite_number");
  EXPECT_EQ(rejectionRule("[1e400]"), "non_finite_number");
  EXPECT_EQ(rejectionRule("[-1e400]"), "non_finite_number");
  EXPECT_EQ(rejectionRule("[1e99999999999999999999]"), "non_finite_number");
  EXPECT_EQ(rejectionRule("[1.7976931348623159e308]"), "non_finite_number");
  EXPECT_EQ(rejectionRule("[0.00001e400]"), "non_finite_number");
  EXPECT_EQ(rejectionRule("[" + std::string(400, '9') + ".5]"), "non_finite_number");
}

// Documented limitation: RapidJSON 1.1.0 checks the exponent before the value, so a zero written
// with an exponent above 308 is refused too. Such a payload is hashed as bytes.
TEST(ParseStrict, ZeroWithHugeExponentIsRefused) {
  EXPECT_EQ(rejectionRule("[0e400]"), "non_finite_number");
  EXPECT_TRUE(parseStrict("[0e300, 0.001e310]").has_value());
}

TEST(ParseStrict, RejectsIntegersBeyondSafeRange) {
  EXPECT_EQ(rejectionRule("[9007199254740993]"), "integer_out_of_range");
  EXPECT_EQ(rejectionRule("[-9007199254740993]"), "integer_out_of_range");
  EXPECT_EQ(rejectionRule("[9223372036854775807]"), "integer_out_of_range");
  EXPECT_EQ(rejectionRule("[-9223372036854775808]"), "integer_out_of_range");
  EXPECT_EQ(rejectionRule("[18446744073709551616]"), "integer_out_of_range");  // > uint64
  EXPECT_EQ(rejectionRule("[100000000000000000000]"), "integer_out_of_range");
  EXPECT_EQ(rejectionRule("[" + std::string(300, '1') + "]"), "integer_out_of_range");
  EXPECT_EQ(rejectionMessage(R"({"n": 9007199254740993})"),
            "integer_out_of_range: integer literal beyond +-2^53 at byte offset 6");
}

TEST(ParseStrict, RejectsMalformedJson) {
  for (const std::string text :
       {"", " ", "{", "[1,]", "{\"a\":1,}", "{'a':1}", "[01]", "[1.]", "[.5]", "[+1]", "{} {}",
        "{}x", "[\"\t\"]", "[\"\\x\"]", "nul", "[1 2]", "{\"a\" 1}", "/*c*/{}"}) {
    EXPECT_EQ(rejectionRule(text), "invalid_json") << text;
  }
}

TEST(ParseStrict, RejectsNulBytes) {
  EXPECT_EQ(rejectionMessage("{}\0garbage"s), "invalid_json: NUL byte at byte offset 2");
  EXPECT_EQ(rejectionRule("[\"a\0b\"]"s), "invalid_json");
}

TEST(ParseStrict, RejectsTooDeepNesting) {
  EXPECT_EQ(rejectionRule(std::string(513, '[') + std::string(513, ']')), "too_deep");
  EXPECT_EQ(rejectionRule(std::string(100000, '[')), "too_deep");
  std::string objects;
  for (int i = 0; i < 600; ++i) objects += "{\"a\":";
  EXPECT_EQ(rejectionRule(objects), "too_deep");
}

TEST(ParseStrict, DoesNotReadPastTheView) {
  const std::string buffer = "[1]2";
  EXPECT_TRUE(parseStrict(std::string_view(buffer).substr(0, 3)).has_value());
  EXPECT_EQ(rejectionRule(std::string_view(buffer).substr(0, 2)), "invalid_json");
}

// ---- base64, sha256, toString ----------------------------------------------------------------

TEST(Base64, Rfc4648Vectors) {
  const std::pair<const char*, const char*> cases[] = {
      {"", ""},
      {"f", "Zg=="},
      {"fo", "Zm8="},
      {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="},
      {"fooba", "Zm9vYmE="},
      {"foobar", "Zm9vYmFy"},
  };
  for (const auto& [plain, encoded] : cases) {
    EXPECT_EQ(base64Encode(plain), encoded);
    auto decoded = base64Decode(encoded);
    ASSERT_TRUE(decoded) << encoded << ": " << decoded.error().message;
    EXPECT_EQ(*decoded, plain);
  }
}

TEST(Base64, RoundTripsEveryByte) {
  std::string bytes;
  for (int i = 0; i < 256; ++i) bytes += static_cast<char>(i);
  for (std::size_t length = 0; length <= bytes.size(); length += 37) {
    const std::string part = bytes.substr(bytes.size() - length);
    auto decoded = base64Decode(base64Encode(part));
    ASSERT_TRUE(decoded);
    EXPECT_EQ(*decoded, part);
  }
  EXPECT_EQ(base64Encode("\xFB\xFF"), "+/8=");
}

TEST(Base64, RejectsBadInput) {
  for (const char* text :
       {"Zg=", "Zg", "Z", "Zg===", "Z===", "====", "=Zm9", "Zm=v", "Zg==Zg==", "Zm9v\n", "Zm 9",
        "Zm8*", "Zm9-", "Zm9_", "Zh==", "Zm9=", "\xC3\xA9Zg"}) {
    auto decoded = base64Decode(text);
    EXPECT_FALSE(decoded.has_value()) << text;
    if (!decoded) {
      EXPECT_EQ(decoded.error().code, Errc::invalid_argument);
    }
  }
}

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256Hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(ToString, WritesCompactJson) {
  auto parsed = parseStrict(R"( { "b" : [1, 2.5, "x\n"], "a" : null } )");
  ASSERT_TRUE(parsed);
  EXPECT_EQ(toString(*parsed), R"({"b":[1,2.5,"x\n"],"a":null})");
}

TEST(AppendHelpers, AppendToExistingText) {
  std::string out = "x";
  appendJsonString(out, "a\"b");
  appendNumberEs6(out, 1e21);
  appendBase64(out, "foo");
  EXPECT_EQ(out, "x\"a\\\"b\"1e+21Zm9v");
}

}  // namespace
}  // namespace countersign::json

namespace countersign {
namespace {

TEST(Utf8, InvalidBytesAreReplacedOneEach) {
  EXPECT_TRUE(json::isValidUtf8("caf\xc3\xa9"));
  EXPECT_FALSE(json::isValidUtf8("caf\xe9"));
  EXPECT_EQ(json::toValidUtf8("caf\xc3\xa9"), "caf\xc3\xa9");
  EXPECT_EQ(json::toValidUtf8("a\xff" "b"), "a\xef\xbf\xbd" "b");
  EXPECT_EQ(json::toValidUtf8("\xc0\xaf"), "\xef\xbf\xbd\xef\xbf\xbd");      // overlong
  EXPECT_EQ(json::toValidUtf8("\xed\xa0\x80"), "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");  // surrogate
  EXPECT_EQ(json::toValidUtf8("x\xe2\x82"), "x\xef\xbf\xbd\xef\xbf\xbd");    // truncated
}

TEST(Utf8, WrittenJsonIsAlwaysValidUtf8) {
  detail::JsonObjectWriter w;
  w.field("subject\xff", "agents.\xfe.x").field("ok", "caf\xc3\xa9");
  const std::string text = w.finish();
  EXPECT_TRUE(json::isValidUtf8(text)) << text;
  EXPECT_TRUE(json::parseStrict(text).has_value()) << text;
  EXPECT_EQ(text, "{\"subject\xef\xbf\xbd\":\"agents.\xef\xbf\xbd.x\",\"ok\":\"caf\xc3\xa9\"}");
}

}  // namespace
}  // namespace countersign
