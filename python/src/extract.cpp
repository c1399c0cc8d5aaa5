// torchlens_cpp.extract (docs/python.md "Extraction"): the activations of
// chosen layers over many stimuli for a TorchScript model, through the
// library's extract_to_dir (the files of `torchlens extract`, the same checks)
// or extract_to_memory. The stimuli are read by the library's Stimuli: a path
// as the CLI's --inputs, or a tensor held in memory.

#include "binding.hpp"

#include <torchlens/extract/extract.hpp>

#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/utils/pybind.h>

#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace torchlens_py {

namespace {

namespace ex = torchlens::extract;

/// The stimuli: a path (a .npy file, a folder of .npy files or of images)
/// with the image options, or a tensor [N, ...]. Image options for anything
/// but a folder of images are refused, as the CLI refuses its flags.
ex::Stimuli open_stimuli(const std::optional<std::string>& path,
                         const std::optional<at::Tensor>& items,
                         const std::optional<std::int64_t>& resize,
                         const std::optional<std::int64_t>& crop,
                         const std::optional<std::array<double, 3>>& mean,
                         const std::optional<std::array<double, 3>>& stdev,
                         const std::optional<std::string>& channels) {
  ex::ImageOptions images;
  std::vector<std::string> given;
  if (resize) {
    images.resize = *resize;
    given.emplace_back("resize");
  }
  if (crop) {
    images.crop = *crop;
    given.emplace_back("crop");
  }
  if (mean) {
    images.mean = *mean;
    given.emplace_back("mean");
  }
  if (stdev) {
    images.std = *stdev;
    given.emplace_back("std");
  }
  if (channels) {
    if (*channels != "rgb" && *channels != "bgr") {
      throw ex::ExtractError("bad channels '" + *channels + "': use 'rgb' or 'bgr'");
    }
    images.bgr = *channels == "bgr";
    given.emplace_back("channels");
  }
  ex::Stimuli stimuli = items ? ex::Stimuli::from_tensor(*items) : ex::Stimuli::open(*path, images);
  if (!given.empty() && !stimuli.is_images()) {
    throw ex::ExtractError(
        given.front() + " applies to a folder of images; " +
        (items ? std::string("the stimuli are a tensor") : *path + " holds .npy stimuli"));
  }
  return stimuli;
}

py::list layer_dicts(const std::vector<ex::ExtractLayer>& layers) {
  py::list out;
  for (const auto& l : layers) {
    py::dict d;
    d["label"] = l.label;
    d["key"] = l.key;
    d["op"] = l.op;
    d["module"] = l.module;
    d["shape"] = l.shape;
    d["gradient"] = l.gradient;
    d["file"] = l.label + (l.gradient ? ".grad.npy" : ".npy");
    out.append(std::move(d));
  }
  return out;
}

} // namespace

void bind_extract(py::module_& m) {
  // the user's mistakes (bad stimuli, unknown key, a layer without a batch
  // dimension, a non-empty folder, a resume that does not match): ValueError
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ex::ExtractError& e) {
      PyErr_SetString(PyExc_ValueError, torchlens::plain_message(e).c_str());
    }
  });

  m.def(
      "extract",
      [](py::handle script_module, const std::optional<std::string>& path,
         const std::optional<at::Tensor>& items, const std::vector<std::string>& keys,
         const std::string& out_dir, std::optional<std::int64_t> batch_size,
         std::optional<std::uint64_t> seed, bool resume, bool stop_early,
         const std::optional<std::string>& dtype, bool flatten, bool statistics,
         const std::optional<std::string>& gradients_of, const std::optional<at::Tensor>& targets,
         const std::string& model_path, std::optional<std::int64_t> resize,
         std::optional<std::int64_t> crop, std::optional<std::array<double, 3>> mean,
         std::optional<std::array<double, 3>> stdev, std::optional<std::string> channels,
         bool background_io) -> py::object {
        TORCHLENS_CHECK(path.has_value() != items.has_value(),
                        "give the stimuli as a path or as a tensor");
        torch::jit::Module module = script_module_of(script_module);
        ex::ExtractOptions o;
        o.model_path = model_path;
        o.keys = keys;
        o.out_dir = out_dir;
        o.batch_size = batch_size;
        o.seed = seed;
        o.resume = resume;
        o.stop_early = stop_early;
        o.flatten = flatten;
        o.statistics = statistics;
        o.background_io = background_io;
        if (dtype) {
          if (*dtype == "float16") {
            o.dtype = c10::kHalf;
          } else if (*dtype == "float32") {
            o.dtype = c10::kFloat;
          } else if (*dtype == "float64") {
            o.dtype = c10::kDouble;
          } else {
            throw ex::ExtractError("bad dtype '" + *dtype +
                                   "': use float16, float32 or float64 (or None)");
          }
        }
        if (gradients_of) o.gradients_of = ex::GradientTarget::parse(*gradients_of);
        if (targets) o.targets = *targets;
        if (out_dir.empty()) {
          ex::ExtractedLayers r;
          {
            py::gil_scoped_release no_gil;
            const ex::Stimuli stimuli =
                open_stimuli(path, items, resize, crop, mean, stdev, channels);
            r = ex::extract_to_memory(module, stimuli, o);
          }
          py::dict out;
          for (std::size_t i = 0; i < r.layers.size(); ++i) {
            const auto& l = r.layers[i];
            out[py::str(l.gradient ? l.label + ".grad" : l.label)] = r.tensors[i];
          }
          return out;
        }
        ex::ExtractResult r;
        {
          py::gil_scoped_release no_gil;
          const ex::Stimuli stimuli =
              open_stimuli(path, items, resize, crop, mean, stdev, channels);
          r = ex::extract_to_dir(module, stimuli, o);
        }
        py::dict d;
        d["layers"] = layer_dicts(r.layers);
        d["rows_done"] = r.rows_done;
        d["rows_this_run"] = r.rows_this_run;
        d["num_stimuli"] = r.num_stimuli;
        d["batch_size"] = r.batch_size;
        d["seed"] = r.seed;
        d["seconds"] = r.seconds;
        return d;
      },
      py::arg("module"), py::kw_only(), py::arg("path") = py::none(), py::arg("items") = py::none(),
      py::arg("keys"), py::arg("out_dir") = "", py::arg("batch_size") = py::none(),
      py::arg("seed") = py::none(), py::arg("resume") = false, py::arg("stop_early") = true,
      py::arg("dtype") = py::none(), py::arg("flatten") = false, py::arg("statistics") = false,
      py::arg("gradients_of") = py::none(), py::arg("targets") = py::none(),
      py::arg("model_path") = "", py::arg("resize") = py::none(), py::arg("crop") = py::none(),
      py::arg("mean") = py::none(), py::arg("std") = py::none(), py::arg("channels") = py::none(),
      py::arg("background_io") = true,
      "extract_to_dir (out_dir given) or extract_to_memory for a torch.jit.ScriptModule "
      "(use torchlens_cpp.extract)");
}

} // namespace torchlens_py
