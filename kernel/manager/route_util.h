// Helpers the manager's control API routes share (swarm, services, policies).
#pragma once

#include <Poco/JSON/Object.h>

#include <sstream>
#include <string>

#include "kernel/api/router.h"
#include "kernel/common/status.h"
#include "kernel/store/read_view.h"

namespace shoal::manager {

inline std::string stringify(const Poco::JSON::Object& o) {
  std::ostringstream out;
  o.stringify(out);
  return out.str();
}

// A query parameter of `r`, "" when absent.
inline std::string param(const api::Request& r, const std::string& name) {
  auto it = r.query.find(name);
  return it == r.query.end() ? "" : it->second;
}

// The object of `kind` that `ref` names: its id, its name, or a unique id prefix (Docker's
// rule); not found or ambiguous otherwise, naming the kind and the reference.
inline Result<store::ObjectPtr> resolveObject(const store::ReadView& v, store::Kind kind,
                                              const std::string& ref) {
  const std::string what(store::kindName(kind));
  if (ref.empty()) return Status::invalidArgument("no " + what + " named");
  if (auto o = v.get(kind, ref)) return o;
  if (auto o = v.findByName(kind, ref)) return o;
  store::ObjectPtr found;
  for (const auto& o : v.list(kind)) {
    if (o->id.rfind(ref, 0) != 0) continue;
    if (found) {
      return Status::invalidArgument(what + " " + ref + " is ambiguous (more than one match)");
    }
    found = o;
  }
  if (found) return found;
  return Status::notFound(what + " " + ref + " not found");
}

}  // namespace shoal::manager
