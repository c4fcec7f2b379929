"""The sentence encoder of the accurate model: the fine-tuned all-MiniLM-L6-v2, run by ONNX Runtime.

`mention-router train --finetune` fine-tunes the encoder with torch, exports it to ONNX and quantises it
(int8, dynamic, per channel); the model artifact carries the quantised graph and the word-piece
tokenizer, so the service needs neither torch nor a download: `onnxruntime`, `tokenizers` and numpy.

Costs on this class of machine (docs/classifier.md): the cost of a text grows with its word pieces
(attention with their square), so texts are cut to `max_tokens` keeping the head and the tail (a post
states its point at the start, a comment often at its end), batched by similar length and padded only to
the longest of their batch (training embeds in batches; the service one text at a time, see `encode`).
`threads` texts are encoded at once, each on one core (ONNX Runtime releases the GIL while it runs): on
this 2-core machine two at a time encode 128 texts/s against 73 for one, where one text on two intra-op
threads gained nothing (its matrices are too small to split).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from shared.errors import ConfigError

FloatArray = npt.NDArray[np.float32]

# Characters read from each end of a long text before tokenising: bounds the tokenizer's work on a
# 1 MB text while keeping more than `max_tokens` word pieces at both ends.
_EDGE_CHARS = 4_000


class OnnxEncoder:
    """Texts → L2-normalised 384-dimensional vectors."""

    dim = 384

    def __init__(
        self,
        model: bytes | Path,
        tokenizer_json: str,
        *,
        max_tokens: int = 128,
        head_tokens: int | None = None,
        threads: int = 1,
        batch_size: int = 1,
    ) -> None:
        """`max_tokens` word pieces at most, [CLS] and [SEP] included; of a longer text the first
        `head_tokens` (default: three quarters) and the last others are read; `threads` runs of the
        graph at once, each on one thread."""
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ModuleNotFoundError as exc:  # pragma: no cover - both are install requirements
            raise ConfigError(f"the accurate model needs {exc.name}: run `make install`") from exc
        if max_tokens < 8:
            raise ConfigError(f"max_tokens {max_tokens}: at least 8 word pieces")
        self.max_tokens = max_tokens
        body = max_tokens - 2
        self.head_tokens = min(body, head_tokens if head_tokens is not None else (body * 3) // 4)
        self.batch_size = batch_size
        self.threads = max(1, threads)
        # Runs on the callers' threads (one intra-op thread each): a session serves concurrent runs.
        self._pool = ThreadPoolExecutor(self.threads, "encoder") if self.threads > 1 else None
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # The arena reuses its blocks from batch to batch; without it glibc's heap kept growing with the
        # shapes (a batch of 32 x 128 word pieces: 465 MB peak without, 213 MB with). Memory patterns are
        # planned per input shape, and every batch has another: they would only add (292 MB).
        options.enable_cpu_mem_arena = True
        options.enable_mem_pattern = False
        try:
            # A path is read by ONNX Runtime itself: no copy of the graph in Python's heap.
            source = str(model) if isinstance(model, Path) else model
            self._session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
            self._tok = Tokenizer.from_str(tokenizer_json)
        except Exception as exc:
            raise ConfigError(f"the encoder in the model artifact does not load: {exc}") from exc
        self._tok.no_truncation()
        self._tok.no_padding()
        cls_id, sep_id = self._tok.token_to_id("[CLS]"), self._tok.token_to_id("[SEP]")
        if cls_id is None or sep_id is None:
            raise ConfigError("the encoder's tokenizer has no [CLS] or [SEP] word piece")
        self._cls, self._sep = cls_id, sep_id
        names = [i.name for i in self._session.get_inputs()]
        if names != ["input_ids", "attention_mask"]:
            raise ConfigError(f"the encoder's inputs are {names}, expected input_ids and attention_mask")

    def ids(self, text: str) -> list[int]:
        """The word pieces of a text, [CLS] … [SEP], cut to `max_tokens` keeping the head and the tail."""
        if len(text) > 2 * _EDGE_CHARS:
            text = f"{text[:_EDGE_CHARS]} … {text[-_EDGE_CHARS:]}"
        try:
            pieces = self._tok.encode(text or " ", add_special_tokens=False).ids
        except TypeError:  # a lone surrogate (undecodable bytes passed through): not a character
            clean = text.encode("utf-8", "replace").decode("utf-8")
            pieces = self._tok.encode(clean or " ", add_special_tokens=False).ids
        body = self.max_tokens - 2
        if len(pieces) > body:
            tail = body - self.head_tokens
            pieces = pieces[: self.head_tokens] + (pieces[-tail:] if tail else [])
        return [self._cls, *pieces, self._sep]

    def encode(self, texts: list[str]) -> FloatArray:
        """One vector per text; with `batch_size` > 1, texts of similar length are run together (padding
        costs as much as text). The service runs one text at a time: the int8 graph scales its
        activations per run (dynamic quantisation), so a batch would make a text's vector, and now and
        then its label, depend on its neighbours; and on this CPU one at a time is as fast (75 texts/s at
        128 word pieces against 60 in batches of 16). With `threads` > 1 the runs go `threads` at a time;
        each text's vector is the same as on one thread."""
        return self._encode(texts, self._pool)

    def submit(self, texts: list[str]) -> Future[FloatArray]:
        """`encode` on one of the encoder's threads, while the caller goes on (the cascade reads the
        next mentions meanwhile); the same vectors as `encode`."""
        if self._pool is None:
            done: Future[FloatArray] = Future()
            done.set_result(self._encode(texts, None))
            return done
        return self._pool.submit(self._encode, texts, None)

    def _encode(self, texts: list[str], pool: ThreadPoolExecutor | None) -> FloatArray:
        out = np.zeros((len(texts), self.dim), np.float32)
        encoded = [self.ids(t) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
        chunks = [order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        batches = [[encoded[i] for i in chunk] for chunk in chunks]
        results = (
            pool.map(self._forward, batches)
            if pool is not None and len(batches) > 1
            else map(self._forward, batches)
        )
        for chunk, vectors in zip(chunks, results, strict=True):
            out[chunk] = vectors
        return out

    def _forward(self, batch: list[list[int]]) -> FloatArray:
        n = max(len(ids) for ids in batch)
        ids = np.zeros((len(batch), n), np.int64)
        mask = np.zeros((len(batch), n), np.int64)
        for i, row in enumerate(batch):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        (pooled,) = self._session.run(None, {"input_ids": ids, "attention_mask": mask})
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-9)
        result: FloatArray = (pooled / norms).astype(np.float32)
        return result


def release_freed_memory() -> None:
    """Hand the heap that loading freed (the artifact's bytes, float32 reads) back to the system: glibc
    keeps freed blocks for reuse, and after loading they would stay in the process's RSS."""
    gc.collect()
    name = ctypes.util.find_library("c")
    if name is None:
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        ctypes.CDLL(name).malloc_trim(0)


def cosine(a: Any, b: Any) -> float:
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    return float(a @ b / max(1e-9, float(np.linalg.norm(a) * np.linalg.norm(b))))
