"""Reading and writing safetensors files a slice at a time, with NumPy only (no torch, no mmap).

A safetensors file is an 8-byte little-endian header length, a JSON header (name → dtype, shape, byte
offsets) and the raw data. Reading a slice of a tensor is one ``seek`` + ``readinto`` into a NumPy
buffer, so a merge holds only the chunks it is working on (no memory map pages counted against it).
A writer lays out the header first (shapes and dtypes are known before any arithmetic), then appends
each tensor's bytes as they are computed. bfloat16 is converted by bit manipulation (round to nearest
even, as torch does).

A *source* is one ``.safetensors`` file or a Hugging Face model folder (``model.safetensors`` or shards
listed in ``model.safetensors.index.json``).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from poise.errors import UserError

# safetensors dtype → (numpy storage dtype, is float)
DTYPES: dict[str, tuple[np.dtype, bool]] = {
    "F64": (np.dtype("<f8"), True),
    "F32": (np.dtype("<f4"), True),
    "F16": (np.dtype("<f2"), True),
    "BF16": (np.dtype("<u2"), True),
    "I64": (np.dtype("<i8"), False),
    "I32": (np.dtype("<i4"), False),
    "I16": (np.dtype("<i2"), False),
    "I8": (np.dtype("i1"), False),
    "U8": (np.dtype("u1"), False),
    "U16": (np.dtype("<u2"), False),
    "U32": (np.dtype("<u4"), False),
    "U64": (np.dtype("<u8"), False),
    "BOOL": (np.dtype("?"), False),
    "F8_E4M3": (np.dtype("u1"), False),
    "F8_E5M2": (np.dtype("u1"), False),
}
OUT_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64"}
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # safetensors code, e.g. "F32"
    shape: tuple[int, ...]
    file: Path
    start: int  # absolute byte offset in ``file``
    nbytes: int

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def is_float(self) -> bool:
        return DTYPES[self.dtype][1] and not self.dtype.startswith("F8")


def read_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """The tensors of one safetensors file (in data order) and its ``__metadata__``."""
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise ValueError("file too short")
            (n,) = struct.unpack("<Q", raw)
            if n > MAX_HEADER:
                raise ValueError(f"header of {n} bytes")
            header = json.loads(f.read(n))
    except (OSError, ValueError) as e:
        raise UserError(f"not a readable safetensors file ({e})", where=path) from None
    meta = header.pop("__metadata__", None) or {}
    out: dict[str, TensorInfo] = {}
    for name, h in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        if h["dtype"] not in DTYPES:
            raise UserError(f"tensor {name!r} has unsupported dtype {h['dtype']}", where=path)
        b, e = h["data_offsets"]
        out[name] = TensorInfo(name, h["dtype"], tuple(h["shape"]), path, 8 + n + b, e - b)
    return out, meta


class Source:
    """A model's tensors on disk: one safetensors file or an HF folder (single file or shards)."""

    def __init__(self, path: str | Path, label: str | None = None):
        self.path = Path(path)
        self.label = label or str(path)
        self.folder: Path | None = None
        self.metadata: dict[str, str] = {}
        p = self.path
        if p.is_dir():
            self.folder = p
            if (p / INDEX_NAME).is_file():
                try:
                    weight_map = json.loads((p / INDEX_NAME).read_text())["weight_map"]
                except (OSError, ValueError, KeyError) as e:
                    raise UserError(f"unreadable {INDEX_NAME} ({e})", where=p) from None
                files = sorted(set(weight_map.values()))
            elif (p / SINGLE_NAME).is_file():
                files = [SINGLE_NAME]
            else:
                found = sorted(q.name for q in p.glob("*.safetensors"))
                if not found:
                    other = [q.name for q in p.glob("*.bin")] + [q.name for q in p.glob("*.pt")]
                    hint = " (pickled weights are never loaded: convert them to safetensors)" if other else ""
                    raise UserError(f"no safetensors weights in this folder{hint}", where=p)
                files = found
            paths = [p / f for f in files]
        elif p.is_file():
            paths = [p]
        else:
            raise UserError("no such file or folder", where=p)
        self.tensors: dict[str, TensorInfo] = {}
        for fp in paths:
            if not fp.is_file():
                raise UserError(f"shard {fp.name} listed in {INDEX_NAME} is missing", where=p)
            infos, meta = read_header(fp)
            self.metadata.update(meta)
            self.tensors.update(infos)
        self._files: dict[Path, BinaryIO] = {}

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def _handle(self, path: Path) -> BinaryIO:
        f = self._files.get(path)
        if f is None:
            f = self._files[path] = open(path, "rb", buffering=0)  # noqa: SIM115 - closed in close()
        return f

    def read(self, info: TensorInfo, lo: int, hi: int, dtype: np.dtype) -> np.ndarray:
        """Flat entries ``lo:hi`` of a float tensor, converted to ``dtype`` (float32 or float64)."""
        store, _ = DTYPES[info.dtype]
        raw = self.read_raw(info, lo, hi)
        if info.dtype == "BF16":
            out = (raw.astype(np.uint32) << 16).view(np.float32)
            return out if dtype == np.float32 else out.astype(dtype)
        if raw.dtype == dtype:
            return raw
        return raw.astype(dtype)

    def read_raw(self, info: TensorInfo, lo: int, hi: int) -> np.ndarray:
        """Flat entries ``lo:hi`` in the file's own storage dtype."""
        store, _ = DTYPES[info.dtype]
        buf = np.empty(hi - lo, store)
        f = self._handle(info.file)
        f.seek(info.start + lo * store.itemsize)
        view = memoryview(buf).cast("B")
        got = 0
        while got < len(view):
            n = f.readinto(view[got:])
            if not n:
                raise UserError(f"tensor {info.name!r} is truncated", where=info.file)
            got += n
        return buf


