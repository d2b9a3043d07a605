"""Every registered method through the same checks: inject → perturb → merge → stock modules → save/load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compressor.arch.structure import is_pruned, structure_of
from compressor.arch.surgery import apply_structure_
from compressor.checkpoint import load_model, save_model
from compressor.data import load_data
from compressor.methods import METHODS
from compressor.methods.base import adapter_state, load_adapter_state_, only_stock_modules, trainable_parameters
from compressor.schema import build_config
from tests.models import encode, tiny_model, tiny_tokenizer, write_tiny_data

CASES = {  # tiny settings per method; every registered method must appear here
    "full": {},
    "lora": {"rank": 2},
    "dsee": {"rank": 2, "support_size": 4},
    "pafi": {"fraction": 0.01},
    "hiwi": {"bottleneck": 4},
    "adamix": {"rank": 2, "num_experts": 2},
    "adamix-adapter": {"experts": "adapter", "num_experts": 2, "bottleneck": 4},
    "pruning-adapter": {"rank": 2, "high_rank": 4, "examples": 16, "batch_size": 8},
}
FORM_OF = {"adamix-adapter": "adamix"}  # a case that is another form of a registered method → that method


def method_name(case: str) -> str:
    return FORM_OF.get(case, case)


def test_matrix_covers_every_method() -> None:
    assert {method_name(case) for case in CASES} == set(METHODS.names())


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    return tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def prepared_model(name: str, cfg: object, tokenizer: object, tmp_path: Path) -> torch.nn.Module:
    """The tiny base model after the method's data-dependent `prepare` step, if it has one."""
    method = METHODS.get(method_name(name))
    model = tiny_model(0)
    if method.prepare is not None:
        data = load_data(write_tiny_data(tmp_path / "train.tsv", 16))
        method.prepare(model, cfg, data, tokenizer)
    return model


def perturb_(model: torch.nn.Module) -> None:
    """Move every trainable tensor off its initial value: zero-initialised adapters would pass any merge check."""
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in trainable_parameters(model).values():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)


@pytest.mark.parametrize("name", sorted(CASES))
def test_method_merges_exactly_into_stock_modules(name: str, tokenizer: object, tmp_path: Path) -> None:
    if method_name(name) not in METHODS:
        pytest.xfail(f"method `{name}` is not registered yet")
    method = METHODS.get(method_name(name))
    cfg = build_config(method.config_cls, CASES[name])
    batch = encode(tokenizer)
    model = prepared_model(name, cfg, tokenizer, tmp_path)
    structure = structure_of(model)
    with torch.no_grad():
        plain = model.eval()(**batch).logits
    model = method.inject(model, cfg)
    assert trainable_parameters(model)
    perturb_(model)
    model.eval()
    with torch.no_grad():
        trained = model(**batch).logits
    assert not torch.allclose(trained, plain, atol=1e-3)  # the perturbed adapters change the function

    # restore path: a fresh injection plus the saved adapter state is the trained model
    fresh = tiny_model(0)
    if is_pruned(structure):
        apply_structure_(fresh, structure)
    fresh = method.inject(fresh, cfg)
    load_adapter_state_(fresh, adapter_state(model, method))
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(**batch).logits, trained, atol=1e-5, rtol=1e-5)

    merged = method.merge_(model)
    assert only_stock_modules(merged) == []
    merged.eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, trained, atol=1e-4, rtol=1e-4)

    save_model(merged, tokenizer, tmp_path / "merged")
    loaded, _ = load_model(tmp_path / "merged")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, trained, atol=1e-4, rtol=1e-4)
