// scheduler-spread: a strict JSON (RFC 8259) pull reader for the scheduling documents.
//
// Why not Poco::JSON: measured on the 1,000-node snapshot of tests/bench/scheduler_bench.cpp
// (500 KiB), Poco's parser takes 9-14 ms with a handler that does nothing and 35-50 ms to
// build its DOM, against a budget of a few milliseconds per scheduling pass. This reader
// builds no tree: documents.cpp pulls members one at a time straight into the snapshot, and
// strings without escapes are views into the text, so most values cost no allocation.
//
// Strict: one value and nothing but whitespace after it; no comments, no trailing commas, no
// NaN; strings must be valid UTF-8 without raw control characters; \u escapes (surrogate
// pairs included) become UTF-8; containers nest at most kMaxDepth deep. Any violation throws
// sdk::Error(SHOAL_EINVAL) "<doc> is not valid JSON: <what> at line L, column C".
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::plugins::spread {

class JsonReader {
 public:
  static constexpr size_t kMaxDepth = 64;

  enum class Kind : uint8_t { kNull, kBool, kNumber, kString, kArray, kObject };

  // A number as written. `integer` when it has no fraction and no exponent; then `magnitude`
  // is its absolute value unless `overflow` (it does not fit in 64 bits).
  struct Number {
    bool integer = true;
    bool negative = false;
    bool overflow = false;
    uint64_t magnitude = 0;
  };

  // `text` is borrowed for the reader's lifetime; `doc` names it in messages ("snapshot").
  JsonReader(std::string_view text, const char* doc) : text_(text), doc_(doc) {}

  // The kind of the next value, without consuming it.
  Kind peek();

  void readNull();
  bool readBool();
  Number readNumber();
  // Valid until the next read: a view into the text, or into scratch space when the string
  // had escapes.
  std::string_view readString();
  // Consume (and check) the next value, whatever it is. Recursion is bounded by kMaxDepth.
  void skip();

  void beginObject();
  // The next member's name (valid until the next read), or false at the end of the object.
  bool nextMember(std::string_view* name);
  void beginArray();
  // True when another element follows; false at the end of the array.
  bool nextElement();

  // Nothing but whitespace may follow the document's value.
  void finish();

 private:
  [[noreturn]] void syntax(const char* what) const;
  void skipSpace();
  char next();  // the next non-space character, not consumed; '\0' at the end
  void expect(char c, const char* what);
  std::string_view readStringInto(std::string& scratch);
  void readLiteral(std::string_view word);
  void push(bool object);

  struct Level {
    bool object;
    bool first;
  };

  std::string_view text_;
  const char* doc_;
  size_t pos_ = 0;
  std::vector<Level> stack_;
  std::string nameScratch_;
  std::string valueScratch_;
};

}  // namespace shoal::plugins::spread
