// Runs every CppUnit suite registered in the test executable. Optional argument: a test name
// (e.g. "LoaderTest::testRefusesOtherAbiMajor") to run just that one.
#include <cppunit/BriefTestProgressListener.h>
#include <cppunit/CompilerOutputter.h>
#include <cppunit/TestResult.h>
#include <cppunit/TestResultCollector.h>
#include <cppunit/TestRunner.h>
#include <cppunit/extensions/TestFactoryRegistry.h>

#include <csignal>
#include <iostream>

#include "kernel/common/log.h"

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  // Keep test output readable: the code under test logs warnings only.
  shoal::log::setLevel(shoal::log::Level::kWarn);
  CppUnit::TestResult controller;
  CppUnit::TestResultCollector result;
  controller.addListener(&result);
  CppUnit::BriefTestProgressListener progress;
  controller.addListener(&progress);
  CppUnit::TestRunner runner;
  runner.addTest(CppUnit::TestFactoryRegistry::getRegistry().makeTest());
  try {
    runner.run(controller, argc > 1 ? argv[1] : "");
  } catch (const std::invalid_argument& e) {
    std::cerr << "no such test: " << e.what() << '\n';
    return 2;
  }
  CppUnit::CompilerOutputter outputter(&result, std::cerr);
  outputter.write();
  return result.wasSuccessful() ? 0 : 1;
}
