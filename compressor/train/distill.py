"""Distillation losses, added to the task loss by the training loop: logits (Hinton et al. 2015), and layer-wise
hidden states and attention distributions (TinyBERT, Jiao et al. 2020; MiniLM, Wang et al. 2020; CoFi, Xia et
al. 2022) from the layers and heads a pruned student kept.

A pruned student's layer keeps the id of the teacher layer it came from (`compressor_structure`), and each kept
head its original id: so student layer i is matched to that teacher layer, and its heads to the same heads, however
many layers and heads were removed around them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from compressor.arch.structure import hidden_positions
from compressor.train.loop import ExtraLoss


@dataclass(frozen=True)
class LayerMap:
    """Per student layer: the teacher layer whose output it learns to match, and the teacher positions of its heads
    (empty where that teacher layer is not the one the student's layer came from: heads are matched only to
    themselves)."""

    layers: list[int]  # teacher layer index matched by each student layer
    heads: list[list[int]]  # per student layer, the teacher's head positions of its kept heads (or none)
    hidden: list[int] | None = None  # the teacher's positions of the student's stream dimensions (width pruning)

    @classmethod
    def between(cls, student: dict[str, Any], teacher: dict[str, Any]) -> LayerMap:
        """From two `compressor_structure` dicts (the student pruned from the teacher).

        Layers are matched uniformly (TinyBERT, Jiao et al. 2020): student layer i of S learns teacher layer
        ⌊(i + 1)·T/S⌋ − 1 of T, so the student's last layer learns the teacher's last, whatever layers were
        dropped; with no layer dropped that is each layer's own. Matching a kept layer to the teacher layer it came
        from instead would ask a shallow student's top layer for a middle layer's representation, which the
        logits then have to undo.
        """
        teacher_layers = teacher["layers"]
        sources = {int(e["source"]) for e in teacher_layers}
        s_count, t_count = len(student["layers"]), len(teacher_layers)
        layers, heads = [], []
        for i, entry in enumerate(student["layers"]):
            if int(entry["source"]) not in sources:
                raise ValueError(f"student layer {i} (source {entry['source']}) is not a layer of the teacher")
            j = (i + 1) * t_count // s_count - 1
            same = int(teacher_layers[j]["source"]) == int(entry["source"])
            position = {h: k for k, h in enumerate(teacher_layers[j]["heads"])}
            layers.append(j)
            heads.append([position[h] for h in entry["heads"]] if same else [])
        return cls(layers, heads, hidden_positions(student, teacher))


def distillation_loss(
    teacher: nn.Module,
    *,
    weight: float = 1.0,
    temperature: float = 2.0,
    hidden_weight: float = 0.0,
    attention_weight: float = 0.0,
    layer_map: LayerMap | None = None,
    bf16: bool = False,
    layerwise_scale: Callable[[], float] | None = None,
) -> ExtraLoss:
    """λ·T²·KL(teacher ‖ student) on the logits at temperature T (λ·MSE of the scores for a one-output regression
    head, where there is no distribution to soften: T is unused), plus the layer-wise terms when their weights are
    positive: `hidden_weight`·MSE of each student layer's output against its teacher layer's, and
    `attention_weight`·KL of each kept head's attention distribution against the teacher's same head (real tokens
    only). The teacher's outputs are computed on the fly, without gradients.

    The student must return hidden states and attentions when the layer-wise terms are on (`layerwise_outputs`).
    With `bf16` the teacher's forward runs under bfloat16 autocast too (on a CPU the Trainer's autocast already
    covers it; on CUDA accelerate wraps only the student's forward); the terms are computed in float32.
    `layerwise_scale`, when given, multiplies both layer-wise weights at each call (a schedule over training).
    """
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    layerwise = hidden_weight > 0 or attention_weight > 0
    if layerwise and layer_map is None:
        raise ValueError("layer-wise distillation needs the student→teacher layer map")

    def loss(model: nn.Module, inputs: dict[str, torch.Tensor], outputs: Any) -> torch.Tensor:
        feed = {k: v for k, v in inputs.items() if k != "labels"}
        kind = inputs["attention_mask"].device.type
        with torch.no_grad(), torch.autocast(kind, dtype=torch.bfloat16, enabled=bf16):
            t_out = teacher(**feed, output_hidden_states=hidden_weight > 0, output_attentions=attention_weight > 0)
        total = weight * logit_loss(outputs.logits, t_out.logits, temperature)
        mask = inputs["attention_mask"].bool()  # (batch, seq)
        scale = 1.0 if layerwise_scale is None else layerwise_scale()
        if hidden_weight > 0:
            term = hidden_loss(outputs.hidden_states, t_out.hidden_states, layer_map, mask)
            total = total + scale * hidden_weight * term
        if attention_weight > 0:
            term = attention_loss(outputs.attentions, t_out.attentions, layer_map, mask)
            total = total + scale * attention_weight * term
        return total

    return loss


def hidden_loss(
    student: tuple[torch.Tensor, ...], teacher: tuple[torch.Tensor, ...], layer_map: LayerMap, mask: torch.Tensor
) -> torch.Tensor:
    """Mean over the student's layers (and the embeddings) of the MSE on real tokens against the teacher's states.

    hidden_states[0] is the embedding output, hidden_states[i + 1] layer i's output: (batch, seq, hidden).
    """
    pairs = [(0, 0)] + [(i + 1, j + 1) for i, j in enumerate(layer_map.layers)]
    index = layer_map.hidden
    terms = [  # each (tokens, width) against the teacher's same dimensions
        nn.functional.mse_loss(
            student[s][mask].float(), (teacher[t][mask] if index is None else teacher[t][mask][:, index]).float()
        )
        for s, t in pairs
    ]
    return torch.stack(terms).mean()


def attention_loss(
    student: tuple[torch.Tensor | None, ...],
    teacher: tuple[torch.Tensor, ...],
    layer_map: LayerMap,
    mask: torch.Tensor,
) -> torch.Tensor:
    """Mean over the student's kept heads of KL(teacher ‖ student) between attention rows of real query tokens."""
    terms = []
    for i, (j, heads) in enumerate(zip(layer_map.layers, layer_map.heads, strict=True)):
        probs = student[i]
        if probs is None or not heads:  # a layer without heads attends to nothing
            continue
        probs = probs.float()
        target = teacher[j][:, heads].float()  # (batch, kept heads, seq, seq)
        rows = mask[:, None, :, None].expand_as(probs)  # real query tokens
        log_s = probs.clamp_min(1e-12).log()
        log_t = target.clamp_min(1e-12).log()
        kl = (target * (log_t - log_s)).masked_fill(~rows, 0.0).sum(-1)  # (batch, heads, seq)
        terms.append(kl.sum() / rows[..., 0].sum().clamp_min(1))
    if not terms:
        return mask.new_zeros((), dtype=torch.float32)
    return torch.stack(terms).mean()


