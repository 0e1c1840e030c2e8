#include <cstdlib>
#include <iostream>

#include "kernel/cli/cli.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  const char* host = std::getenv("SHOAL_HOST");
  return shoal::cli::run(args, std::cout, std::cerr, host != nullptr ? host : "");
}
