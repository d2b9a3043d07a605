from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compressor.arch.modules import CodedLookup, RemappedEmbedding
from compressor.arch.parts import export_forms
from compressor.arch.surgery import prune_heads_, prune_hidden_
from compressor.checkpoint import load_model, save_model
from compressor.errors import ConfigError, PruneError
from compressor.prune.config import PruneConfig
from compressor.prune.vocab import model_bytes, prune_vocab_, sparse_codes, unknown_rate, used_token_ids
from tests.models import POSITIVE, encode, tiny_model, tiny_tokenizer

KEPT_TEXTS = POSITIVE  # the "training data" whose tokens are kept
UNSEEN = "a bad movie"  # `bad` never occurs in POSITIVE


def _logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


def _pruned(tok) -> tuple[torch.nn.Module, torch.nn.Module, set[int]]:  # noqa: ANN001
    reference, model = tiny_model(0), tiny_model(0)
    keep = used_token_ids(tok, KEPT_TEXTS)
    prune_vocab_(model, keep, tok.unk_token_id)
    return reference, model, keep


def test_kept_tokens_give_identical_logits(tmp_path: Path) -> None:
    tok = tiny_tokenizer(tmp_path)
    reference, model, keep = _pruned(tok)
    batch = encode(tok, KEPT_TEXTS)
    torch.testing.assert_close(_logits(model, batch), _logits(reference, batch), atol=1e-6, rtol=1e-6)
    emb = model.bert.embeddings.word_embeddings
    assert isinstance(emb, RemappedEmbedding) and emb.weight.shape == (len(keep), 32)
    assert set(tok.all_special_ids) <= keep


def test_unseen_tokens_map_to_unknown(tmp_path: Path) -> None:
    tok = tiny_tokenizer(tmp_path)
    reference, model, keep = _pruned(tok)
    batch = encode(tok, [UNSEEN])
    ids = batch["input_ids"][0].tolist()
    assert [i in keep for i in ids] == [True, True, False, True, True]
    as_unknown = dict(batch, input_ids=torch.tensor([[i if i in keep else tok.unk_token_id for i in ids]]))
    torch.testing.assert_close(_logits(model, batch), _logits(reference, as_unknown), atol=1e-6, rtol=1e-6)
    assert not torch.allclose(_logits(reference, batch), _logits(reference, as_unknown))
    assert unknown_rate(tok, keep, [UNSEEN, "a great movie"]) == pytest.approx(1 / 10)
    assert unknown_rate(tok, set(range(tok.vocab_size)), [UNSEEN]) == 0.0


def test_vocabulary_pruning_shrinks_and_round_trips(tmp_path: Path) -> None:
    tok = tiny_tokenizer(tmp_path / "tok")
    reference = tiny_model(0)
    model = tiny_model(0)
    prune_heads_(model, 1, [0, 3])
    before = model_bytes(model)
    report = prune_vocab_(model, used_token_ids(tok, KEPT_TEXTS), tok.unk_token_id)
    assert report.embedding_bytes_after < report.embedding_bytes_before
    assert before - model_bytes(model) == report.embedding_bytes_before - report.embedding_bytes_after
    with pytest.raises(PruneError, match="already pruned"):
        prune_vocab_(model, [0, 1], tok.unk_token_id)
    save_model(model, tok, tmp_path / "ckpt")
    loaded, _ = load_model(tmp_path / "ckpt")
    batch = encode(tok, [*KEPT_TEXTS, UNSEEN])
    torch.testing.assert_close(_logits(loaded, batch), _logits(model, batch), atol=1e-6, rtol=1e-6)
    vocab = loaded.config.compressor_structure["vocab"]
    assert vocab == {"source_size": reference.config.vocab_size, "kept": report.kept}
    assert not torch.allclose(_logits(loaded, batch), _logits(reference, batch))  # heads really pruned


