#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "kernel/common/assert.h"

namespace shoal {

// The outcome of an operation that can fail in expected ways. Cheap to copy when ok.
class Status {
 public:
  enum class Code {
    kOk = 0,
    kInvalidArgument,     // the caller's input is wrong (bad flag, bad body, bad config)
    kNotFound,            // the named thing does not exist
    kAlreadyExists,       // a thing with that identity exists already
    kFailedPrecondition,  // the system is not in a state that allows this
    kPermissionDenied,    // the caller may not do this
    kConflict,            // a concurrent change won (optimistic concurrency)
    kUnavailable,         // try again later (no leader, peer unreachable, ...)
    kTimeout,             // a deadline passed
    kCancelled,           // the operation was cancelled
    kResourceExhausted,   // out of memory, space, addresses, queue capacity, ...
    kNotSupported,        // the operation is not supported (by this plugin, kernel, ...)
    kInternal,            // a bug or an unexpected failure
  };

  Status() = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return Status(); }
  static Status invalidArgument(std::string m) { return {Code::kInvalidArgument, std::move(m)}; }
  static Status notFound(std::string m) { return {Code::kNotFound, std::move(m)}; }
  static Status alreadyExists(std::string m) { return {Code::kAlreadyExists, std::move(m)}; }
  static Status failedPrecondition(std::string m) {
    return {Code::kFailedPrecondition, std::move(m)};
  }
  static Status permissionDenied(std::string m) { return {Code::kPermissionDenied, std::move(m)}; }
  static Status conflict(std::string m) { return {Code::kConflict, std::move(m)}; }
  static Status unavailable(std::string m) { return {Code::kUnavailable, std::move(m)}; }
  static Status timeout(std::string m) { return {Code::kTimeout, std::move(m)}; }
  static Status cancelled(std::string m) { return {Code::kCancelled, std::move(m)}; }
  static Status resourceExhausted(std::string m) {
    return {Code::kResourceExhausted, std::move(m)};
  }
  static Status notSupported(std::string m) { return {Code::kNotSupported, std::move(m)}; }
  static Status internal(std::string m) { return {Code::kInternal, std::move(m)}; }

  bool isOk() const { return code_ == Code::kOk; }
  explicit operator bool() const { return isOk(); }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }

  // "not found: no such plugin" style, for logs.
  std::string toString() const;
  static std::string_view codeName(Code code);

  // A copy with `context` put in front of the message ("loading x.so: " + message).
  Status withContext(std::string_view context) const;

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

// A value or the Status saying why there is none.
template <class T>
class Result {
 public:
  Result(T value) : value_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT
    SHOAL_CHECK(!status_.isOk());
  }

  bool isOk() const { return value_.has_value(); }
  explicit operator bool() const { return isOk(); }

  // ok() when there is a value.
  const Status& status() const { return status_; }
  T& value() & {
    SHOAL_CHECK(isOk());
    return *value_;
  }
  const T& value() const& {
    SHOAL_CHECK(isOk());
    return *value_;
  }
  T&& value() && {
    SHOAL_CHECK(isOk());
    return std::move(*value_);
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  // Two members rather than a std::variant: GCC 12 warns (maybe-uninitialized) on variants of
  // non-trivial types, and -Werror builds would fail on it.
  std::optional<T> value_;
  Status status_;
};

}  // namespace shoal
