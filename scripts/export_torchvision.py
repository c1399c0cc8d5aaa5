#!/usr/bin/python3
"""Export torchvision models as TorchScript for torchlens's model tests.

Usage: /usr/bin/python3 scripts/export_torchvision.py OUTDIR [NAMES...]

For each NAME (default: resnet18 googlenet mobilenet_v2 densenet121; MODELS
below lists all: the model tests use the default four, the validation campaign
in tests/validate every classification family of torchvision 0.14 plus
TransformerEncoder, LSTM and GRU models) writes

  OUTDIR/NAME.pt      the model (eval mode, random weights, torch.manual_seed(0)),
                      torch.jit.script'ed, or torch.jit.trace'd when scripting fails
  OUTDIR/NAME.ref.pt  a scripted container module whose buffers `x` and `y` hold
                      a seeded input and the model's output on it; C++ reads them
                      with torch::jit::load(path).attr("x").toTensor()
  OUTDIR/NAME.json    {"name", "method": "script"|"trace", "input_shape",
                       "module_calls": {class: calls during the eager forward},
                       "op_counts": {layer type: tensor-producing aten ops in
                                     the frozen (inlined) forward graph},
                       "tensor_ops_in_blocks": tensor ops under control flow
                                               (0: op_counts are exact),
                       "seconds": export time}

The expected counts are computed independently of torchlens: module_calls from
forward hooks on the eager model, op_counts from the frozen TorchScript graph.
Existing outputs are kept (cache) unless this script changed since; delete
OUTDIR/NAME.* to re-export. Needs only the standard library, torch and
torchvision; never downloads weights.
"""

import hashlib
import json
import os
import sys
import time
from collections import Counter

import torch
import torchvision

class TransformerEncoderModel(torch.nn.Module):
    """torch.nn.TransformerEncoder (2 layers, d_model 32, 4 heads) and a head."""

    def __init__(self):
        super().__init__()
        layer = torch.nn.TransformerEncoderLayer(
            d_model=32, nhead=4, dim_feedforward=64, batch_first=True
        )
        self.encoder = torch.nn.TransformerEncoder(layer, num_layers=2)
        self.head = torch.nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.encoder(x).mean(1))


class RecurrentModel(torch.nn.Module):
    """A 2-layer LSTM or GRU (16 -> 32, batch first) and a head on the last step."""

    def __init__(self, cell):
        super().__init__()
        self.rnn = cell(16, 32, num_layers=2, batch_first=True)
        self.head = torch.nn.Linear(32, 10)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


MODELS = {
    # name: (constructor, input shape)
    "resnet18": (lambda: torchvision.models.resnet18(weights=None), [1, 3, 64, 64]),
    "googlenet": (
        lambda: torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False),
        [1, 3, 64, 64],
    ),
    "mobilenet_v2": (lambda: torchvision.models.mobilenet_v2(weights=None), [1, 3, 64, 64]),
    "densenet121": (lambda: torchvision.models.densenet121(weights=None), [1, 3, 64, 64]),
    "alexnet": (lambda: torchvision.models.alexnet(weights=None), [1, 3, 64, 64]),
    "squeezenet1_0": (lambda: torchvision.models.squeezenet1_0(weights=None), [1, 3, 64, 64]),
    # the validation campaign (tests/validate): every classification family,
    # at the smallest convenient input
    "resnet50": (lambda: torchvision.models.resnet50(weights=None), [1, 3, 64, 64]),
    "resnext50_32x4d": (lambda: torchvision.models.resnext50_32x4d(weights=None), [1, 3, 64, 64]),
    "wide_resnet50_2": (lambda: torchvision.models.wide_resnet50_2(weights=None), [1, 3, 64, 64]),
    "vgg11_bn": (lambda: torchvision.models.vgg11_bn(weights=None), [1, 3, 32, 32]),
    "inception_v3": (
        lambda: torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False),
        [1, 3, 75, 75],
    ),
    "squeezenet1_1": (lambda: torchvision.models.squeezenet1_1(weights=None), [1, 3, 64, 64]),
    "mobilenet_v3_small": (lambda: torchvision.models.mobilenet_v3_small(weights=None), [1, 3, 64, 64]),
    "mobilenet_v3_large": (lambda: torchvision.models.mobilenet_v3_large(weights=None), [1, 3, 64, 64]),
    "shufflenet_v2_x0_5": (lambda: torchvision.models.shufflenet_v2_x0_5(weights=None), [1, 3, 64, 64]),
    "mnasnet0_5": (lambda: torchvision.models.mnasnet0_5(weights=None), [1, 3, 64, 64]),
    "efficientnet_b0": (lambda: torchvision.models.efficientnet_b0(weights=None), [1, 3, 64, 64]),
    "efficientnet_v2_s": (lambda: torchvision.models.efficientnet_v2_s(weights=None), [1, 3, 64, 64]),
    "regnet_x_400mf": (lambda: torchvision.models.regnet_x_400mf(weights=None), [1, 3, 64, 64]),
    "regnet_y_400mf": (lambda: torchvision.models.regnet_y_400mf(weights=None), [1, 3, 64, 64]),
    "convnext_tiny": (lambda: torchvision.models.convnext_tiny(weights=None), [1, 3, 64, 64]),
    "swin_t": (lambda: torchvision.models.swin_t(weights=None), [1, 3, 64, 64]),
    "vit_small": (
        lambda: torchvision.models.VisionTransformer(
            image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64
        ),
        [1, 3, 32, 32],
    ),
    "transformer_encoder": (lambda: TransformerEncoderModel(), [2, 10, 32]),
    "lstm": (lambda: RecurrentModel(torch.nn.LSTM), [2, 5, 16]),
    "gru": (lambda: RecurrentModel(torch.nn.GRU), [2, 5, 16]),
}
DEFAULT = ["resnet18", "googlenet", "mobilenet_v2", "densenet121"]


