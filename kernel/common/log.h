#pragma once

#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>

#include "kernel/common/status.h"

namespace shoal::log {

enum class Level { kError = 0, kWarn, kInfo, kDebug, kTrace };
enum class Format { kText, kJson };

// "error", "warn", "info", "debug", "trace".
Result<Level> parseLevel(std::string_view name);
std::string_view levelName(Level level);

// One structured field: key=value.
struct Field {
  std::string_view key;
  std::string value;
};

// Where formatted lines go. The default writes to stderr. THREAD: write() may be called from
// any thread; the logger serialises calls.
class Sink {
 public:
  virtual ~Sink() = default;
  virtual void write(Level level, std::string_view line) = 0;
};

// Process-wide configuration. Set at start-up, before threads start.
void setLevel(Level level);
Level level();
void setFormat(Format format);
// Replace the sink (tests); nullptr restores stderr.
void setSink(std::shared_ptr<Sink> sink);

bool enabled(Level level);

// Format and emit one line. Text format is logfmt
//   time=2026-11-22T02:35:28.123Z level=info module=plugin msg="loaded" name=runtime-runc
// When stderr is the journal (JOURNAL_STREAM is set) the time is left to journald and the line
// starts with a syslog priority prefix (<6>) so journalctl shows the right level.
void write(Level level, std::string_view module, std::string_view message,
           std::initializer_list<Field> fields = {});

inline void error(std::string_view module, std::string_view msg,
                  std::initializer_list<Field> f = {}) {
  write(Level::kError, module, msg, f);
}
inline void warn(std::string_view module, std::string_view msg,
                 std::initializer_list<Field> f = {}) {
  write(Level::kWarn, module, msg, f);
}
inline void info(std::string_view module, std::string_view msg,
                 std::initializer_list<Field> f = {}) {
  write(Level::kInfo, module, msg, f);
}
inline void debug(std::string_view module, std::string_view msg,
                  std::initializer_list<Field> f = {}) {
  write(Level::kDebug, module, msg, f);
}

}  // namespace shoal::log
