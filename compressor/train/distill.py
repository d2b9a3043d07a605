"""Distillation losses, added to the task loss by the training loop: logits (Hinton et al. 2015), and layer-wise
hidden states and attention distributions (TinyBERT, Jiao et al. 2020; MiniLM, Wang et al. 2020; CoFi, Xia et
al. 2022) from the layers and heads a pruned student kept, and the query/key/value self-relations of each layer
against its teacher layer (MiniLMv2, Wang et al. 2021), which need no head in common.

A pruned student's layer keeps the id of the teacher layer it came from (`compressor_structure`), and each kept
head its original id: so student layer i is matched to that teacher layer, and its heads to the same heads, however
many layers and heads were removed around them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from compressor.arch.parts import arch_of, encoder_layers, has_heads
from compressor.arch.structure import hidden_positions
from compressor.train.config import LAYER_MAPS
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
    def between(cls, student: dict[str, Any], teacher: dict[str, Any], how: str = "uniform") -> LayerMap:
        """From two `compressor_structure` dicts (the student pruned from the teacher).

        `uniform` (TinyBERT, Jiao et al. 2020): student layer i of S learns teacher layer ⌊(i + 1)·T/S⌋ − 1 of T,
        so the student's last layer learns the teacher's last, whatever layers were dropped; with no layer dropped
        that is each layer's own. Matching a kept layer to the teacher layer it came from instead (`source`) would
        ask a student that kept the first layers for a middle layer's representation at its top, which the logits
        then have to undo; but when the kept layers span the model (the last one kept), `source` makes each
        student layer learn the output it already starts near, and every kept head its own attention map.
        """
        if how not in LAYER_MAPS:
            raise ValueError(f"layer map must be {' or '.join(LAYER_MAPS)}; got {how!r}")
        teacher_layers = teacher["layers"]
        by_source = {int(e["source"]): j for j, e in enumerate(teacher_layers)}
        s_count, t_count = len(student["layers"]), len(teacher_layers)
        layers, heads = [], []
        for i, entry in enumerate(student["layers"]):
            source = int(entry["source"])
            if source not in by_source:
                raise ValueError(f"student layer {i} (source {entry['source']}) is not a layer of the teacher")
            j = by_source[source] if how == "source" else (i + 1) * t_count // s_count - 1
            same = int(teacher_layers[j]["source"]) == source
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
    relation_weight: float = 0.0,
    layer_map: LayerMap | None = None,
    relations: tuple[ProjectionTap, ProjectionTap] | None = None,
    bf16: bool = False,
    layerwise_scale: Callable[[], float] | None = None,
) -> ExtraLoss:
    """λ·T²·KL(teacher ‖ student) on the logits at temperature T (λ·MSE of the scores for a one-output regression
    head, where there is no distribution to soften: T is unused), plus the layer-wise terms when their weights are
    positive: `hidden_weight`·MSE of each student layer's output against its teacher layer's, and
    `attention_weight`·KL of each kept head's attention distribution against the teacher's same head (real tokens
    only), and `relation_weight`·KL of each student layer's query, key and value self-relations against its teacher
    layer's (`relation_loss`), read from `relations`: the (student, teacher) taps on the mapped layers. The teacher's
    outputs are computed on the fly, without gradients.

    The student must return hidden states and attentions when the layer-wise terms are on (`layerwise_outputs`).
    With `bf16` the teacher's forward runs under bfloat16 autocast too (on a CPU the Trainer's autocast already
    covers it; on CUDA accelerate wraps only the student's forward); the terms are computed in float32.
    `layerwise_scale`, when given, multiplies the layer-wise weights at each call (a schedule over training).
    """
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    layerwise = hidden_weight > 0 or attention_weight > 0 or relation_weight > 0
    if layerwise and layer_map is None:
        raise ValueError("layer-wise distillation needs the student→teacher layer map")
    if relation_weight > 0 and relations is None:
        raise ValueError("relation distillation needs the projection taps on the student and the teacher")

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
        if relations is not None:
            student_taps, teacher_taps = relations[0].take(), relations[1].take()
            if relation_weight > 0:
                term = relation_loss(student_taps, teacher_taps, layer_map.layers, mask, relations[1].heads)
                total = total + scale * relation_weight * term
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
        terms.append(row_kl(target, target.clamp_min(1e-12).log(), probs.clamp_min(1e-12).log(), mask))
    if not terms:
        return mask.new_zeros((), dtype=torch.float32)
    return torch.stack(terms).mean()


def row_kl(target: torch.Tensor, log_t: torch.Tensor, log_s: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(teacher ‖ student) between the rows of (batch, heads, seq, seq) distributions, averaged over the heads
    and the real query tokens (`mask`: batch, seq): `target` is the teacher's probabilities, `log_t` and `log_s`
    the two log-probabilities. What the attention and the relation terms both compare."""
    kl = (target * (log_t - log_s)).sum(-1)  # (batch, heads, seq)
    rows = mask[:, None, :].expand_as(kl)
    return kl.masked_fill(~rows, 0.0).sum() / rows.sum().clamp_min(1)