class Reference(torch.nn.Module):
    """Holds the reference input `x` and output `y` as buffers."""

    def __init__(self, x, y):
        super().__init__()
        self.register_buffer("x", x)
        self.register_buffer("y", y)

    def forward(self):
        return self.y


def layer_type(op_name):
    """TorchLens's layer type: `aten::max_pool2d` -> `maxpool2d`."""
    return op_name.split("::")[-1].lower().replace("_", "")


def module_calls(model, x):
    """Calls per module class during one eager forward (forward hooks)."""
    counts = Counter()
    handles = [
        m.register_forward_hook(lambda mod, _i, _o: counts.update([type(mod).__name__]))
        for m in model.modules()
    ]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return dict(sorted(counts.items()))


def static_op_counts(exported):
    """Tensor-producing aten ops per layer type in the frozen forward graph.

    Freezing inlines submodule calls and folds `if` on module attributes, so for
    these straight-line classifiers every top-level node runs exactly once. Ops
    returning no tensor (`aten::dim`, `aten::len`, ...) are interpreter
    primitives, not dispatcher ops, and are skipped. Returns the counts and the
    number of tensor ops left inside control-flow blocks (0 when exact).
    """
    frozen = torch._C._freeze_module(exported._c)
    graph = frozen._get_method("forward").graph
    counts = Counter()
    in_blocks = 0

    def produces_tensor(node):
        return any(isinstance(o.type(), torch._C.TensorType) for o in node.outputs())

    def walk(block, depth):
        nonlocal in_blocks
        for node in block.nodes():
            if node.kind().startswith("aten::") and produces_tensor(node):
                if depth == 0:
                    counts[layer_type(node.kind())] += 1
                else:
                    in_blocks += 1
            for sub in node.blocks():
                walk(sub, depth + 1)

    walk(graph, 0)
    return dict(sorted(counts.items())), in_blocks


def script_hash():
    with open(os.path.abspath(__file__), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def cached(paths):
    """True when a complete export by this version of the script exists."""
    if not all(os.path.exists(p) for p in paths):
        return False
    try:
        with open(paths[2]) as f:
            return json.load(f).get("script") == script_hash()
    except (OSError, ValueError):
        return False


def export(outdir, name):
    paths = [os.path.join(outdir, name + ext) for ext in (".pt", ".ref.pt", ".json")]
    if cached(paths):
        print(f"{name}: cached")
        return
    start = time.time()
    ctor, shape = MODELS[name]
    torch.manual_seed(0)
    model = ctor().eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(shape, generator=gen)
    try:
        exported = torch.jit.script(model)
        method = "script"
    except Exception as e:  # noqa: BLE001 - any scripting failure falls back
        print(f"{name}: scripting failed ({type(e).__name__}), tracing", file=sys.stderr)
        exported = torch.jit.trace(model, x, check_trace=False)
        method = "trace"
    exported = exported.eval()
    with torch.no_grad():
        y = exported(x)
    if isinstance(y, tuple):  # scripted googlenet: GoogLeNetOutputs(logits, None, None)
        y = y[0]
    info = {
        "name": name,
        "method": method,
        "returns_tuple": isinstance(exported(x), tuple),
        "input_shape": shape,
        "output_shape": list(y.shape),
        "module_calls": module_calls(model, x),
    }
    info["op_counts"], info["tensor_ops_in_blocks"] = static_op_counts(exported)
    # Write the model and reference first and the json last: the json marks a
    # complete export.
    exported.save(paths[0])
    torch.jit.script(Reference(x, y)).save(paths[1])
    info["seconds"] = round(time.time() - start, 2)
    info["script"] = script_hash()
    tmp = paths[2] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(info, f, indent=1, sort_keys=True)
    os.replace(tmp, paths[2])
    print(f"{name}: {method}, {info['seconds']} s")


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    outdir = argv[1]
    names = argv[2:] or DEFAULT
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        print(f"unknown model(s): {', '.join(unknown)}; known: {', '.join(MODELS)}", file=sys.stderr)
        return 2
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(1)
    for name in names:
        export(outdir, name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
