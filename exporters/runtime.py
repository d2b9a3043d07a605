"""Edge inference: an ONNX Runtime session plus the artifact's tokenizer. Never imports torch or transformers.

Imports only onnxruntime, tokenizers, numpy, the standard library, `exporters.manifest` and `compressor.errors`
(both pure Python; `compressor/__init__.py` is lazy), so `compressor predict` starts fast and installs small.

Loading an artifact:
1. `verify_artifact` checks `compressor.json` and the sha256 of `model.onnx` (tampering → ArtifactError).
2. External data is checked *before* ONNX Runtime opens the file: every tensor's external-data `location` must
   stay inside the artifact directory and, when verifying, be listed in the manifest with a matching hash.
   We read the protobuf wire format ourselves (a few dozen lines, below) instead of `onnx.load`, because `onnx`
   is not part of the runtime install, and instead of relying on ONNX Runtime, whose own path check only exists
   in recent releases (about 1.24 on) and not in the older ones our `runtime` extra allows.
3. An `InferenceSession` on CPU: `intra_op_num_threads=threads`, one inter-op thread, sequential execution,
   all graph optimisations.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from compressor.errors import ArtifactError, ConfigError
from exporters.manifest import MANIFEST_NAME, MODEL_NAME, read_manifest, sha256, verify_artifact

logger = logging.getLogger(__name__)

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
DEFAULT_MAX_LENGTH = 128

# ONNX Runtime raises its own exception types (plain `Exception` subclasses); only these mean "bad model file".
_ORT_ERRORS: tuple[type[BaseException], ...] = tuple(
    getattr(ort.capi.onnxruntime_pybind11_state, name)
    for name in (
        "Fail",
        "InvalidArgument",
        "InvalidGraph",
        "InvalidProtobuf",
        "NoSuchFile",
        "NoModel",
        "NotImplemented",
        "RuntimeException",
        "EngineError",
        "EPFail",
    )
    if hasattr(ort.capi.onnxruntime_pybind11_state, name)
) + (RuntimeError,)


class Runtime:
    """A loaded artifact: tokenize, run, softmax. Thread count is fixed at load time.

    Args:
        path: an artifact directory (holding `model.onnx`), or a `.onnx` file inside one.
        threads: ONNX Runtime intra-op threads; None lets ONNX Runtime choose (one per physical core).
        verify: check the manifest and file hashes; False also accepts ONNX directories without `compressor.json`
            (optimum exports, for benchmarking baselines). External data is checked either way.
    """

    def __init__(self, path: str | Path, threads: int | None = None, verify: bool = True) -> None:
        path = Path(path)
        if threads is not None and threads < 1:
            raise ConfigError(f"`threads` must be a positive integer, got {threads!r}")
        if path.is_file() and path.suffix == ".onnx":
            self.dir, self.model_path = path.parent, path
        else:
            self.dir, self.model_path = path, path / MODEL_NAME
        if not self.dir.is_dir():
            raise ArtifactError(f"artifact `{path}` not found; pass a directory written by `compressor export`")
        self.manifest = _verify(self.dir, self.model_path) if verify else _optional_manifest(self.dir)
        if not self.model_path.is_file():
            raise ArtifactError(f"artifact `{self.dir}` has no {self.model_path.name}; re-export it")
        self.external_files = check_external_data(self.model_path, self.manifest if verify else None)
        self.config = _read_json(self.dir / "config.json", required=True)
        self.id2label = {int(k): str(v) for k, v in (self.config.get("id2label") or {}).items()}
        self.tokenizer = _load_tokenizer(self.dir)
        self.pad_id = _pad_id(self.dir, self.tokenizer, self.config)
        self.max_positions = int(self.config.get("max_position_embeddings") or 512)
        limit = (self.manifest or {}).get("max_length") or _tokenizer_max_length(self.dir) or DEFAULT_MAX_LENGTH
        self.max_length = min(int(limit), self.max_positions)
        self.threads = threads
        self.session = _session(self.model_path, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        unknown = [n for n in self.input_names if n not in INPUT_NAMES]
        if unknown:
            raise ArtifactError(
                f"`{self.model_path}` expects input(s) {', '.join(unknown)}; the runtime feeds only "
                f"{', '.join(INPUT_NAMES)}"
            )
        outputs = [o.name for o in self.session.get_outputs()]
        self.output_name = "logits" if "logits" in outputs else outputs[0]
        if not self.id2label:
            self.id2label = {i: f"LABEL_{i}" for i in range(int(self.config.get("num_labels") or 2))}
        logger.info("loaded %s (%s threads, max_length %d)", self.model_path, threads or "default", self.max_length)

    @property
    def model_bytes(self) -> int:
        """Size on disk of the graph file plus its external data files."""
        return self.model_path.stat().st_size + sum(p.stat().st_size for p in self.external_files)

    def encode(
        self, texts: str | Sequence[str], pairs: Sequence[str] | None = None, pad_to: int | None = None
    ) -> dict[str, np.ndarray]:
        """Tokenize into int64 arrays `(batch, sequence)`: truncated to `max_length`, padded to the longest.

        Args:
            pairs: second segments for pair tasks, one per text.
            pad_to: truncate and pad every row to exactly this many tokens (fixed-length benchmarks).
        """
        texts = _as_list(texts)
        if pairs is not None and len(pairs) != len(texts):
            raise ConfigError(f"got {len(texts)} texts but {len(pairs)} text pairs; pass one pair per text")
        limit = self.max_length
        if pad_to is not None:
            if not 2 <= pad_to <= self.max_positions:
                raise ConfigError(
                    f"`seq_len` must be between 2 and the model's {self.max_positions} positions, got {pad_to!r}"
                )
            limit = pad_to
        self.tokenizer.enable_truncation(max_length=limit)
        inputs = texts if pairs is None else list(zip(texts, pairs, strict=True))
        encodings = self.tokenizer.encode_batch(inputs) if inputs else []
        width = pad_to or max((len(e.ids) for e in encodings), default=0)
        ids = np.full((len(encodings), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        types = np.zeros((len(encodings), width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[row, :n] = enc.ids
            mask[row, :n] = enc.attention_mask
            types[row, :n] = enc.type_ids
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}

    def run_feed(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """Run the graph on encoded inputs (extra keys are ignored); returns logits `(batch, num_labels)`."""
        missing = [n for n in self.input_names if n not in feed]
        if missing:
            raise ConfigError(f"the feed lacks input(s) {', '.join(missing)} that `{self.model_path}` needs")
        try:
            return self.session.run([self.output_name], {n: feed[n] for n in self.input_names})[0]
        except _ORT_ERRORS as err:
            first = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
            raise ArtifactError(f"`{self.model_path}` failed to run: {first}") from None

    def logits(
        self, texts: str | Sequence[str], pairs: Sequence[str] | None = None, pad_to: int | None = None
    ) -> np.ndarray:
        """Logits `(batch, num_labels)` for raw texts."""
        return self.run_feed(self.encode(texts, pairs, pad_to))

    def predict(
        self, texts: str | Sequence[str], pairs: Sequence[str] | None = None, batch_size: int = 32
    ) -> list[dict[str, Any]]:
        """One `{"label", "score"}` per text: the arg-max label and its softmax probability."""
        if batch_size < 1:
            raise ConfigError(f"`batch_size` must be a positive integer, got {batch_size!r}")
        texts = _as_list(texts)
        results: list[dict[str, Any]] = []
        for start in range(0, len(texts), batch_size):
            chunk_pairs = None if pairs is None else pairs[start : start + batch_size]
            probs = softmax(self.logits(texts[start : start + batch_size], chunk_pairs))
            best = probs.argmax(axis=-1)
            for row, label_id in enumerate(best):
                label = self.id2label.get(int(label_id), f"LABEL_{int(label_id)}")
                results.append({"label": label, "score": float(probs[row, label_id])})
        return results


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def _as_list(texts: str | Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    texts = list(texts)
    bad = next((t for t in texts if not isinstance(t, str)), None)
    if bad is not None:
        raise ConfigError(f"texts must be strings, got {type(bad).__name__}")
    return texts


def _verify(artifact_dir: Path, model_path: Path) -> dict[str, Any]:
    if model_path.name == MODEL_NAME:
        return verify_artifact(artifact_dir)
    manifest = read_manifest(artifact_dir)  # a differently named graph (e.g. model_quantized.onnx): same check
    _check_hash(artifact_dir, model_path.name, manifest)
    return manifest


def _check_hash(artifact_dir: Path, rel: str, manifest: dict[str, Any]) -> None:
    """The file `rel` (relative to the artifact) must be listed in the manifest with the same sha256."""
    expected = (manifest.get("files") or {}).get(rel, {}).get("sha256")
    if expected is None:
        raise ArtifactError(f"`{artifact_dir / MANIFEST_NAME}` records no hash for {rel}; re-export the artifact")
    if not (artifact_dir / rel).is_file():
        raise ArtifactError(f"artifact `{artifact_dir}` has no {rel}; re-export it")
    if sha256(artifact_dir / rel) != expected:
        raise ArtifactError(
            f"`{artifact_dir / rel}` does not match the hash in {MANIFEST_NAME}: it was modified or corrupted; "
            "re-export it"
        )


def _optional_manifest(artifact_dir: Path) -> dict[str, Any] | None:
    return read_manifest(artifact_dir) if (artifact_dir / MANIFEST_NAME).is_file() else None


def _read_json(path: Path, *, required: bool) -> dict[str, Any]:
    if not path.is_file():
        if required:
            raise ArtifactError(f"artifact `{path.parent}` has no {path.name}; re-export it")
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ArtifactError(f"`{path}` is not valid JSON; the artifact is damaged; re-export it") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"`{path}` is not a JSON object; the artifact is damaged; re-export it")
    return data


def _load_tokenizer(artifact_dir: Path) -> Tokenizer:
    path = artifact_dir / "tokenizer.json"
    if not path.is_file():
        raise ArtifactError(f"artifact `{artifact_dir}` has no tokenizer.json; re-export it with its fast tokenizer")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as err:  # tokenizers raises a bare `Exception` for malformed files
        raise ArtifactError(f"`{path}` cannot be loaded as a tokenizer ({str(err)[:200]}); re-export it") from None
    tokenizer.no_padding()  # we pad ourselves (to the batch's longest row, or to `pad_to`)
    return tokenizer


def _tokenizer_max_length(artifact_dir: Path) -> int | None:
    value = _read_json(artifact_dir / "tokenizer_config.json", required=False).get("model_max_length")
    return int(value) if isinstance(value, int | float) and 0 < value < 1_000_000 else None


def _pad_id(artifact_dir: Path, tokenizer: Tokenizer, config: dict[str, Any]) -> int:
    pad_token = _read_json(artifact_dir / "tokenizer_config.json", required=False).get("pad_token")
    if isinstance(pad_token, dict):  # older tokenizer_config.json stores AddedToken dicts
        pad_token = pad_token.get("content")
    if isinstance(pad_token, str) and tokenizer.token_to_id(pad_token) is not None:
        return int(tokenizer.token_to_id(pad_token))
    return int(config.get("pad_token_id") or 0)


def _session(model_path: Path, threads: int | None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's default (physical cores)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: fusion notices are not for users
    try:
        return ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
    except _ORT_ERRORS as err:
        first = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
        raise ArtifactError(f"`{model_path}` is not a loadable ONNX model ({first}); re-export it") from None


# --- external data: a minimal reader of the ONNX protobuf wire format ------------------------------------------
# Which fields of which message hold (sub-)messages that can carry tensors; numbers from onnx/onnx.proto.
_CHILDREN: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},  # ModelProto.graph, .training_info, .functions
    "training": {1: "graph", 2: "graph"},  # TrainingInfoProto.initialization, .algorithm
    "function": {7: "node", 11: "attribute"},  # FunctionProto.node, .attribute_proto
    "graph": {1: "node", 5: "tensor", 15: "sparse"},  # GraphProto.node, .initializer, .sparse_initializer
    "node": {5: "attribute"},  # NodeProto.attribute
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},  # SparseTensorProto.values, .indices
}
_EXTERNAL_DATA = 13  # TensorProto.external_data: repeated StringStringEntryProto {key = 1, value = 2}


class _WireError(Exception):
    pass


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _WireError
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(field number, start, end) of each length-delimited field of one message; other wire types are skipped."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _WireError
        if wire == 0:
            _, pos = _varint(buf, pos, end)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise _WireError
            yield number, pos, pos + length
            pos += length
        else:  # groups (3, 4) do not occur in ONNX files
            raise _WireError
    if pos != end:
        raise _WireError


def external_locations(data: bytes) -> list[str]:
    """Every external-data `location` named by a tensor anywhere in a serialized ModelProto."""
    buf = memoryview(data)
    found: list[str] = []
    stack = [("model", 0, len(buf))]
    while stack:
        kind, start, end = stack.pop()
        for number, s, e in _fields(buf, start, end):
            if kind == "tensor":
                if number == _EXTERNAL_DATA:
                    entry = {n: bytes(buf[a:b]).decode("utf-8", "replace") for n, a, b in _fields(buf, s, e)}
                    if entry.get(1) == "location":
                        found.append(entry.get(2, ""))
            elif number in _CHILDREN[kind]:
                stack.append((_CHILDREN[kind][number], s, e))
    return found


def check_external_data(model_path: Path, manifest: dict[str, Any] | None = None) -> list[Path]:
    """Refuse external data outside the model's directory; with a manifest, also check each file's hash.

    Returns the external data files (resolved). Raises ArtifactError when the file is not an ONNX protobuf.
    """
    try:
        locations = external_locations(model_path.read_bytes())
    except _WireError:
        raise ArtifactError(
            f"`{model_path}` is not an ONNX model (it does not parse as an ONNX protobuf); re-export it"
        ) from None
    base = model_path.parent.resolve()
    files: list[Path] = []
    for location in dict.fromkeys(locations):
        target = (base / location).resolve()
        if os.path.isabs(location) or not target.is_relative_to(base):
            raise ArtifactError(
                f"`{model_path}` reads external data from `{location}`, outside its directory; refusing to load it"
            )
        if not target.is_file():
            raise ArtifactError(f"`{model_path}` needs external data `{location}`, which is missing; re-export it")
        if manifest is not None:
            _check_hash(base, target.relative_to(base).as_posix(), manifest)
        files.append(target)
    return files
