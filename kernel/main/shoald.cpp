// shoald: the Shoal daemon. Loads its plugins, serves the control API, and (as later work
// lands) runs the agent and, on managers, the manager.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <Poco/Exception.h>
#include <Poco/Util/HelpFormatter.h>
#include <Poco/Util/Option.h>
#include <Poco/Util/OptionSet.h>
#include <Poco/Util/ServerApplication.h>

#include <cstdio>
#include <filesystem>
#include <iostream>

#include "kernel/api/router.h"
#include "kernel/api/system_routes.h"
#include "kernel/common/clock.h"
#include "kernel/common/log.h"
#include "kernel/common/random.h"
#include "kernel/config/daemon_config.h"
#include "kernel/main/pid_file.h"
#include "kernel/main/subsystems.h"
#include "kernel/manager/image_routes.h"
#include "kernel/manager/network_routes.h"
#include "kernel/manager/policy_routes.h"
#include "kernel/manager/service_routes.h"
#include "kernel/manager/swarm_routes.h"
#include "kernel/plugin/plugin_host.h"
#include "kernel/plugin/plugin_kind.h"

#ifndef SHOAL_VERSION
#define SHOAL_VERSION "0.0.0"
#endif

namespace shoal::daemon {

// Exit codes (sysexits.h): 64 usage, 78 configuration.
constexpr int kExitUsage = 64;
constexpr int kExitConfig = 78;
constexpr int kExitSoftware = 70;

class ShoalDaemon : public Poco::Util::ServerApplication {
 public:
  ShoalDaemon() { setUnixOptions(true); }

  // Run after init(): main() between the subsystems' initialize and uninitialize.
  int runInitialised() { return Poco::Util::ServerApplication::run(); }

 protected:
  void defineOptions(Poco::Util::OptionSet& options) override {
    // Application's, not ServerApplication's: shoald always runs in the foreground (systemd
    // supervises it) and keeps its own locked pidfile, so Poco's --daemon/--pidfile are left out.
    Poco::Util::Application::defineOptions(options);
    using Poco::Util::Option;
    options.addOption(Option("help", "h", "print this help and exit"));
    options.addOption(Option("version", "v", "print the version and exit"));
    options.addOption(Option("config", "c", "configuration file (default /etc/shoal/shoald.yaml)")
                          .argument("FILE"));
    options.addOption(Option("data-root", "",
                             "directory for the daemon's state (overrides "
                             "data_root)")
                          .argument("DIR"));
    options.addOption(
        Option("socket", "", "the control API socket (overrides api.socket)").argument("PATH"));
    options.addOption(Option("pidfile", "", "the pidfile (overrides pidfile)").argument("PATH"));
    options.addOption(Option("plugin-dir", "",
                             "a plugin directory; repeat for more (replaces "
                             "plugins.dirs)")
                          .argument("DIR")
                          .repeatable(true));
    options.addOption(Option("log-level", "",
                             "error, warn, info, debug or trace (overrides "
                             "log.level)")
                          .argument("LEVEL"));
    options.addOption(Option("check-config", "", "validate the configuration and exit"));
  }

  void handleOption(const std::string& name, const std::string& value) override {
    Poco::Util::Application::handleOption(name, value);
    if (name == "help") {
      help_ = true;
      stopOptionsProcessing();
    } else if (name == "version") {
      version_ = true;
      stopOptionsProcessing();
    } else if (name == "config") {
      configPath_ = value;
      configGiven_ = true;
    } else if (name == "data-root") {
      dataRoot_ = value;
    } else if (name == "socket") {
      socket_ = value;
    } else if (name == "pidfile") {
      pidFile_ = value;
    } else if (name == "plugin-dir") {
      pluginDirs_.push_back(value);
    } else if (name == "log-level") {
      logLevel_ = value;
    } else if (name == "check-config") {
      checkConfig_ = true;
    }
  }

  void initialize(Poco::Util::Application& self) override {
    if (help_ || version_) return;
    // Signals are taken by waitForTerminationRequest(); block them before any thread starts
    // so every thread inherits the mask and none dies of a SIGTERM meant for the process.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGQUIT);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    signal(SIGPIPE, SIG_IGN);

    if (Status s = loadDaemonConfig(); !s) {
      fail(kExitConfig, s.message());
      return;
    }
    if (checkConfig_) return;
    log::setLevel(config_.logLevel);
    log::setFormat(config_.logFormat);

    if (Status s = pidFileLock_.acquire(config_.pidFile); !s) {
      fail(kExitSoftware, s.message());
      return;
    }
    std::error_code ec;
    std::filesystem::create_directories(config_.dataRoot, ec);
    if (ec) {
      fail(kExitSoftware, "cannot create the data root " + config_.dataRoot + ": " + ec.message());
      return;
    }
    ::chmod(config_.dataRoot.c_str(), 0700);

    api::DaemonFacts facts;
    facts.version = SHOAL_VERSION;
    facts.dataRoot = config_.dataRoot;
    facts.socketPath = config_.socketPath;
    facts.pid = ::getpid();
    facts.startedUnixNanos = SystemClock::instance().nowNanos();
    swarm_ = std::make_unique<manager::Swarm>(config_.dataRoot, SHOAL_VERSION, random_,
                                              SystemClock::instance());
    swarm_->setPluginLister([this] {
      std::vector<std::pair<std::string, std::string>> out;
      for (const auto& p : plugins_.list()) {
        out.emplace_back(std::string(plugin::kindName(p.kind)), p.name);
      }
      return out;
    });
    facts.describeSwarm = [this](Poco::JSON::Object& out) { manager::describeSwarm(*swarm_, out); };
    api::addSystemRoutes(router_, plugins_, facts);
    manager::addSwarmRoutes(router_, *swarm_);
    manager::addServiceRoutes(router_, *swarm_);
    manager::addPolicyRoutes(router_, *swarm_);
    manager::addImageRoutes(router_, *swarm_);
    manager::addNetworkRoutes(router_, *swarm_);

    // Initialised in this order, uninitialised in reverse: the API stops first, then the
    // swarm's Raft, then the plugins.
    addSubsystem(new PluginSubsystem(
        config_, plugins_, [this](const plugin::PluginEvent& ev) { swarm_->onPluginEvent(ev); }));
    addSubsystem(new SwarmSubsystem(*swarm_, config_, plugins_));
    addSubsystem(new ApiSubsystem(config_, router_));
    try {
      Poco::Util::ServerApplication::initialize(self);
    } catch (const Poco::Exception& e) {
      fail(kExitSoftware, e.message());
    } catch (const std::exception& e) {
      fail(kExitSoftware, e.what());
    }
  }

