#include "kernel/plugin/host_policy.h"

#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <string_view>

#include "kernel/common/log.h"
#include "kernel/plugin/plugin_instance.h"
#include "kernel/plugin/policy_broker.h"

namespace shoal::plugin::detail {
namespace {

std::string_view view(shoal_str s) {
  return s.ptr == nullptr ? std::string_view() : std::string_view(s.ptr, s.len);
}

// Attaches the message to the plugin's call in progress, as host->fail does.
shoal_status fail(shoal_instance* inst, const Status& s) {
  const shoal_status code = shoalStatusFor(s.code());
  if (!inst->owner->recordFailure(s.message())) {
    log::warn("plugin", "host policy call outside a call of this plugin",
              {{"plugin", inst->owner->info().name}, {"error", s.message()}});
  }
  return code;
}

// Runs one slot: no exception may cross into the plugin.
template <class F>
shoal_status guarded(shoal_instance* inst, F&& body) {
  if (inst == nullptr || inst->owner == nullptr) return SHOAL_EINVAL;
  PolicyBroker* broker = inst->owner->policyBroker();
  if (broker == nullptr) {
    return fail(inst, Status::notSupported("Lua placement policies are not available here"));
  }
  try {
    Status s = body(*broker, inst->owner);
    return s.isOk() ? SHOAL_OK : fail(inst, s);
  } catch (const std::bad_alloc&) {
    return fail(inst, Status::resourceExhausted("out of memory in a policy call"));
  } catch (const std::exception& e) {
    return fail(inst, Status::internal(std::string("policy call failed: ") + e.what()));
  } catch (...) {
    return fail(inst, Status::internal("policy call failed"));
  }
}

}  // namespace

shoal_status hostPolicyOpen(shoal_instance* inst, int32_t kind, shoal_str text,
                            shoal_policy** out) {
  if (out != nullptr) *out = nullptr;
  return guarded(inst, [&](PolicyBroker& b, PluginInstance* owner) {
    if (out == nullptr) return Status::invalidArgument("policy_open: out is NULL");
    auto p = b.open(owner, kind, view(text));
    if (!p) return p.status();
    *out = *p;
    return Status::ok();
  });
}

void hostPolicyClose(shoal_instance* inst, shoal_policy* p) {
  if (inst == nullptr || inst->owner == nullptr || p == nullptr) return;
  PolicyBroker* broker = inst->owner->policyBroker();
  if (broker == nullptr) return;
  try {
    broker->close(inst->owner, p);
  } catch (...) {
    log::error("plugin", "policy_close failed", {{"plugin", inst->owner->info().name}});
  }
}

shoal_status hostPolicyBind(shoal_instance* inst, shoal_policy* p, shoal_str nodes_json,
                            shoal_str group_json) {
  return guarded(inst, [&](PolicyBroker& b, PluginInstance* owner) {
    return b.bind(owner, p, view(nodes_json), view(group_json));
  });
}

shoal_status hostPolicyUpdate(shoal_instance* inst, shoal_policy* p,
                              const shoal_policy_usage* usage) {
  return guarded(inst,
                 [&](PolicyBroker& b, PluginInstance* owner) { return b.update(owner, p, usage); });
}

shoal_status hostPolicyFilter(shoal_instance* inst, shoal_policy* p, uint8_t* fit, uint32_t nodes) {
  return guarded(
      inst, [&](PolicyBroker& b, PluginInstance* owner) { return b.filter(owner, p, fit, nodes); });
}

shoal_status hostPolicyScore(shoal_instance* inst, shoal_policy* p, const uint8_t* fit,
                             int64_t* out_score, uint32_t nodes) {
  return guarded(inst, [&](PolicyBroker& b, PluginInstance* owner) {
    return b.score(owner, p, fit, out_score, nodes);
  });
}

shoal_status hostPolicyExplain(shoal_instance* inst, shoal_policy* p, shoal_buf* out) {
  if (out != nullptr) *out = shoal_buf{nullptr, 0};
  return guarded(inst, [&](PolicyBroker& b, PluginInstance* owner) {
    if (out == nullptr) return Status::invalidArgument("policy_explain: out is NULL");
    auto text = b.explain(owner, p);
    if (!text) return text.status();
    if (text->empty()) return Status::ok();
    // The host table's alloc (malloc), so the plugin frees it with host->free.
    char* buf = static_cast<char*>(std::malloc(text->size()));
    if (buf == nullptr) return Status::resourceExhausted("policy_explain: out of memory");
    std::memcpy(buf, text->data(), text->size());
    *out = shoal_buf{buf, text->size()};
    return Status::ok();
  });
}

}  // namespace shoal::plugin::detail
