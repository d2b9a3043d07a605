from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compressor.arch.structure import structure_of
from compressor.arch.surgery import apply_structure_, drop_layers_, prune_ffn_, prune_heads_
from compressor.checkpoint import load_model, save_model
from compressor.errors import ModelError, PruneError
from tests.models import encode, tiny_model, tiny_tokenizer


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def test_removing_heads_equals_masking_them(tmp_path: Path) -> None:
    tok = tiny_tokenizer(tmp_path)
    model = tiny_model()
    batch = encode(tok)
    head_mask = torch.ones(2, 4)
    head_mask[0, 1] = head_mask[0, 3] = 0
    head_mask[1, :] = 0
    with torch.no_grad():
        masked = model(**batch, head_mask=head_mask).logits
    prune_heads_(model, 0, [0, 2])
    prune_heads_(model, 1, [])
    torch.testing.assert_close(_logits(model, batch), masked, atol=1e-5, rtol=1e-5)
    assert [len(e["heads"]) for e in structure_of(model)["layers"]] == [2, 0]
    assert model.bert.encoder.layer[0].attention.self.query.weight.shape == (16, 32)


def test_removing_ffn_neurons_equals_zeroing_them(tmp_path: Path) -> None:
    tok = tiny_tokenizer(tmp_path)
    model = tiny_model()
    batch = encode(tok)
    reference = tiny_model()
    keep = [0, 3, 5, 36]
    with torch.no_grad():
        drop = [i for i in range(37) if i not in keep]
        reference.bert.encoder.layer[0].output.dense.weight[:, drop] = 0
        reference.bert.encoder.layer[1].output.dense.weight[:] = 0
    prune_ffn_(model, 0, keep)
    prune_ffn_(model, 1, [])
    torch.testing.assert_close(_logits(model, batch), _logits(reference, batch), atol=1e-5, rtol=1e-5)
    assert structure_of(model)["layers"][0]["neurons"] == keep


def test_pruned_model_round_trips_through_save_and_load(tmp_path: Path) -> None:
    tok = tiny_tokenizer(tmp_path / "tok")
    model = tiny_model(num_hidden_layers=3)
    prune_heads_(model, 0, [1, 3])
    prune_heads_(model, 1, [])
    prune_ffn_(model, 1, [2, 4, 8])
    prune_ffn_(model, 2, [])
    drop_layers_(model, [0, 1])
    batch = encode(tok)
    expected = _logits(model, batch)
    save_model(model, tok, tmp_path / "m")
    loaded, _ = load_model(tmp_path / "m")
    torch.testing.assert_close(_logits(loaded, batch), expected, atol=1e-6, rtol=1e-6)
    assert structure_of(loaded) == structure_of(model)


def test_apply_structure_recreates_a_pruned_model(tmp_path: Path) -> None:
    tok = tiny_tokenizer(tmp_path)
    batch = encode(tok)
    model = tiny_model()
    prune_heads_(model, 1, [2])
    prune_ffn_(model, 0, [1, 2, 30])
    again = tiny_model()
    apply_structure_(again, structure_of(model))
    torch.testing.assert_close(_logits(again, batch), _logits(model, batch))


def test_bad_keep_indices_are_rejected() -> None:
    model = tiny_model()
    with pytest.raises(PruneError, match="heads to keep"):
        prune_heads_(model, 0, [0, 9])
    with pytest.raises(PruneError, match="at least one encoder layer"):
        drop_layers_(model, [])


def test_loading_refuses_pickle_checkpoints(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    (tmp_path / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(ModelError, match="pickle"):
        load_model(tmp_path)
