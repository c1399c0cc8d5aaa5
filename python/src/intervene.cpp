// torchlens_cpp._core, interventions (docs/interventions.md, docs/python.md):
// selectors, actions and specs with the C++ names, the live engine through
// log_forward_pass's `intervene`, replay from a log, rerun and automatic mode,
// run_with_interventions and activation patching, for eager models (PyModel,
// module frames from the package's hooks) and TorchScript modules. Python
// callables (a `call` action, a `where` predicate, a metric) run under the
// GIL, taken wherever the engine calls them.

#include "binding.hpp"

#include <torchlens/intervene.hpp>

#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/jit/python/pybind_utils.h>

#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace torchlens_py {

namespace tl = torchlens;
namespace td = torchlens::detail;

namespace {

py::object wrap(const at::Tensor& t) {
  if (!t.defined()) return py::none();
  return py::reinterpret_steal<py::object>(THPVariable_Wrap(t));
}

at::Tensor unwrap(const py::handle& o, const char* what) {
  TORCHLENS_CHECK(THPVariable_Check(o.ptr()), what, " returned ",
                  py::str(py::type::of(o)).cast<std::string>(), ", not a torch.Tensor");
  return THPVariable_Unpack(o.ptr());
}

/// What a `call` action's function receives besides the value (copied: valid
/// after the call too).
struct PyHookContext {
  std::size_t id = 0;
  std::string op_name, label;
};

/// The live facts a `where` predicate reads (copied).
struct PyOpView {
  std::size_t id = 0;
  std::string op_name, layer_type, module;
  int module_pass = 0, output_index = 0;
  std::vector<std::string> modules; // "address:pass", outer -> inner
  py::object value;
};

tl::patching::Direction direction_of(const std::string& d) {
  TORCHLENS_CHECK(d == "denoise" || d == "noise", "direction: '", d,
                  "' is neither 'denoise' nor 'noise'");
  return d == "denoise" ? tl::patching::Direction::denoise : tl::patching::Direction::noise;
}

tl::Engine engine_of(const std::string& e) {
  if (e == "replay") return tl::Engine::replay;
  if (e == "rerun") return tl::Engine::rerun;
  TORCHLENS_CHECK(e == "automatic", "engine: '", e, "' is not 'replay', 'rerun' or 'automatic'");
  return tl::Engine::automatic;
}

const char* engine_name(tl::Engine e) {
  switch (e) {
    case tl::Engine::replay:
      return "replay";
    case tl::Engine::rerun:
      return "rerun";
    case tl::Engine::automatic:
      return "automatic";
  }
  return "?";
}

tl::patching::PatchOptions patch_options(const std::vector<tl::Site>& sites,
                                         const py::object& metric, const std::string& direction,
                                         std::optional<std::int64_t> grid_dim,
                                         const std::string& engine, std::uint64_t seed) {
  TORCHLENS_CHECK(!sites.empty(), "activation_patch: no sites");
  TORCHLENS_CHECK(PyCallable_Check(metric.ptr()) != 0,
                  "activation_patch: metric must be a callable (first output -> number)");
  tl::patching::PatchOptions o;
  for (const auto& s : sites) o.site(s);
  PyRef fn = hold(metric);
  o.metric([fn](const at::Tensor& y) -> double {
    py::gil_scoped_acquire gil;
    return guarded([&] { return py::float_((*fn)(wrap(y))).cast<double>(); });
  });
  o.direction(direction_of(direction));
  o.grid_dim(grid_dim);
  o.engine(engine_of(engine));
  o.seed(seed);
  return o;
}

py::dict patch_dict(const tl::patching::PatchResult& r) {
  py::dict d;
  d["clean_metric"] = r.clean_metric;
  d["corrupted_metric"] = r.corrupted_metric;
  py::list rows;
  for (const auto& row : r.rows) {
    py::dict rd;
    rd["site"] = row.site;
    rd["label"] = row.label;
    rd["index"] = row.index < 0 ? py::object(py::none()) : py::object(py::int_(row.index));
    rd["metric"] = row.metric;
    rd["effect"] = row.effect;
    rd["engine"] = engine_name(row.engine);
    rows.append(rd);
  }
  d["rows"] = rows;
  std::ostringstream os;
  os << r;
  d["text"] = os.str();
  return d;
}

py::tuple run_tuple(tl::InterventionRun run) {
  return py::make_tuple(std::make_shared<tl::ModelLog>(std::move(run.log)), engine_name(run.engine),
                        run.note);
}

/// rerun for an eager model: the reference's options, its seed, the spec live.
tl::InterventionRun rerun_eager(const PyModel& model, const tl::ModelLog& reference,
                                const tl::Interventions& spec, bool strict) {
  const tl::LogOptions options = td::rerun_options(reference, spec);
  const td::ForwardFn forward = forward_fn(model);
  tl::InterventionRun run{td::run_logged(model.description, model.inputs, forward, options),
                          tl::Engine::rerun, ""};
  run.note = td::graph_difference(reference, run.log);
  if (strict && !run.note.empty()) throw tl::GraphChanged(TORCHLENS_HERE, run.note);
  return run;
}

PyObject* new_exception(py::module_& m, const char* name, const char* doc) {
  const std::string qualified = std::string("torchlens_cpp._core.") + name;
  PyObject* type = PyErr_NewExceptionWithDoc(qualified.c_str(), doc, PyExc_RuntimeError, nullptr);
  if (type == nullptr) throw py::error_already_set();
  m.add_object(name, py::handle(type)); // steals nothing: the module takes a reference
  return type;                          // kept for the translator (never released)
}

} // namespace

