"""torchlens_cpp.intervene: change any op's value and see what follows, live
while the model runs or by replaying the log (docs/interventions.md), with the
names of the C++ API (torchlens/intervene.hpp).

    from torchlens_cpp import intervene as iv
    ref  = tl.log_forward_pass(model, x, keep_replay=True)
    spec = iv.Interventions().at(iv.func('relu') & iv.in_module('layer3'), iv.zero_ablate())
    spec.at('conv2d_3_7', iv.scale(0.5)).at(iv.edge('relu_1_2', 'add_1_6'), iv.patch_from(other))
    cf   = iv.replay(ref, spec)                          # only the downstream cone runs
    live = tl.log_forward_pass(model, x, intervene=(spec, ref))
    run  = iv.intervene(model, x, ref, spec)             # replay, or rerun where it diverges
    y    = iv.run_with_interventions(model, x, iv.Interventions().at(iv.func('relu'), iv.zero()))
    table = iv.activation_patch(model, clean_x, corrupt_x, sites=[iv.func('relu')], metric=m)

Sites: live selectors (``func``, ``in_module``, ``output_index``, ``where``,
``any``), which need no reference log, and label selectors (``label``,
``module``, ``edge``, or a plain string: any lookup key of the reference log),
resolved on a reference. Compose with ``&``, ``|`` and ``~`` (C++ ``!``);
``site.at_index(dim, i)`` narrows the action to one index. Actions:
``zero_ablate`` (alias ``zero``), ``scale``, ``clamp``, ``noise``, ``steer``,
``project_onto``, ``project_off``, ``replace_with`` (alias ``replace``),
``mean_ablate``, ``resample_ablate``, ``patch_from``, ``take_from``,
``add_delta_from``, and ``call(fn)`` for Python code ``fn(value, ctx) ->
tensor``.
"""

import collections

import torch

from . import _Hooks, _as_args, _core, _describe

# selectors, actions and the spec: the C++ classes and functions themselves
from ._core import (  # noqa: F401  (re-exported)
    Action,
    EdgeSelector,
    GraphChanged,
    HookContext,
    Interventions,
    LabelSelector,
    LiveSelector,
    OpView,
    ReplayDivergence,
    Site,
    add_delta_from,
    call,
    clamp,
    edge,
    func,
    ids,
    in_module,
    label,
    mean_ablate,
    module,
    noise,
    output_index,
    patch_from,
    project_off,
    project_onto,
    replace_with,
    resample_ablate,
    scale,
    steer,
    take_from,
    where,
    zero_ablate,
)
from ._core import any  # noqa: F401,A004  (C++ sel::any(); not in __all__: shadows a builtin)

Spec = Interventions
zero = zero_ablate
replace = replace_with

__all__ = [
    "Action", "EdgeSelector", "GraphChanged", "HookContext", "Interventions", "LabelSelector",
    "LiveSelector", "OpView", "ReplayDivergence", "Site", "Spec", "InterventionRun",
    "PatchResult", "activation_patch", "add_delta_from", "call", "clamp", "edge", "func", "ids",
    "in_module", "intervene", "label", "mean_ablate", "module", "noise", "output_index",
    "patch_from", "project_off", "project_onto", "replace", "replace_with", "replay",
    "rerun", "resample_ablate", "run_with_interventions", "scale", "steer", "take_from",
    "where", "zero", "zero_ablate",
]

InterventionRun = collections.namedtuple("InterventionRun", ["log", "engine", "note"])
InterventionRun.__doc__ = """What an engine produced: ``log``, ``engine`` ('replay' or
'rerun') and ``note`` (why automatic mode reran, or how a rerun's graph differs
from the reference; '' when nothing is noteworthy)."""


def replay(reference, spec):
    """Recomputes only the downstream cone of the changed sites from
    ``reference`` (logged with ``keep_replay=True`` and every activation saved),
    without running model code; returns a new log sharing every unchanged
    activation. Raises ReplayDivergence (``.vertex``) where a changed value was
    read into a host scalar or a shape changed: rerun there."""
    return _core.replay(reference, spec)


def rerun(model, input_args, reference, spec, input_kwargs=None, strict=False):
    """Runs the model again with the reference's seed and options and ``spec``
    applied live; ``InterventionRun.note`` says how the graph differs from the
    reference (``strict=True`` raises GraphChanged instead)."""
    args = _as_args(input_args)
    kwargs = dict(input_kwargs or {})
    if isinstance(model, torch.jit.ScriptModule):
        return InterventionRun(*_core.rerun_script(model, tuple(args), kwargs, reference, spec,
                                                   strict))
    described = _describe(model, args, kwargs)
    with _Hooks(model):
        return InterventionRun(*_core.rerun(described, reference, spec, strict))


