"""Fine-tuning methods; importing this package registers every one of them in `METHODS`."""

from compressor.methods import adamix, dsee, full, hiwi, lora, pafi, pruning_adapter  # noqa: F401
from compressor.methods.base import METHODS, Method

__all__ = ["METHODS", "Method"]
