// Running the networking tools the overlay libraries drive (conntrack, ip) from a daemon: one
// process to completion, from the calling thread (so in its network namespace), with its
// output. Shared by lb/ and mesh/.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace shoal::overlay {

struct CommandResult {
  int exitCode = -1;
  std::string out;
  std::string err;
  std::string failure;  // set when the command could not be run to completion
};

// Runs `argv` (argv[0] a path) to completion, killing it after `limit`. posix_spawn rather
// than fork: the daemon is multithreaded and may be large; the child gets default signal
// dispositions and an empty mask.
CommandResult runCommand(const std::vector<std::string>& argv, std::chrono::milliseconds limit);

// The path of program `name` on PATH or in the sbin/bin directories, "" when there is none.
std::string findProgram(const std::string& name);

}  // namespace shoal::overlay
