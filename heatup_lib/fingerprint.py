"""Fingerprints: SHA-256 of tensors, of modules' weights, of callables, and of the code that trains.

A run record is identified by its parameters, which include the fingerprint of the initial weights
and of the data. The *code* fingerprint is different: it is stored beside a record (not in its
parameters), so that a record made by older code still loads, and a page can flag it as made by
code that has changed since (:func:`code_fingerprint`).
"""

from __future__ import annotations

import ast
import hashlib
import importlib
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["tensor_bytes", "state_fingerprint", "describe_callable", "CORE_MODULES", "code_fingerprint",
           "source_fingerprint"]

# The code that decides the numbers of every training run: the loop, its step, passes and seeds,
# the heads and schedules, the batch sources. A recipe adds its own module, its network (e.g.
# "heatup_lib.models:LeNet") and the data modules it uses when it opens a run folder.
CORE_MODULES: tuple[str, ...] = (
    "heatup_lib.train", "heatup_lib.step", "heatup_lib.passes", "heatup_lib.seeding", "heatup_lib.heads",
    "heatup_lib.schedules", "heatup_lib.data.batches",
)


def tensor_bytes(t: Tensor) -> bytes:
    """The raw bytes of a tensor (any dtype, any device), for hashing."""
    t = t.detach().to("cpu").contiguous()
    return t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


def state_fingerprint(*modules: nn.Module) -> str:
    """SHA-256 of the modules' state dicts (names, dtypes, shapes and values)."""
    digest = hashlib.sha256()
    for module in modules:
        for name, t in module.state_dict().items():
            digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            digest.update(tensor_bytes(t))
    return digest.hexdigest()


def describe_callable(fn: Callable | None) -> dict[str, str] | None:
    """Name and, for Python functions, a hash of the code: enough to tell two transforms apart."""
    if fn is None:
        return None
    name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"
    code = getattr(fn, "__code__", None)
    if code is None:
        return {"name": name, "repr": repr(fn) if "0x" not in repr(fn) else type(fn).__qualname__}
    digest = hashlib.sha256(code.co_code + repr(code.co_consts).encode() + repr(code.co_names).encode())
    return {"name": name, "code_sha256": digest.hexdigest()[:16]}


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    """The tree without docstrings (comments are already gone in an AST)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None),
                                                                      ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def source_fingerprint(path: str | Path) -> str:
    """SHA-256 of a Python file's syntax tree without docstrings: comments and prose don't count."""
    tree = _strip_docstrings(ast.parse(Path(path).read_text(encoding="utf-8")))
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()


def _definition_fingerprint(path: str | Path, name: str) -> str:
    """SHA-256 of one top-level class or function of a file, docstrings excluded."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            return hashlib.sha256(ast.dump(_strip_docstrings(node), include_attributes=False).encode()).hexdigest()
    raise ImportError(f"{path} defines no top-level {name!r}")


@lru_cache(maxsize=None)
def _code_fingerprint(parts: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        module_name, _, definition = part.partition(":")
        path = importlib.import_module(module_name).__file__
        one = _definition_fingerprint(path, definition) if definition else source_fingerprint(path)
        digest.update(f"{part}|{one}|".encode())
    return digest.hexdigest()[:16]


def code_fingerprint(parts: Sequence[str] = CORE_MODULES) -> str:
    """A short digest of the code of ``parts``, docstrings and comments excluded.

    A part is a module (``"heatup_lib.train"``) or one top-level class or function of a module
    (``"heatup_lib.models:LeNet"``), so that a record depends only on the code it ran.
    """
    return _code_fingerprint(tuple(parts))
