#pragma once

// SHOAL_CHECK(cond): a fatal condition, checked in every build; aborts with a message.
// SHOAL_ASSERT(cond): an invariant, checked in debug and sanitizer builds only.

namespace shoal::detail {
[[noreturn]] void checkFailed(const char* expr, const char* file, int line);
}  // namespace shoal::detail

#define SHOAL_CHECK(cond) \
  ((cond) ? static_cast<void>(0) : ::shoal::detail::checkFailed(#cond, __FILE__, __LINE__))

#if defined(NDEBUG) && !defined(SHOAL_SANITIZE_BUILD)
#define SHOAL_ASSERT(cond) static_cast<void>(sizeof(cond))
#else
#define SHOAL_ASSERT(cond) SHOAL_CHECK(cond)
#endif
