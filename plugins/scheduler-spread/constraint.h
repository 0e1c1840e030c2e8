// scheduler-spread: placement constraints and spread preferences, with Docker's syntax and
// SwarmKit's matching rules (manager/constraint in SwarmKit).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "model.h"

namespace shoal::plugins::spread {

// One `key==value` or `key!=value` constraint.
//
// Keys (matched case-insensitively, as SwarmKit does): node.id, node.hostname, node.role,
// node.platform.os, node.platform.arch, node.labels.<label>, engine.labels.<label>; the label
// name itself is case-sensitive. Values are compared case-insensitively (ASCII) for every key,
// labels included, as SwarmKit's strings.EqualFold. An absent label (or attribute) counts as
// the empty string, so it fails `==` and matches `!=` (a value is never empty).
struct Constraint {
  enum class Key : uint8_t {
    kNodeId,
    kNodeHostname,
    kNodeRole,
    kNodePlatformOs,
    kNodePlatformArch,
    kNodeLabel,
    kEngineLabel,
  };
  Key key = Key::kNodeId;
  std::string label;  // kNodeLabel, kEngineLabel: the label's name
  bool equal = true;  // `==` (true) or `!=` (false)
  std::string value;

  bool matches(const Node& node) const;
};

// Parses one constraint. Throws sdk::Error(SHOAL_EINVAL) with
// `invalid constraint "<text>": <reason>` for a missing operator, an empty or malformed key,
// an unknown key, or an empty or malformed value (SwarmKit's key and value character sets).
Constraint parseConstraint(const std::string& text);

// One spread descriptor of a placement preference: node.labels.<label> or
// engine.labels.<label> (the prefix case-insensitive, as SwarmKit's).
struct Preference {
  bool engine = false;
  std::string label;

  // The node's value for this descriptor; nodes without the label share the value "".
  const std::string& valueOf(const Node& node) const;
};

// Parses one descriptor. Throws sdk::Error(SHOAL_EINVAL) with
// `invalid placement preference "<text>": ...` for anything else.
Preference parsePreference(const std::string& text);

// ASCII case-insensitive equality (SwarmKit uses Go's strings.EqualFold).
bool equalFold(std::string_view a, std::string_view b);

}  // namespace shoal::plugins::spread
