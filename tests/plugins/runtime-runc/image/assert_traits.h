// CppUnit assertion traits for the containers the runc_image tests compare, so a failure
// prints both sides.
#pragma once

#include <cppunit/TestAssert.h>

#include <map>
#include <string>
#include <vector>

// CppUnit prints what it compares.
namespace CppUnit {
template <>
struct assertion_traits<std::vector<std::string>> {
  static bool equal(const std::vector<std::string>& a, const std::vector<std::string>& b) {
    return a == b;
  }
  static std::string toString(const std::vector<std::string>& v) {
    std::string s = "[";
    for (const std::string& x : v) s += (s.size() > 1 ? ", \"" : "\"") + x + "\"";
    return s + "]";
  }
};
template <>
struct assertion_traits<std::map<std::string, std::string>> {
  static bool equal(const std::map<std::string, std::string>& a,
                    const std::map<std::string, std::string>& b) {
    return a == b;
  }
  static std::string toString(const std::map<std::string, std::string>& m) {
    std::string s = "{";
    for (const auto& [k, v] : m) s += (s.size() > 1 ? ", " : "") + k + "=" + v;
    return s + "}";
  }
};
}  // namespace CppUnit
