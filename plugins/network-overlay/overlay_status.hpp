// The outcome of a network-overlay library call that can fail (dns/, lb/): C++17, no
// exceptions, no kernel types, since the libraries link into the plugin, which builds only
// against sdk/.
#pragma once

#include <string>
#include <utility>

namespace shoal::overlay {

// Ok, or an error with a message meant for a person ("dns: ...", "lb: ..."). Cheap to copy
// when ok.
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

}  // namespace shoal::overlay