def test_exported_graph_holds_the_id_map(tmp_path: Path) -> None:
    """The remapping is part of the ONNX graph: the tokenizer's ids go in unchanged, unseen ones hit [UNK]."""
    import onnxruntime as ort

    from exporters.onnx.export import torch_to_onnx, trace_feed
    from exporters.onnx.specs import EXPORT_SPECS

    tok = tiny_tokenizer(tmp_path / "tok")
    _, model, _ = _pruned(tok)
    path = tmp_path / "model.onnx"
    spec = EXPORT_SPECS.get("bert")
    torch_to_onnx(model, trace_feed(tok, spec), spec, path, opset=17)
    graph = onnx.load(str(path)).graph
    vocab = model.config.vocab_size
    id_maps = [i for i in graph.initializer if list(i.dims) == [vocab] and i.data_type == onnx.TensorProto.INT32]
    assert len(id_maps) == 1
    assert any(node.op_type == "Gather" and id_maps[0].name in node.input for node in graph.node)
    batch = encode(tok, [*KEPT_TEXTS, UNSEEN])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {i.name: batch[i.name].numpy().astype(np.int64) for i in session.get_inputs()}
    np.testing.assert_allclose(session.run(["logits"], feed)[0], _logits(model, batch).numpy(), atol=1e-5)


def test_nearest_fallback_sends_a_dropped_id_to_the_most_similar_kept_row(tmp_path: Path) -> None:
    tok = tiny_tokenizer(tmp_path)
    model = tiny_model(0)
    keep = used_token_ids(tok, KEPT_TEXTS)
    bad = tok.convert_tokens_to_ids("bad")
    assert bad not in keep
    emb = model.bert.embeddings.word_embeddings.weight
    twin = sorted(keep - set(tok.all_special_ids))[0]
    with torch.no_grad():
        emb[bad] = 3.0 * emb[twin]  # same direction as a kept token: cosine 1, far from every other row
    prune_vocab_(model, keep, tok.unk_token_id, fallback="nearest")
    id_map = model.bert.embeddings.word_embeddings.id_map
    assert id_map.dtype == torch.int32
    assert int(id_map[bad]) == int(id_map[twin]) != int(id_map[tok.unk_token_id])
    assert unknown_rate(tok, keep, [UNSEEN]) == pytest.approx(1 / 5)  # still counted as dropped
    kept_rows = sorted(int(id_map[i]) for i in keep | {tok.unk_token_id})
    assert kept_rows == list(range(len(kept_rows)))  # the kept ids still own their rows


def test_unknown_fallback_name_is_checked() -> None:
    with pytest.raises(PruneError, match="fallback must be one of unk, nearest"):
        prune_vocab_(tiny_model(0), [1, 2], 1, fallback="closest")


