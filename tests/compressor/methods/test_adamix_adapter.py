"""AdaMix with bottleneck-adapter experts (`experts=adapter`): injection in the FFN-output slot, routing, the
consistency loss, merging into one kept adapter, and that adapter through save/load, pruning and ONNX export."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from compressor.arch.adapters import ADAPTER_KEY, FfnAdapter
from compressor.arch.surgery import drop_layers_, prune_ffn_, prune_heads_, prune_hidden_
from compressor.checkpoint import load_model, save_model
from compressor.errors import ConfigError, ModelError
from compressor.methods.adamix import AdamixAdapter, AdamixConfig, consistency_loss
from compressor.methods.base import METHODS, count_trainable, only_stock_modules, trainable_parameters
from compressor.schema import config_from_dict
from tests.models import encode, tiny_model, tiny_tokenizer

ADAMIX = METHODS.get("adamix")
HIDDEN, LAYERS = 32, 2
LABELS = torch.tensor([1] * 5 + [0] * 5)


def adapter_config(**overrides: object) -> AdamixConfig:
    return AdamixConfig(**({"experts": "adapter", "num_experts": 3, "bottleneck": 4} | overrides))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    return tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def batch(tokenizer) -> dict[str, torch.Tensor]:  # noqa: ANN001
    return encode(tokenizer)


def perturb_(model: torch.nn.Module, scale: float = 0.3) -> None:
    """Move every trainable tensor (each expert differently): zero-initialised up-projections pass any check."""
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in trainable_parameters(model).values():
            p.add_(torch.randn(p.shape, generator=gen) * scale)


def mixtures(model: torch.nn.Module) -> dict[str, AdamixAdapter]:
    return {n: m for n, m in model.named_modules() if isinstance(m, AdamixAdapter)}


def logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**batch).logits


def trained_and_merged(layers: int = LAYERS) -> torch.nn.Module:
    """A tiny adapter-form model with perturbed experts (as if trained), merged: one kept adapter per layer."""
    model = ADAMIX.inject(tiny_model(0, num_hidden_layers=layers), adapter_config())
    perturb_(model)
    return ADAMIX.merge_(model).eval()


def test_injection_puts_one_mixture_in_each_ffn_output_dropout_slot() -> None:
    model = ADAMIX.inject(tiny_model(0), adapter_config())
    assert set(mixtures(model)) == {f"bert.encoder.layer.{i}.output.dropout" for i in range(LAYERS)}
    names = trainable_parameters(model)
    assert all(".output.dropout.adamix_" in n or n.startswith("classifier.") for n in names)
    m, r = 3, 4  # M down-projections (r, hidden) with biases, one shared up-projection (hidden, r) with its bias
    per_layer = m * (r * HIDDEN + r) + HIDDEN * r + HIDDEN
    assert count_trainable(model) == LAYERS * per_layer + HIDDEN * 2 + 2
    assert not mixtures(model)["bert.encoder.layer.0.output.dropout"].adamix_up.any()  # U = 0
    down = mixtures(model)["bert.encoder.layer.0.output.dropout"].adamix_down
    assert torch.equal(down[0], down[1]) and torch.equal(down[1], down[2])  # one draw shared by every expert
    with pytest.raises(ModelError, match="AdaMix is already injected"):
        ADAMIX.inject(model, adapter_config())


def test_the_adapter_starts_as_the_identity(batch: dict[str, torch.Tensor]) -> None:
    reference = logits(tiny_model(0), batch)
    model = ADAMIX.inject(tiny_model(0), adapter_config())
    torch.testing.assert_close(logits(model, batch), reference)
    with torch.no_grad():
        torch.testing.assert_close(model.train()(**batch).logits, reference)  # any routed expert: U = 0


def test_training_routes_a_random_expert_per_layer_and_eval_uses_the_average(batch: dict[str, torch.Tensor]) -> None:
    model = ADAMIX.inject(tiny_model(0), adapter_config(num_experts=4))
    perturb_(model)
    model.train()
    draws, outputs = [], []
    with torch.no_grad():
        for _ in range(30):
            outputs.append(model(**batch).logits)
            draws.append(tuple(m.last_expert for m in mixtures(model).values()))
    assert {e for step in draws for e in step} == {0, 1, 2, 3}  # every expert gets drawn
    assert any(len(set(step)) > 1 for step in draws)  # layers draw independently
    assert not all(torch.allclose(outputs[0], o) for o in outputs[1:])  # different experts, different function

    evals = [logits(model, batch) for _ in range(2)]
    torch.testing.assert_close(evals[0], evals[1], atol=0, rtol=0)
    assert all(m.last_expert is None for m in mixtures(model).values())
    # eval = one adapter with the averaged down-projection and the shared up-projection, computed by hand
    layer = model.bert.encoder.layer[0].output
    mixture = mixtures(model)["bert.encoder.layer.0.output.dropout"]
    x = torch.randn(3, HIDDEN)
    d, u = mixture.adamix_down.mean(0), mixture.adamix_up
    expected = x + torch.nn.functional.gelu(x @ d.T + mixture.adamix_down_bias.mean(0)) @ u.T + mixture.adamix_up_bias
    with torch.no_grad():
        torch.testing.assert_close(layer.dropout(x), expected)


def test_only_the_routed_expert_gets_gradient(batch: dict[str, torch.Tensor]) -> None:
    model = ADAMIX.inject(tiny_model(0), adapter_config(num_experts=4))
    perturb_(model)
    model.train()
    model(**batch, labels=LABELS).loss.backward()
    for module in mixtures(model).values():
        used = module.last_expert
        assert module.adamix_down.grad[used].abs().sum() > 0
        assert all(module.adamix_down.grad[i].abs().sum() == 0 for i in range(4) if i != used)
        assert module.adamix_up.grad.abs().sum() > 0  # shared: trains every step


def test_consistency_loss_is_positive_in_training_and_off_in_eval(batch: dict[str, torch.Tensor]) -> None:
    model = ADAMIX.inject(tiny_model(0), adapter_config(num_experts=4, consistency=2.0))
    assert [m.consistency for m in mixtures(model).values()] == [2.0] * LAYERS
    perturb_(model)
    model.train()
    inputs = dict(batch) | {"labels": LABELS}
    torch.manual_seed(0)
    first = model(**inputs)
    loss = consistency_loss(model, inputs, first)
    assert loss.item() > 0 and loss.requires_grad
    model.eval()
    assert consistency_loss(model, inputs, SimpleNamespace(logits=first.logits)).item() == 0


def test_merge_averages_the_experts_into_one_kept_adapter_exactly(batch: dict[str, torch.Tensor]) -> None:
    model = ADAMIX.inject(tiny_model(0), adapter_config())
    perturb_(model)
    expected = {}
    for name, mixture in mixtures(model).items():
        assert not torch.allclose(mixture.adamix_down[0], mixture.adamix_down[1])  # the experts really differ
        expected[name] = (mixture.adamix_down.detach().mean(0).clone(), mixture.adamix_up.detach().clone())
    trained = logits(model, batch)
    assert not torch.allclose(trained, logits(tiny_model(0), batch), atol=1e-3)
    merged = ADAMIX.merge_(model)
    assert only_stock_modules(merged) == []
    for name, (down, up) in expected.items():
        adapter = merged.get_submodule(name)
        assert isinstance(adapter, FfnAdapter)
        torch.testing.assert_close(adapter.down.weight, down, atol=0, rtol=0)
        torch.testing.assert_close(adapter.up.weight, up, atol=0, rtol=0)
    torch.testing.assert_close(logits(merged, batch), trained, atol=1e-4, rtol=1e-4)
    stock = set(tiny_model(0).state_dict())
    assert stock <= set(merged.state_dict())  # the base keys and shapes are all there; the adapters come on top
    added = {f"bert.encoder.layer.{i}.output.dropout.{p}" for i in range(LAYERS) for p in ("down", "up")}
    assert {k.rpartition(".")[0] for k in merged.state_dict() if k not in stock} == added


def test_save_then_load_rebuilds_the_adapter(batch: dict[str, torch.Tensor], tokenizer, tmp_path: Path) -> None:  # noqa: ANN001
    merged = trained_and_merged()
    before = logits(merged, batch)
    save_model(merged, tokenizer, tmp_path / "m")
    record = json.loads((tmp_path / "m" / "config.json").read_text())[ADAPTER_KEY]
    assert record == {"version": 1, "site": "ffn_output", "bottleneck": 4, "activation": "gelu", "layers": [0, 1]}
    loaded, _ = load_model(tmp_path / "m")
    assert isinstance(loaded.bert.encoder.layer[1].output.dropout, FfnAdapter)
    torch.testing.assert_close(logits(loaded, batch), before, atol=1e-6, rtol=1e-6)
    save_model(loaded, tokenizer, tmp_path / "again")  # a loaded model saves its adapters again
    torch.testing.assert_close(logits(load_model(tmp_path / "again")[0], batch), before, atol=1e-6, rtol=1e-6)


def test_a_broken_adapter_record_is_a_one_line_model_error(tokenizer, tmp_path: Path) -> None:  # noqa: ANN001
    merged = trained_and_merged()
    save_model(merged, tokenizer, tmp_path / "m")
    config_file = tmp_path / "m" / "config.json"
    config = json.loads(config_file.read_text())
    config[ADAPTER_KEY]["layers"] = [0, 7]
    config_file.write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"^config.json: `compressor_adapter` must list distinct layer indices below"):
        load_model(tmp_path / "m")


PRUNES = {
    "heads": lambda m: (prune_heads_(m, 0, [1, 3]), prune_heads_(m, 1, [])),
    "ffn": lambda m: (prune_ffn_(m, 0, [2, 5, 7]), prune_ffn_(m, 2, [])),
    "layers": lambda m: drop_layers_(m, [0, 2]),
    "all": lambda m: (prune_heads_(m, 1, [0]), prune_ffn_(m, 0, []), drop_layers_(m, [0, 1])),
    "hidden": lambda m: prune_hidden_(m, list(range(0, 32, 2))),
}


@pytest.mark.parametrize("cut", sorted(PRUNES))
def test_pruning_with_kept_adapters_saves_and_loads_the_same_logits(
    cut: str,
    batch: dict[str, torch.Tensor],
    tokenizer,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    merged = trained_and_merged(layers=3)
    before = logits(merged, batch)
    PRUNES[cut](merged)
    after = logits(merged, batch)
    assert only_stock_modules(merged) == []
    adapters = [m for m in merged.modules() if isinstance(m, FfnAdapter)]
    assert len(adapters) == len(merged.bert.encoder.layer)  # no layer lost its adapter
    if cut == "hidden":
        assert all(a.down.in_features == a.up.out_features == 16 for a in adapters)
    if cut in ("heads", "ffn"):  # removing units changes the function, but not by removing the adapter
        assert not torch.allclose(after, before, atol=1e-6)
    save_model(merged, tokenizer, tmp_path / "pruned")
    loaded, _ = load_model(tmp_path / "pruned")
    torch.testing.assert_close(logits(loaded, batch), after, atol=1e-5, rtol=1e-5)


def test_onnx_export_keeps_the_adapter_in_the_graph(tokenizer, tmp_path: Path) -> None:  # noqa: ANN001
    import onnx

    from exporters.onnx.export import export_onnx
    from exporters.onnx.sessions import make_session
    from tests.exporters.onnx.conftest import fast_config

    merged = trained_and_merged()
    fp32 = export_onnx(merged, fast_config(quantize="none", fuse="off"), tokenizer=tokenizer, out_dir=tmp_path / "f")
    assert fp32.manifest["parity"]["max_abs_diff"] <= 1e-4
    graph = onnx.load(str(tmp_path / "f" / "model.onnx")).graph
    names = {i.name for i in graph.initializer}
    assert {f"bert.encoder.layer.{i}.output.dropout.{p}.bias" for i in range(LAYERS) for p in ("down", "up")} <= names
    texts = ["a great movie", "i hated this film and the plot was so dull", "lovely"]
    session = make_session(tmp_path / "f" / "model.onnx")
    enc = tokenizer(texts, padding=True, return_tensors="np")
    got = session.run(None, {i.name: enc[i.name].astype(np.int64) for i in session.get_inputs()})[0]
    with torch.no_grad():
        expected = merged(**tokenizer(texts, padding=True, return_tensors="pt")).logits.numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)

    int8 = export_onnx(merged, fast_config(quantize="dynamic", fuse="on"), tokenizer=tokenizer, out_dir=tmp_path / "q")
    assert int8.manifest["quantization"]["gate"]["passed"]
    fusion = int8.manifest["fusion"]
    assert fusion["fused_op_problems"] == [] and fusion["expected_fused_ops"]["gelu"] == 2 * LAYERS  # FFN + adapter


def test_a_merged_adapter_model_refuses_a_second_adapter_injection() -> None:
    merged = trained_and_merged()
    with pytest.raises(ModelError, match="layer 0 already keeps a bottleneck adapter"):
        ADAMIX.inject(merged, adapter_config())
    ADAMIX.inject(merged, AdamixConfig(rank=2))  # the lora form (or any other method) trains on top of it


def test_config_v1_runs_read_as_the_lora_form_with_their_expert_count() -> None:
    saved = {"kind": "adamix", "version": 1, "fields": {"experts": 3, "rank": 2, "consistency": 0.5}}
    cfg = config_from_dict(AdamixConfig, saved)
    assert (cfg.experts, cfg.num_experts, cfg.rank, cfg.consistency) == ("lora", 3, 2, 0.5)
    with pytest.raises(ConfigError, match=r"`experts` must be one of lora, adapter \(the number of experts is"):
        AdamixConfig(experts=4)  # type: ignore[arg-type]


def test_the_cost_model_counts_the_kept_adapters() -> None:
    from compressor.arch.parts import count_parameters
    from compressor.sensitivity.cost import encoder_flops, encoder_params

    merged = ADAMIX.merge_(ADAMIX.inject(tiny_model(0), adapter_config()))
    assert encoder_params(merged) == count_parameters(merged, encoder_only=True) > encoder_params(tiny_model(0))
    assert encoder_flops(merged) > encoder_flops(tiny_model(0))
    drop_layers_(merged, [1])  # the adapter leaves with its layer
    assert encoder_params(merged) == count_parameters(merged, encoder_only=True)