void bind_intervene(py::module_& m) {
  static PyObject* replay_divergence = new_exception(
      m, "ReplayDivergence",
      "replay stopped where the model's control flow could differ (a changed value read into a "
      "host scalar, or a changed shape); `.vertex` is the layer. Rerun instead.");
  static PyObject* graph_changed = new_exception(
      m, "GraphChanged", "a capture ran a different graph than its reference (rerun strict=True)");
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const tl::ReplayDivergence& e) {
      py::object err = py::reinterpret_borrow<py::object>(replay_divergence)(
          std::string(e.what_without_backtrace()));
      err.attr("vertex") = e.vertex();
      PyErr_SetObject(replay_divergence, err.ptr());
    } catch (const tl::GraphChanged& e) {
      PyErr_SetString(graph_changed, e.what_without_backtrace());
    }
  });

  // ---- sites
  py::class_<PyOpView>(m, "OpView", "the live facts of one op output, as `where` sees them")
      .def_readonly("id", &PyOpView::id)
      .def_readonly("op_name", &PyOpView::op_name)
      .def_readonly("layer_type", &PyOpView::layer_type)
      .def_readonly("module", &PyOpView::module, "innermost module address, '' outside")
      .def_readonly("module_pass", &PyOpView::module_pass)
      .def_readonly("output_index", &PyOpView::output_index)
      .def_readonly("modules", &PyOpView::modules, "enclosing calls 'address:pass', outer first")
      .def_readonly("value", &PyOpView::value, "the value (None where a log did not save it)");
  py::class_<PyHookContext>(m, "HookContext", "where a `call` action runs")
      .def_readonly("id", &PyHookContext::id)
      .def_readonly("op_name", &PyHookContext::op_name)
      .def_readonly("label", &PyHookContext::label, "label in the reference log, or ''");

  py::class_<tl::Site> site(m, "Site", "a selector, optionally narrowed to one index of one dim");
  py::class_<tl::LiveSelector>(m, "LiveSelector", "facts known while the model runs")
      .def("__and__", [](const tl::LiveSelector& a, const tl::LiveSelector& b) { return a & b; })
      .def("__and__", [](const tl::LiveSelector& a, const tl::LabelSelector& b) { return a & b; })
      .def("__or__", [](const tl::LiveSelector& a, const tl::LiveSelector& b) { return a | b; })
      .def("__or__", [](const tl::LiveSelector& a, const tl::LabelSelector& b) { return a | b; })
      .def("__invert__", [](const tl::LiveSelector& a) { return !a; })
      .def(
          "at_index",
          [](const tl::LiveSelector& s, std::int64_t dim, std::int64_t index) {
            return tl::Site(s).at_index(dim, index);
          },
          py::arg("dim"), py::arg("index"))
      .def_property_readonly("portable", &tl::LiveSelector::portable)
      .def("describe", &tl::LiveSelector::describe)
      .def("__repr__", &tl::LiveSelector::describe);
  py::class_<tl::LabelSelector>(m, "LabelSelector", "labels and module addresses of a reference")
      .def("__and__", [](const tl::LabelSelector& a, const tl::LabelSelector& b) { return a & b; })
      .def("__and__", [](const tl::LabelSelector& a, const tl::LiveSelector& b) { return a & b; })
      .def("__or__", [](const tl::LabelSelector& a, const tl::LabelSelector& b) { return a | b; })
      .def("__or__", [](const tl::LabelSelector& a, const tl::LiveSelector& b) { return a | b; })
      .def("__invert__", [](const tl::LabelSelector& a) { return !a; })
      .def(
          "at_index",
          [](const tl::LabelSelector& s, std::int64_t dim, std::int64_t index) {
            return tl::Site(s).at_index(dim, index);
          },
          py::arg("dim"), py::arg("index"))
      .def(
          "resolve", [](const tl::LabelSelector& s, const LogPtr& ref) { return s.resolve(*ref); },
          py::arg("reference"), "the op ids it selects in the reference log")
      .def_property_readonly("portable", &tl::LabelSelector::portable)
      .def("describe", &tl::LabelSelector::describe)
      .def("__repr__", &tl::LabelSelector::describe);
  py::class_<tl::EdgeSelector>(m, "EdgeSelector", "the value one parent hands to one child")
      .def_readonly("parent", &tl::EdgeSelector::parent)
      .def_readonly("child", &tl::EdgeSelector::child)
      .def_readonly("arg", &tl::EdgeSelector::arg)
      .def(
          "at_index",
          [](const tl::EdgeSelector& s, std::int64_t dim, std::int64_t index) {
            return tl::Site(s).at_index(dim, index);
          },
          py::arg("dim"), py::arg("index"))
      .def("describe", &tl::EdgeSelector::describe)
      .def("__repr__", &tl::EdgeSelector::describe);
  site.def(py::init<tl::LiveSelector>())
      .def(py::init<tl::LabelSelector>())
      .def(py::init<tl::EdgeSelector>())
      .def(py::init([](const std::string& key) { return tl::Site(tl::sel::label(key)); }),
           "a label, a module address or any lookup key of the reference log")
      .def("at_index", &tl::Site::at_index, py::arg("dim"), py::arg("index"))
      .def_property_readonly("needs_reference", &tl::Site::needs_reference)
      .def_property_readonly("is_edge", &tl::Site::is_edge)
      .def("describe", &tl::Site::describe)
      .def("__repr__", &tl::Site::describe);
  py::implicitly_convertible<tl::LiveSelector, tl::Site>();
  py::implicitly_convertible<tl::LabelSelector, tl::Site>();
  py::implicitly_convertible<tl::EdgeSelector, tl::Site>();
  py::implicitly_convertible<py::str, tl::Site>();

  m.def("any", &tl::sel::any, "every op output");
  m.def("func", &tl::sel::func, py::arg("name"),
        "ops by name or layer type ('relu' matches aten::relu and aten::relu_)");
  m.def("in_module", &tl::sel::in_module, py::arg("address"), py::arg("pass_num") = 0,
        "ops inside a module call (any depth), of one pass (1-based) or all (0)");
  m.def("output_index", &tl::sel::output_index, py::arg("index"));
  m.def(
      "where",
      [](const py::object& predicate, const std::string& description) {
        TORCHLENS_CHECK(PyCallable_Check(predicate.ptr()) != 0, "where: not a callable");
        PyRef fn = hold(predicate);
        return tl::sel::where(
            [fn](const tl::OpView& op) {
              py::gil_scoped_acquire gil;
              PyOpView v;
              v.id = op.id;
              v.op_name = std::string(op.op_name);
              v.layer_type = std::string(op.layer_type);
              v.module = std::string(op.module());
              v.module_pass = op.module_pass();
              v.output_index = op.output_index;
              if (op.modules != nullptr) {
                for (const auto& f : *op.modules)
                  v.modules.push_back(f.address + ":" + std::to_string(f.pass));
              }
              v.value = op.value != nullptr ? wrap(*op.value) : py::none();
              return guarded([&] { return py::bool_((*fn)(v)).cast<bool>(); });
            },
            description);
      },
      py::arg("predicate"), py::arg("description") = "where");
  m.def("label", &tl::sel::label, py::arg("key"));
  m.def("module", &tl::sel::module, py::arg("address"));
  m.def("ids", &tl::sel::ids, py::arg("ids"));
  m.def("edge", &tl::sel::edge, py::arg("parent"), py::arg("child"), py::arg("arg") = -1);

  // ---- actions
  py::class_<tl::Action>(m, "Action", "what an intervention does to the value at its site")
      .def_property_readonly("name", &tl::Action::name)
      .def_property_readonly("portable", &tl::Action::portable)
      .def("describe", &tl::Action::describe)
      .def("__repr__", &tl::Action::describe);
  m.def("zero_ablate", &tl::zero_ablate);
  m.def("scale", &tl::scale, py::arg("factor"));
  m.def(
      "clamp",
      [](std::optional<double> lo, std::optional<double> hi) {
        TORCHLENS_CHECK(lo.has_value() || hi.has_value(), "clamp: give min, max or both");
        tl::ClampOptions o;
        o.min = lo;
        o.max = hi;
        return tl::clamp(o);
      },
      py::arg("min") = py::none(), py::arg("max") = py::none());
  m.def("noise", &tl::noise, py::arg("std"), py::arg("seed") = 0);
  m.def("steer", &tl::steer, py::arg("direction"), py::arg("magnitude"),
        py::arg("feature_dim") = -1);
  m.def("project_onto", &tl::project_onto, py::arg("direction"), py::arg("feature_dim") = -1);
  m.def("project_off", &tl::project_off, py::arg("direction"), py::arg("feature_dim") = -1);
  m.def("replace_with", &tl::replace_with, py::arg("value"));
  m.def("mean_ablate", &tl::mean_ablate, py::arg("mean"));
  m.def("resample_ablate", &tl::resample_ablate, py::arg("pool"), py::arg("seed") = 0);
  m.def(
      "patch_from", [](const LogPtr& donor) { return tl::patch_from(*donor); }, py::arg("donor"));
  m.def("take_from", &tl::take_from, py::arg("key"));
  m.def(
      "add_delta_from",
      [](const LogPtr& donor, const std::string& key) { return tl::add_delta_from(*donor, key); },
      py::arg("donor"), py::arg("key"));
  m.def(
      "call",
      [](const py::object& fn, const std::string& name) {
        TORCHLENS_CHECK(PyCallable_Check(fn.ptr()) != 0, "call: not a callable");
        PyRef f = hold(fn);
        return tl::call(
            [f](const at::Tensor& value, const tl::HookContext& ctx) -> at::Tensor {
              py::gil_scoped_acquire gil;
              const PyHookContext c{ctx.id, std::string(ctx.op_name), std::string(ctx.label)};
              const py::object r = guarded([&] { return (*f)(wrap(value), c); });
              return unwrap(r, "a call action");
            },
            name);
      },
      py::arg("fn"), py::arg("name") = "call",
      "user code fn(value, ctx) -> tensor of the same shape, dtype and device");

  // ---- specs
  py::class_<tl::Interventions>(m, "Interventions", "an ordered list of (site, action) entries")
      .def(py::init<>())
      .def(
          "at",
          [](py::object self, const tl::Site& s, const tl::Action& a) {
            self.cast<tl::Interventions&>().at(s, a);
            return self;
          },
          py::arg("site"), py::arg("action"), "appends an entry; returns the spec (fluent)")
      .def("__len__", [](const tl::Interventions& s) { return s.entries().size(); })
      .def_property_readonly("entries",
                             [](const tl::Interventions& s) {
                               py::list out;
                               for (const auto& e : s.entries())
                                 out.append(py::make_tuple(e.site, e.action));
                               return out;
                             })
      .def_property_readonly("empty", &tl::Interventions::empty)
      .def_property_readonly("needs_reference", &tl::Interventions::needs_reference)
      .def_property_readonly("portable", &tl::Interventions::portable)
      .def_property_readonly("resolved", &tl::Interventions::resolved)
      .def(
          "resolve", [](const tl::Interventions& s, const LogPtr& ref) { return s.resolve(*ref); },
          py::arg("reference"), "labels, modules and edges turned into op ids of the reference")
      .def("save", &tl::Interventions::save, py::arg("path"))
      .def_static("load", &tl::Interventions::load, py::arg("path"))
      .def("describe", &tl::Interventions::describe)
      .def("__repr__", [](const tl::Interventions& s) {
        return "<torchlens_cpp Interventions, " + std::to_string(s.entries().size()) +
               " entries>\n" + s.describe();
      });

  // ---- engines
  m.def(
      "replay",
      [](const LogPtr& reference, const tl::Interventions& spec) {
        py::gil_scoped_release nogil;
        return std::make_shared<tl::ModelLog>(tl::replay(*reference, spec));
      },
      py::arg("reference"), py::arg("spec"));
  m.def(
      "rerun",
      [](const PyModel& model, const LogPtr& reference, const tl::Interventions& spec,
         bool strict) {
        std::optional<tl::InterventionRun> run;
        {
          py::gil_scoped_release nogil;
          run = rerun_eager(model, *reference, spec, strict);
        }
        return run_tuple(std::move(*run));
      },
      py::arg("model"), py::arg("reference"), py::arg("spec"), py::arg("strict"));
  m.def(
      "rerun_script",
      [](py::handle script_module, const py::tuple& args, const py::dict& kwargs,
         const LogPtr& reference, const tl::Interventions& spec, bool strict) {
        torch::jit::Module module = script_module_of(script_module);
        std::vector<c10::IValue> inputs = script_inputs(module, args, kwargs);
        std::optional<tl::InterventionRun> run;
        {
          py::gil_scoped_release nogil;
          run = tl::rerun(module, std::move(inputs), *reference, spec,
                          tl::RerunOptions().strict(strict));
        }
        return run_tuple(std::move(*run));
      },
      py::arg("model"), py::arg("args"), py::arg("kwargs"), py::arg("reference"), py::arg("spec"),
      py::arg("strict"));
  m.def(
      "run_with_interventions",
      [](const PyModel& model, const tl::Interventions& spec) {
        const td::ForwardFn forward = forward_fn(model);
        py::gil_scoped_release nogil;
        // the value is the Python model's own return, kept by the package
        (void)td::run_intervened(model.description, model.inputs, forward, spec,
                                 tl::LiveMode::full); // eager Python: the full engine
      },
      py::arg("model"), py::arg("spec"));
  m.def(
      "run_with_interventions_script",
      [](py::handle script_module, const py::tuple& args, const py::dict& kwargs,
         const tl::Interventions& spec) {
        torch::jit::Module module = script_module_of(script_module);
        const std::vector<c10::IValue> inputs = script_inputs(module, args, kwargs);
        c10::IValue out;
        {
          py::gil_scoped_release nogil;
          out = tl::run_with_interventions(module, inputs, spec);
        }
        return torch::jit::toPyObject(std::move(out));
      },
      py::arg("model"), py::arg("args"), py::arg("kwargs"), py::arg("spec"));

  // ---- activation patching
  m.def(
      "activation_patch",
      [](const PyModel& clean, const PyModel& corrupted, const std::vector<tl::Site>& sites,
         const py::object& metric, const std::string& direction,
         std::optional<std::int64_t> grid_dim, const std::string& engine, std::uint64_t seed) {
        const tl::patching::PatchOptions options =
            patch_options(sites, metric, direction, grid_dim, engine, seed);
        tl::patching::PatchResult result;
        {
          py::gil_scoped_release nogil;
          const tl::LogOptions log_options = tl::LogOptions().keep_replay(true).seed(seed);
          const tl::ModelLog clean_log =
              td::run_logged(clean.description, clean.inputs, forward_fn(clean), log_options);
          const tl::ModelLog corrupted_log = td::run_logged(corrupted.description, corrupted.inputs,
                                                            forward_fn(corrupted), log_options);
          const tl::patching::RerunFn rerun = [&](const tl::ModelLog& base,
                                                  const tl::Interventions& spec) {
            return rerun_eager(&base == &clean_log ? clean : corrupted, base, spec, false).log;
          };
          result = tl::patching::activation_patch(clean_log, corrupted_log, options, rerun);
        }
        return patch_dict(result);
      },
      py::arg("clean"), py::arg("corrupted"), py::arg("sites"), py::arg("metric"),
      py::arg("direction"), py::arg("grid_dim"), py::arg("engine"), py::arg("seed"));
  m.def(
      "activation_patch_script",
      [](py::handle script_module, const py::tuple& clean_args, const py::dict& clean_kwargs,
         const py::tuple& corrupted_args, const py::dict& corrupted_kwargs,
         const std::vector<tl::Site>& sites, const py::object& metric, const std::string& direction,
         std::optional<std::int64_t> grid_dim, const std::string& engine, std::uint64_t seed) {
        torch::jit::Module module = script_module_of(script_module);
        std::vector<c10::IValue> clean = script_inputs(module, clean_args, clean_kwargs);
        std::vector<c10::IValue> corrupted =
            script_inputs(module, corrupted_args, corrupted_kwargs);
        const tl::patching::PatchOptions options =
            patch_options(sites, metric, direction, grid_dim, engine, seed);
        tl::patching::PatchResult result;
        {
          py::gil_scoped_release nogil;
          result = tl::patching::activation_patch(module, std::move(clean), std::move(corrupted),
                                                  options);
        }
        return patch_dict(result);
      },
      py::arg("model"), py::arg("clean_args"), py::arg("clean_kwargs"), py::arg("corrupted_args"),
      py::arg("corrupted_kwargs"), py::arg("sites"), py::arg("metric"), py::arg("direction"),
      py::arg("grid_dim"), py::arg("engine"), py::arg("seed"));
  m.def(
      "activation_patch_logs",
      [](const LogPtr& clean, const LogPtr& corrupted, const std::vector<tl::Site>& sites,
         const py::object& metric, const std::string& direction,
         std::optional<std::int64_t> grid_dim, const std::string& engine) {
        const tl::patching::PatchOptions options =
            patch_options(sites, metric, direction, grid_dim, engine, 0);
        tl::patching::PatchResult result;
        {
          py::gil_scoped_release nogil;
          result = tl::patching::activation_patch(*clean, *corrupted, options);
        }
        return patch_dict(result);
      },
      py::arg("clean"), py::arg("corrupted"), py::arg("sites"), py::arg("metric"),
      py::arg("direction"), py::arg("grid_dim"), py::arg("engine"));
}

} // namespace torchlens_py
