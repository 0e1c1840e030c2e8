// C++ helpers for Shoal plugin authors (header-only, C++17 or newer).
//
// The C ABI (plugin.h) forbids exceptions across the boundary. These helpers let a plugin be
// written as an ordinary C++ class while guaranteeing that:
//  - every op runs inside a guard that turns any exception into a negative status with a
//    message attached through host->fail (shoal::sdk::Error carries its own code; anything
//    else becomes SHOAL_EINTERNAL);
//  - init constructs the state object, fini destroys it, and a throwing constructor becomes a
//    failed init;
//  - strings and buffers are converted safely (results are copied into host->alloc memory).
//
// Usage:
//   class MyRuntime : public shoal::sdk::Instance {
//    public:
//     MyRuntime(const shoal_host* h, shoal_instance* i, std::string_view config)
//         : Instance(h, i) { ... }
//     shoal_status describe(shoal_buf* out) { return reply(out, "{...}"); }
//     ...
//   };
//   static const shoal_runtime_ops kOps = [] {
//     shoal_runtime_ops o{}; o.struct_size = sizeof o;
//     o.describe = shoal::sdk::op<&MyRuntime::describe>;
//     return o;
//   }();
//   static const shoal_plugin_desc kDesc = shoal::sdk::describe<MyRuntime>(
//       SHOAL_KIND_RUNTIME, "my-runtime", "1.0.0", &kOps);
//   SHOAL_PLUGIN(kDesc)
//
// OWNERSHIP and THREAD rules are plugin.h's: the state object is only touched from calls the
// host serialises; a plugin's own threads use post() and log() only.
#pragma once

