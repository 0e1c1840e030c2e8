#pragma once

#include "kernel/common/json_escape.h"

#include <string>
#include <string_view>

#include "kernel/common/status.h"

namespace shoal::store {

// Specs and statuses are JSON text kept verbatim; these are the only JSON operations the store
// needs on its hot path. A hand-written scanner rather than Poco::JSON: Poco's parser (even
// with a no-op handler) costs ~6 us for a 400-byte spec, this ~0.3 us (see README.md), and
// the store checks every spec of every committed write on every replica.

// Ok when `text` is exactly one well-formed JSON object (RFC 8259: strict grammar, UTF-8,
// optional surrounding whitespace), nested at most kMaxJsonDepth deep. The error says what
// was expected and at which byte.
inline constexpr int kMaxJsonDepth = 64;
Status checkJsonObject(std::string_view text);

// True when `s` is valid UTF-8 without control characters (names, label keys and values).
bool isCleanText(std::string_view s);

// Appends `s` as a quoted JSON string, escaping what JSON requires.
using ::shoal::appendJsonString;  // kernel/common/json_escape.h

}  // namespace shoal::store
