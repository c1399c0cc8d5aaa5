#pragma once
/// \file
/// Project-wide macros (torch-free): the version (version.hpp), the
/// TORCHLENS_ARG fluent option macro, a clone of torch/arg.h's TORCH_ARG, and
/// TORCHLENS_OPTIONS, which declares a whole option set once.

#include <torchlens/version.hpp>

#include <boost/preprocessor/comparison/equal.hpp>
#include <boost/preprocessor/control/iif.hpp>
#include <boost/preprocessor/seq/for_each.hpp>
#include <boost/preprocessor/stringize.hpp>
#include <boost/preprocessor/tuple/elem.hpp>
#include <boost/preprocessor/tuple/enum.hpp>
#include <boost/preprocessor/tuple/pop_front.hpp>
#include <boost/preprocessor/tuple/size.hpp>
#include <boost/preprocessor/variadic/to_seq.hpp>

#include <utility>

/// Declares a fluent option `name` of type `T` (torch/arg.h style):
/// `struct Options { TORCHLENS_ARG(bool, keep_buffers) = false; };` gives
/// `Options().keep_buffers(true)` (setter returning *this) and
/// `options.keep_buffers()` (getter). The value lives in `name##_`.
#define TORCHLENS_ARG(T, name)                                          \
 public:                                                                \
  inline auto name(const T& new_##name)->decltype(*this) { /* NOLINT */ \
    this->name##_ = new_##name;                                         \
    return *this;                                                       \
  }                                                                     \
  inline auto name(T&& new_##name)->decltype(*this) { /* NOLINT */      \
    this->name##_ = std::move(new_##name);                              \
    return *this;                                                       \
  }                                                                     \
  inline const T& name() const noexcept { /* NOLINT */                  \
    return this->name##_;                                               \
  }                                                                     \
  inline T& name() noexcept { /* NOLINT */                              \
    return this->name##_;                                               \
  }                                                                     \
                                                                        \
 private:                                                               \
  T name##_ /* NOLINT */

/// Declares a set of options once, inside a struct body: one fluent TORCHLENS_ARG
/// accessor pair and member per option, and the `visit` that lists them (name,
/// value) in declaration order for print_pipeline. Each option is a parenthesized
/// `(type, name)` (value-initialized) or `(type, name, default)`:
///
///     struct MyOptions {
///       TORCHLENS_OPTIONS((bool, keep_buffers, false),
///                         (int, depth, 3),
///                         (std::vector<std::size_t>, keep));
///     };
///
/// gives `MyOptions().depth(5).keep({1, 2})`, `options.depth()` and
/// `options.visit(f)` calling `f("keep_buffers", false)`, `f("depth", 3)`, `f("keep", {})`.
/// The default may contain commas (`(std::vector<int>, sizes, {1, 2})`); the type may
/// not (name a `std::map<K, V>` through an alias first). The members are private and
/// the macro leaves the struct in `public:`.
#define TORCHLENS_OPTIONS(...)                                                                    \
  BOOST_PP_SEQ_FOR_EACH(TORCHLENS_DETAIL_OPTION_MEMBER, ~, BOOST_PP_VARIADIC_TO_SEQ(__VA_ARGS__)) \
 public:                                                                                          \
  /** Calls `visitor(name, value)` for every option, in declaration order. */                     \
  template <class TorchlensVisitor>                                                               \
  void visit(TorchlensVisitor&& torchlens_visitor) const {                                        \
    BOOST_PP_SEQ_FOR_EACH(TORCHLENS_DETAIL_OPTION_VISIT, torchlens_visitor,                       \
                          BOOST_PP_VARIADIC_TO_SEQ(__VA_ARGS__))                                  \
  }                                                                                               \
  /** Marks a struct declared with TORCHLENS_OPTIONS. */                                          \
  using torchlens_options_tag = void

// ---- implementation of TORCHLENS_OPTIONS ---------------------------------------
// (the extra TORCHLENS_DETAIL_ARG and _VISIT_NAMED levels expand the tuple
// elements before `#name` / `name##_` would take them unexpanded)
#define TORCHLENS_DETAIL_ARG(T, name) TORCHLENS_ARG(T, name)
#define TORCHLENS_DETAIL_OPTION_MEMBER(r, data, option)                                            \
  TORCHLENS_DETAIL_ARG(BOOST_PP_TUPLE_ELEM(0, option), BOOST_PP_TUPLE_ELEM(1, option))             \
  BOOST_PP_IIF(BOOST_PP_EQUAL(BOOST_PP_TUPLE_SIZE(option), 2), TORCHLENS_DETAIL_OPTION_VALUE_INIT, \
               TORCHLENS_DETAIL_OPTION_DEFAULT)                                                    \
  (option);
#define TORCHLENS_DETAIL_OPTION_VALUE_INIT(option) \
  {}
#define TORCHLENS_DETAIL_OPTION_DEFAULT(option) \
  = BOOST_PP_TUPLE_ENUM(BOOST_PP_TUPLE_POP_FRONT(BOOST_PP_TUPLE_POP_FRONT(option)))
#define TORCHLENS_DETAIL_OPTION_VISIT(r, visitor, option) \
  TORCHLENS_DETAIL_OPTION_VISIT_NAMED(visitor, BOOST_PP_TUPLE_ELEM(1, option))
#define TORCHLENS_DETAIL_OPTION_VISIT_NAMED(visitor, name) \
  TORCHLENS_DETAIL_OPTION_VISIT_NAMED_I(visitor, name)
#define TORCHLENS_DETAIL_OPTION_VISIT_NAMED_I(visitor, name) visitor(#name, name##_);
