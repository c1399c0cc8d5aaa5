"""torchlens_cpp: log every tensor operation of an eager PyTorch model through
torchlens's C++ capture engine, with TorchLens's common calls.

    import torchlens_cpp as tl
    log = tl.log_forward_pass(model, x)                 # every activation saved
    log['conv2d_1_1'].tensor_contents                   # a torch.Tensor, not a copy
    log['layer1.0.conv1'].containing_module_origin      # 'layer1.0.conv1:1'

The import name is not ``torchlens`` so that this package and the Python
TorchLens can be installed, imported and compared side by side.

Every ATen op the model runs is seen by a dispatcher fallback in the C++
engine (the same LibTorch libraries Python's torch loads); module calls come
from forward pre/post hooks installed on the model's modules for the call only
and removed on every path, exceptions included. A torch.jit.ScriptModule goes
through torchlens's TorchScript path instead (module calls from the
interpreter). See docs/python.md.
"""

import functools
import os
import threading
import types

import torch

from . import _core
from ._core import (
    LayerPass,
    ModelLog,
    capture_memory_stats,
    release_capture_memory,
    render_available,
    set_capture_memory_limit,
)

__all__ = [
    "log_forward_pass",
    "get_model_metadata",
    "show_model_graph",
    "validate_saved_activations",
    "validate_gradients",
    "intervene",
    "extract",
    "ModelLog",
    "LayerPass",
    "render_available",
    "capture_memory_stats",
    "release_capture_memory",
    "set_capture_memory_limit",
]

_VIS_OPTS = ("none", "unrolled", "rolled")


def _as_args(input_args):
    """TorchLens's convention: a list or tuple holds the positional arguments,
    anything else is the one argument."""
    if isinstance(input_args, (list, tuple)):
        return list(input_args)
    return [input_args]


def _input_tensors(args, kwargs):
    """The tensors handed to forward with their addresses: ``input.0``,
    ``input.1.2`` (element 2 of a list argument), ``input.1.key`` (dict),
    ``input.name`` (keyword argument). A tensor passed twice counts once."""
    out, seen = [], set()

    def walk(value, address, depth=0):
        if isinstance(value, torch.Tensor):
            if id(value) not in seen:
                seen.add(id(value))
                out.append((address, value))
        elif depth < 32 and isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(v, f"{address}.{i}", depth + 1)
        elif depth < 32 and isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{address}.{k}", depth + 1)

    for i, a in enumerate(args):
        walk(a, f"input.{i}")
    for k, v in kwargs.items():
        walk(v, f"input.{k}")
    return out


def _describe(model, args, kwargs, returned=None):
    """The model for the engine. ``returned``: a list that receives what each
    forward call returned (run_with_interventions hands it back)."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"torchlens: model must be a torch.nn.Module, not {type(model).__name__}")
    modules = [(name, type(m).__name__, m) for name, m in model.named_modules() if name != ""]

    def forward():
        out = model(*args, **kwargs)
        if returned is not None:
            returned.append(out)
        return out

    return _core._Model(
        type(model).__name__,
        list(model.named_parameters()),
        list(model.named_buffers()),
        modules,
        model,
        _input_tensors(args, kwargs),
        forward,
    )


_forward_lock = threading.Lock()
_forward_patches = {}  # class -> [its own forward, the wrapper, captures using it]


def _direct_call_wrapper(forward):
    """``forward`` announcing the calls that bypass ``Module.__call__`` (and so
    the hooks): ``self.block.forward(x)``. Within the module's own call (its
    ``__call__``, or a subclass's ``super().forward``) it only calls through."""

    @functools.wraps(forward)  # inspect.signature(module.forward) stays the same
    def direct_forward(self, *args, **kwargs):
        if not _core.forward_enter(self, args):
            return forward(self, *args, **kwargs)
        out = forward(self, *args, **kwargs)
        _core.forward_exit(self, out)
        return out

    return direct_forward


def _forward_class(module):
    """The class whose own ``forward`` the module runs, or None (nn.Module's
    placeholder, or something other than a plain function)."""
    for klass in type(module).__mro__:
        if "forward" in klass.__dict__:
            f = klass.__dict__["forward"]
            if klass is torch.nn.Module or not isinstance(f, types.FunctionType):
                return None
            return klass
    return None


