#pragma once

#include <Poco/Util/Subsystem.h>

#include <memory>

#include "kernel/api/api_server.h"
#include "kernel/api/router.h"
#include "kernel/config/daemon_config.h"
#include "kernel/manager/swarm.h"
#include "kernel/plugin/plugin_host.h"

namespace shoal::daemon {

// Loads the plugins at start-up and unloads them at shutdown. Fails start-up only when a
// required plugin kind is missing; bad plugins are refused and reported.
class PluginSubsystem : public Poco::Util::Subsystem {
 public:
  PluginSubsystem(const config::DaemonConfig& config, plugin::PluginHost& host,
                  plugin::EventQueue::Handler sink)
      : config_(config), host_(host), sink_(std::move(sink)) {}
  const char* name() const override { return "shoal.plugins"; }

 protected:
  void initialize(Poco::Util::Application& app) override;
  void uninitialize() override;

 private:
  const config::DaemonConfig& config_;
  plugin::PluginHost& host_;
  plugin::EventQueue::Handler sink_;  // where plugin events go (the agent)
};

// Serves the control API on the unix socket.
class ApiSubsystem : public Poco::Util::Subsystem {
 public:
  ApiSubsystem(const config::DaemonConfig& config, const api::Router& router)
      : config_(config), router_(router) {}
  const char* name() const override { return "shoal.api"; }

 protected:
  void initialize(Poco::Util::Application& app) override;
  void uninitialize() override;

 private:
  const config::DaemonConfig& config_;
  const api::Router& router_;
  std::unique_ptr<api::ApiServer> server_;
};

// Rejoins the swarm this node belongs to at start-up (refusing to start on swarm state it
// cannot trust: corrupt Raft or store files, foreign certificates), and stops Raft at
// shutdown.
class SwarmSubsystem : public Poco::Util::Subsystem {
 public:
  SwarmSubsystem(manager::Swarm& swarm, const config::DaemonConfig& config,
                 plugin::PluginHost& plugins)
      : swarm_(swarm), config_(config), plugins_(plugins) {}
  const char* name() const override { return "shoal.swarm"; }

 protected:
  void initialize(Poco::Util::Application& app) override;
  void uninitialize() override;

 private:
  manager::Swarm& swarm_;
  const config::DaemonConfig& config_;
  plugin::PluginHost& plugins_;
};

}  // namespace shoal::daemon
