#include "constraint.h"

namespace shoal::plugins::spread {
namespace {

constexpr std::string_view kNodeLabelPrefix = "node.labels.";
constexpr std::string_view kEngineLabelPrefix = "engine.labels.";

bool isSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && isSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && isSpace(s.back())) s.remove_suffix(1);
  return s;
}

bool isAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool isDigit(char c) { return c >= '0' && c <= '9'; }

// SwarmKit's key pattern: ^(?i)[a-z_][a-z0-9\-_.]+$
bool validKey(std::string_view key) {
  if (key.size() < 2 || !(isAlpha(key[0]) || key[0] == '_')) return false;
  for (char c : key.substr(1)) {
    if (!(isAlpha(c) || isDigit(c) || c == '-' || c == '_' || c == '.')) return false;
  }
  return true;
}

// SwarmKit's value pattern: ^(?i)[a-z0-9:\-_\s\.\*\(\)\?\+\[\]\\\^\$\|\/]+$ -- no character
// that is, or may become, an operator (=, !, <, >, ~, ...).
bool validValue(std::string_view value) {
  if (value.empty()) return false;
  for (char c : value) {
    if (isAlpha(c) || isDigit(c)) continue;
    switch (c) {
      case ':':
      case '-':
      case '_':
      case ' ':
      case '\t':
      case '\n':
      case '\r':
      case '\f':
      case '.':
      case '*':
      case '(':
      case ')':
      case '?':
      case '+':
      case '[':
      case ']':
      case '\\':
      case '^':
      case '$':
      case '|':
      case '/':
        continue;
      default:
        return false;
    }
  }
  return true;
}

bool hasPrefixFold(std::string_view s, std::string_view prefix) {
  return s.size() > prefix.size() && equalFold(s.substr(0, prefix.size()), prefix);
}

[[noreturn]] void badConstraint(const std::string& text, const std::string& reason) {
  invalid("invalid constraint \"" + text + "\": " + reason);
}

const std::string kEmpty;

}  // namespace

bool equalFold(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  // ASCII only, without the locale lookups of std::tolower (this runs per node and constraint).
  auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i] && lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

Constraint parseConstraint(const std::string& text) {
  Constraint c;
  // SwarmKit tries "==" before "!=" and splits at the first occurrence.
  size_t op = text.find("==");
  if (op == std::string::npos) {
    op = text.find("!=");
    if (op == std::string::npos) badConstraint(text, "expected an operator, == or !=");
    c.equal = false;
  }
  const std::string_view whole(text);
  const std::string_view key = trim(whole.substr(0, op));
  const std::string_view value = trim(whole.substr(op + 2));
  if (key.empty()) badConstraint(text, "empty key");
  if (!validKey(key)) badConstraint(text, "invalid key " + std::string(key));
  if (value.empty()) badConstraint(text, "empty value");
  if (!validValue(value)) badConstraint(text, "invalid value " + std::string(value));
  c.value = std::string(value);
  if (equalFold(key, "node.id")) {
    c.key = Constraint::Key::kNodeId;
  } else if (equalFold(key, "node.hostname")) {
    c.key = Constraint::Key::kNodeHostname;
  } else if (equalFold(key, "node.role")) {
    c.key = Constraint::Key::kNodeRole;
  } else if (equalFold(key, "node.platform.os")) {
    c.key = Constraint::Key::kNodePlatformOs;
  } else if (equalFold(key, "node.platform.arch")) {
    c.key = Constraint::Key::kNodePlatformArch;
  } else if (hasPrefixFold(key, kNodeLabelPrefix)) {
    c.key = Constraint::Key::kNodeLabel;
    c.label = std::string(key.substr(kNodeLabelPrefix.size()));
  } else if (hasPrefixFold(key, kEngineLabelPrefix)) {
    c.key = Constraint::Key::kEngineLabel;
    c.label = std::string(key.substr(kEngineLabelPrefix.size()));
  } else {
    badConstraint(text, "unknown key " + std::string(key));
  }
  return c;
}

bool Constraint::matches(const Node& node) const {
  const std::string* actual = nullptr;
  switch (key) {
    case Key::kNodeId:
      actual = &node.id;
      break;
    case Key::kNodeHostname:
      actual = &node.hostname;
      break;
    case Key::kNodeRole:
      actual = &node.role;
      break;
    case Key::kNodePlatformOs:
      actual = &node.os;
      break;
    case Key::kNodePlatformArch:
      actual = &node.arch;
      break;
    case Key::kNodeLabel:
      actual = findLabel(node.labels, label);
      break;
    case Key::kEngineLabel:
      actual = findLabel(node.engineLabels, label);
      break;
  }
  const bool same = actual != nullptr && equalFold(*actual, value);
  return same == equal;
}

Preference parsePreference(const std::string& text) {
  Preference p;
  if (hasPrefixFold(text, kNodeLabelPrefix)) {
    p.label = text.substr(kNodeLabelPrefix.size());
  } else if (hasPrefixFold(text, kEngineLabelPrefix)) {
    p.engine = true;
    p.label = text.substr(kEngineLabelPrefix.size());
  } else {
    invalid("invalid placement preference \"" + text +
            "\": expected node.labels.<label> or engine.labels.<label>");
  }
  return p;
}

const std::string& Preference::valueOf(const Node& node) const {
  const std::string* v = findLabel(engine ? node.engineLabels : node.labels, label);
  return v != nullptr ? *v : kEmpty;
}

}  // namespace shoal::plugins::spread