def _patch_forward(klass):
    with _forward_lock:
        entry = _forward_patches.get(klass)
        if entry is None:
            own = klass.__dict__["forward"]
            entry = _forward_patches[klass] = [own, _direct_call_wrapper(own), 0]
            klass.forward = entry[1]
        entry[2] += 1


def _unpatch_forward(klass):
    with _forward_lock:
        entry = _forward_patches[klass]
        entry[2] -= 1
        if entry[2] == 0:
            del _forward_patches[klass]
            if klass.__dict__.get("forward") is entry[1]:
                klass.forward = entry[0]


class _Hooks:
    """Forward pre/post hooks on every module of the model, for one call: they
    push and pop module frames in the capture running on this thread (outside
    a capture they do nothing). Removed on exit, also when forward raises.

    A TorchScript submodule takes no hooks of its own (ScriptModules refuse
    them) and its children are called by the interpreter, not by Python: its
    own calls are announced by global module hooks that answer for it alone,
    and the engine places the ops inside it by the parameters they read (its
    submodules' calls are inferred, as in a C++-frontend model).

    A forward called directly (``self.block.forward(x)``) runs no hooks: for the
    call, each module class's own ``forward`` is wrapped to announce such calls
    (TorchLens wraps ``forward`` too); shared by concurrent captures, the class
    gets its own ``forward`` back when the last one ends."""

    def __init__(self, model):
        self.model = model
        self.handles = []
        self.classes = []

    def __enter__(self):
        scripted = []  # name prefixes of TorchScript submodules
        try:
            for name, m in self.model.named_modules():
                if scripted and any((name + ".").startswith(p) for p in scripted):
                    continue
                if isinstance(m, torch.jit.ScriptModule):
                    scripted.append(name + ".")
                    continue
                enter = m.register_forward_pre_hook(_core.module_enter)
                self.handles.append(enter)
                # first of the module's pre-hooks, as the exit hook is the last of
                # its forward hooks: what the call's hooks compute (weight_norm's
                # weight) is inside the call
                m._forward_pre_hooks.move_to_end(enter.id, last=False)
                self.handles.append(m.register_forward_hook(_core.module_exit))
                klass = _forward_class(m)
                if klass is not None and klass not in self.classes:
                    _patch_forward(klass)
                    self.classes.append(klass)
            if scripted:
                # C++ functions, so the call's frame is _call_impl's (as for the hooks above)
                from torch.nn.modules import module as _module

                self.handles.append(
                    _module.register_module_forward_pre_hook(_core.opaque_module_enter))
                self.handles.append(_module.register_module_forward_hook(_core.opaque_module_exit))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles.clear()
        for klass in self.classes:
            _unpatch_forward(klass)
        self.classes.clear()
        return False


def _check_vis(vis_opt, vis_nesting_depth):
    if vis_opt not in _VIS_OPTS:
        raise ValueError(f"torchlens: vis_opt must be one of {_VIS_OPTS}, not {vis_opt!r}")
    if not isinstance(vis_nesting_depth, int) or vis_nesting_depth < 1:
        raise ValueError(
            f"torchlens: vis_nesting_depth must be a positive int, not {vis_nesting_depth!r}"
        )


def _render(log, vis_opt, vis_nesting_depth, vis_outpath, vis_fileformat, vis_direction,
            vis_buffer_layers):
    """Writes the DOT source to vis_outpath and, when torchlens was built with
    Graphviz, the drawing to vis_outpath + '.' + vis_fileformat (TorchLens's
    file names). Returns the path of the drawing (or of the DOT file)."""
    depth = min(vis_nesting_depth, 2**31 - 1)
    dot = log.to_dot(vis_opt, depth, vis_direction, vis_buffer_layers)
    with open(vis_outpath, "w", encoding="utf-8") as f:
        f.write(dot)
    if not render_available():
        return vis_outpath
    drawing = f"{vis_outpath}.{vis_fileformat}"
    log.render_graph(drawing, vis_fileformat, vis_opt, depth, vis_direction, vis_buffer_layers)
    return drawing


def _unsupported(name, value, allowed, why):
    if value != allowed:
        raise NotImplementedError(f"torchlens: {name}={value!r} is not supported: {why}")


