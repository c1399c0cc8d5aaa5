#pragma once
/// \file
/// Umbrella header: capture, the model log, the pass pipeline and the passes.

#include <torchlens/capture/log_forward_pass.hpp>
#include <torchlens/capture/options.hpp>
#include <torchlens/graph/model_graph.hpp>
#include <torchlens/log/model_log.hpp>
#include <torchlens/validate/validate.hpp>
#include <torchlens/version.hpp>
