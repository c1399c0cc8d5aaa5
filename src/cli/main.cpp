// torchlens: the command-line tool (see docs/cli.md).

#include "common.hpp"
#include "demo_model.hpp"

#include <torchlens/io/json.hpp>
#include <torchlens/io/npy.hpp>
#include <torchlens/torchlens.hpp>
#include <torchlens/validate/validate.hpp>

#include <torch/script.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace torchlens::cli {

int cmd_log(const Args& a) {
  if (a.positional.size() != 1)
    throw CommandLineError("usage: torchlens log MODEL.pt --input-shape 1,3,224,224 [options]");
  auto model = load_model(a.positional[0]);
  auto inputs = model_inputs(a);
  const auto options = log_options(a);
  if (options.save_gradients().kind() != tl::SaveSpec::Kind::none) {
    for (auto& in : inputs) { // the input's gradient too
      if (in.isTensor() && at::isFloatingType(in.toTensor().scalar_type()))
        in = in.toTensor().detach().requires_grad_(true);
    }
  }
  auto log = tl::log_forward_pass(model, inputs, options);
  run_backward(a, log);
  if (!a.has("--quiet")) std::cout << log;
  write_outputs(a, log);
  write_graph(a, log);
  return 0;
}

// get_model_metadata: everything but activations.
int cmd_metadata(const Args& a) {
  if (a.positional.size() != 1)
    throw CommandLineError(
        "usage: torchlens metadata MODEL.pt --input-shape ... [--json OUT.json]");
  auto model = load_model(a.positional[0]);
  auto log =
      tl::log_forward_pass(model, model_inputs(a), log_options(a).save(tl::SaveSpec::none()));
  if (auto json = a.get("--json")) {
    write_outputs(a, log);
  } else {
    tl::io::write_json(std::cout, log);
  }
  return 0;
}

// show_model_graph: the drawing only.
int cmd_show(const Args& a) {
  if (a.positional.size() != 1 || !a.has("--graph")) {
    throw CommandLineError(
        "usage: torchlens show MODEL.pt --input-shape ... --graph OUT.svg [--rolled] "
        "[--nesting-depth N] [--direction bottomup|topdown|leftright]");
  }
  auto model = load_model(a.positional[0]);
  auto log =
      tl::log_forward_pass(model, model_inputs(a), log_options(a).save(tl::SaveSpec::none()));
  write_graph(a, log);
  std::cout << "Wrote " << *a.get("--graph") << " (" << log.size() << " layers).\n";
  return 0;
}

// validate_saved_activations: exit 0 when valid, 1 when not.
int cmd_validate(const Args& a) {
  if (a.positional.size() != 1)
    throw CommandLineError("usage: torchlens validate MODEL.pt --input-shape ...");
  auto model = load_model(a.positional[0]);
  auto report = tl::validate_saved_activations(model, model_inputs(a), log_options(a));
  std::cout << report;
  return report ? 0 : 1;
}

int cmd_demo(const Args& a) {
  const fs::path out = a.get("--out").value_or("torchlens-demo");
  fs::create_directories(out);
  torch::manual_seed(seed_of(a));
  tl::cli::DemoNet model;
  model->eval();
  auto x = torch::randn(tl::cli::demo_input_shape());
  auto log = tl::log_forward_pass(model, x, log_options(a));
  std::cout << log;
  {
    std::ofstream f(out / "demo.json");
    tl::io::write_json(f, log);
  }
  std::vector<std::pair<std::string, at::Tensor>> arrays;
  for (tl::Vertex v : log.saved_layers())
    arrays.emplace_back(log.graph()[v].label(), log.activation(v));
  tl::io::write_npz((out / "demo.npz").string(), arrays);
  std::cout << "\nWrote " << (out / "demo.json").string() << " (metadata of " << log.size()
            << " layers) and " << (out / "demo.npz").string() << " (" << arrays.size()
            << " activations).\n";
  if (tl::io::render_available()) {
    tl::io::render(log, tl::io::RenderOptions().path((out / "demo-unrolled.svg").string()));
    tl::io::render(log, tl::io::RenderOptions()
                            .path((out / "demo-rolled.svg").string())
                            .dot(tl::io::DotOptions().rolled(true)));
    std::cout << "Wrote " << (out / "demo-unrolled.svg").string() << " and "
              << (out / "demo-rolled.svg").string() << " (the graph, unrolled and rolled).\n";
  }
  auto report = tl::validate_saved_activations(model, x, log_options(a));
  std::cout << "\nValidation of the saved activations: " << report;
  return report ? 0 : 1;
}

