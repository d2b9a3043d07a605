"""One error hierarchy for the whole toolchain; only `cli/main.py` turns these into exit codes."""

from __future__ import annotations


class CompressorError(Exception):
    """The work failed: exit code 1."""

    exit_code = 1


class ConfigError(CompressorError, ValueError):
    """The command line, a recipe or a config is wrong: a usage error, exit code 2."""

    exit_code = 2


class DataError(CompressorError):
    """A data file is missing, empty, malformed or does not match the model."""


class ModelError(CompressorError):
    """A checkpoint is missing, incomplete, corrupt or of an unsupported architecture."""


class MergeError(CompressorError):
    """An adapter could not be folded into the base weights."""


class PruneError(CompressorError):
    """A pruning plan or structure does not fit the model."""


class ExportError(CompressorError):
    """ONNX export, optimisation or quantization failed."""


class ParityError(ExportError):
    """The exported graph does not reproduce the PyTorch logits."""


class ArtifactError(CompressorError):
    """An artifact directory is missing files, tampered with or unsafe to load."""