def to_storage(values: np.ndarray, code: str) -> np.ndarray:
    """Float values in the storage dtype of safetensors code ``code`` (bfloat16 rounded to nearest even)."""
    if code == "BF16":
        f = np.ascontiguousarray(values, dtype=np.float32)
        u = f.view(np.uint32)
        rounded = ((u + (np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1)))) >> 16).astype(np.uint16)
        nan = np.isnan(f)
        if nan.any():
            rounded[nan] = ((u[nan] >> 16) | np.uint32(0x40)).astype(np.uint16)  # keep NaN a quiet NaN
        return rounded
    return np.asarray(values, dtype=DTYPES[code][0])


@dataclass(frozen=True)
class OutTensor:
    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        n = DTYPES[self.dtype][0].itemsize
        for s in self.shape:
            n *= s
        return n


class Writer:
    """Writes one safetensors file whose header is known up front; tensors arrive in header order."""

    def __init__(self, path: Path, tensors: list[OutTensor], metadata: dict[str, str] | None = None):
        self.path = path
        self.tensors = tensors
        header: dict[str, object] = {}
        if metadata:
            header["__metadata__"] = dict(metadata)
        offset = 0
        for t in tensors:
            header[t.name] = {
                "dtype": t.dtype,
                "shape": list(t.shape),
                "data_offsets": [offset, offset + t.nbytes],
            }
            offset += t.nbytes
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)  # data starts 8-byte aligned
        self._f: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._f.write(struct.pack("<Q", len(blob)))
        self._f.write(blob)
        self.total = offset
        self._index = 0
        self._written = 0

    def write(self, name: str, chunks: Iterator[np.ndarray]) -> None:
        """Append tensor ``name`` (the next in the header) from its flat chunks."""
        t = self.tensors[self._index]
        assert t.name == name, (t.name, name)
        n = 0
        for c in chunks:
            data = to_storage(c, t.dtype) if DTYPES[t.dtype][1] and c.dtype.kind == "f" else c
            self._f.write(memoryview(np.ascontiguousarray(data)).cast("B"))
            n += data.nbytes
        if n != t.nbytes:
            raise RuntimeError(f"tensor {name!r}: wrote {n} bytes, expected {t.nbytes}")
        self._written += n
        self._index += 1

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()

    def finish(self) -> None:
        if self._index != len(self.tensors):
            raise RuntimeError(f"{self.path}: wrote {self._index} of {len(self.tensors)} tensors")
        self.close()