def intervene(model, input_args, reference, spec, input_kwargs=None, engine="automatic"):
    """Runs ``spec`` with one engine: ``'replay'`` (from the log only),
    ``'rerun'`` (the model again) or ``'automatic'`` (replay; rerun where replay
    diverges, with the reason in ``note``). Returns an InterventionRun."""
    if engine not in ("replay", "rerun", "automatic"):
        raise ValueError(
            f"torchlens: engine must be 'replay', 'rerun' or 'automatic', not {engine!r}")
    if engine == "rerun":
        return rerun(model, input_args, reference, spec, input_kwargs)
    try:
        return InterventionRun(replay(reference, spec), "replay", "")
    except ReplayDivergence as e:
        if engine == "replay":
            raise
        run = rerun(model, input_args, reference, spec, input_kwargs)
        note = f"replay diverged ({e}); reran the model" + (f"; {run.note}" if run.note else "")
        return run._replace(note=note)


def run_with_interventions(model, input_args, spec, input_kwargs=None, reference=None):
    """Runs the model with ``spec`` applied live, without keeping a log, and
    returns what forward returned. A spec with label sites needs the reference
    log they name (``reference=``, or ``spec.resolve(ref)``)."""
    if reference is not None:
        spec = spec.resolve(reference)
    args = _as_args(input_args)
    kwargs = dict(input_kwargs or {})
    if isinstance(model, torch.jit.ScriptModule):
        return _core.run_with_interventions_script(model, tuple(args), kwargs, spec)
    returned = []
    described = _describe(model, args, kwargs, returned)
    with _Hooks(model):
        _core.run_with_interventions(described, spec)
    return returned[-1]


class PatchResult(list):
    """activation_patch's table: one dict per patch (``site``, ``label``,
    ``index``, ``metric``, ``effect``, ``engine``), plus ``clean_metric`` and
    ``corrupted_metric``; ``str()`` is the C++ table."""

    def __init__(self, result):
        super().__init__(result["rows"])
        self.clean_metric = result["clean_metric"]
        self.corrupted_metric = result["corrupted_metric"]
        self.text = result["text"]

    def __str__(self):
        return self.text


def _sites(sites):
    if isinstance(sites, (str, Site, LiveSelector, LabelSelector, EdgeSelector)):
        sites = [sites]
    return [s if isinstance(s, Site) else Site(s) for s in sites]


def activation_patch(*args, sites, metric, direction="denoise", grid_dim=None,
                     engine="automatic", seed=0, clean_kwargs=None, corrupted_kwargs=None):
    """Activation patching on any op: ``activation_patch(model, clean_x,
    corrupted_x, sites=..., metric=...)`` logs both inputs (seed ``seed``), or
    ``activation_patch(clean_log, corrupted_log, ...)`` from two logs made with
    ``keep_replay=True`` (a divergence then raises). Each op pass (or edge) a
    site selects is patched on its own (``grid_dim``: one patch per index of
    that dimension); ``metric(first_output) -> float``. Denoise (default): the
    corrupted run with the clean value patched in; noise: the reverse. Effect =
    (metric - corrupted) / (clean - corrupted). Returns a PatchResult (a list of
    dicts)."""
    sites = _sites(sites)
    if len(args) == 2 and all(isinstance(a, _core.ModelLog) for a in args):
        return PatchResult(_core.activation_patch_logs(args[0], args[1], sites, metric,
                                                       direction, grid_dim, engine))
    if len(args) != 3:
        raise TypeError("torchlens: activation_patch(model, clean_x, corrupted_x, sites=, "
                        "metric=) or activation_patch(clean_log, corrupted_log, sites=, metric=)")
    model, clean_x, corrupted_x = args
    clean_args, corrupted_args = _as_args(clean_x), _as_args(corrupted_x)
    clean_kw, corrupted_kw = dict(clean_kwargs or {}), dict(corrupted_kwargs or {})
    if isinstance(model, torch.jit.ScriptModule):
        return PatchResult(_core.activation_patch_script(
            model, tuple(clean_args), clean_kw, tuple(corrupted_args), corrupted_kw, sites,
            metric, direction, grid_dim, engine, seed))
    clean = _describe(model, clean_args, clean_kw)
    corrupted = _describe(model, corrupted_args, corrupted_kw)
    with _Hooks(model):
        return PatchResult(_core.activation_patch(clean, corrupted, sites, metric, direction,
                                                  grid_dim, engine, seed))
