"""Reading embedding files: ``.npy``, ``.pt`` / ``.pth`` and ``.safetensors``.

A file holds one tensor, or several named tensors (a ``.pt`` dict or a ``.safetensors`` file) of which ``key``
picks one. Every failure says which file, what was found and what to do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .errors import InputError

SUFFIXES = (".npy", ".pt", ".pth", ".safetensors")


class EmbeddingFileError(InputError):
    """An embedding file is missing, unreadable, or does not hold what was asked for."""


def load_tensor(path: str | Path, key: str | None = None) -> Tensor:
    """Load one tensor from ``path``; ``key`` names it in a file that holds several."""
    path = Path(path)
    if not path.exists():
        raise EmbeddingFileError(f"{path}: no such file (looked in {path.resolve().parent})")
    if path.is_dir():
        raise EmbeddingFileError(f"{path} is a folder; give the embedding file itself")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise EmbeddingFileError(f"{path}: unsupported file type {suffix!r}; use one of {', '.join(SUFFIXES)}")
    try:
        if suffix == ".npy":
            found: object = torch.from_numpy(np.load(path, allow_pickle=False))
        elif suffix == ".safetensors":
            found = _load_safetensors(path)
        else:
            found = torch.load(path, map_location="cpu", weights_only=True)
    except EmbeddingFileError:
        raise
    except Exception as err:  # every reader has its own exceptions for a damaged file
        raise EmbeddingFileError(f"{path}: could not read it as {suffix} ({type(err).__name__}: {err})") from err
    return _pick(found, key, path)


def _load_safetensors(path: Path) -> dict[str, Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError as err:
        raise EmbeddingFileError(
            f"{path}: reading .safetensors needs the safetensors package: pip install 'contrasphere[io]'"
        ) from err
    return load_file(str(path))


def _pick(found: object, key: str | None, path: Path) -> Tensor:
    if isinstance(found, dict):
        # names as strings (a key on the command line is one): a dict saved with int keys reads too
        tensors = {str(k): v for k, v in found.items() if isinstance(v, Tensor)}
        if key is not None:
            if key not in tensors:
                raise EmbeddingFileError(f"{path} has no tensor named {key!r}; it has: {', '.join(tensors) or 'none'}")
            return tensors[key]
        if len(tensors) != 1:
            raise EmbeddingFileError(
                f"{path} holds {len(tensors)} tensors ({', '.join(tensors) or 'none'}); choose one with a key "
                f"(on the command line: {path}:NAME)"
            )
        return next(iter(tensors.values()))
    if key is not None:
        raise EmbeddingFileError(f"{path} holds a single tensor, not named ones; drop the key {key!r}")
    if not isinstance(found, Tensor):
        raise EmbeddingFileError(f"{path} holds a {type(found).__name__}, not a tensor or a dict of tensors")
    return found


def split_key(spec: str) -> tuple[str, str | None]:
    """Split ``'file.safetensors:name'`` into the path and the key (a bare path has no key)."""
    head, sep, tail = spec.rpartition(":")
    if sep and Path(head).suffix.lower() in SUFFIXES and "/" not in tail:
        return head, tail
    return spec, None
