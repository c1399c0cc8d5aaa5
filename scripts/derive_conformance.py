#!/usr/bin/python3
"""Derive tests/conformance/expected/*.txt from the Python TorchLens.

Usage: TORCHLENS_PY=/path/to/torchlens-1.0.0 /usr/bin/python3 scripts/derive_conformance.py [NAMES...]

Runs TorchLens 1.0.0 (the last release of the paper's algorithm; it runs on
Debian's torch 1.13.1) on the eager models of tests/conformance/models.py and
writes, per model, the structure TorchLens gives: model flags, module passes,
and per layer its label, parents, containing modules and the module passes it
exits. The test (tests/conformance/conformance_test.cpp) logs the TorchScript
export of the same model with torchlens and compares.

Two differences of LibTorch are applied (see docs/capture.md): ops are named
as ATen runs them (`a / b` is `div`, where TorchLens names the Python operator
`truediv`; ATEN_NAMES), and code whose values nothing uses is not there
(TorchScript's compiler removes dead code; _live). Labels are renumbered over
what remains, as TorchLens numbers them.

Three rules of later TorchLens releases are applied, because 1.0.0 gets them
wrong in ways its maintainers fixed (see docs/capture.md):
  * the outputs of one call of a multi-output op with parameters (nn.LSTM) are
    separate layers, not passes of one layer (TorchLens b98f6598 adds the output
    index to the parameter equivalence type; we also keep it in the same-
    parameter rule, so an LSTMCell stepped in a loop gives h and c layers);
  * only a bool that decides an `if` is a condition (TorchLens 2.x classifies
    bool reads by context): an unread 0-dim bool, a float `.item()` and a
    `while` loop's condition are not branches. The models whose bools are not
    if-conditions are listed in NOT_IF_CONDITIONS;
  * two adjacent repeats of a parameter-free block are a loop only when the
    smaller holds MIN_PARAM_FREE_LOOP_BODY ops or one of the two corresponding
    ops is in a module or a buffer (TorchLens fe7acea9: `tanh(tanh(tanh(x)))` is a
    chain, not a 3-pass loop; _patch_param_free_guard).
Files of models where TorchLens itself errs beyond these were checked by hand;
their header says "hand-checked", what TorchLens 1.0 gives and why it is
wrong, and this script leaves them alone.

The tests never need this script or TorchLens.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "conformance"))
sys.path.insert(0, os.environ["TORCHLENS_PY"])

import itertools  # noqa: E402

import torch  # noqa: E402
import torchlens  # noqa: E402
import torchlens.capture.output_tensors as _out  # noqa: E402
import torchlens.postprocess.loop_detection as _loops  # noqa: E402
import models  # noqa: E402

TL_VERSION = "1.0.0"

# Bools read in these models decide loops (or are never read), not `if`s.
NOT_IF_CONDITIONS = {"WhileLoop", "UberModel1", "FloatItem"}


def _patch_multi_output():
    # 1.0.0 builds the parameter barcode without the output index; add it where
    # the per-output fields are known (the output index of the tensor).
    orig = _out._log_output_tensor_info

    def patched(self, t, i, args, kwargs, parent_param_passes, fields_dict):
        orig(self, t, i, args, kwargs, parent_param_passes, fields_dict)
        if parent_param_passes and fields_dict.get("is_part_of_iterable_output"):
            old = fields_dict["operation_equivalence_type"]
            new = f"{old}_outindex{i}"
            fields_dict["operation_equivalence_type"] = new
            label = fields_dict["tensor_label_raw"]
            self.layers_with_params[old].remove(label)
            self.layers_with_params[new].append(label)
            fields_dict["pass_num"] = len(self.layers_with_params[new])
            self.equivalent_operations[old].discard(label)
            self.equivalent_operations[new].add(label)
            fields_dict["equivalent_operations"] = self.equivalent_operations[new]
            # rule 1 of the loop detection merges by (func_name, parameters): keep
            # the outputs apart there too
            fields_dict["func_name"] = f"{fields_dict['func_name']}#out{i}"

    _out._log_output_tensor_info = patched


MIN_PARAM_FREE_LOOP_BODY = 2


def _patch_param_free_guard():
    # 1.0.0 merges the members of an iso-group whenever their subgraphs are
    # adjacent. Keep its merges by shared parameters (and its rule 1) as they
    # are, by running it without adjacency, and add the adjacency merges the
    # later guard allows, in a union-find of our own whose roots are, as in
    # 1.0.0, the smallest labels.
    orig = _loops._merge_iso_groups_to_layers

    def anchored(log, label):
        layer = log[label]
        return bool(layer.containing_modules) or bool(layer.is_buffer_layer)

    def patched(self, iso_node_groups, node_to_subgraph, adjacent_subgraphs):
        root = {}

        def find(x):
            root.setdefault(x, x)
            while root[x] != x:
                root[x] = root[root[x]]
                x = root[x]
            return x

        def join(a, b):
            a, b = find(a), find(b)
            if a != b:
                root[max(a, b)] = min(a, b)

        for members in orig(self, iso_node_groups, node_to_subgraph, {}).values():
            first = min(members)
            for label in members:
                join(first, label)
        nodes = set()
        for members in iso_node_groups.values():
            nodes.update(members)
            for a, b in itertools.combinations(sorted(members), 2):
                sa, sb = node_to_subgraph[a], node_to_subgraph[b]
                near = adjacent_subgraphs.get(sa.starting_node, ())
                if sb.starting_node not in near:
                    continue
                if (anchored(self, a) or anchored(self, b)
                        or min(len(sa.node_set), len(sb.node_set)) >= MIN_PARAM_FREE_LOOP_BODY):
                    join(a, b)
        layers = {}
        for label in nodes:
            layers.setdefault(find(label), set()).add(label)
        return {r: members for r, members in layers.items() if len(members) > 1}

    _loops._merge_iso_groups_to_layers = patched


# Python operators TorchLens names by their dunder; ATen runs the op itself.
ATEN_NAMES = {"truediv": "div", "radd": "add", "rmul": "mul", "iadd": "add", "isub": "sub",
              "imul": "mul", "itruediv": "div"}

# 0-dim values no code reads (everywhere else a childless 0-dim tensor is read
# into Python: `if t:`, `.item()`, which TorchScript keeps), by layer type
# (labels move when the loop rules change; each model has one such op).
UNREAD_SCALARS = {"UberModel1": {"gt"}}


def _live(log, name):
    """The layers TorchScript keeps: its compiler drops ops whose values nothing
    uses (dead code), unless they write in place or run inside a module call."""
    unread = UNREAD_SCALARS.get(name, set())
    live = set()
    for layer in reversed(log.layer_list):
        label = layer.layer_label
        keep = (
            layer.is_output_layer
            or layer.func_is_inplace
            or bool(layer.containing_modules)
            or any(c in live for c in layer.child_layers)
            or (not layer.child_layers and len(layer.tensor_shape) == 0
                and layer.layer_type not in unread)
        )
        if keep:
            live.add(label)
    return live


def _relabel(log, live):
    """TorchLens's labels, recomputed over the live layers with ATen op names:
    `{type}_{type_num}_{total_num}[:pass]` numbered at each layer's first pass."""
    layers = [l for l in log.layer_list if l.layer_label in live]
    passes = {}
    for l in layers:
        passes.setdefault(l.layer_label_no_pass, []).append(l.layer_label)
    type_count, total, new_base = {}, 0, {}
    io_count = {"input": 0, "buffer": 0, "output": 0}
    for l in layers:
        group = l.layer_label_no_pass
        if group in new_base:
            continue
        kind = l.layer_type
        if kind in io_count:
            io_count[kind] += 1
            new_base[group] = f"{kind}_{io_count[kind]}"
            if kind == "output":
                total += 1
            continue
        kind = ATEN_NAMES.get(kind, kind)
        type_count[kind] = type_count.get(kind, 0) + 1
        total += 1
        new_base[group] = f"{kind}_{type_count[kind]}_{total}"
    mapping = {}
    for group, members in passes.items():
        for i, label in enumerate(members):
            mapping[label] = new_base[group] + (f":{i + 1}" if len(members) > 1 else "")
    return layers, mapping, passes