void usage(std::ostream& os) {
  os << "torchlens: every tensor operation of a LibTorch forward pass\n\n"
        "usage:\n"
        "  torchlens demo [--out DIR] [--seed N]\n"
        "      log the built-in demo model; write DIR/demo.json and DIR/demo.npz\n"
        "  torchlens log MODEL.pt (--input-shape 1,3,224,224 | --input X.npy)... [--seed N]\n"
        "                [--save all|none|KEY,KEY] [--json OUT.json] [--npz OUT.npz] [--quiet]\n"
        "                [--save-gradients all|none|KEY,KEY] [--backward sum|output:K]\n"
        "                [--graph OUT.svg [--rolled] [--nesting-depth N] [--direction D]]\n"
        "                [--no-detect-loops] [--min-param-free-loop-body N]\n"
        "      log a TorchScript model; one --input-shape or --input per forward argument;\n"
        "      --no-detect-loops: only same-parameter ops are passes of one layer;\n"
        "      --min-param-free-loop-body N: the smallest repeated parameter-free block\n"
        "      outside modules that is a loop (2; 1: TorchLens 1.0) (docs/cli.md)\n"
        "  torchlens metadata MODEL.pt INPUTS [--json OUT.json] [LOOP OPTIONS]\n"
        "      metadata only (no activations), as JSON\n"
        "  torchlens show MODEL.pt INPUTS --graph OUT.svg [--rolled] [--nesting-depth N]\n"
        "                 [--direction bottomup|topdown|leftright] [--show-buffers]\n"
        "                 [LOOP OPTIONS]\n"
        "      draw the computational graph (svg, png, pdf or dot)\n"
        "  torchlens validate MODEL.pt INPUTS [--seed N]\n"
        "      re-execute every op from the saved activations; exit 0 when valid, 1 when not\n"
        "  torchlens extract MODEL.pt --inputs STIMULI.npy|DIR --save KEY,KEY --out DIR\n"
        "                    [--batch-size B] [--resume] [--seed N] [--no-progress] [--quiet]\n"
        "                    [--shard K/N] [--full-forward] [--dtype float16] [--flatten]\n"
        "                    [--statistics] [--resize 256] [--crop 224] [--mean R,G,B]\n"
        "                    [--std R,G,B] [--channels rgb|bgr]\n"
        "                    [--gradients-of sum|output:K|output:argmax|loss:cross_entropy\n"
        "                     [--targets LABELS.npy]]\n"
        "      activations of chosen layers over N stimuli: DIR/<label>.npy ([N, ...] each)\n"
        "      and DIR/index.json; --resume continues an interrupted run; --shard (or Slurm /\n"
        "      MPI launcher variables) writes one shard into DIR/shards/; each forward stops\n"
        "      after the last saved layer unless --full-forward; a DIR of .jpg/.png images is\n"
        "      preprocessed as torchvision's Resize, CenterCrop, ToTensor, Normalize;\n"
        "      --gradients-of also writes DIR/<label>.grad.npy, each stimulus's gradient of\n"
        "      that scalar of the first output\n"
        "      (docs/extract.md)\n"
        "  torchlens merge DIR [--delete-shards]\n"
        "      the shards of DIR into DIR/<label>.npy and DIR/index.json, as one process writes\n"
        "  torchlens status DIR\n"
        "      shards done, rows committed, which shards to submit again\n"
        "  torchlens intervene MODEL.pt INPUTS (--spec S.json | --at SITE --action ACTION ...)\n"
        "                      [--engine live|replay|rerun|auto] [--save KEYS] [--json OUT.json]\n"
        "                      [--npz OUT.npz] [--save-spec S.json] [--seed N] [--quiet]\n"
        "      change a value and see what follows; SITE: a lookup key (label, label:pass,\n"
        "      module address, input.0) or PARENT->CHILD; ACTION: zero, scale:F,\n"
        "      clamp:LO:HI, noise:STD[:SEED], replace:T.npy (docs/cli.md)\n"
        "  torchlens patch MODEL.pt --clean A.npy --corrupt B.npy --sites SELECTOR\n"
        "                  --metric logit:K|logit-diff:A:B|prob:K|output-l2 --out RESULT.json\n"
        "                  [--direction denoise|noise] [--grid DIM] [--csv OUT.csv]\n"
        "                  [--engine replay|rerun|auto] [--seed N] [--progress] [--quiet]\n"
        "      activation patching; SELECTOR: comma list of func:NAME, in:ADDR, module:ADDR,\n"
        "      PARENT->CHILD, or lookup keys (a substring like relu selects every match)\n";
}

} // namespace torchlens::cli

int main(int argc, char** argv) {
  using namespace torchlens::cli;
  try {
    if (argc >= 2 && (std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h")) {
      usage(std::cout);
      return 0;
    }
    const Args a = parse(argc, argv);
    if (a.has("--help")) {
      usage(std::cout);
      return 0;
    }
    if (a.command == "log") return cmd_log(a);
    if (a.command == "demo") return cmd_demo(a);
    if (a.command == "metadata") return cmd_metadata(a);
    if (a.command == "show") return cmd_show(a);
    if (a.command == "validate") return cmd_validate(a);
    if (a.command == "extract") return cmd_extract(a);
    if (a.command == "merge") return cmd_merge(a);
    if (a.command == "status") return cmd_status(a);
    if (a.command == "intervene") return cmd_intervene(a);
    if (a.command == "patch") return cmd_patch(a);
    throw CommandLineError("unknown command '" + a.command + "'; try `torchlens --help`");
  } catch (const CommandLineError& e) {
    std::cerr << "torchlens: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) { // the library's errors and LibTorch's
    std::cerr << "torchlens: " << torchlens::plain_message(e) << "\n";
    return 1;
  }
}
