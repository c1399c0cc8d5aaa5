#pragma once
/// \file
/// doctest for every test TU. LibTorch's c10/util/Logging.h defines glog's
/// one-argument CHECK and CHECK_EQ; whichever of it and doctest is included
/// last wins. Including it first here makes doctest's the ones the tests use,
/// whatever order a test includes torch and torchlens headers in (LibTorch 2.x
/// reaches Logging.h from headers that 1.13 did not).

#if __has_include(<c10/util/Logging.h>)
#include <c10/util/Logging.h>
#endif

#include <doctest/doctest.h>
