// The files in a shim's state directory and their formats, shared by shoal-shim (which writes
// them) and the plugin (which reads them). Plain C++/POSIX, no Poco: the shim links this.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace shoal::runc {

// File names inside a state directory (README.md, "Files in the state directory").
inline constexpr char kShimPidFile[] = "shim.pid";            // "PID STARTTIME\n", the shim
inline constexpr char kContainerPidFile[] = "container.pid";  // runc's --pid-file
inline constexpr char kStartedFile[] = "started";             // "STARTED_NS\n" once running
inline constexpr char kExitFile[] = "exit.json";              // the exit, written once
inline constexpr char kLogFile[] = "container.log";           // + .1, .2, ... rotated
inline constexpr char kShimLogFile[] = "shim.log";            // the shim's own complaints
inline constexpr char kRuncLogFile[] = "runc.log";            // runc run's --log (JSON)

// How a container ended (exit.json).
struct ExitInfo {
  int exitCode = 0;        // Docker's: the exit code, or 128 + the signal that killed it
  int signal = 0;          // the signal that killed the container's init, 0 if it exited
  bool oomKilled = false;  // the kernel's OOM killer killed a process of the container
  int64_t finishedNs = 0;  // CLOCK_REALTIME when the shim reaped it
  std::string message;     // "exited with code 3", "killed by signal SIGKILL (out of memory)"
};

// One line the container wrote (a line longer than 16 KiB is split into several records).
struct LogRecord {
  std::string stream;  // "stdout" | "stderr"
  int64_t timestampNs = 0;
  std::string line;  // without its newline
};

// A value of a flat JSON object (strings, integers, booleans; nothing nested).
struct FlatValue {
  enum class Kind { kString, kInt, kBool, kNull } kind = Kind::kNull;
  std::string s;
  int64_t i = 0;
  bool b = false;
};
using FlatObject = std::vector<std::pair<std::string, FlatValue>>;

// Parses a JSON object whose members are strings, integers, booleans or null. Returns false
// for anything else (nested values, bad syntax, trailing text).
bool parseFlatObject(std::string_view text, FlatObject& out);

// Appends `s` as a JSON string (quoted, escaped; bytes >= 0x80 are copied unchanged).
void appendJsonString(std::string& out, std::string_view s);

// exit.json's text, and back.
std::string encodeExit(const ExitInfo& exit);
bool decodeExit(std::string_view text, ExitInfo& exit);

// One log line of container.log: {"stream":"stdout","ts":NS,"line":"..."}\n, and back (the
// decoder takes the line without its newline).
std::string encodeLogRecord(const LogRecord& record);
bool decodeLogRecord(std::string_view line, LogRecord& record);

// `path` rotated `n` times: path itself for 0, else "path.n".
std::string rotatedName(const std::string& path, int n);

// Appends records to a log file, rotating it when the next record would take it past maxBytes:
// path.(maxFiles-2) -> path.(maxFiles-1), ..., path -> path.1, then a new path, so at most
// maxFiles files exist (maxFiles 1: the file is truncated instead). A record is one write(2),
// so a reader never sees half of one unless it reads while it is written. THREAD: one owner.
class LogWriter {
 public:
  LogWriter(std::string path, uint64_t maxBytes, int maxFiles);
  ~LogWriter();
  LogWriter(const LogWriter&) = delete;
  LogWriter& operator=(const LogWriter&) = delete;

  // False (errno set) when the file cannot be opened or written; the record is then lost.
  bool write(const LogRecord& record);

 private:
  bool open();
  void rotate();

  std::string path_;
  uint64_t maxBytes_;
  int maxFiles_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

}  // namespace shoal::runc
