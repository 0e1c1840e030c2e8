#pragma once

#include <iosfwd>
#include <string>
#include <vector>

namespace shoal::cli {

// Exit codes, as Docker's CLI uses them.
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;    // the command ran and failed (daemon error, no daemon)
inline constexpr int kExitUsage = 125;  // the command line itself is wrong

// Run the `shoal` command line. `args` excludes the program name. Writes normal output to
// `out` and errors to `err`; returns the exit code. `envHost` is $SHOAL_HOST or "".
int run(const std::vector<std::string>& args, std::ostream& out, std::ostream& err,
        const std::string& envHost);

}  // namespace shoal::cli
