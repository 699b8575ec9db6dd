"""Values derived from a model's weights and kept between inference calls, and when not to.

musicnn's folded front end and live layout, and segment-attention's joined heads, are computed
from weights once and kept while the weights are the same: a key of the tensors (``tensors_key``)
says whether they still are, the kept value holds their memory (``pinned``), and a graph being
traced, exported or compiled never takes such a path (``graph_capture``).
"""

from __future__ import annotations

import torch


def tensors_key(*tensors: torch.Tensor) -> tuple:
    """What identifies these weights and statistics: a value derived from them and kept stays
    valid while this is the same (the same tensors at the same version; an in-place change,
    such as a training step or a loaded state dict, bumps the version).  Listed by the caller:
    walking a module's parameters cost ~0.8 ms of a hop.  Whoever keeps a key keeps the tensors'
    memory too (``pinned``): freed, an address could go to new weights replacing them, which
    would then read as the same key."""
    return tuple((t.data_ptr(), t._version) for t in tensors)


def tensors_of(module: torch.nn.Module, *names: str) -> tuple[torch.Tensor, ...]:
    """``module``'s parameters or buffers by name, as attribute access finds them, without
    ``nn.Module.__getattr__``: the checks of a streaming hop read ~40 of them, and at ~2.5 us a
    lookup that way (on the first EPYC's type) they cost more than the keys themselves."""
    parameters, buffers = module._parameters, module._buffers
    return tuple(parameters[n] if n in parameters else buffers[n] for n in names)


def pinned(tensors) -> tuple[torch.Tensor, ...]:
    """The tensors' memory, held while a key (``tensors_key``) of them is kept: no other tensor
    can take their addresses meanwhile.  Taken when a value is kept, not at each check."""
    return tuple(t.detach() for t in tensors)


def graph_capture() -> bool:
    """Whether the call is being traced, exported or compiled rather than run.  (An ONNX export
    traces: ``torch.onnx.is_in_onnx_export`` would add nothing here, and its imports cost ~3 us a
    call, several calls a hop.)"""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()
