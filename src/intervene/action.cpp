// Built-in intervention actions and the registry of named user actions
// (action.hpp). Every built-in is a function of the value and the context
// only: the same at a site in the live, replay and rerun engines.

#include <torchlens/intervene/action.hpp>
#include <torchlens/log/model_log.hpp>
#include <torchlens/torch_error.hpp>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>

#include <array>
#include <charconv>
#include <mutex>
#include <sstream>
#include <system_error>

namespace torchlens {

namespace {

/// The shortest text that reads back as exactly `x` (std::to_chars without a
/// precision): `0.1`, not `0.10000000000000001`. describe() shows it and a
/// saved spec stores it; param_double's std::stod reads it back bit for bit.
std::string number(double x) {
  std::array<char, 32> buf{};
  const auto [end, ec] = std::to_chars(buf.data(), buf.data() + buf.size(), x);
  TORCHLENS_CHECK(ec == std::errc(), "cannot format ", x);
  return std::string(buf.data(), end);
}

double param_double(const std::map<std::string, std::string>& p, const std::string& key,
                    const std::string& action) {
  auto it = p.find(key);
  TORCHLENS_CHECK(it != p.end(), "action ", action, " needs the parameter '", key, "'");
  std::size_t used = 0;
  double v = 0;
  try {
    v = std::stod(it->second, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  TORCHLENS_CHECK(used == it->second.size() && used > 0, "action ", action, ": parameter '", key,
                  "' is not a number: '", it->second, "'");
  return v;
}

std::int64_t param_int(const std::map<std::string, std::string>& p, const std::string& key,
                       const std::string& action) {
  const double v = param_double(p, key, action);
  TORCHLENS_CHECK(v == static_cast<double>(static_cast<std::int64_t>(v)), "action ", action,
                  ": parameter '", key, "' must be an integer");
  return static_cast<std::int64_t>(v);
}

const at::Tensor& param_tensor(const std::map<std::string, at::Tensor>& t, const std::string& key,
                               const std::string& action) {
  auto it = t.find(key);
  TORCHLENS_CHECK(it != t.end() && it->second.defined(), "action ", action, " needs the tensor '",
                  key, "'");
  return it->second;
}

/// A generator of the action's own, seeded per site: never the global one.
at::Generator site_generator(std::uint64_t seed, std::size_t id) {
  return at::make_generator<at::CPUGeneratorImpl>(seed ^ (0x9E3779B97F4A7C15ULL * (id + 1)));
}

/// `direction` shaped to broadcast along `dim` of `value`.
at::Tensor along(const at::Tensor& direction, const at::Tensor& value, std::int64_t dim,
                 const std::string& action) {
  TORCHLENS_CHECK(value.dim() > 0, action, " needs a value with a feature dimension");
  const std::int64_t d = dim < 0 ? dim + value.dim() : dim;
  TORCHLENS_CHECK(d >= 0 && d < value.dim(), action, ": feature_dim ", dim,
                  " is out of range for a value of ", value.dim(), " dimensions");
  TORCHLENS_CHECK(direction.dim() == 1 && direction.size(0) == value.size(d), action,
                  ": the direction has shape ", direction.sizes(), " but dimension ", d,
                  " of the value has ", value.size(d), " features");
  std::vector<std::int64_t> shape(static_cast<std::size_t>(value.dim()), 1);
  shape[static_cast<std::size_t>(d)] = value.size(d);
  return direction.to(value.options()).reshape(shape);
}

at::Tensor project(const at::Tensor& value, const at::Tensor& direction, std::int64_t dim,
                   bool onto, const std::string& action) {
  const at::Tensor u = along(direction / direction.norm(), value, dim, action);
  const std::int64_t d = dim < 0 ? dim + value.dim() : dim;
  const at::Tensor component = (value * u).sum(d, /*keepdim=*/true) * u;
  return onto ? component : value - component;
}

/// Shape, dtype and device of a value another tensor stands in for.
void check_like(const at::Tensor& replacement, const at::Tensor& value, const std::string& what) {
  TORCHLENS_CHECK(replacement.defined(), what, " is not defined");
  TORCHLENS_CHECK(replacement.sizes() == value.sizes() &&
                      replacement.scalar_type() == value.scalar_type() &&
                      replacement.device() == value.device(),
                  what, " is ", replacement.sizes(), " ", replacement.scalar_type(), " on ",
                  replacement.device(), " where the site holds ", value.sizes(), " ",
                  value.scalar_type(), " on ", value.device());
}

/// A donor log's value at a site, as the site's region sees it.
at::Tensor donor_value(const ModelLog& donor, std::size_t id, const HookContext& ctx,
                       const std::string& action) {
  const auto& by_id = donor.activations_by_id();
  TORCHLENS_CHECK(id < by_id.size() && by_id[id].defined(), action, ": the donor log has no saved ",
                  "activation for op ", id, " (", ctx.op_name,
                  "); log the donor with every activation saved");
  return ctx.restrict(by_id[id]);
}

std::map<std::string, ActionFactory>& registry() {
  static std::map<std::string, ActionFactory> r;
  return r;
}
std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}

Action with_params(Action a, std::map<std::string, std::string> params,
                   std::map<std::string, at::Tensor> tensors = {}) {
  a.params = std::move(params);
  a.tensors = std::move(tensors);
  return a;
}

} // namespace

Action::Action(std::string name, Fn fn) : name_(std::move(name)), fn_(std::move(fn)) {
  TORCHLENS_CHECK(static_cast<bool>(fn_), "action ", name_, " has no function");
}

Action::Action(std::string name, Bind bind)
    : name_(std::move(name)), bind_(std::move(bind)), needs_labels_(true) {
  TORCHLENS_CHECK(static_cast<bool>(bind_), "action ", name_, " has no function");
}

Action Action::resolved(LabelResolver& resolver) const {
  if (!needs_labels_) return *this;
  Action a = *this;
  a.reads_.clear();
  a.fn_ = bind_(resolver, a.reads_);
  a.needs_labels_ = false;
  return a;
}

const Action::Fn& Action::function() const {
  TORCHLENS_CHECK(!needs_labels_, "action ", describe(),
                  " names layers by label, which exist only in a reference log: resolve the spec "
                  "first (spec.resolve(reference), or LogOptions().intervene(spec, reference))");
  return fn_;
}

std::string Action::describe() const {
  std::string s = name_ + "(";
  bool first = true;
  for (const auto& [k, v] : params) {
    s += (first ? "" : ", ") + k + "=" + v;
    first = false;
  }
  for (const auto& [k, t] : tensors) {
    std::ostringstream shape;
    shape << t.sizes();
    s += (first ? "" : ", ") + k + "=tensor" + shape.str();
    first = false;
  }
  return s + ")";
}

Action zero_ablate() {
  return Action("zero_ablate",
                [](const at::Tensor& x, const HookContext&) { return at::zeros_like(x); });
}

Action scale(double factor) {
  return with_params(
      Action("scale", [factor](const at::Tensor& x, const HookContext&) { return x * factor; }),
      {{"factor", number(factor)}});
}

Action clamp(ClampOptions o) {
  TORCHLENS_CHECK(o.min || o.max, "clamp needs a min, a max or both");
  std::map<std::string, std::string> p;
  if (o.min) p["min"] = number(*o.min);
  if (o.max) p["max"] = number(*o.max);
  return with_params(Action("clamp",
                            [o](const at::Tensor& x, const HookContext&) {
                              return at::clamp(
                                  x, o.min ? c10::optional<at::Scalar>(*o.min) : c10::nullopt,
                                  o.max ? c10::optional<at::Scalar>(*o.max) : c10::nullopt);
                            }),
                     std::move(p));
}

Action noise(double std, std::uint64_t seed) {
  return with_params(
      Action("noise",
             [std, seed](const at::Tensor& x, const HookContext& ctx) {
               TORCHLENS_CHECK(x.is_floating_point(), "noise needs a floating-point value, not ",
                               x.scalar_type());
               at::Generator gen = site_generator(seed, ctx.id);
               const at::Tensor n =
                   at::normal(0.0, std, x.sizes(), gen, x.options().device(at::kCPU));
               return x + n.to(x.device());
             }),
      {{"std", number(std)}, {"seed", std::to_string(seed)}});
}

Action steer(at::Tensor direction, double magnitude, std::int64_t feature_dim) {
  TORCHLENS_CHECK(direction.defined(), "steer needs a direction");
  return with_params(
      Action("steer",
             [direction, magnitude, feature_dim](const at::Tensor& x, const HookContext&) {
               return x + along(direction, x, feature_dim, "steer") * magnitude;
             }),
      {{"magnitude", number(magnitude)}, {"feature_dim", std::to_string(feature_dim)}},
      {{"direction", direction}});
}

Action project_onto(at::Tensor direction, std::int64_t feature_dim) {
  TORCHLENS_CHECK(direction.defined(), "project_onto needs a direction");
  return with_params(Action("project_onto",
                            [direction, feature_dim](const at::Tensor& x, const HookContext&) {
                              return project(x, direction, feature_dim, true, "project_onto");
                            }),
                     {{"feature_dim", std::to_string(feature_dim)}}, {{"direction", direction}});
}

Action project_off(at::Tensor direction, std::int64_t feature_dim) {
  TORCHLENS_CHECK(direction.defined(), "project_off needs a direction");
  return with_params(Action("project_off",
                            [direction, feature_dim](const at::Tensor& x, const HookContext&) {
                              return project(x, direction, feature_dim, false, "project_off");
                            }),
                     {{"feature_dim", std::to_string(feature_dim)}}, {{"direction", direction}});
}

Action replace_with(at::Tensor value) {
  TORCHLENS_CHECK(value.defined(), "replace_with needs a defined tensor");
  return with_params(Action("replace_with",
                            [value](const at::Tensor& x, const HookContext& ctx) {
                              const at::Tensor v = ctx.restrict(value);
                              check_like(v, x, "the replacement");
                              return v.clone();
                            }),
                     {}, {{"value", value}});
}

Action mean_ablate(at::Tensor mean) {
  TORCHLENS_CHECK(mean.defined(), "mean_ablate needs a mean");
  return with_params(Action("mean_ablate",
                            [mean](const at::Tensor& x, const HookContext&) {
                              TORCHLENS_CHECK(x.dim() >= 1 && mean.sizes() == x.sizes().slice(1),
                                              "mean_ablate: the mean has shape ", mean.sizes(),
                                              " but one example of the value has ",
                                              x.sizes().slice(std::min<std::size_t>(1, x.dim())));
                              return mean.to(x.options()).unsqueeze(0).expand_as(x).clone();
                            }),
                     {}, {{"mean", mean}});
}

Action resample_ablate(at::Tensor pool, std::uint64_t seed) {
  TORCHLENS_CHECK(pool.defined() && pool.dim() >= 1 && pool.size(0) > 0,
                  "resample_ablate needs a pool [P, ...] with P > 0");
  return with_params(
      Action("resample_ablate",
             [pool, seed](const at::Tensor& x, const HookContext& ctx) {
               TORCHLENS_CHECK(x.dim() >= 1 && pool.sizes().slice(1) == x.sizes().slice(1),
                               "resample_ablate: pool rows have shape ", pool.sizes().slice(1),
                               " but one example of the value has ",
                               x.sizes().slice(std::min<std::size_t>(1, x.dim())));
               at::Generator gen = site_generator(seed, ctx.id);
               const at::Tensor rows = at::randint(pool.size(0), {x.size(0)}, gen,
                                                   at::TensorOptions().dtype(at::kLong));
               return pool.index_select(0, rows.to(pool.device())).to(x.options());
             }),
      {{"seed", std::to_string(seed)}}, {{"pool", pool}});
}

Action patch_from(const ModelLog& donor) {
  auto log = std::make_shared<const ModelLog>(donor.fork());
  return Action("patch_from",
                [log](const at::Tensor& x, const HookContext& ctx) {
                  const at::Tensor v = donor_value(*log, ctx.id, ctx, "patch_from");
                  check_like(v, x, "the donor's value");
                  return v.clone();
                })
      .set_portable(false);
}

Action take_from(std::string key) {
  Action a("take_from",
           Action::Bind([key](LabelResolver& r, std::vector<std::size_t>& reads) -> Action::Fn {
             const std::size_t id = r.id_of(key);
             reads.push_back(id);
             return [id](const at::Tensor& x, const HookContext& ctx) {
               const at::Tensor v = ctx.restrict(ctx.value_of(id));
               check_like(v, x, "the value taken");
               return v.clone();
             };
           }));
  a.params["key"] = key;
  return a;
}

Action add_delta_from(const ModelLog& donor, std::string key) {
  auto log = std::make_shared<const ModelLog>(donor.fork());
  Action a(
      "add_delta_from",
      Action::Bind([log, key](LabelResolver& r, std::vector<std::size_t>& reads) -> Action::Fn {
        const std::size_t id = r.id_of(key);
        reads.push_back(id);
        return [log, id](const at::Tensor& x, const HookContext& ctx) {
          const at::Tensor clean = donor_value(*log, id, ctx, "add_delta_from");
          const at::Tensor here = ctx.restrict(ctx.value_of(id));
          check_like(clean, here, "the donor's value");
          return x + (clean - here);
        };
      }));
  a.params["key"] = key;
  return a.set_portable(false);
}

Action call(std::function<at::Tensor(const at::Tensor&, const HookContext&)> fn, std::string name) {
  return Action(std::move(name), Action::Fn(std::move(fn))).set_portable(false);
}

void register_action(const std::string& name, ActionFactory factory) {
  TORCHLENS_CHECK(!name.empty() && static_cast<bool>(factory),
                  "register_action needs a name and a factory");
  std::lock_guard<std::mutex> lock(registry_mutex());
  TORCHLENS_CHECK(registry().emplace(name, std::move(factory)).second, "an action named '", name,
                  "' is already registered");
}

Action make_action(const std::string& name, const std::map<std::string, std::string>& p,
                   const std::map<std::string, at::Tensor>& t) {
  if (name == "zero_ablate") return zero_ablate();
  if (name == "scale") return scale(param_double(p, "factor", name));
  if (name == "clamp") {
    ClampOptions o;
    if (p.count("min")) o.set_min(param_double(p, "min", name));
    if (p.count("max")) o.set_max(param_double(p, "max", name));
    return clamp(o);
  }
  if (name == "noise") {
    return noise(param_double(p, "std", name),
                 static_cast<std::uint64_t>(param_int(p, "seed", name)));
  }
  if (name == "steer") {
    return steer(param_tensor(t, "direction", name), param_double(p, "magnitude", name),
                 param_int(p, "feature_dim", name));
  }
  if (name == "project_onto") {
    return project_onto(param_tensor(t, "direction", name), param_int(p, "feature_dim", name));
  }
  if (name == "project_off") {
    return project_off(param_tensor(t, "direction", name), param_int(p, "feature_dim", name));
  }
  if (name == "replace_with") return replace_with(param_tensor(t, "value", name));
  if (name == "mean_ablate") return mean_ablate(param_tensor(t, "mean", name));
  if (name == "resample_ablate") {
    return resample_ablate(param_tensor(t, "pool", name),
                           static_cast<std::uint64_t>(param_int(p, "seed", name)));
  }
  if (name == "take_from") {
    auto it = p.find("key");
    TORCHLENS_CHECK(it != p.end(), "action take_from needs the parameter 'key'");
    return take_from(it->second);
  }
  ActionFactory factory;
  {
    std::lock_guard<std::mutex> lock(registry_mutex());
    auto it = registry().find(name);
    if (it != registry().end()) factory = it->second;
  }
  TORCHLENS_CHECK(static_cast<bool>(factory), "unknown action '", name,
                  "': not a built-in and not registered (register_action) in this program");
  Action a = factory(p, t);
  TORCHLENS_CHECK(a.name() == name, "the factory registered as '", name,
                  "' built an action named '", a.name(), "'");
  a.params = p;
  a.tensors = t;
  return a;
}

} // namespace torchlens
