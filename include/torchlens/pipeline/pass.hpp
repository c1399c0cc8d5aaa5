#pragma once
/// \file
/// What a pass is: a copyable value type with static metadata (name,
/// description, consumes/produces/invalidates fact lists, nested Options) and a
/// `PassResult run(ModelGraph&, PassContext&) const`. No virtual base.

#include <torchlens/config.hpp>
#include <torchlens/error.hpp>
#include <torchlens/graph/model_graph.hpp>
#include <torchlens/pipeline/facts.hpp>

#include <algorithm>
#include <concepts>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace torchlens {

class PassContext;

/// One named counter a pass reports ("orphans removed": 3).
struct PassStatistic {
  std::string name;
  std::int64_t value = 0;
};

/// What a pass run reports: whether it changed the graph and its counters.
struct PassResult {
  bool changed = false;
  std::vector<PassStatistic> statistics;

  /// Adds `value` to counter `name` (creating it at 0).
  PassResult& add(std::string_view name, std::int64_t value = 1) {
    for (auto& s : statistics) {
      if (s.name == name) {
        s.value += value;
        return *this;
      }
    }
    statistics.push_back({std::string(name), value});
    return *this;
  }
  /// Value of counter `name`; throws UsageError (a std::invalid_argument) if the pass never set it.
  [[nodiscard]] std::int64_t get(std::string_view name) const {
    for (const auto& s : statistics) {
      if (s.name == name) return s.value;
    }
    throw UsageError("pass reported no statistic named '" + std::string(name) + "'");
  }
  /// True when the pass reported counter `name`.
  [[nodiscard]] bool has(std::string_view name) const {
    return std::any_of(statistics.begin(), statistics.end(),
                       [&](const PassStatistic& s) { return s.name == name; });
  }
};

/// Optional CRTP base giving a pass default metadata: no facts consumed,
/// produced or invalidated, not required, not declared idempotent, no options.
template <class Derived>
struct pass_info {
  using consumes = facts::list<>;
  using produces = facts::list<>;
  using invalidates = facts::list<>;
  /// A required pass cannot be `drop<>`ped from a pipeline.
  static constexpr bool is_required = false;
  /// Running the pass twice in a row leaves the graph as one run did (a pass law).
  static constexpr bool is_idempotent = false;
};

/// Empty option set for passes without options.
struct NoOptions {
  /// Visits no option.
  template <class Visitor>
  void visit(Visitor&&) const {}
};

/// The shape every pass must have (checked where a pipeline is built).
template <class P>
concept Pass = std::copy_constructible<P> && requires(const P& p, ModelGraph& g, PassContext& ctx) {
  { P::name } -> std::convertible_to<std::string_view>;
  { P::description } -> std::convertible_to<std::string_view>;
  typename P::consumes;
  typename P::produces;
  typename P::invalidates;
  typename P::Options;
  { P::is_required } -> std::convertible_to<bool>;
  { P::is_idempotent } -> std::convertible_to<bool>;
  { p.options } -> std::convertible_to<const typename P::Options&>;
  { p.run(g, ctx) } -> std::same_as<PassResult>;
};

namespace detail {

/// Prints one option value for print_pipeline (`true`, `3`, `[1,2]`, `"x"`).
template <class T>
std::string option_to_string(const T& v) {
  if constexpr (std::is_same_v<T, bool>) {
    return v ? "true" : "false";
  } else if constexpr (std::is_arithmetic_v<T>) {
    return std::to_string(v);
  } else if constexpr (std::is_convertible_v<const T&, std::string_view>) {
    return "\"" + std::string(std::string_view(v)) + "\"";
  } else {
    std::string out = "[";
    bool first = true;
    for (const auto& x : v) {
      if (!first) out += ",";
      first = false;
      out += option_to_string(x);
    }
    return out + "]";
  }
}

} // namespace detail

/// `name(opt=value,...)` for a pass, listing only options that differ from the
/// defaults (a pass with default options prints as its bare name).
template <Pass P>
std::string pass_to_string(const P& p) {
  std::string out(P::name);
  std::vector<std::pair<std::string, std::string>> now, defaults;
  auto collect = [](auto& into) {
    return [&into](std::string_view name, const auto& value) {
      into.emplace_back(std::string(name), detail::option_to_string(value));
    };
  };
  p.options.visit(collect(now));
  typename P::Options{}.visit(collect(defaults));
  std::string args;
  for (std::size_t i = 0; i < now.size(); ++i) {
    if (i < defaults.size() && now[i].second == defaults[i].second) continue;
    if (!args.empty()) args += ",";
    args += now[i].first + "=" + now[i].second;
  }
  if (!args.empty()) out += "(" + args + ")";
  return out;
}

} // namespace torchlens
