#!/usr/bin/env python3
"""Check group-recurrences against TorchLens's own grouping code.

Runs build/tests/passes/random_loop_graphs, feeds every graph to TorchLens's
backend-neutral grouper (torchlens/postprocess/loop_grouping_adapter.py, read
from a TorchLens checkout: nothing of it is copied here) and compares the
layers and pass numbers vertex by vertex.

Each node is passed with `recurrence_anchored` (in a module, or a buffer) as
the tool prints it, so TorchLens's guard on parameter-free loops (two adjacent
repeats need a body of 2 ops unless an op is anchored) is on, as it is in
group-recurrences by default (`min_param_free_loop_body`).

Usage:
  scripts/compare_grouping_with_torchlens.py TORCHLENS_CHECKOUT
      [--first-seed 0] [--count 1000] [--max-iterations 40] [--buffers] [--build build]
(--buffers: some ops also read buffers, one of them rewritten every iteration)
Exit status 0 when every graph agrees, 1 otherwise (the first few
differences are printed).
"""
import argparse
import importlib.util
import json
import pathlib
import subprocess
import sys


def load_grouper(checkout: pathlib.Path):
    path = checkout / "torchlens" / "postprocess" / "loop_grouping_adapter.py"
    if not path.is_file():
        sys.exit(f"compare_grouping_with_torchlens: no {path}")
    spec = importlib.util.spec_from_file_location("torchlens_loop_grouping", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def torchlens_layers(grouper, nodes):
    """(layer name, pass, passes) per vertex, from TorchLens's grouper."""
    labels = [n["label"] for n in nodes]
    children = [[] for _ in nodes]
    for i, n in enumerate(nodes):
        for p in n["parents"]:
            children[p].append(i)
    # the candidates an expansion starts from (TorchLens's `equivalent_ops`) are
    # keyed by the type before the module path is appended: for an op with
    # parameters, the op and its parameters only, so the same weights applied in
    # two modules are candidates for one layer; the module path still decides
    # which neighbours match (`equivalence_key`)
    def base(n):
        return n["equivalence"].rsplit("@", 1)[0] if n["params"] else n["equivalence"]

    by_type = {}
    for n in nodes:
        by_type.setdefault(base(n), []).append(n["label"])
    graph_nodes = {}
    for i, n in enumerate(nodes):
        graph_nodes[n["label"]] = grouper.RecurrenceNode(
            label=n["label"],
            raw_order=i,
            equivalence_key=n["equivalence"],
            equivalent_labels=tuple(by_type[base(n)]),
            data_parents=tuple(labels[p] for p in n["parents"]),
            data_children=tuple(labels[c] for c in children[i]),
            layer_label=n["label"],
            recurrent_labels=(),
            uses_params=bool(n["params"]),
            func_name=n["op"],
            param_barcodes=tuple(n["params"]),
            recurrence_anchored=n["anchored"],
        )
    sources = tuple(labels[i] for i, n in enumerate(nodes) if not n["parents"])
    graph = grouper.RecurrenceGroupingGraph(
        nodes=graph_nodes, raw_labels=tuple(labels), source_labels=sources,
        eligible_labels=tuple(labels))
    out = grouper.group_recurrent_nodes(graph)
    return [(out[l].layer_label, out[l].pass_index, out[l].num_passes) for l in labels]


def differences(theirs, nodes):
    """Vertices whose layer (as a partition), pass or pass count differ."""
    ours = [(n["layer"], n["pass"], n["passes"]) for n in nodes]
    to_ours, to_theirs, bad = {}, {}, []
    for n, (tl, tp, tn), (ol, op, on) in zip(nodes, theirs, ours):
        if (to_ours.setdefault(tl, ol) != ol or to_theirs.setdefault(ol, tl) != tl
                or (tp, tn) != (op, on)):
            bad.append((n["label"], (tl, tp, tn), (ol, op, on)))
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("torchlens", type=pathlib.Path, help="a TorchLens checkout")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--max-iterations", type=int, default=40)
    ap.add_argument("--buffers", action="store_true")
    ap.add_argument("--build", type=pathlib.Path, default=pathlib.Path("build"))
    args = ap.parse_args()
    grouper = load_grouper(args.torchlens)
    tool = args.build / "tests" / "passes" / "random_loop_graphs"
    if not tool.is_file():
        sys.exit(f"compare_grouping_with_torchlens: build {tool} first (ninja -C {args.build})")
    run = subprocess.run([str(tool), str(args.first_seed), str(args.count),
                          str(args.max_iterations), "1" if args.buffers else "0"], check=True, capture_output=True, text=True)
    graphs = recurrent = differing = 0
    for line in run.stdout.splitlines():
        case = json.loads(line)
        nodes = case["nodes"]
        graphs += 1
        recurrent += any(n["passes"] > 1 for n in nodes)
        bad = differences(torchlens_layers(grouper, nodes), nodes)
        if bad:
            differing += 1
            if differing <= 5:
                print(f"seed {case['seed']} ({len(nodes)} vertices): (TorchLens, ours) "
                      f"for the first: {bad[:3]}")
    print(f"{graphs} graphs ({recurrent} with recurrent layers): "
          f"{differing} differ from TorchLens")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
