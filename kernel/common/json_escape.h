#pragma once

#include <string>
#include <string_view>

namespace shoal {

// Append `s` escaped for a JSON string (", \, \n, \r, \t, other control bytes as \u00XX),
// without the surrounding quotes. Bytes >= 0x20 pass through unchanged (UTF-8 stays as is).
void appendJsonEscaped(std::string& out, std::string_view s);

// Append `s` as a quoted JSON string.
inline void appendJsonString(std::string& out, std::string_view s) {
  out += '"';
  appendJsonEscaped(out, s);
  out += '"';
}

}  // namespace shoal