  void uninitialize() override {
    try {
      Poco::Util::ServerApplication::uninitialize();
    } catch (const std::exception& e) {
      log::error("shoald", "error during shutdown", {{"error", e.what()}});
    }
    pidFileLock_.release();
  }

  int main(const ArgVec& args) override {
    if (help_) {
      Poco::Util::HelpFormatter help(options());
      help.setUnixStyle(true);
      help.setCommand("shoald");
      help.setUsage("[OPTIONS]");
      help.setHeader("The Shoal daemon: runs in the foreground until SIGTERM or SIGINT.");
      help.format(std::cout);
      return EXIT_OK;
    }
    if (version_) {
      std::cout << "shoald version " << SHOAL_VERSION << " (plugin ABI " << SHOAL_ABI_MAJOR << "."
                << SHOAL_ABI_MINOR << ")\n";
      return EXIT_OK;
    }
    if (!args.empty()) {
      std::cerr << "shoald: unexpected argument \"" << args.front() << "\"\nSee 'shoald --help'.\n";
      return kExitUsage;
    }
    if (exitCode_ != 0) return exitCode_;
    if (checkConfig_) {
      std::cout << "configuration OK: "
                << (config_.source.empty() ? std::string("(defaults)") : config_.source) << '\n';
      return EXIT_OK;
    }
    log::info("shoald", "shoald started",
              {{"version", SHOAL_VERSION},
               {"pid", std::to_string(::getpid())},
               {"socket", config_.socketPath},
               {"data_root", config_.dataRoot}});
    waitForTerminationRequest();
    log::info("shoald", "shutting down");
    return EXIT_OK;
  }

 private:
  Status loadDaemonConfig() {
    const std::string path = configGiven_ ? configPath_ : "/etc/shoal/shoald.yaml";
    std::error_code ec;
    if (!configGiven_ && !std::filesystem::exists(path, ec)) {
      config_ = config::DaemonConfig{};  // no file at the default place: documented defaults
    } else {
      auto loaded = config::loadConfig(path);
      if (!loaded) return loaded.status();
      config_ = std::move(loaded.value());
    }
    if (!dataRoot_.empty()) config_.dataRoot = dataRoot_;
    if (!socket_.empty()) config_.socketPath = socket_;
    if (!pidFile_.empty()) config_.pidFile = pidFile_;
    if (!pluginDirs_.empty()) config_.pluginDirs = pluginDirs_;
    if (!logLevel_.empty()) {
      auto level = log::parseLevel(logLevel_);
      if (!level) return level.status().withContext("--log-level");
      config_.logLevel = *level;
    }
    for (const auto* p : {&config_.dataRoot, &config_.socketPath, &config_.pidFile}) {
      if (p->empty() || (*p)[0] != '/') {
        return Status::invalidArgument("paths must be absolute, got \"" + *p + "\"");
      }
    }
    return Status::ok();
  }

  void fail(int code, const std::string& message) {
    if (exitCode_ == 0) {
      exitCode_ = code;
      std::cerr << "shoald: " << message << '\n';
    }
  }

  bool help_ = false;
  bool version_ = false;
  bool checkConfig_ = false;
  bool configGiven_ = false;
  std::string configPath_;
  std::string dataRoot_;
  std::string socket_;
  std::string pidFile_;
  std::vector<std::string> pluginDirs_;
  std::string logLevel_;
  int exitCode_ = 0;

  config::DaemonConfig config_;
  PidFile pidFileLock_;
  plugin::PluginHost plugins_;
  SystemRandom random_;
  std::unique_ptr<manager::Swarm> swarm_;  // before router_: its routes refer to it
  api::Router router_;
};

}  // namespace shoal::daemon

int main(int argc, char** argv) {
  shoal::daemon::ShoalDaemon app;
  try {
    app.init(argc, argv);
  } catch (const Poco::Exception& e) {
    std::cerr << "shoald: " << e.displayText() << "\nSee 'shoald --help'.\n";
    return shoal::daemon::kExitUsage;
  }
  return app.runInitialised();
}
