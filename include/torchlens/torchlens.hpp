#pragma once
/// \file
/// Umbrella header: capture, the model log, interventions, validation.

#include <torchlens/capture/log_forward_pass.hpp>
#include <torchlens/capture/memory.hpp>
#include <torchlens/capture/options.hpp>
#include <torchlens/graph/model_graph.hpp>
#include <torchlens/intervene.hpp>
#include <torchlens/log/model_log.hpp>
#include <torchlens/validate/gradients.hpp>
#include <torchlens/validate/validate.hpp>
#include <torchlens/version.hpp>
