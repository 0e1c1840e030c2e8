#include "kernel/plugin/plugin_instance.h"

#include <dlfcn.h>

#include "kernel/common/log.h"
#include "kernel/plugin/event_queue.h"
#include "kernel/plugin/policy_broker.h"

namespace shoal::plugin {
namespace {
// The innermost plugin call running on this thread (null when none).
thread_local void* tl_call = nullptr;
}  // namespace

PluginInstance::CallScope::CallScope(PluginInstance* self)
    : self_(self), previous_(static_cast<CallScope*>(tl_call)) {
  tl_call = this;
}

PluginInstance::CallScope::~CallScope() { tl_call = previous_; }

PluginInstance::PluginInstance(PluginInfo info, void* dlHandle, const shoal_plugin_desc* desc,
                               EventQueue* events)
    : info_(std::move(info)), dlHandle_(dlHandle), desc_(desc), events_(events), handle_{this} {}

PluginInstance::~PluginInstance() {
  close();
  {
    std::lock_guard<std::mutex> lock(callMu_);
    if (initialised_) {
      CallScope scope(this);
      try {
        desc_->fini(state_);
      } catch (...) {
        log::error("plugin", "fini threw an exception", {{"plugin", info_.name}});
      }
      initialised_ = false;
      state_ = nullptr;
    }
  }
  // After fini (which may still close its handles), before the plugin's code is unmapped.
  if (policies_ != nullptr) policies_->closeAllOf(this);
  if (dlHandle_ != nullptr) dlclose(dlHandle_);
}

void PluginInstance::close() { closing_.store(true); }

Status PluginInstance::init(const shoal_host* host, std::string_view configJson) {
  std::lock_guard<std::mutex> lock(callMu_);
  SHOAL_CHECK(!initialised_);
  CallScope scope(this);
  shoal_status code;
  void* state = nullptr;
  try {
    code = desc_->init(host, &handle_, shoal_str{configJson.data(), configJson.size()}, &state);
  } catch (const std::exception& e) {
    return escapedException("init", e.what());
  } catch (...) {
    return escapedException("init", "an exception of unknown type");
  }
  if (code != SHOAL_OK) {
    Status s = toStatus("init", code, false, scope.message());
    if (s.isOk()) {  // a positive code from init is not success
      s = Status::internal("plugin " + info_.name + ": init returned unexpected status " +
                           std::to_string(code));
    }
    return s;
  }
  state_ = state;
  initialised_ = true;
  return Status::ok();
}

bool PluginInstance::recordFailure(std::string message) {
  for (auto* c = static_cast<CallScope*>(tl_call); c != nullptr; c = c->previous_) {
    if (c->self_ == this) {
      c->message_ = std::move(message);
      return true;
    }
  }
  return false;
}

Status PluginInstance::toStatus(std::string_view op, shoal_status code, bool async,
                                const std::string& message) const {
  if (code == SHOAL_OK) return Status::ok();
  if (code == SHOAL_EAGAIN && async) return Status::ok();
  std::string m = "plugin " + info_.name + ": " + std::string(op) + ": ";
  if (code > 0) {
    return Status::internal(m + "returned status " + std::to_string(code) +
                            (code == SHOAL_EAGAIN ? " (SHOAL_EAGAIN) from a synchronous op"
                                                  : ", which is not a valid status"));
  }
  if (message.empty()) {
    m += "failed with " + std::string(shoalStatusName(code)) + " (" + std::to_string(code) +
         ") and gave no message";
  } else {
    m += message;
  }
  return Status(statusCodeFor(code), m);
}

Status PluginInstance::escapedException(std::string_view op, const char* what) const {
  log::error("plugin", "exception escaped through the C ABI",
             {{"plugin", info_.name}, {"op", std::string(op)}, {"error", what}});
  return Status::internal("plugin " + info_.name + ": " + std::string(op) +
                          ": an exception escaped the plugin (" + what + ")");
}

Status::Code statusCodeFor(shoal_status code) {
  switch (code) {
    case SHOAL_OK:
    case SHOAL_EAGAIN:
      return Status::Code::kOk;
    case SHOAL_EPERM:
      return Status::Code::kPermissionDenied;
    case SHOAL_ENOENT:
      return Status::Code::kNotFound;
    case SHOAL_EBUSY:
      return Status::Code::kFailedPrecondition;
    case SHOAL_EEXIST:
      return Status::Code::kAlreadyExists;
    case SHOAL_EINVAL:
      return Status::Code::kInvalidArgument;
    case SHOAL_ENOMEM:
    case SHOAL_ENOSPC:
      return Status::Code::kResourceExhausted;
    case SHOAL_ENOTSUP:
      return Status::Code::kNotSupported;
    case SHOAL_ETIMEDOUT:
      return Status::Code::kTimeout;
    case SHOAL_ECANCELED:
      return Status::Code::kCancelled;
    default:
      return Status::Code::kInternal;
  }
}

shoal_status shoalStatusFor(Status::Code code) {
  switch (code) {
    case Status::Code::kOk:
      return SHOAL_OK;
    case Status::Code::kInvalidArgument:
    case Status::Code::kFailedPrecondition:
      return SHOAL_EINVAL;
    case Status::Code::kNotFound:
      return SHOAL_ENOENT;
    case Status::Code::kAlreadyExists:
      return SHOAL_EEXIST;
    case Status::Code::kPermissionDenied:
      return SHOAL_EPERM;
    case Status::Code::kConflict:
    case Status::Code::kUnavailable:
      return SHOAL_EBUSY;
    case Status::Code::kTimeout:
      return SHOAL_ETIMEDOUT;
    case Status::Code::kCancelled:
      return SHOAL_ECANCELED;
    case Status::Code::kResourceExhausted:
      return SHOAL_ENOMEM;
    case Status::Code::kNotSupported:
      return SHOAL_ENOTSUP;
    case Status::Code::kInternal:
      return SHOAL_EIO;
  }
  return SHOAL_EIO;
}

std::string_view shoalStatusName(shoal_status code) {
  switch (code) {
    case SHOAL_OK:
      return "SHOAL_OK";
    case SHOAL_EAGAIN:
      return "SHOAL_EAGAIN";
    case SHOAL_EPERM:
      return "SHOAL_EPERM";
    case SHOAL_ENOENT:
      return "SHOAL_ENOENT";
    case SHOAL_EIO:
      return "SHOAL_EIO";
    case SHOAL_ENOMEM:
      return "SHOAL_ENOMEM";
    case SHOAL_EBUSY:
      return "SHOAL_EBUSY";
    case SHOAL_EEXIST:
      return "SHOAL_EEXIST";
    case SHOAL_EINVAL:
      return "SHOAL_EINVAL";
    case SHOAL_ENOSPC:
      return "SHOAL_ENOSPC";
    case SHOAL_ENOTSUP:
      return "SHOAL_ENOTSUP";
    case SHOAL_ETIMEDOUT:
      return "SHOAL_ETIMEDOUT";
    case SHOAL_ECANCELED:
      return "SHOAL_ECANCELED";
    case SHOAL_EINTERNAL:
      return "SHOAL_EINTERNAL";
    default:
      return "an unknown status";
  }
}

}  // namespace shoal::plugin
