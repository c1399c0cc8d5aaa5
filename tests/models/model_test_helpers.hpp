#pragma once
/// \file
/// Small helpers shared by the model-level tests: label lists, finding layers
/// by type or io address, printing a log when a check fails.

#include <torchlens/torchlens.hpp>

#include <torch/torch.h>
#include "support/doctest.hpp"

#include <algorithm>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace tlt {

/// Labels of every layer pass, in log order.
inline std::vector<std::string> labels(const torchlens::ModelLog& log) {
  std::vector<std::string> out;
  for (auto layer : log) {
    out.push_back(layer->label());
  }
  return out;
}

/// Labels of the passes of the given layer type, in log order.
inline std::vector<std::string> labels_of_type(const torchlens::ModelLog& log,
                                               const std::string& type) {
  std::vector<std::string> out;
  for (auto layer : log) {
    if (layer->layer_type == type) {
      out.push_back(layer->label());
    }
  }
  return out;
}

/// Views of the passes of the given layer type, in log order.
inline std::vector<torchlens::LayerView> of_type(const torchlens::ModelLog& log,
                                                 const std::string& type) {
  std::vector<torchlens::LayerView> out;
  for (auto layer : log) {
    if (layer->layer_type == type) {
      out.push_back(layer);
    }
  }
  return out;
}

/// The pass with the given io address (`input.0`, `output.1`, `bn.running_mean`).
inline std::optional<torchlens::LayerView> by_io_address(const torchlens::ModelLog& log,
                                                         const std::string& address) {
  for (auto layer : log) {
    if (layer->io_address == address) {
      return layer;
    }
  }
  return std::nullopt;
}

/// Number of passes of each kind.
inline std::size_t count_kind(const torchlens::ModelLog& log, torchlens::NodeKind kind) {
  return static_cast<std::size_t>(std::count_if(
      log.begin(), log.end(), [&](torchlens::LayerView l) { return l->kind == kind; }));
}

/// The log's summary, for failure messages.
inline std::string dump(const torchlens::ModelLog& log) {
  std::ostringstream os;
  for (auto layer : log) {
    os << layer->label() << " [" << layer->op_name << "] parents:";
    for (const auto& p : layer.parents()) {
      os << ' ' << p;
    }
    os << " module:" << layer.module() << '\n';
  }
  return os.str();
}

/// Joined labels, for readable CHECK messages.
inline std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) {
    out += (out.empty() ? "" : ", ") + s;
  }
  return out;
}

inline std::vector<std::string> strs(std::initializer_list<const char*> l) {
  return std::vector<std::string>(l.begin(), l.end());
}

/// Shape as a vector, for comparison with OpNode::shape.
inline std::vector<std::int64_t> shape_of(const at::Tensor& t) {
  return t.sizes().vec();
}

} // namespace tlt
