from __future__ import annotations

from compressor.prune.config import PruneConfig
from compressor.schema import config_to_dict, hash_record


def test_settings_added_later_stay_out_of_the_hash_until_used() -> None:
    """A run recorded before `unstructured` existed hashes the same today; setting it changes the hash."""
    plain = PruneConfig(heads=0.25)
    recorded = config_to_dict(plain)
    for name in ("unstructured", "unstructured_by", "unstructured_roles"):
        recorded["fields"].pop(name)
    assert hash_record(plain) == recorded
    used = hash_record(PruneConfig(heads=0.25, unstructured=0.5, unstructured_roles=["ffn_in"]))
    assert used["fields"]["unstructured"] == 0.5 and used["fields"]["unstructured_roles"] == ["ffn_in"]
    assert "unstructured_by" not in used["fields"]  # still its default
