// The outcome of an embedded-DNS call that can fail (C++17, no exceptions, no kernel types: the
// library is linked into the network-overlay plugin, which builds only against sdk/).
#pragma once

#include <string>
#include <utility>

namespace shoal::overlay::dns {

// Ok, or an error with a message meant for a person ("dns: ..."). Cheap to copy when ok.
class Status {
 public:
  Status() = default;
  static Status ok() { return Status(); }
  static Status error(std::string message) {
    Status s;
    s.ok_ = false;
    s.message_ = std::move(message);
    return s;
  }

  bool isOk() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const std::string& message() const { return message_; }

 private:
  bool ok_ = true;
  std::string message_;
};

}  // namespace shoal::overlay::dns