#include <shoal/plugin.h>

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace shoal::sdk {

// An error with a Shoal status code; thrown by plugin code, caught by the guard.
class Error : public std::runtime_error {
 public:
  Error(shoal_status code, const std::string& message) : std::runtime_error(message), code_(code) {}
  shoal_status code() const noexcept { return code_; }

 private:
  shoal_status code_;
};

inline std::string_view view(shoal_str s) noexcept {
  return s.ptr == nullptr ? std::string_view() : std::string_view(s.ptr, s.len);
}

inline shoal_str str(std::string_view s) noexcept { return shoal_str{s.data(), s.size()}; }

// Base class for a plugin's per-instance state.
class Instance {
 public:
  Instance(const shoal_host* host, shoal_instance* inst) noexcept : host_(host), inst_(inst) {}
  virtual ~Instance() = default;
  Instance(const Instance&) = delete;
  Instance& operator=(const Instance&) = delete;

  const shoal_host* host() const noexcept { return host_; }
  shoal_instance* instance() const noexcept { return inst_; }

  // THREAD: any.
  void log(int32_t level, std::string_view message) const noexcept {
    host_->log(inst_, level, str(message));
  }

  // Attach a message to the current call and return `code`. THREAD: the calling thread.
  shoal_status fail(shoal_status code, std::string_view message) const noexcept {
    return host_->fail(inst_, code, "%.*s", static_cast<int>(message.size()), message.data());
  }

  // Copy `text` into a host-owned buffer. Returns SHOAL_ENOMEM (with a message) on failure.
  shoal_status reply(shoal_buf* out, std::string_view text) const noexcept {
    char* p = static_cast<char*>(host_->alloc(text.size() + 1));
    if (p == nullptr) return fail(SHOAL_ENOMEM, "out of memory for a reply");
    if (!text.empty()) std::memcpy(p, text.data(), text.size());
    p[text.size()] = '\0';
    out->ptr = p;
    out->len = text.size();
    return SHOAL_OK;
  }

  // Post an event for the kernel. THREAD: any.
  shoal_status post(int32_t type, uint64_t op, shoal_status status, std::string_view subject,
                    std::string_view json) const noexcept {
    shoal_event ev{};
    ev.struct_size = sizeof ev;
    ev.type = type;
    ev.op = op;
    ev.status = status;
    ev.subject = str(subject);
    ev.json = str(json);
    return host_->post(inst_, &ev);
  }

  // Finish an asynchronous op (plugin.h): posts SHOAL_EVENT_OP_DONE.
  shoal_status complete(uint64_t op, shoal_status status,
                        std::string_view json = {}) const noexcept {
    return post(SHOAL_EVENT_OP_DONE, op, status, {}, json);
  }

  // Run `body` and turn any exception it throws into a failed status with a message.
  template <class F>
  shoal_status guard(F&& body) const noexcept {
    try {
      return std::forward<F>(body)();
    } catch (const Error& e) {
      return fail(e.code() < 0 ? e.code() : SHOAL_EINTERNAL, e.what());
    } catch (const std::bad_alloc&) {
      return fail(SHOAL_ENOMEM, "out of memory");
    } catch (const std::exception& e) {
      return fail(SHOAL_EINTERNAL, std::string("uncaught exception: ") + e.what());
    } catch (...) {
      return fail(SHOAL_EINTERNAL, "uncaught exception of unknown type");
    }
  }

 private:
  const shoal_host* host_;
  shoal_instance* inst_;
};

namespace detail {

template <auto Method>
struct OpThunk;

// Ops returning shoal_status: guarded.
template <class T, class... Args, shoal_status (T::*Method)(Args...)>
struct OpThunk<Method> {
  static shoal_status call(void* state, Args... args) noexcept {
    T* self = static_cast<T*>(state);
    return self->guard([&]() -> shoal_status { return (self->*Method)(args...); });
  }
};

// Ops returning void (close/destroy functions): exceptions are swallowed and logged, since
// there is no status to carry them.
template <class T, class... Args, void (T::*Method)(Args...)>
struct OpThunk<Method> {
  static void call(void* state, Args... args) noexcept {
    T* self = static_cast<T*>(state);
    try {
      (self->*Method)(args...);
    } catch (const std::exception& e) {
      self->log(SHOAL_LOG_ERROR, std::string("exception in a void op: ") + e.what());
    } catch (...) {
      self->log(SHOAL_LOG_ERROR, "exception of unknown type in a void op");
    }
  }
};

template <class T>
shoal_status init(const shoal_host* host, shoal_instance* inst, shoal_str config,
                  void** out_state) noexcept {
  try {
    *out_state = static_cast<void*>(new T(host, inst, view(config)));
    return SHOAL_OK;
  } catch (const Error& e) {
    return host->fail(inst, e.code() < 0 ? e.code() : SHOAL_EINTERNAL, "%s", e.what());
  } catch (const std::bad_alloc&) {
    return host->fail(inst, SHOAL_ENOMEM, "out of memory during init");
  } catch (const std::exception& e) {
    return host->fail(inst, SHOAL_EINTERNAL, "init threw: %s", e.what());
  } catch (...) {
    return host->fail(inst, SHOAL_EINTERNAL, "init threw an exception of unknown type");
  }
}

template <class T>
void fini(void* state) noexcept {
  try {
    delete static_cast<T*>(state);
  } catch (...) {
    // A destructor that throws has nowhere to report to; never let it cross the ABI.
  }
}

}  // namespace detail

// A C function pointer for member function `Method` of the state class, guarded.
template <auto Method>
inline constexpr auto op = &detail::OpThunk<Method>::call;

// Build a descriptor whose init/fini construct and destroy a T (T(host, inst, config_json)).
template <class T>
constexpr shoal_plugin_desc describe(int32_t kind, const char* name, const char* version,
                                     const void* ops) noexcept {
  shoal_plugin_desc d{};
  d.struct_size = sizeof(shoal_plugin_desc);
  d.abi_major = SHOAL_ABI_MAJOR;
  d.abi_minor = SHOAL_ABI_MINOR;
  d.kind = kind;
  d.name = name;
  d.version = version;
  d.init = &detail::init<T>;
  d.fini = &detail::fini<T>;
  d.ops = ops;
  return d;
}

}  // namespace shoal::sdk