RELATION_ROLES = ("query", "key", "value")


class ProjectionTap:
    """Forward hooks that keep the query, key and value projections' outputs of chosen encoder layers from the
    model's last forward (each projection's first call in it), `(layer, role) -> (batch, seq, heads·head size)`,
    for `relation_loss`. Layers without heads have none.

    Hooks rather than the model's returned outputs because HF models return attention probabilities, not the
    projections the relations are computed from. Register them after a training method is injected: the hooks
    then sit on the module that runs (a LoRA-wrapped projection includes its update).
    """

    def __init__(self, model: nn.Module, layers: list[int] | None = None) -> None:
        arch = arch_of(model)
        blocks = encoder_layers(model)
        self.heads = arch.num_heads(model.config)  # the model's own head count (pruning leaves the config's)
        self.outputs: dict[tuple[int, str], torch.Tensor] = {}
        # each forward of the model starts empty, so a tap holds that forward's outputs and never an earlier one's
        self._handles = [model.register_forward_pre_hook(lambda *_: self.outputs.clear())]
        for i in range(len(blocks)) if layers is None else sorted(set(layers)):
            if not has_heads(blocks[i], arch):
                continue
            for role in RELATION_ROLES:
                module = blocks[i].get_submodule(getattr(arch, role))
                self._handles.append(module.register_forward_hook(self._keeper((i, role))))

    def _keeper(self, key: tuple[int, str]) -> Callable[..., None]:
        def keep(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            # the first call in a forward: DeBERTa also runs its query/key projections over the relative-position
            # embeddings afterwards (share_att_key), which are not the tokens' projections
            self.outputs.setdefault(key, output)

        return keep

    def take(self) -> dict[tuple[int, str], torch.Tensor]:
        """The outputs of the last forward; the tap is emptied (nothing is held across steps)."""
        taken, self.outputs = self.outputs, {}
        return taken

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles, self.outputs = [], {}


@contextmanager
def relation_taps(
    student: nn.Module, teacher: nn.Module, layer_map: LayerMap | None
) -> Iterator[tuple[ProjectionTap, ProjectionTap] | None]:
    """Within the block, taps on every student layer's projections and on the teacher layers `layer_map` matches
    them to (None without a map: no relation term); the hooks are removed afterwards."""
    if layer_map is None:
        yield None
        return
    taps = (ProjectionTap(student), ProjectionTap(teacher, layer_map.layers))
    try:
        yield taps
    finally:
        for tap in taps:
            tap.remove()


def relation_heads(student_width: int, teacher_width: int, cap: int) -> int:
    """How many relation heads both projections split into: the largest count that divides both widths, at most
    `cap` (the teacher's head count). MiniLMv2 splits the concatenated heads into relation heads so that a student
    with other head counts (here: a pruned one with fewer heads per layer) has relations of the same shape."""
    common = math.gcd(student_width, teacher_width)
    return max(r for r in range(1, max(1, cap) + 1) if common % r == 0)


def self_relation(x: torch.Tensor, heads: int, mask: torch.Tensor) -> torch.Tensor:
    """Log-softmax of the scaled dot products of a projection with itself per relation head, padding keys masked:
    (batch, seq, width) -> (batch, heads, seq, seq)."""
    batch, seq, width = x.shape
    parts = x.float().view(batch, seq, heads, width // heads).transpose(1, 2)
    scores = parts @ parts.transpose(-1, -2) / math.sqrt(width // heads)
    scores = scores.masked_fill(~mask[:, None, None, :], torch.finfo(scores.dtype).min)
    return nn.functional.log_softmax(scores, dim=-1)


def relation_loss(
    student: dict[tuple[int, str], torch.Tensor],
    teacher: dict[tuple[int, str], torch.Tensor],
    layers: list[int],
    mask: torch.Tensor,
    cap: int,
) -> torch.Tensor:
    """Mean over the student's layers with heads and the three projections of KL(teacher ‖ student) between the
    self-relations (MiniLMv2: softmax(q·qᵀ/√d), the same for k and v) of real query tokens; student layer i is
    compared with teacher layer `layers[i]`. Unlike the attention term it needs no head in common, so a kept layer
    learns from whichever teacher layer it is mapped to. `cap`: the most relation heads (the teacher's head
    count)."""
    terms = []
    for i, j in enumerate(layers):
        for role in RELATION_ROLES:
            s, t = student.get((i, role)), teacher.get((j, role))
            if s is None or t is None:
                continue
            if s.shape[:2] != t.shape[:2]:
                raise ValueError(f"layer {i}'s {role} is {tuple(s.shape)}, teacher layer {j}'s {tuple(t.shape)}")
            heads = relation_heads(s.shape[-1], t.shape[-1], cap)
            log_t = self_relation(t, heads, mask)
            terms.append(row_kl(log_t.exp(), log_t, self_relation(s, heads, mask), mask))
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
