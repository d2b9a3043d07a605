from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compressor.arch.structure import ensure_structure
from compressor.arch.surgery import drop_layers_, prune_heads_
from compressor.train.distill import (
    LayerMap,
    ProjectionTap,
    distillation_loss,
    layerwise_outputs,
    relation_heads,
    relation_taps,
    student_dropout,
)
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


def test_the_source_map_matches_each_kept_layer_to_its_own_and_compares_every_kept_head() -> None:
    """A spread student (layers 0, 2, 5 of 6): `source` maps them to teacher layers 0, 2, 5 where `uniform`
    gives 1, 3, 5; every kept head then has its own teacher head (by position among the teacher's)."""
    teacher = tiny_model(num_hidden_layers=6)
    prune_heads_(teacher, 2, [1, 2, 3])  # the teacher itself pruned: positions, not head ids, index its attention
    student = copy.deepcopy(teacher)
    prune_heads_(student, 2, [0, 2])  # student layer 1 (source 2) keeps head ids 1 and 3 → teacher positions 0, 2
    drop_layers_(student, [0, 2, 5])
    uniform = LayerMap.between(ensure_structure(student), ensure_structure(teacher))
    source = LayerMap.between(ensure_structure(student), ensure_structure(teacher), how="source")
    assert uniform.layers == [1, 3, 5] and uniform.heads == [[], [], [0, 1, 2, 3]]
    assert source.layers == [0, 2, 5]
    assert source.heads == [[0, 1, 2, 3], [0, 2], [0, 1, 2, 3]]
    with pytest.raises(ValueError, match="uniform or source; got 'nearest'"):
        LayerMap.between(ensure_structure(student), ensure_structure(teacher), how="nearest")


def test_the_source_map_gives_a_student_that_kept_the_first_layers_an_attention_term(tmp_path) -> None:  # noqa: ANN001
    """Kept layers 0, 1, 2 of 6 learn teacher layers 1, 3, 5 under `uniform`: no head in common, so the attention
    term is exactly 0; under `source` each learns its own, and once the first layer has changed (as training
    changes it) the maps above it differ from the teacher's."""
    teacher = tiny_model(num_hidden_layers=6)
    with torch.no_grad():
        for layer in teacher.bert.encoder.layer:
            layer.attention.self.query.weight.mul_(30)
    student = copy.deepcopy(teacher)
    drop_layers_(student, [0, 1, 2])
    with torch.no_grad():
        student.bert.encoder.layer[0].output.dense.weight.normal_(0, 1)
    inputs = encode(tiny_tokenizer(tmp_path / "tok"))

    def attention(how: str) -> float:
        layers = LayerMap.between(ensure_structure(student), ensure_structure(teacher), how=how)
        loss = distillation_loss(teacher, weight=0.0, attention_weight=1.0, layer_map=layers)
        with layerwise_outputs(student, hidden=True, attention=True), torch.no_grad():
            return float(loss(student, dict(inputs), student(**inputs)))

    assert attention("uniform") == 0.0
    assert attention("source") > 1e-4


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


def _relation_loss(student: torch.nn.Module, teacher: torch.nn.Module, inputs: dict) -> torch.Tensor:
    layers = LayerMap.between(ensure_structure(student), ensure_structure(teacher))
    with relation_taps(student, teacher, layers) as taps:
        loss = distillation_loss(teacher, weight=0.0, relation_weight=1.0, layer_map=layers, relations=taps)
        return loss(student, dict(inputs), student(**inputs))


def _peaked(layers: int = 3) -> torch.nn.Module:
    teacher = tiny_model(num_hidden_layers=layers)
    with torch.no_grad():  # peaked relations (a random tiny model's are almost uniform, whatever its input)
        for layer in teacher.bert.encoder.layer:
            for part in (layer.attention.self.query, layer.attention.self.key, layer.attention.self.value):
                part.weight.mul_(30)
    return teacher


def test_the_relation_term_is_zero_for_an_identical_student(tmp_path) -> None:  # noqa: ANN001
    teacher = _peaked()
    inputs = encode(tiny_tokenizer(tmp_path / "tok"))
    assert float(_relation_loss(copy.deepcopy(teacher), teacher, inputs).detach()) == pytest.approx(0.0, abs=1e-6)


