from __future__ import annotations

from compressor.prune.config import PruneConfig
from compressor.schema import config_to_dict, hash_record


def test_settings_added_later_stay_out_of_the_hash_until_used() -> None:
    """A run recorded before `unstructured` existed hashes the same today; setting it changes the hash."""
    plain = PruneConfig(heads=0.25)
    recorded = config_to_dict(plain)
    later = (
        "unstructured",
        "unstructured_by",
        "unstructured_roles",
        "augment",
        "augment_rate",
        "vocab_codes",
        "precision",
        "layerwise_schedule",
        "dropout",
        "relation_weight",
        "ema",
        "label_weight",
        "layer_map",
    )
    for name in later:
        recorded["fields"].pop(name)
    assert hash_record(plain) == recorded
    used = hash_record(PruneConfig(heads=0.25, unstructured=0.5, unstructured_roles=["ffn_in"]))
    assert used["fields"]["unstructured"] == 0.5 and used["fields"]["unstructured_roles"] == ["ffn_in"]
    assert "unstructured_by" not in used["fields"]  # still its default
    assert hash_record(PruneConfig(heads=0.25, precision="auto"))["fields"]["precision"] == "auto"
    assert hash_record(PruneConfig(heads=0.25, dropout=0))["fields"]["dropout"] == 0
    assert hash_record(PruneConfig(heads=0.25, relation_weight=1.0))["fields"]["relation_weight"] == 1.0
    assert hash_record(PruneConfig(heads=0.25, ema=0.25))["fields"]["ema"] == 0.25
    assert hash_record(PruneConfig(heads=0.25, label_weight=0))["fields"]["label_weight"] == 0
    assert hash_record(PruneConfig(heads=0.25, layer_map="source"))["fields"]["layer_map"] == "source"


def test_the_weight_average_stays_out_of_the_training_hash_until_used() -> None:
    from compressor.train.config import TrainConfig

    assert "ema" not in hash_record(TrainConfig())["fields"]
    assert hash_record(TrainConfig(ema=0.1))["fields"]["ema"] == 0.1


def test_int4_embeddings_stay_out_of_the_export_hash_until_used() -> None:
    from exporters.onnx.config import ExportConfig

    assert "embedding_bits" not in hash_record(ExportConfig())["fields"]
    assert hash_record(ExportConfig(embedding_bits=4))["fields"]["embedding_bits"] == 4
    assert "embedding_decode" not in hash_record(ExportConfig(embedding_bits=4))["fields"]
    decoded = ExportConfig(embedding_bits=4, embedding_decode="load")
    assert hash_record(decoded)["fields"]["embedding_decode"] == "load"


def test_counts_and_numbers_refuse_bools_and_strings() -> None:
    """The checks every config uses: True is an int to Python, never a count or a weight to a user."""
    from compressor.schema import is_int, is_number

    assert is_int(3) and is_int(0) and not is_int(True) and not is_int(3.0) and not is_int("3")
    assert is_number(3) and is_number(0.5) and not is_number(False) and not is_number("0.5") and not is_number(None)