def _rows(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model.bert.embeddings.word_embeddings(torch.tensor(ids))


def test_sparse_fallback_keeps_kept_rows_and_rebuilds_dropped_ones_closer_than_nearest(tmp_path: Path) -> None:
    tok = tiny_tokenizer(tmp_path)
    reference, sparse, nearest = tiny_model(0), tiny_model(0), tiny_model(0)
    keep = used_token_ids(tok, KEPT_TEXTS) | {tok.unk_token_id}
    report = prune_vocab_(sparse, keep, tok.unk_token_id, fallback="sparse", codes=4)
    prune_vocab_(nearest, keep, tok.unk_token_id, fallback="nearest")
    emb = sparse.bert.embeddings.word_embeddings
    assert emb.code_ids.shape == emb.code_weights.shape == (tok.vocab_size, 4)
    assert (emb.code_ids.dtype, emb.code_weights.dtype) == (torch.int16, torch.float16)
    assert sparse.config.compressor_structure["vocab"] == {
        "source_size": tok.vocab_size,
        "kept": len(keep),
        "codes": 4,
    }
    kept, dropped = sorted(keep), sorted(set(range(tok.vocab_size)) - keep)
    original = reference.bert.embeddings.word_embeddings.weight.detach()
    assert torch.equal(_rows(sparse, kept), original[kept])  # a kept id is its own row, weight exactly 1
    sparse_error = (_rows(sparse, dropped) - original[dropped]).norm(dim=1)
    nearest_error = (_rows(nearest, dropped) - original[dropped]).norm(dim=1)
    assert bool((sparse_error < nearest_error).all())
    assert report.embedding_bytes_after == len(keep) * 32 * 4 + tok.vocab_size * 4 * (2 + 2)  # rows + int16 + fp16
    batch = encode(tok, KEPT_TEXTS)
    torch.testing.assert_close(_logits(sparse, batch), _logits(reference, batch), atol=1e-6, rtol=1e-6)


def test_sparse_codes_recover_an_exact_combination() -> None:
    torch.manual_seed(0)
    weight = torch.randn(40, 16)
    kept, dropped = torch.arange(30), torch.tensor([30, 31])
    weight[30] = 0.7 * weight[3] - 1.2 * weight[17] + 0.4 * weight[25]
    weight[31] = 2.0 * weight[8]
    ids, coefs = sparse_codes(weight, kept, dropped, 3)
    assert ids.shape == coefs.shape == (2, 3)
    assert set(ids[0].tolist()) == {3, 17, 25}
    rebuilt = (weight[kept][ids] * coefs.unsqueeze(-1)).sum(1)
    assert float((rebuilt - weight[dropped]).norm(dim=1).max()) < 1e-4
    assert int(ids[1, 0]) == 8 and float(coefs[1, 0]) == pytest.approx(2.0, abs=1e-4)
    ids, coefs = sparse_codes(weight, torch.tensor([8, 9]), dropped, 3)  # fewer kept rows than codes
    assert ids[:, 2].tolist() == [0, 0] and coefs[:, 2].tolist() == [0.0, 0.0]


def test_sparse_vocabulary_round_trips_after_hidden_pruning(tmp_path: Path) -> None:
    tok = tiny_tokenizer(tmp_path / "tok")
    model = tiny_model(0)
    prune_vocab_(model, used_token_ids(tok, KEPT_TEXTS), tok.unk_token_id, fallback="sparse")
    codes = model.bert.embeddings.word_embeddings.code_ids.clone()
    prune_hidden_(model, list(range(0, 32, 2)))  # only the weight's columns change; the codes index rows
    emb = model.bert.embeddings.word_embeddings
    assert emb.weight.shape[1] == emb.embedding_dim == 16 and torch.equal(emb.code_ids, codes)
    save_model(model, tok, tmp_path / "ckpt")
    loaded, _ = load_model(tmp_path / "ckpt")
    loaded_emb = loaded.bert.embeddings.word_embeddings
    assert isinstance(loaded_emb, RemappedEmbedding) and loaded_emb.codes == 8
    assert (loaded_emb.code_ids.dtype, loaded_emb.code_weights.dtype) == (torch.int16, torch.float16)
    batch = encode(tok, [*KEPT_TEXTS, UNSEEN])
    assert torch.equal(_logits(loaded, batch), _logits(model, batch))
    assert loaded.config.compressor_structure["vocab"]["codes"] == 8


def test_vocab_codes_is_checked() -> None:
    with pytest.raises(ConfigError, match="`vocab_codes` must be an integer between 1 and 64; got 0"):
        PruneConfig(vocab_fallback="sparse", vocab_codes=0)
    with pytest.raises(PruneError, match="between 1 and 64; got 65"):
        prune_vocab_(tiny_model(0), [1, 2], 1, fallback="sparse", codes=65)


def test_used_token_ids_reads_the_second_texts_too(tmp_path: Path) -> None:
    tok = tiny_tokenizer(tmp_path)
    firsts, seconds = KEPT_TEXTS[:1], KEPT_TEXTS[1:]
    both = used_token_ids(tok, firsts, seconds)
    assert both == used_token_ids(tok, firsts) | used_token_ids(tok, seconds)
    assert both == used_token_ids(tok, KEPT_TEXTS)


def _coded_embedding(vocab: int, kept: int, codes: int, seed: int) -> RemappedEmbedding:
    """A coded vocabulary as the sparse fallback writes it: kept ids [row, 0, …] with weights [1, 0, …], the
    others `codes` random rows and weights."""
    generator = torch.Generator().manual_seed(seed)
    emb = RemappedEmbedding(vocab, kept, 6, codes=codes)
    keep = torch.randperm(vocab, generator=generator)[:kept]
    ids = torch.randint(0, kept, (vocab, codes), generator=generator)
    weights = torch.randn(vocab, codes, generator=generator)
    ids[keep] = 0
    ids[keep, 0] = torch.arange(kept)
    weights[keep] = 0.0
    weights[keep, 0] = 1.0
    with torch.no_grad():
        emb.weight.normal_(generator=generator)
        emb.code_ids.copy_(ids)
        emb.code_weights.copy_(weights)
    return emb


@settings(max_examples=25, deadline=None)
@given(
    vocab=st.integers(8, 60),
    kept_share=st.floats(0.1, 1.0),
    codes=st.integers(1, 5),
    seed=st.integers(0, 2**16),
    shape=st.tuples(st.integers(1, 3), st.integers(1, 9)),
)
def test_coded_lookup_gives_the_embeddings_outputs(vocab, kept_share, codes, seed, shape) -> None:
    """The export form reads kept ids directly and mixes only the others: the same rows for any ids, whether a
    batch holds no id to mix, some, or only such ids."""
    kept = max(1, int(vocab * kept_share))
    emb = _coded_embedding(vocab, kept, codes, seed)
    lookup = CodedLookup(emb)
    ids = torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        torch.testing.assert_close(lookup(ids), emb(ids), rtol=0, atol=1e-5)
    direct = (emb.code_weights[:, 0] == 1) & (emb.code_weights[:, 1:] == 0).all(dim=1)
    assert lookup.code_ids.shape == (int((~direct).sum()), codes)  # codes stored for the mixed ids only
    assert lookup.weight is emb.weight  # the table is shared, not copied


def test_export_forms_swaps_the_coded_vocabulary_for_the_block_only(tmp_path: Path) -> None:
    model = tiny_model(2)
    tokenizer = tiny_tokenizer(tmp_path)
    keep = tokenizer.convert_tokens_to_ids(["[PAD]", "[CLS]", "[SEP]", "a", "great", "movie"])
    prune_vocab_(model, keep, tokenizer.unk_token_id, fallback="sparse", codes=3)
    inputs = encode(tokenizer, ["a great movie", "a dull film"])
    with torch.no_grad():
        before = model(**inputs).logits
        with export_forms(model):
            assert isinstance(model.bert.embeddings.word_embeddings, CodedLookup)
            during = model(**inputs).logits
    assert isinstance(model.bert.embeddings.word_embeddings, RemappedEmbedding)
    torch.testing.assert_close(during, before, rtol=0, atol=1e-5)


def test_the_exported_coded_lookup_takes_any_batch_and_length_even_empty(tmp_path: Path) -> None:
    """The coded lookup traced and folded as the export does: right rows for dropped and kept ids at any shape,
    and a sequence of 0 tokens gives 0 rows (its last Reshape reads the ids' shape, allowzero)."""
    import onnxruntime as ort

    from exporters.onnx.shapes import fold_reshape_targets_

    emb = _coded_embedding(40, 12, 4, seed=3)
    lookup = CodedLookup(emb).eval()
    path = tmp_path / "lookup.onnx"
    sample = torch.tensor([[1, 2, 3], [4, 5, 6]])
    with torch.no_grad():
        torch.onnx.export(
            lookup,
            (sample,),
            str(path),
            input_names=["ids"],
            output_names=["rows"],
            dynamic_axes={"ids": {0: "batch", 1: "seq"}, "rows": {0: "batch", 1: "seq"}},
            opset_version=17,
            dynamo=False,
        )
    model = onnx.load(str(path))
    assert fold_reshape_targets_(model) >= 1
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for shape in [(2, 0), (1, 7), (3, 5)]:
        ids = torch.randint(0, 40, shape)
        (rows,) = session.run(None, {"ids": ids.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(rows, emb(ids).numpy(), atol=1e-5)
        assert rows.shape == (*shape, 6)