def test_the_relation_term_teaches_layers_with_no_head_in_common(tmp_path) -> None:  # noqa: ANN001
    """A student that kept the teacher's first layer (one head fewer) learns the teacher's last layer: the
    attention term has no head to compare there, the relation term does, and its gradient reaches the kept
    layer's query, key and value."""
    teacher = _peaked()
    student = copy.deepcopy(teacher)
    prune_heads_(student, 0, [1])
    drop_layers_(student, [1, 2])
    assert LayerMap.between(ensure_structure(student), ensure_structure(teacher)).heads[0] == []
    inputs = encode(tiny_tokenizer(tmp_path / "tok"))
    loss = _relation_loss(student, teacher, inputs)
    assert float(loss.detach()) > 1e-3
    loss.backward()
    own = student.bert.encoder.layer[0].attention.self
    assert all(float(p.weight.grad.abs().sum()) > 0 for p in (own.query, own.key, own.value))
    assert not any(m._forward_hooks for m in (*student.modules(), *teacher.modules()))  # the taps are gone


def test_the_relation_term_ignores_padding(tmp_path) -> None:  # noqa: ANN001
    """Padding tokens are neither queries nor keys: what a padded position holds changes nothing."""
    teacher = _peaked()
    student = copy.deepcopy(teacher)
    drop_layers_(student, [1, 2])
    inputs = dict(encode(tiny_tokenizer(tmp_path / "tok")))
    mask = inputs["attention_mask"]
    assert not mask.all()  # the sentences differ in length
    other = dict(inputs, input_ids=inputs["input_ids"].masked_fill(mask == 0, 7))
    with torch.no_grad():
        torch.testing.assert_close(_relation_loss(student, teacher, inputs), _relation_loss(student, teacher, other))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 24), st.integers(1, 24), st.sampled_from([16, 32, 64]), st.integers(1, 16))
def test_relation_heads_is_the_largest_shared_split_under_the_cap(s: int, t: int, size: int, cap: int) -> None:
    width_s, width_t = s * size, t * size
    heads = relation_heads(width_s, width_t, cap)
    assert 1 <= heads <= cap and width_s % heads == 0 and width_t % heads == 0
    assert not any(width_s % r == 0 and width_t % r == 0 for r in range(heads + 1, cap + 1))


def test_relation_heads_for_a_pruned_minilm_layer() -> None:
    """all-MiniLM-L6's heads are 12 × 32 wide: a layer that kept 5 heads (160) splits with the teacher's 384 into
    8 relation heads of 20 and 48 dimensions; an unpruned layer into the teacher's own 12."""
    assert relation_heads(160, 384, 12) == 8 and relation_heads(384, 384, 12) == 12


def test_a_tap_skips_headless_layers_and_empties_on_take() -> None:
    model = tiny_model(num_hidden_layers=3)
    prune_heads_(model, 1, [])
    tap = ProjectionTap(model)
    model(torch.randint(5, 40, (2, 6)))
    seen = tap.take()
    assert sorted(seen) == sorted((i, r) for i in (0, 2) for r in ("query", "key", "value"))
    assert seen[(0, "value")].shape == (2, 6, model.config.hidden_size) and tap.take() == {}
    tap.remove()
    model(torch.randint(5, 40, (2, 6)))
    assert tap.take() == {}


def test_the_relation_term_needs_its_taps() -> None:
    with pytest.raises(ValueError, match="projection taps"):
        distillation_loss(tiny_model(), relation_weight=1.0, layer_map=LayerMap([0], [[]]))


def test_a_tap_holds_the_first_call_of_the_latest_forward_only() -> None:
    """A projection called twice in one forward (DeBERTa runs query/key over its relative-position embeddings after
    the tokens) is kept from its first call; a new forward replaces what an earlier one left."""
    model = tiny_model(num_hidden_layers=1)
    query = model.bert.encoder.layer[0].attention.self.query
    tap = ProjectionTap(model)
    extra = torch.zeros(1, 3, model.config.hidden_size)

    def again(*_: object) -> None:  # a second call of the query projection in the same forward, after the tokens'
        query(extra)

    handle = model.bert.encoder.layer[0].attention.self.register_forward_hook(again)
    model(torch.randint(5, 40, (2, 6)))
    assert tap.outputs[(0, "query")].shape == (2, 6, model.config.hidden_size)
    handle.remove()
    model(torch.randint(5, 40, (4, 5)))
    assert tap.take()[(0, "query")].shape[:2] == (4, 5)
    tap.remove()