def log_forward_pass(
    model,
    input_args,
    input_kwargs=None,
    layers_to_save="all",
    keep_unsaved_layers=True,
    output_device="same",
    activation_postfunc=None,
    mark_distances=True,
    detach_saved_tensors=False,
    save_function_args=False,
    save_gradients=False,
    vis_opt="none",
    vis_nesting_depth=1000,
    vis_outpath="graph.gv",
    vis_save_only=False,
    vis_fileformat="pdf",
    vis_buffer_layers=False,
    vis_direction="bottomup",
    random_seed=None,
    gradient_postfunc=None,
    keep_replay=False,
    intervene=None,
    detect_loops=True,
    min_param_free_loop_body=2,
):
    """Runs ``model`` once on the inputs (twice when ``layers_to_save`` is a
    list: a metadata pass resolves the keys, a second pass with the same seed
    saves exactly those layers) and returns its ModelLog.

    ``input_args``: a tensor, or a list/tuple of positional arguments (each may
    be a tensor, a list/tuple or dict of tensors, or any other value);
    ``input_kwargs``: keyword arguments. ``layers_to_save``: ``'all'``,
    ``None`` (metadata only) or a list of keys (labels, module addresses,
    ordinals). ``vis_opt`` ``'unrolled'``/``'rolled'`` also draws the graph
    (see show_model_graph). ``random_seed`` seeds torch's generator for the
    pass (None: a fresh seed, recorded as ``log.random_seed_used``).

    ``save_gradients``: ``True``/``'all'``, ``None``/``False`` or a list of keys
    (as ``layers_to_save``): autograd hooks keep each selected layer's gradient
    when *you* run backward on the output (``log.returned`` holds what forward
    returned); ``layer.gradient`` then holds it, ``gradient_postfunc`` is applied
    to each. The caller's ``.grad`` is unchanged. ``keep_replay``: keep what
    replay and validate_gradients need. ``intervene``: an intervention spec
    applied live (``torchlens_cpp.intervene``), or ``(spec, reference_log)``
    when its sites are labels of a reference log.

    ``detect_loops``: group repeated blocks into layers with passes, as TorchLens
    does (False: only ops applying the same function to the same parameters).
    ``min_param_free_loop_body``: two back-to-back repeats of a parameter-free
    block are a loop only when the smaller holds this many ops, or an op of it is
    in a module or a buffer (2, as later TorchLens releases: ``tanh(tanh(tanh(x)))``
    is a chain; 1: TorchLens 1.0, any repeat).
    """
    _check_vis(vis_opt, vis_nesting_depth)
    _unsupported("keep_unsaved_layers", keep_unsaved_layers, True,
                 "every layer pass is kept in the log; select saved ones with layers_to_save")
    _unsupported("save_function_args", save_function_args, False,
                 "non-tensor arguments are kept as text in log.to_json() ('scalar_args')")
    if intervene is not None and not (
            isinstance(intervene, _core.Interventions)
            or (isinstance(intervene, tuple) and len(intervene) == 2
                and isinstance(intervene[0], _core.Interventions)
                and isinstance(intervene[1], ModelLog))):
        raise TypeError("torchlens: intervene must be an intervene.Interventions spec or a tuple "
                        f"(spec, reference ModelLog), not {type(intervene).__name__}")
    if save_gradients is True:
        save_gradients = "all"
    elif save_gradients is False:
        save_gradients = None
    elif isinstance(save_gradients, str) and save_gradients not in ("all", "none"):
        save_gradients = [save_gradients]
    del mark_distances  # distances are always computed (min/max_distance_from_input/output)
    if isinstance(layers_to_save, str) and layers_to_save not in ("all", "none"):
        layers_to_save = [layers_to_save]
    if isinstance(layers_to_save, (list, tuple)) and len(layers_to_save) == 0:
        layers_to_save = None
    args = _as_args(input_args)
    kwargs = dict(input_kwargs or {})
    if isinstance(model, torch.jit.ScriptModule):
        # torchlens's TorchScript path: module calls from the interpreter
        log = _core.log_script(model, tuple(args), kwargs, save=layers_to_save, seed=random_seed,
                               detach=detach_saved_tensors, output_device=output_device,
                               postfunc=activation_postfunc, keep_replay=keep_replay,
                               save_gradients=save_gradients,
                               gradient_postfunc=gradient_postfunc, intervene=intervene,
                               detect_loops=bool(detect_loops),
                               min_param_free_loop_body=min_param_free_loop_body)
    else:
        described = _describe(model, args, kwargs)
        with _Hooks(model):
            log = _core.log_forward_pass(
                described,
                save=layers_to_save,
                seed=random_seed,
                detach=detach_saved_tensors,
                output_device=output_device,
                postfunc=activation_postfunc,
                keep_replay=keep_replay,
                save_gradients=save_gradients,
                gradient_postfunc=gradient_postfunc,
                intervene=intervene,
                detect_loops=bool(detect_loops),
                min_param_free_loop_body=min_param_free_loop_body,
            )
    if vis_opt != "none":
        _render(log, vis_opt, vis_nesting_depth, vis_outpath, vis_fileformat, vis_direction,
                vis_buffer_layers)
    del vis_save_only  # nothing is ever opened in a viewer
    return log


