"""Bytes that are the same every time: safetensors built here, and any training state as JSON plus tensors.

- :func:`safetensors_bytes`: the safetensors format (an 8-byte little-endian header length, a JSON header padded
  with spaces to a multiple of 8, then the raw tensor data). The safetensors library keeps ``__metadata__`` in a
  hash map whose order changes from process to process, so the same tensors could give different files; here the
  metadata keys are sorted and the tensors laid out as the library lays them out (largest element size first, then by
  name, so every tensor starts at a multiple of its element size), so equal tensors always give equal bytes. The
  files are read back by the safetensors library itself.
- :func:`encode_tree` / :func:`decode_tree`: a nested state (dicts, lists, tuples, numbers, strings, tensors) as a
  JSON document in which each tensor is a reference ``{"__tensor__": "name"}`` into a safetensors file. Tuples and
  dicts whose keys are not strings (an optimizer's per-parameter state) are tagged so that they come back as they
  were. Nothing here is a pickle: reading a state runs no code from the file.
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any

import torch

from aelf.core.errors import CheckpointError

DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
TENSOR, TUPLE, ITEMS = "__tensor__", "__tuple__", "__items__"  # the tags of encode_tree; no other key starts "__"
HEADER_ALIGN = 8


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _raw(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    if sys.byteorder != "little":  # safetensors stores little-endian data
        raise CheckpointError("safetensors files are written only on little-endian machines")
    return flat.view(torch.uint8).numpy().tobytes()


def safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """A safetensors file of ``tensors`` whose bytes depend only on the tensors' values, shapes, dtypes and names."""
    for name, tensor in tensors.items():
        if tensor.dtype not in DTYPES:
            raise TypeError(f"{name}: dtype {tensor.dtype} is not written to safetensors here")
    order = sorted(tensors, key=lambda name: (-tensors[name].element_size(), name))
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(key): str(metadata[key]) for key in sorted(metadata)}
    chunks, offset = [], 0
    for name in order:
        data = _raw(tensors[name])
        header[name] = {
            "dtype": DTYPES[tensors[name].dtype],
            "shape": list(tensors[name].shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % HEADER_ALIGN)
    return len(text).to_bytes(8, "little") + text + b"".join(chunks)


def encode_tree(obj: object, prefix: str = "") -> tuple[object, dict[str, torch.Tensor]]:
    """``(json_document, tensors)``: ``obj`` with every tensor replaced by a reference to its name in ``tensors``.

    Names are the tensors' paths in the tree (``optimizer/state/3/momentum_buffer``), so they are the same every time.
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(value: object, path: str) -> object:
        if isinstance(value, torch.Tensor):
            tensors[path] = value.detach().to("cpu")
            return {TENSOR: path}
        if isinstance(value, dict):
            if all(isinstance(key, str) and not key.startswith("__") for key in value):
                return {key: walk(item, f"{path}/{key}") for key, item in value.items()}
            return {
                ITEMS: [
                    [walk(key, f"{path}/key{i}"), walk(item, f"{path}/{key}")]
                    for i, (key, item) in enumerate(value.items())
                ]
            }
        if isinstance(value, tuple):
            return {TUPLE: [walk(item, f"{path}/{i}") for i, item in enumerate(value)]}
        if isinstance(value, list):
            return [walk(item, f"{path}/{i}") for i, item in enumerate(value)]
        if value is None or isinstance(value, bool | int | float | str):
            return value
        raise TypeError(f"{path or 'state'}: a {type(value).__name__} cannot be written as JSON and tensors")

    return walk(obj, prefix), tensors


def decode_tree(document: object, tensors: dict[str, torch.Tensor], where: str = "state") -> Any:
    """The inverse of :func:`encode_tree`; CheckpointError naming ``where`` if a reference or tag is malformed."""

    def walk(value: Any) -> Any:
        if isinstance(value, list):
            return [walk(item) for item in value]
        if not isinstance(value, dict):
            return value
        if TENSOR in value:
            name = value[TENSOR]
            if len(value) != 1 or not isinstance(name, str) or name not in tensors:
                raise CheckpointError(f"{where}: refers to a tensor {name!r} that is not in its tensor file")
            return tensors[name]
        if TUPLE in value:
            if len(value) != 1 or not isinstance(value[TUPLE], list):
                raise CheckpointError(f"{where}: malformed tuple")
            return tuple(walk(item) for item in value[TUPLE])
        if ITEMS in value:
            items = value[ITEMS]
            if (
                len(value) != 1
                or not isinstance(items, list)
                or not all(isinstance(pair, list) and len(pair) == 2 for pair in items)
            ):
                raise CheckpointError(f"{where}: malformed mapping")
            try:
                return {walk(key): walk(item) for key, item in items}
            except TypeError:  # an unhashable key: not something encode_tree writes
                raise CheckpointError(f"{where}: malformed mapping key") from None
        if any(key.startswith("__") for key in value):
            raise CheckpointError(f"{where}: unknown tag {next(k for k in value if k.startswith('__'))!r}")
        return {key: walk(item) for key, item in value.items()}

    return walk(document)
