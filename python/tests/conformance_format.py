"""The structure of a torchlens_cpp log in tests/conformance/expected's format
(the same lines tests/conformance/conformance_test.cpp writes for the C++ log):

    flags recurrent=R loops=N branching=B conditional=C
    modules ADDRESS:PASSES ...                      (sorted; modules called)
    layer LABEL <- PARENTS @ CONTAINMENT > EXITS     (one line per layer pass)
    if PARENT -> CHILD                               (IF edges)

Written from the Python field names only, so the test reads what users read.
"""


def describe(log):
    lines = [
        "flags recurrent=%d loops=%d branching=%d conditional=%d"
        % (log.is_recurrent, log.max_recurrent_loops, log.is_branching, log.has_conditional)
    ]
    modules = sorted("%s:%d" % (a, n) for a, n in log.module_num_passes.items())
    lines.append(("modules " + " ".join(modules)).rstrip())
    for layer in log:
        parents = ",".join(sorted(set(layer.parent_layers)))
        nesting = ",".join(layer.containing_modules_origin_nested)
        # as scripts/derive_conformance.py writes them: an output node's exits
        # (its producer's modules, in TorchLens 1.0) are not compared
        exits = "" if layer.is_output_layer else ",".join(sorted(layer.module_passes_exited))
        lines.append(("layer %s <- %s @ %s > %s" % (layer.layer_label, parents, nesting, exits)).rstrip())
    lines.extend(sorted("if %s -> %s" % e for e in log.conditional_branch_edges))
    return lines


def read_expected(path):
    with open(path) as f:
        return [l.rstrip() for l in f if l.rstrip() and not l.startswith("#")]
