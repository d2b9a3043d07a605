from __future__ import annotations

import copy

import pytest
import torch

from compressor.arch.structure import ensure_structure
from compressor.arch.surgery import drop_layers_, prune_heads_
from compressor.train.distill import LayerMap, distillation_loss, layerwise_outputs, student_dropout
from tests.models import encode, tiny_model, tiny_tokenizer


def _loss(student: torch.nn.Module, teacher: torch.nn.Module, tmp_path, **weights: float) -> float:  # noqa: ANN001
    inputs = encode(tiny_tokenizer(tmp_path / "tok"))
    layers = LayerMap.between(ensure_structure(student), ensure_structure(teacher))
    loss = distillation_loss(teacher, layer_map=layers, **weights)
    with layerwise_outputs(student, hidden=True, attention=True), torch.no_grad():
        outputs = student(**inputs)
        return float(loss(student, dict(inputs), outputs))


def test_layer_map_follows_sources_and_head_ids() -> None:
    teacher = tiny_model(num_hidden_layers=3)
    student = copy.deepcopy(teacher)
    prune_heads_(student, 2, [1, 3])
    drop_layers_(student, [0, 2])  # keeps source layers 0 and 2
    layers = LayerMap.between(ensure_structure(student), ensure_structure(teacher))
    assert layers.layers == [0, 2]  # uniform: 2 of 3 layers learn teacher layers ⌊1.5⌋ - 1 = 0 and 3 - 1 = 2
    assert layers.heads == [[0, 1, 2, 3], [1, 3]]


def test_a_shallow_student_learns_the_teachers_top_layers() -> None:
    teacher = tiny_model(num_hidden_layers=6)
    student = copy.deepcopy(teacher)
    prune_heads_(student, 1, [0, 2])
    drop_layers_(student, [0, 1, 2])  # the bottom three layers stay
    layers = LayerMap.between(ensure_structure(student), ensure_structure(teacher))
    assert layers.layers == [1, 3, 5]  # TinyBERT's uniform map: the last layer learns the last
    assert layers.heads == [[], [], []]  # no kept layer is matched to the layer it came from: no head is compared


def test_layer_map_refuses_a_student_with_layers_the_teacher_lacks() -> None:
    teacher = tiny_model(num_hidden_layers=3)
    student = copy.deepcopy(teacher)
    drop_layers_(teacher, [0, 1])
    with pytest.raises(ValueError, match="source 2"):
        LayerMap.between(ensure_structure(student), ensure_structure(teacher))


@pytest.mark.parametrize(
    "weights", [{"weight": 1.0}, {"hidden_weight": 1.0, "weight": 0.0}, {"attention_weight": 1.0}]
)
def test_every_term_is_zero_for_an_identical_student(tmp_path, weights: dict[str, float]) -> None:  # noqa: ANN001
    teacher = tiny_model()
    assert _loss(copy.deepcopy(teacher), teacher, tmp_path, **weights) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("term", ["hidden_weight", "attention_weight"])
def test_layerwise_terms_see_a_pruned_student(tmp_path, term: str) -> None:  # noqa: ANN001
    teacher = tiny_model(num_hidden_layers=3)
    with torch.no_grad():  # peaked attention (a random tiny model attends almost uniformly, whatever its input)
        for layer in teacher.bert.encoder.layer:
            layer.attention.self.query.weight.mul_(30)
    student = copy.deepcopy(teacher)
    prune_heads_(student, 1, [0, 2])
    drop_layers_(student, [1, 2])
    assert _loss(student, teacher, tmp_path, weight=0.0, **{term: 1.0}) > 1e-4


def test_layerwise_outputs_restores_the_config() -> None:
    model = tiny_model()
    with layerwise_outputs(model, hidden=True, attention=True):
        assert model.config.output_hidden_states and model.config.output_attentions
    assert not model.config.output_hidden_states and not model.config.output_attentions


def test_layerwise_terms_need_a_layer_map() -> None:
    with pytest.raises(ValueError, match="layer map"):
        distillation_loss(tiny_model(), hidden_weight=1.0)


def _dropouts(model: torch.nn.Module) -> list[float]:
    return [
        m.p if isinstance(m, torch.nn.Dropout) else m.dropout_prob
        for m in model.modules()
        if isinstance(m, torch.nn.Dropout) or isinstance(getattr(m, "dropout_prob", None), float)
    ]


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_student_dropout_zero_makes_training_mode_deterministic_and_comes_back(attn: str) -> None:
    """share 0: two training-mode forwards agree (every dropout is off, SDPA's attribute included); afterwards
    each module drops what it did before, and so two forwards differ again."""
    model = tiny_model(hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3, attn_implementation=attn).train()
    before = _dropouts(model)
    assert before and all(p == 0.3 for p in before)
    ids = torch.randint(5, 40, (4, 9))
    with student_dropout(model, 0.0):
        assert _dropouts(model) == [0.0] * len(before)
        torch.testing.assert_close(model(ids).logits, model(ids).logits, rtol=0, atol=0)
    assert _dropouts(model) == before
    assert not torch.equal(model(ids).logits, model(ids).logits)


def test_student_dropout_none_leaves_the_model_alone_and_a_share_is_set_everywhere() -> None:
    model = tiny_model(hidden_dropout_prob=0.2).train()
    before = _dropouts(model)
    with student_dropout(model, None):
        assert _dropouts(model) == before
    with student_dropout(model, 0.05):
        assert set(_dropouts(model)) == {0.05}
    assert _dropouts(model) == before