def get_model_metadata(model, input_args, input_kwargs=None, random_seed=None):
    """The log without activations (TorchLens: ``layers_to_save=None``)."""
    return log_forward_pass(model, input_args, input_kwargs, layers_to_save=None,
                            random_seed=random_seed)


def show_model_graph(
    model,
    input_args,
    input_kwargs=None,
    vis_opt="unrolled",
    vis_nesting_depth=1000,
    vis_outpath="graph.gv",
    vis_save_only=False,
    vis_fileformat="pdf",
    vis_buffer_layers=False,
    vis_direction="bottomup",
    random_seed=None,
):
    """Draws the model's graph: the DOT source to ``vis_outpath`` and, with
    Graphviz, the drawing to ``vis_outpath.vis_fileformat``; returns the path
    of the drawing. Nothing is opened in a viewer (``vis_save_only`` has no
    effect)."""
    if vis_opt == "none":
        raise ValueError("torchlens: show_model_graph needs vis_opt 'unrolled' or 'rolled'")
    _check_vis(vis_opt, vis_nesting_depth)
    del vis_save_only
    log = log_forward_pass(model, input_args, input_kwargs, layers_to_save=None,
                           random_seed=random_seed)
    return _render(log, vis_opt, vis_nesting_depth, os.fspath(vis_outpath), vis_fileformat,
                   vis_direction, vis_buffer_layers)


class ValidationReport(dict):
    """validate_saved_activations(..., return_report=True): ``valid``,
    ``layers_checked``, ``perturbations``, ``exempted``, ``failures`` (dicts
    with ``label``, ``kind``, ``detail``, ``max_error``), ``text``."""

    def __bool__(self):
        return bool(self["valid"])

    def __str__(self):
        return self["text"]


def validate_saved_activations(model, input_args, input_kwargs=None, random_seed=None,
                               verbose=False, perturb=True, atol=3e-6, rtol=1e-5,
                               return_report=False):
    """TorchLens's check: logs every activation, compares the outputs with a
    plain forward pass, re-executes every op from its parents' saved values and
    (``perturb``) checks that perturbing each parent changes the result.
    Returns True/False (or the full report with ``return_report=True``)."""
    args = _as_args(input_args)
    kwargs = dict(input_kwargs or {})
    if isinstance(model, torch.jit.ScriptModule):
        report = ValidationReport(_core.validate_script(
            model, tuple(args), kwargs, seed=random_seed, perturb=perturb, atol=atol, rtol=rtol))
    else:
        described = _describe(model, args, kwargs)
        with _Hooks(model):
            report = ValidationReport(
                _core.validate(described, seed=random_seed, perturb=perturb, atol=atol, rtol=rtol))
    if verbose:
        print(report["text"])
    return report if return_report else report["valid"]


def validate_gradients(log, atol=1e-5, rtol=1e-4, return_report=False):
    """Recomputes every saved gradient of ``log`` from its saved activations
    through its children's backward (docs/gradients.md) and compares. The log
    must come from ``log_forward_pass(..., save_gradients=True,
    keep_replay=True)`` with every activation saved, after your backward.
    Returns True/False (or the report: ``valid``, ``layers_checked``, ``vjps``,
    ``max_error``, ``failures``, ``skipped``, ``text``)."""
    report = ValidationReport(_core.validate_gradients(log, atol=atol, rtol=rtol))
    return report if return_report else report["valid"]


from . import intervene  # noqa: E402  (uses _describe and _Hooks above)
from ._extract import extract  # noqa: E402
