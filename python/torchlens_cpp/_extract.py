"""torchlens_cpp.extract: the activations of chosen layers over many stimuli,
for a TorchScript model, through the C++ library's extraction (the files of
``torchlens extract``, docs/extract.md). See docs/python.md "Extraction"."""

import os

import numpy as np
import torch

from . import _core

_DTYPES = {torch.float16: "float16", torch.float32: "float32", torch.float64: "float64"}


def _keys(layers):
    if isinstance(layers, str):
        layers = [layers]
    if not isinstance(layers, (list, tuple)) or not layers:
        raise ValueError("torchlens: extract needs the layers to save: a key or a list of keys "
                         "(labels, module addresses, ordinals)")
    for k in layers:
        if not isinstance(k, str):
            raise TypeError(f"torchlens: layer keys are strings, not {type(k).__name__} ({k!r})")
        if k in ("all", "none"):
            raise ValueError("torchlens: extract saves chosen layers: give their keys "
                             f"(['conv2d_1_1', 'layer1']), not {k!r}")
    return list(layers)


def _three(name, value):
    if value is None:
        return None
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        out = []
    if len(out) != 3:
        raise ValueError(f"torchlens: {name} must be three numbers, one per channel (R, G, B), "
                         f"not {value!r}")
    return out


def _size(name, value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"torchlens: {name} must be a non-negative int, not {value!r}")
    return value


class _EvalMode:
    """model.eval() for the call, as ``torchlens extract`` does; every
    module's mode is put back after, also when extraction raises."""

    def __init__(self, model):
        self.modes = [(m, m.training) for m in model.modules()]
        self.model = model

    def __enter__(self):
        self.model.eval()

    def __exit__(self, *exc):
        for m, training in self.modes:
            m.training = training
        return False


def extract(model, stimuli, layers, out_dir=None, batch_size=None, seed=None, gradients_of=None,
            targets=None, dtype=None, flatten=False, statistics=False, stop_early=True,
            resume=False, resize=None, crop=None, mean=None, std=None, channels=None,
            model_path=None):
    """The activations of ``layers`` for every stimulus, computed batch after
    batch by the C++ extraction of ``torchlens extract`` (docs/extract.md).

    ``model``: a ``torch.jit.ScriptModule`` (``torch.jit.script`` or
    ``torch.jit.trace``), run in eval mode for the call (its modes are put
    back after). ``stimuli``: a tensor or NumPy array ``[N, ...]`` (row i is
    stimulus i), or a path: an ``[N, ...]`` ``.npy`` file, a folder of
    ``.npy`` files (one stimulus each) or a folder of images (JPEG, PNG, read
    with ``resize``, ``crop``, ``mean``, ``std``, ``channels`` as the CLI's
    flags of the same names), in name order. ``layers``: keys as in
    ``--save`` (labels, module addresses, ordinals).

    With ``out_dir``: writes what ``torchlens extract --out out_dir`` writes,
    byte for byte (one ``<label>.npy`` ``[N, ...]`` per layer, index.json,
    ``<label>.grad.npy`` with ``gradients_of``, ``.mean/.var.npy`` with
    ``statistics``); ``resume`` continues an interrupted run there. Returns a
    dict: ``layers`` (``label``, ``key``, ``op``, ``module``, ``shape``,
    ``gradient``, ``file``), ``rows_done``, ``rows_this_run``, ``num_stimuli``,
    ``batch_size``, ``seed``, ``seconds``.

    Without ``out_dir``: returns ``{label: tensor [N, ...]}`` (and
    ``'<label>.grad'`` with ``gradients_of``), equal to the files' contents;
    for sets that fit in memory.

    ``batch_size`` (default 32) and ``seed`` (default 0): as ``--batch-size``
    and ``--seed``. ``gradients_of``: ``'sum'``, ``'output:K'``,
    ``'output:argmax'`` or ``'loss:cross_entropy'`` (with ``targets``, ``[N]``
    class indices). ``dtype``: float16/float32/float64 (a string or torch
    dtype) for floating-point layers. ``flatten``: each row as one vector.
    ``stop_early=False``: run the whole model every batch (``--full-forward``).
    ``model_path``: the model's file, recorded in index.json (default: none).

    Bad arguments raise TypeError or ValueError with the reason."""
    if not isinstance(model, torch.jit.ScriptModule):
        if isinstance(model, torch.nn.Module):
            raise TypeError(
                "torchlens: extract runs TorchScript models: pass torch.jit.script(model) or "
                "torch.jit.trace(model, example) (eager models: see docs/python.md, "
                "'Extraction')")
        raise TypeError("torchlens: extract's model must be a torch.jit.ScriptModule, not "
                        f"{type(model).__name__}")
    keys = _keys(layers)
    path, items = None, None
    if isinstance(stimuli, np.ndarray):
        stimuli = torch.from_numpy(stimuli)
    if isinstance(stimuli, torch.Tensor):
        items = stimuli.detach()
    elif isinstance(stimuli, (str, os.PathLike)):
        path = os.fspath(stimuli)
    else:
        raise TypeError("torchlens: stimuli must be a tensor or NumPy array [N, ...], or the path "
                        f"of a .npy file or a folder, not {type(stimuli).__name__}")
    if out_dir is None:
        if resume or statistics:
            raise ValueError("torchlens: resume and statistics are for a run written to a "
                             "folder: give out_dir")
        out_dir = ""
    else:
        out_dir = os.fspath(out_dir)
        if out_dir == "":
            raise ValueError("torchlens: out_dir must be a folder (None: keep the layers in "
                             "memory)")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size <= 0):
        raise ValueError(f"torchlens: batch_size must be a positive int, not {batch_size!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"torchlens: seed must be a non-negative int, not {seed!r}")
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES:
            raise ValueError(f"torchlens: dtype must be float16, float32 or float64, not {dtype}")
        dtype = _DTYPES[dtype]
    if gradients_of is not None and not isinstance(gradients_of, str):
        raise TypeError("torchlens: gradients_of is a string ('sum', 'output:K', "
                        f"'output:argmax', 'loss:cross_entropy'), not {type(gradients_of).__name__}")
    if targets is not None:
        if isinstance(targets, np.ndarray):
            targets = torch.from_numpy(targets)
        if not isinstance(targets, torch.Tensor):
            raise TypeError(f"torchlens: targets must be a tensor or NumPy array [N] of class "
                            f"indices, not {type(targets).__name__}")
    with _EvalMode(model):
        return _core.extract(
            model, path=path, items=items, keys=keys, out_dir=out_dir, batch_size=batch_size,
            seed=seed, resume=bool(resume), stop_early=bool(stop_early), dtype=dtype,
            flatten=bool(flatten), statistics=bool(statistics), gradients_of=gradients_of,
            targets=targets, model_path=os.fspath(model_path) if model_path is not None else "",
            resize=_size("resize", resize), crop=_size("crop", crop), mean=_three("mean", mean),
            std=_three("std", std), channels=channels)
