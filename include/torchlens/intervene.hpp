#pragma once
/// \file
/// Interventions: change any op's value, live or by replaying the log, and
/// activation patching on top (docs/interventions.md).

#include <torchlens/intervene/action.hpp>
#include <torchlens/intervene/attribution.hpp>
#include <torchlens/intervene/engines.hpp>
#include <torchlens/intervene/interventions.hpp>
#include <torchlens/intervene/patching.hpp>
#include <torchlens/intervene/site.hpp>
