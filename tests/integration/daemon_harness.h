#pragma once

#include <signal.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace shoal::test {

// One shoald from the build tree with its own socket, pidfile and data root in a temp dir.
class Daemon {
 public:
  Daemon(const TempDir& dir, std::vector<std::string> pluginDirs,
         std::vector<std::string> extra = {})
      : socket_(dir.file("shoald.sock")), pidFile_(dir.file("shoald.pid")) {
    std::vector<std::string> argv = {std::string(SHOAL_BIN_DIR) + "/shoald",
                                     "--config",
                                     dir.write("shoald.yaml", "log:\n  level: debug\n"),
                                     "--data-root",
                                     dir.file("data"),
                                     "--socket",
                                     socket_,
                                     "--pidfile",
                                     pidFile_};
    for (const auto& d : pluginDirs) {
      argv.push_back("--plugin-dir");
      argv.push_back(d);
    }
    argv.insert(argv.end(), extra.begin(), extra.end());
    process_ = std::make_unique<ChildProcess>(argv, dir.file("shoald.log"));
  }

  // Wait until the API answers (true) or the daemon exits (false).
  bool waitReady() {
    return eventually([&] { return !process_->running() || shoal({"info"}).exitCode == 0; },
                      std::chrono::seconds(20)) &&
           process_->running();
  }

  RunResult shoal(std::vector<std::string> args) const {
    args.insert(args.begin(), {std::string(SHOAL_BIN_DIR) + "/shoal", "-H", "unix://" + socket_});
    return runCommand(args, std::chrono::seconds(30));
  }

  ChildProcess& process() { return *process_; }
  const std::string& socket() const { return socket_; }
  const std::string& pidFile() const { return pidFile_; }

 private:
  std::string socket_;
  std::string pidFile_;
  std::unique_ptr<ChildProcess> process_;
};

}  // namespace shoal::test
