// Time formatting shared by the built-in plugins (header-only, C++17).
#pragma once

#include <cstdint>
#include <cstdio>
#include <ctime>
#include <string>

namespace shoal::plugins {

// RFC 3339 with nanoseconds in UTC, as Docker prefixes log lines with --timestamps.
inline std::string rfc3339(int64_t ns) {
  int64_t secs = ns / 1000000000;
  int64_t frac = ns % 1000000000;
  if (frac < 0) {
    frac += 1000000000;
    --secs;
  }
  const std::time_t t = static_cast<std::time_t>(secs);
  struct tm tm {};
  gmtime_r(&t, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%09lldZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<long long>(frac));
  return buf;
}

}  // namespace shoal::plugins