def describe(name):
    model, inputs, kind = models.build(name)
    args = inputs if kind == "args" else [inputs]
    log = torchlens.log_forward_pass(model, args, layers_to_save=None, random_seed=0)
    live = _live(log, name)
    layers, mapping, passes = _relabel(log, live)
    children = {l.layer_label: [c for c in l.child_layers if c in live] for l in layers}
    branching = any(len(set(c)) > 1 for c in children.values())
    loops = max(len(m) for m in passes.values())
    conditional = bool(log.has_conditional_branching) and name not in NOT_IF_CONDITIONS
    lines = [
        f"flags recurrent={int(loops > 1)} loops={loops} "
        f"branching={int(branching)} conditional={int(conditional)}"
    ]
    mods = sorted(f"{m.address}:{m.num_passes}" for m in log.modules if m.address != "self")
    lines.append("modules " + " ".join(mods))
    for layer in layers:
        parents = ",".join(sorted({mapping[p] for p in layer.parent_layers}))
        nesting = ",".join(layer.containing_modules)
        exits = "" if layer.is_output_layer else ",".join(sorted(layer.module_passes_exited))
        lines.append(f"layer {mapping[layer.layer_label]} <- {parents} @ {nesting} > {exits}")
    if conditional:
        for parent, child in sorted(log.conditional_branch_edges):
            lines.append(f"if {mapping[parent]} -> {mapping[child]}")
    return lines


def main(names):
    _patch_multi_output()
    _patch_param_free_guard()
    out_dir = os.path.join(ROOT, "tests", "conformance", "expected")
    os.makedirs(out_dir, exist_ok=True)
    for name in names:
        path = os.path.join(out_dir, name + ".txt")
        if os.path.exists(path) and "hand-checked" in open(path).readline():
            print(f"{name}: hand-checked, kept")
            continue
        try:
            lines = describe(name)
        except Exception as e:  # a model TorchLens cannot log: say so, write nothing
            print(f"{name}: TorchLens failed: {type(e).__name__}: {e}")
            continue
        header = f"# {name}: TorchLens {TL_VERSION} (eager, torch {torch.__version__}), scripts/derive_conformance.py"
        with open(path, "w") as f:
            f.write("\n".join([header] + lines) + "\n")
        print(f"{name}: {len(lines) - 2} layers")


if __name__ == "__main__":
    main(sys.argv[1:] or list(models.ZOO))
