#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace shoal::agent::wire {

// JSON text helpers for the agent session's hot paths (assignments, status reports, the
// agent's records), where Poco's parser — a tree of Dynamic::Var per document — costs far more
// than reading the few fields needed. They read raw text in place and never allocate for what
// they skip. Malformed input gives "absent" (nullopt / false), never undefined behaviour.
// THREAD: pure functions.

// The end (one past) of the JSON value that starts at `s[at]` (leading whitespace allowed), or
// npos when there is no well-formed value there. Strings, objects and arrays are matched
// structurally (escapes, nesting); numbers and literals by their characters.
std::size_t skipValue(std::string_view s, std::size_t at);

// The raw text of member `key` of the JSON object `object` (top level only; the first one when
// repeated), or nullopt when it has none or `object` is not an object.
std::optional<std::string_view> member(std::string_view object, std::string_view key);

// Calls fn(raw element) for each element of the JSON array `array`; false when it is not a
// well-formed array or fn returns false.
template <class Fn>
bool forEach(std::string_view array, Fn&& fn);

// The value of a JSON string literal (escapes decoded, \u to UTF-8), or nullopt.
std::optional<std::string> stringOf(std::string_view raw);
// An integer literal (no fraction or exponent) that fits int64_t, or nullopt.
std::optional<int64_t> intOf(std::string_view raw);
// true / false, or nullopt.
std::optional<bool> boolOf(std::string_view raw);

// Shorthands: member `key` of `object` as a string / integer / bool, or `fallback`.
std::string stringMember(std::string_view object, std::string_view key,
                         const std::string& fallback = "");
int64_t intMember(std::string_view object, std::string_view key, int64_t fallback);
bool boolMember(std::string_view object, std::string_view key, bool fallback);

// ---- implementation of the template --------------------------------------------------------

std::size_t skipSpace(std::string_view s, std::size_t at);

template <class Fn>
bool forEach(std::string_view array, Fn&& fn) {
  std::size_t i = skipSpace(array, 0);
  if (i >= array.size() || array[i] != '[') return false;
  i = skipSpace(array, i + 1);
  if (i < array.size() && array[i] == ']') return true;
  for (;;) {
    const std::size_t end = skipValue(array, i);
    if (end == std::string_view::npos) return false;
    const std::size_t start = skipSpace(array, i);
    if (!fn(array.substr(start, end - start))) return false;
    i = skipSpace(array, end);
    if (i >= array.size()) return false;
    if (array[i] == ']') return true;
    if (array[i] != ',') return false;
    ++i;
  }
}

}  // namespace shoal::agent::wire
