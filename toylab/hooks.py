"""Named hook points, interventions and activation caches.

Axis names used in shape comments: batch, pos, d_model (see ``toylab.models`` for the rest).

A ``HookPoint`` is an identity module placed at a named point of a model's forward pass
(``blocks.0.attn.hook_pattern``). Functions attached to it receive ``(tensor, hook)`` and
may return a replacement tensor. Hook names are the module paths, as in TransformerLens,
so ``model.get_submodule(name)`` and tools that trace modules (nnsight) see the same names.

Every hook point fires on every forward pass: there is no flag that turns one off.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Union

from torch import Tensor, nn

HookFn = Callable[[Tensor, "HookPoint"], Union[Tensor, None]]
NameFilter = Union[str, Iterable[str], Callable[[str], bool], None]

_LAYER_RE = re.compile(r"^blocks\.(\d+)\.")


class UnknownNameError(KeyError):
    """A hook or cache name that does not exist; the message lists the nearest valid ones."""

    def __init__(self, name: str, valid: Iterable[str], what: str = "hook name"):
        valid = list(valid)
        nearest = difflib.get_close_matches(name, valid, n=5, cutoff=0.4)
        hint = f"nearest valid names: {nearest}" if nearest else f"valid names start with {sorted({v.split('.')[0] for v in valid})}"
        self.message = f"unknown {what} {name!r}; {hint}"
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return self.message


class HookPoint(nn.Module):
    """Identity at a named point of the forward pass; attached functions may read or replace."""

    def __init__(self) -> None:
        super().__init__()
        self.name = ""  # the module path, set by the root model
        self.fns: list[HookFn] = []

    def layer(self) -> int | None:
        """The block index this hook lives in, or None outside the blocks."""
        match = _LAYER_RE.match(self.name)
        return int(match.group(1)) if match else None

    def forward(self, x: Tensor) -> Tensor:
        for fn in self.fns:
            out = fn(x, self)
            if out is not None:
                if not isinstance(out, Tensor) or out.shape != x.shape:
                    got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                    raise ValueError(
                        f"hook function {getattr(fn, '__name__', fn)!r} at {self.name} returned "
                        f"{got}; a hook must return None or a tensor of shape {tuple(x.shape)}"
                    )
                x = out
        return x

    def extra_repr(self) -> str:
        return f"name={self.name!r}, fns={len(self.fns)}"


def act_name(kind: str, layer: int | None = None) -> str:
    """Short activation names to full hook names, as TransformerLens's ``get_act_name``.

    ``act_name("pattern", 0) == "blocks.0.attn.hook_pattern"``; ``act_name("embed") == "hook_embed"``.
    """
    top = {"embed": "hook_embed", "pos_embed": "hook_pos_embed"}
    block = {"resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"}
    attn = {"q", "k", "v", "z", "result", "attn_scores", "pattern"}
    mlp = {"pre", "post"}
    if kind in top:
        return top[kind]
    if kind.startswith("hook_") or "." in kind:
        return kind
    if layer is None:
        raise ValueError(f"act_name({kind!r}) needs a layer index")
    if kind in block:
        return f"blocks.{layer}.hook_{kind}"
    if kind in attn:
        return f"blocks.{layer}.attn.hook_{kind}"
    if kind in mlp:
        return f"blocks.{layer}.mlp.hook_{kind}"
    known = sorted(set(top) | block | attn | mlp)
    raise UnknownNameError(kind, known, what="activation kind")


class ActivationCache(Mapping[str, Tensor]):
    """Activations recorded by ``run_with_cache``, keyed by hook name.

    Accepts full names or ``(kind, layer)`` pairs: ``cache["pattern", 0]``.
    """

    def __init__(self, activations: dict[str, Tensor], valid_names: Iterable[str]):
        self._acts = activations
        self._valid = list(valid_names)

    def __getitem__(self, key: str | tuple[str, int]) -> Tensor:
        name = act_name(*key) if isinstance(key, tuple) else key
        if name in self._acts:
            return self._acts[name]
        if name in self._valid:
            raise KeyError(
                f"{name!r} is a valid hook but was not cached; pass it in run_with_cache(names=...)"
            )
        raise UnknownNameError(name, self._acts or self._valid)

    def __iter__(self) -> Iterator[str]:
        return iter(self._acts)

    def __len__(self) -> int:
        return len(self._acts)

    def __repr__(self) -> str:
        return f"ActivationCache({len(self)} activations: {list(self._acts)[:4]}{'...' if len(self) > 4 else ''})"


class HookedRootModule(nn.Module):
    """Mixin for a root model: finds its hook points and runs with hooks or a cache.

    Subclasses call ``self.setup_hooks()`` at the end of ``__init__``.
    """

    hook_points: dict[str, HookPoint]

    def setup_hooks(self) -> None:
        self.hook_points = {}
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name
                self.hook_points[name] = module

    def hook_names(self) -> list[str]:
        return list(self.hook_points)

    def resolve_hook_names(self, names: NameFilter) -> list[str]:
        """A name, a list of names, a predicate or None (all) -> hook names, in forward order."""
        if names is None:
            return self.hook_names()
        if callable(names):
            return [n for n in self.hook_points if names(n)]
        if isinstance(names, str):
            names = [names]
        names = list(names)
        for name in names:
            if name not in self.hook_points:
                raise UnknownNameError(name, self.hook_points)
        return names

    @contextmanager
    def hooks(self, fwd_hooks: Iterable[tuple[NameFilter, HookFn]]) -> Iterator[HookedRootModule]:
        """Attach ``(name or predicate, fn)`` pairs for the duration of the block.

        The hooks are removed on exit, also when the block raises.
        """
        attached: list[tuple[HookPoint, HookFn]] = []
        try:
            for names, fn in fwd_hooks:
                if not callable(fn):
                    raise TypeError(f"hook function for {names!r} is not callable: {fn!r}")
                for name in self.resolve_hook_names(names):
                    point = self.hook_points[name]
                    point.fns.append(fn)
                    attached.append((point, fn))
            yield self
        finally:
            for point, fn in reversed(attached):
                point.fns.remove(fn)

    def has_hooks(self) -> bool:
        return any(point.fns for point in self.hook_points.values())

    def run_with_hooks(self, tokens: Tensor, fwd_hooks: Iterable[tuple[NameFilter, HookFn]]) -> Tensor:
        with self.hooks(fwd_hooks):
            return self(tokens)

    def run_with_cache(self, tokens: Tensor, names: NameFilter = None) -> tuple[Tensor, ActivationCache]:
        """Logits and the activations at ``names`` (all hooks when None), detached.

        Hooks attached with ``hooks()`` still apply: the cache records the tensors they return.
        """
        store: dict[str, Tensor] = {}

        def record(x: Tensor, hook: HookPoint) -> None:
            store[hook.name] = x.detach()

        with self.hooks([(name, record) for name in self.resolve_hook_names(names)]):
            logits = self(tokens)
        ordered = {name: store[name] for name in self.hook_points if name in store}
        return logits, ActivationCache(ordered, self.hook_points)


__all__ = [
    "ActivationCache",
    "HookFn",
    "HookPoint",
    "HookedRootModule",
    "UnknownNameError",
    "act_name",
]
