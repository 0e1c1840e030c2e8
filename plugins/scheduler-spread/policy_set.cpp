#include "policy_set.h"

#include <shoal/plugin.hpp>

#include "model.h"

namespace shoal::plugins::spread {

bool PolicySet::hostSupports(const shoal_host* host) {
  return SHOAL_HAS_FIELD(host, shoal_host, policy_open) &&
         SHOAL_HAS_FIELD(host, shoal_host, policy_close) &&
         SHOAL_HAS_FIELD(host, shoal_host, policy_bind) &&
         SHOAL_HAS_FIELD(host, shoal_host, policy_update) &&
         SHOAL_HAS_FIELD(host, shoal_host, policy_filter) &&
         SHOAL_HAS_FIELD(host, shoal_host, policy_score) &&
         SHOAL_HAS_FIELD(host, shoal_host, policy_explain) && host->policy_open != nullptr &&
         host->policy_close != nullptr && host->policy_bind != nullptr &&
         host->policy_update != nullptr && host->policy_filter != nullptr &&
         host->policy_score != nullptr && host->policy_explain != nullptr;
}

PolicySet::~PolicySet() {
  for (Handle& h : handles_) host_->policy_close(inst_, h.policy);
}

void PolicySet::check(shoal_status s, const char* slot) const {
  if (s == SHOAL_OK) return;
  // The slot attached the kernel's message; a positive status is not one a slot may return.
  if (s < 0) throw PolicyFailure(s);
  throw sdk::Error(SHOAL_EINTERNAL,
                   std::string(kName) + ": " + slot + " returned status " + std::to_string(s));
}

size_t PolicySet::open(int32_t kind, const std::string& text) {
  handles_.reserve(handles_.size() + 1);  // so a failure below cannot leak the new handle
  shoal_policy* p = nullptr;
  check(host_->policy_open(inst_, kind, sdk::str(text), &p), "policy_open");
  Handle h;
  h.kind = kind;
  h.policy = p;
  handles_.push_back(h);
  return handles_.size() - 1;
}

void PolicySet::bind(size_t h, std::string_view nodesJson, std::string_view groupJson) {
  check(host_->policy_bind(inst_, handles_[h].policy, sdk::str(nodesJson), sdk::str(groupJson)),
        "policy_bind");
  handles_[h].synced = UINT64_MAX;  // binding resets the usage updates
}

void PolicySet::update(size_t h, const shoal_policy_usage& usage) {
  check(host_->policy_update(inst_, handles_[h].policy, &usage), "policy_update");
}

void PolicySet::filter(size_t h, uint8_t* fit, uint32_t nodes) {
  check(host_->policy_filter(inst_, handles_[h].policy, fit, nodes), "policy_filter");
}

void PolicySet::score(size_t h, const uint8_t* fit, int64_t* out, uint32_t nodes) {
  check(host_->policy_score(inst_, handles_[h].policy, fit, out, nodes), "policy_score");
}

std::string PolicySet::explain(size_t h) {
  shoal_buf out{nullptr, 0};
  check(host_->policy_explain(inst_, handles_[h].policy, &out), "policy_explain");
  std::string text;
  if (out.ptr != nullptr) {
    try {
      text.assign(out.ptr, out.len);
    } catch (...) {
      host_->free(out.ptr);
      throw;
    }
    host_->free(out.ptr);
  }
  return text;
}

}  // namespace shoal::plugins::spread
