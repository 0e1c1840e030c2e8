#include "kernel/main/subsystems.h"

#include <Poco/Exception.h>

#include "kernel/common/log.h"

namespace shoal::daemon {

void PluginSubsystem::initialize(Poco::Util::Application&) {
  host_.setPluginConfig(config_.pluginConfig);
  host_.setDisabled(config_.disabledPlugins);
  host_.setEventHandler([](const plugin::PluginEvent& ev) {
    // Nothing consumes plugin events yet (the agent arrives with orchestration); log them so
    // a plugin's notices are visible.
    log::debug("plugin", "event",
               {{"plugin", ev.plugin}, {"type", std::to_string(ev.type)}, {"json", ev.json}});
  });
  host_.loadDirectories(config_.pluginDirs);
  host_.start();
  if (Status s = host_.checkRequired(config_.requiredKinds); !s) {
    throw Poco::IllegalStateException(s.message());
  }
}

void PluginSubsystem::uninitialize() { host_.shutdown(); }

void ApiSubsystem::initialize(Poco::Util::Application&) {
  api::ApiServer::Options options;
  options.socketPath = config_.socketPath;
  server_ = std::make_unique<api::ApiServer>(options, router_);
  if (Status s = server_->start(); !s) {
    server_.reset();
    throw Poco::IOException(s.message());
  }
}

void ApiSubsystem::uninitialize() {
  if (server_) server_->stop();
  server_.reset();
}

void SwarmSubsystem::initialize(Poco::Util::Application&) {
  if (Status s = swarm_.resume(); !s) throw Poco::IllegalStateException(s.message());
}

void SwarmSubsystem::uninitialize() { swarm_.stop(); }

}  // namespace shoal::daemon