def logit_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The output term of distillation: T²·KL over the classes, or for regression (one output) the MSE between
    the student's and the teacher's scores (a softmax over one output is constant, so KL would teach nothing)."""
    if student_logits.shape[-1] == 1:
        return nn.functional.mse_loss(student_logits.float(), teacher_logits.float())
    return kl_divergence(student_logits, teacher_logits, temperature)


def kl_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T²·KL(softmax(t/T) ‖ softmax(s/T)), averaged over the batch; zero when the logits are equal."""
    t = temperature
    log_p_s = nn.functional.log_softmax(student_logits.float() / t, dim=-1)
    log_p_t = nn.functional.log_softmax(teacher_logits.float() / t, dim=-1)
    return nn.functional.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean") * t * t


@contextmanager
def layerwise_outputs(model: nn.Module, *, hidden: bool, attention: bool) -> Iterator[None]:
    """Within the block the student returns hidden states and/or attentions (what the layer-wise terms read); the
    config flags come back afterwards, so nothing of it reaches the saved config or the exported graph."""
    config = model.config
    wanted = {"output_hidden_states": hidden, "output_attentions": attention}
    before = {key: bool(getattr(config, key, False)) for key in wanted}
    try:
        for key, on in wanted.items():
            if on:
                setattr(config, key, True)
        yield
    finally:
        for key, value in before.items():
            setattr(config, key, value)


@contextmanager
def student_dropout(model: nn.Module, share: float | None) -> Iterator[None]:
    """Within the block every dropout of `model` drops `share` (None: leave the model as it is); each module's own
    value comes back afterwards. Covers `nn.Dropout` modules and the float `dropout_prob` attribute HF's SDPA
    attention reads instead of a module. Written here because the HF config's dropout fields are read once, when
    the modules are built, so changing the config of a built model changes nothing.

    Why a distillation wants it: the teacher runs without dropout, so with it the student's hidden states and
    attention maps are matched to clean targets through random masks (its returned attention probabilities are
    the dropped-out ones), noise a capacity-limited student pays for.
    """
    if share is None:
        yield
        return
    saved: list[tuple[nn.Module, str, float]] = []
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            saved.append((module, "p", module.p))
        elif isinstance(getattr(module, "dropout_prob", None), float):
            saved.append((module, "dropout_prob", module.dropout_prob))
    try:
        for module, name, _ in saved:
            setattr(module, name, float(share))
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)
