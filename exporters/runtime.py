"""Edge inference: an ONNX Runtime session plus the artifact's tokenizer. Never imports torch or transformers.

Imports only onnxruntime, tokenizers, numpy, the standard library, `exporters.manifest`, `compressor.errors`,
`compressor.task` and `compressor.fs` (all pure Python; `compressor/__init__.py` is lazy), so `compressor predict`
starts fast and installs small.

An artifact is untrusted input. Loading one:
1. `verify_artifact` checks `compressor.json` and every file it lists (present, inside the artifact, same size and
   sha256), and that the graph and the tokenizer and config files are listed; a file added or changed after export
   is refused before anything reads it.
2. No file is read through a path that resolves outside the artifact directory (a symlinked model.onnx, config or
   tokenizer is refused like external data pointing at `../secret.bin`).
3. External data is checked *before* ONNX Runtime opens the graph: every tensor's external-data `location` must
   stay inside the artifact directory and, when verifying, be listed in the manifest. We read the protobuf wire
   format ourselves (a few dozen lines, below) instead of `onnx.load`, because `onnx` is not part of the runtime
   install, and instead of relying on ONNX Runtime, whose own path check only exists in recent releases (about
   1.24 on) and not in the older ones our `runtime` extra allows.
4. config.json, tokenizer.json and tokenizer_config.json are parsed defensively (`read_artifact_config`): labels
   must be the ids 0..N-1 mapped to strings, the tokenizer's ids must fit the model's vocabulary.
5. An `InferenceSession` on CPU: `intra_op_num_threads=threads`, one inter-op thread, sequential execution,
   all graph optimisations. Its inputs and output must fit the runtime and config.json (`check_graph`): inputs
   among input_ids/attention_mask/token_type_ids (the first two required, and as recorded in the manifest),
   logits of shape (batch, labels); a symbolic label width is checked on every output instead.

A regression artifact (config.json with `problem_type: regression`, or one label: compressor/task.py) has one
output per text: `predict` returns its score as is (`{"score": 3.71}`), with no label and no softmax.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from compressor.errors import ArtifactError, ConfigError
from compressor.task import CLASSIFICATION, REGRESSION, config_task
from exporters.manifest import (
    MANIFEST_NAME,
    MODEL_NAME,
    artifact_file,
    check_file,
    is_file,
    listed_files,
    read_json_object,
    read_manifest,
    read_text,
    short_repr,
    verify_artifact,
)

logger = logging.getLogger(__name__)

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
REQUIRED_INPUTS = ("input_ids", "attention_mask")
FLOAT_TYPES = ("tensor(float)", "tensor(float16)", "tensor(double)")
DEFAULT_MAX_LENGTH = 128
DEFAULT_MAX_POSITIONS = 512
CONFIG_NAME = "config.json"
TOKENIZER_NAME = "tokenizer.json"
TOKENIZER_CONFIG_NAME = "tokenizer_config.json"

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

# Every ONNX Runtime error reaches the user as one ArtifactError line; its own log line (printed to stderr before it
# raises, e.g. for a token id beyond the embedding) would be a second, confusing one. 4 = fatal only.
_ORT_QUIET = 4
DENORMAL_AS_ZERO = "session.set_denormal_as_zero"  # ONNX Runtime's session config key


@dataclass
class ArtifactConfig:
    """What the runtime takes from config.json, tokenizer.json and tokenizer_config.json, checked."""

    config: dict[str, Any]
    id2label: Mapping[int, str]
    max_positions: int
    max_length: int
    pad_id: int
    tokenizer: Tokenizer
    vocab_size: int | None = None
    type_vocab_size: int | None = None
    task: str = CLASSIFICATION

    @property
    def num_labels(self) -> int:
        """How many logits the graph must return per text."""
        return len(self.id2label)


class Runtime:
    """A loaded artifact: tokenize, run, softmax. Thread count is fixed at load time.

    Args:
        path: an artifact directory (holding `model.onnx`), or a `.onnx` file inside one.
        threads: ONNX Runtime intra-op threads; None lets ONNX Runtime choose (one per physical core).
        verify: check the manifest and file hashes; False also accepts ONNX directories without `compressor.json`
            (optimum exports, for benchmarking baselines). Paths, external data, config and graph are checked
            either way.
    """

    def __init__(
        self, path: str | Path, threads: int | None = None, verify: bool = True, flush_denormals: bool = False
    ) -> None:
        path = Path(path)
        if threads is not None and threads < 1:
            raise ConfigError(f"`threads` must be a positive integer, got {threads!r}")
        if path.suffix == ".onnx" and not path.is_dir():
            self.dir, model_name = path.parent, path.name
        else:
            self.dir, model_name = path, MODEL_NAME
        if not self.dir.is_dir():
            raise ArtifactError(f"artifact `{path}` not found; pass a directory written by `compressor export`")
        self.manifest = verify_artifact(self.dir, model_name) if verify else _optional_manifest(self.dir)
        self.model_path = artifact_file(self.dir, model_name)
        if not is_file(self.model_path):
            raise ArtifactError(f"artifact `{self.dir}` has no {model_name}; re-export it")
        self.external_files = check_external_data(self.model_path, self.manifest if verify else None, hashed=True)
        settings = read_artifact_config(self.dir, self.manifest)
        self.config = settings.config
        self.id2label = settings.id2label
        self.num_labels = settings.num_labels
        self.task = settings.task  # "regression": one output, returned as a score
        self.tokenizer = settings.tokenizer
        self.pad_id = settings.pad_id
        self.max_positions = settings.max_positions
        self.max_length = settings.max_length
        self._id_limits = {"input_ids": settings.vocab_size, "token_type_ids": settings.type_vocab_size}
        self.threads = threads
        self.session = _session(self.model_path, threads, flush_denormals)
        recorded = None if self.manifest is None else self.manifest.get("inputs")
        self.input_names, self.output_name = check_graph(
            self.session, self.model_path, self.num_labels, recorded_inputs=recorded
        )
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = _ORT_QUIET
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
        try:
            encodings = self.tokenizer.encode_batch(inputs) if inputs else []
        except BaseException as err:  # a bare `Exception` (a pair too long to truncate) or pyo3's PanicException
            if isinstance(err, KeyboardInterrupt | SystemExit):
                raise
            raise ArtifactError(
                f"`{self.dir / TOKENIZER_NAME}` cannot tokenize the input to {limit} tokens ({_first_line(err)}); "
                "re-export the artifact"
            ) from None
        width = pad_to or max((len(e.ids) for e in encodings), default=0)
        ids = np.full((len(encodings), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        types = np.zeros((len(encodings), width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[row, :n] = enc.ids
            mask[row, :n] = enc.attention_mask
            types[row, :n] = enc.type_ids
        # only the inputs the graph takes (the manifest's): DistilBERT and one-type RoBERTa take no token_type_ids
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        feed = {name: feed[name] for name in self.input_names}
        # A tokenizer whose special tokens or type ids exceed the model's tables would fail deep inside ONNX
        # Runtime (an out-of-range Gather that blames model.onnx): name the tokenizer instead.
        for name, limit in self._id_limits.items():
            if name in feed and limit is not None and feed[name].size and int(feed[name].max()) >= limit:
                raise ArtifactError(
                    f"`{self.dir / TOKENIZER_NAME}` produced {name} up to {int(feed[name].max())} but "
                    f"`{self.dir / CONFIG_NAME}` allows fewer than {limit}; the tokenizer belongs to another model; "
                    "re-export the artifact"
                )
        return feed

    def run_feed(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """Run the graph on encoded inputs (extra keys are ignored); returns logits `(batch, num_labels)`."""
        missing = [n for n in self.input_names if n not in feed]
        if missing:
            raise ConfigError(f"the feed lacks input(s) {', '.join(missing)} that `{self.model_path}` needs")
        try:
            out = self.session.run([self.output_name], {n: feed[n] for n in self.input_names}, self._run_options)[0]
        except _ORT_ERRORS as err:
            raise ArtifactError(f"`{self.model_path}` failed to run: {_first_line(err)}") from None
        # The declared shape may leave the label width symbolic (and a graph may lie about its shapes): a few
        # attribute reads per call make sure no caller ever sees logits that do not fit config.json's labels.
        batch = len(feed["input_ids"])
        if not isinstance(out, np.ndarray) or out.shape != (batch, self.num_labels):
            found = f"shape {tuple(out.shape)}" if isinstance(out, np.ndarray) else f"a {type(out).__name__}"
            raise ArtifactError(
                f"`{self.model_path}` returned {self.output_name} of {found} for {batch} text(s), expected "
                f"({batch}, {self.num_labels}) for the {self.num_labels} labels in {CONFIG_NAME}; the graph and "
                f"{CONFIG_NAME} do not belong together; re-export the artifact"
            )
        return out

    def logits(
        self, texts: str | Sequence[str], pairs: Sequence[str] | None = None, pad_to: int | None = None
    ) -> np.ndarray:
        """Logits `(batch, num_labels)` for raw texts."""
        return self.run_feed(self.encode(texts, pairs, pad_to))

    def predict(
        self, texts: str | Sequence[str], pairs: Sequence[str] | None = None, batch_size: int = 32
    ) -> list[dict[str, Any]]:
        """One `{"label", "score"}` per text: the arg-max label and its softmax probability; for a regression
        artifact one `{"score"}`: the model's output."""
        if batch_size < 1:
            raise ConfigError(f"`batch_size` must be a positive integer, got {batch_size!r}")
        texts = _as_list(texts)
        results: list[dict[str, Any]] = []
        for start in range(0, len(texts), batch_size):
            chunk_pairs = None if pairs is None else pairs[start : start + batch_size]
            logits = self.logits(texts[start : start + batch_size], chunk_pairs)
            if not np.isfinite(logits).all():  # NaN scores would print as `NaN`, which is not JSON
                raise ArtifactError(f"`{self.model_path}` returned NaN or infinite logits; re-export the artifact")
            if self.task == REGRESSION:
                results += [{"score": float(value)} for value in logits[:, 0]]
                continue
            probs = softmax(logits)
            best = probs.argmax(axis=-1)
            for row, label_id in enumerate(best):
                results.append({"label": self.id2label[int(label_id)], "score": float(probs[row, label_id])})
        return results


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def read_artifact_config(artifact_dir: Path, manifest: dict[str, Any] | None = None) -> ArtifactConfig:
    """Parse and check config.json, tokenizer.json and tokenizer_config.json (any problem: an ArtifactError).

    Args:
        manifest: the artifact's manifest, if any: its `max_length` caps the tokenizer's.
    """
    artifact_dir = Path(artifact_dir)
    config_path = artifact_file(artifact_dir, CONFIG_NAME)
    if not is_file(config_path):
        raise ArtifactError(f"artifact `{artifact_dir}` has no {CONFIG_NAME}; re-export it")
    config = read_json_object(config_path)
    id2label = _labels(config, config_path)
    task = config_task(config)
    if task == REGRESSION and len(id2label) != 1:
        raise ArtifactError(
            f"`{config_path}` has problem_type regression but {len(id2label)} labels; a regression model has one "
            "output; re-export the artifact"
        )
    vocab_size = _config_int(config, "vocab_size", config_path, None, minimum=1)
    # 0 is DeBERTa-v3's: no token-type table (and then no token_type_ids input)
    type_vocab_size = _config_int(config, "type_vocab_size", config_path, None, minimum=0) or None
    max_positions = _config_int(config, "max_position_embeddings", config_path, DEFAULT_MAX_POSITIONS, minimum=2)
    recorded = (manifest or {}).get("max_positions")
    if isinstance(recorded, int) and not isinstance(recorded, bool) and 2 <= recorded < max_positions:
        max_positions = recorded  # RoBERTa's position table holds padding_idx + 1 fewer tokens than its size
    tok_config_path = artifact_file(artifact_dir, TOKENIZER_CONFIG_NAME)
    tok_config = read_json_object(tok_config_path) if is_file(tok_config_path) else {}
    tokenizer = _load_tokenizer(artifact_dir, vocab_size, config_path)
    pad_id = _pad_id(tokenizer, tok_config, config, config_path, vocab_size)
    limit = (manifest or {}).get("max_length") or _tokenizer_max_length(tok_config) or DEFAULT_MAX_LENGTH
    return ArtifactConfig(
        config=config,
        id2label=id2label,
        max_positions=max_positions,
        max_length=min(int(limit), max_positions),
        pad_id=pad_id,
        tokenizer=tokenizer,
        vocab_size=vocab_size,
        type_vocab_size=type_vocab_size,
        task=task,
    )


def artifact_task(path: str | Path) -> str | None:
    """The task (`classification` or `regression`) an artifact's config.json records, before anything else loads:
    what its labelled data must be read as. None when there is no config.json to read (loading says why)."""
    path = Path(path)
    base = path.parent if path.suffix == ".onnx" and not path.is_dir() else path
    if not base.is_dir():
        return None
    config_path = artifact_file(base, CONFIG_NAME)
    return config_task(read_json_object(config_path)) if is_file(config_path) else None


def check_graph(
    session: ort.InferenceSession, model_path: Path, num_labels: int, *, recorded_inputs: list[str] | None = None
) -> tuple[list[str], str]:
    """Check that a session's inputs and output fit the runtime and config.json; returns (input names, output).

    Args:
        num_labels: the labels in config.json: the logits' width, checked here when the graph declares it.
        recorded_inputs: the manifest's `inputs`, if any: the graph must take exactly these (in any order).
    """
    # Inputs: int64 (batch, sequence), input_ids and attention_mask required, token_type_ids allowed, nothing else.
    # Output (`logits`, else the first): float, rank 2; a symbolic width is left to run_feed, which sees the data.
    inputs = session.get_inputs()
    names = [i.name for i in inputs]
    unknown = [n for n in names if n not in INPUT_NAMES]
    if unknown:
        raise ArtifactError(
            f"`{model_path}` expects input(s) {_names(unknown)}; the runtime feeds only "
            f"{', '.join(INPUT_NAMES)}; re-export the artifact"
        )
    missing = [n for n in REQUIRED_INPUTS if n not in names]
    if missing:
        raise ArtifactError(
            f"`{model_path}` has no {' or '.join(missing)} input (it takes {_names(names)}); the "
            f"runtime needs {' and '.join(REQUIRED_INPUTS)}; re-export the artifact"
        )
    for i in inputs:
        if i.type != "tensor(int64)" or (i.shape and len(i.shape) != 2):
            raise ArtifactError(
                f"`{model_path}` expects {_names([i.name])} as {i.type} of shape {_shape(i.shape)}; the runtime "
                "feeds int64 (batch, sequence); re-export the artifact"
            )
    if recorded_inputs is not None and sorted(recorded_inputs) != sorted(names):
        raise ArtifactError(
            f"`{model_path}` takes inputs {_names(names)} but {MANIFEST_NAME} records {_names(recorded_inputs)}; "
            "re-export the artifact"
        )
    outputs = session.get_outputs()
    if not outputs:
        raise ArtifactError(f"`{model_path}` has no outputs; re-export the artifact")
    output = next((o for o in outputs if o.name == "logits"), outputs[0])
    if output.type not in FLOAT_TYPES:
        raise ArtifactError(
            f"`{model_path}` returns {output.name} as {output.type}, expected float logits; re-export the artifact"
        )
    shape = output.shape  # [] when the graph declares no shape: then only run_feed can check it
    if shape and (len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != num_labels)):
        raise ArtifactError(
            f"`{model_path}` returns {output.name} of shape {_shape(shape)}, expected (batch, {num_labels}) for "
            f"the {num_labels} labels in {CONFIG_NAME}; the graph and {CONFIG_NAME} do not belong together; "
            "re-export the artifact"
        )
    return names, output.name


def _names(names: Sequence[str]) -> str:
    """Graph input names for a message, cut short: a graph can name its inputs anything."""
    text = ", ".join(names) or "none"
    return text if len(text) <= 200 else text[:199] + "…"


def _shape(shape: list[Any] | None) -> str:
    return "(" + ", ".join(str(d) for d in shape or []) + ("," if len(shape or []) == 1 else "") + ")"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def _as_list(texts: str | Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    texts = list(texts)
    bad = next((t for t in texts if not isinstance(t, str)), None)
    if bad is not None:
        raise ConfigError(f"texts must be strings, got {type(bad).__name__}")
    return texts


def _optional_manifest(artifact_dir: Path) -> dict[str, Any] | None:
    return read_manifest(artifact_dir) if is_file(artifact_dir / MANIFEST_NAME) else None


class DefaultLabels(Mapping[int, str]):
    """LABEL_0 … LABEL_{n-1}, the names of a config.json that has `num_labels` and no id2label, made when asked for.

    `n` comes from a file the user may have edited and is checked against the graph's output width only after
    this is built: a dict of `n` names made here took all the memory for `num_labels` 2**31 (found by the property
    tests); this holds one integer whatever `n` is."""

    def __init__(self, count: int) -> None:
        self._count = count

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, key: int) -> str:
        if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key < self._count:
            raise KeyError(key)
        return f"LABEL_{key}"

    def __iter__(self) -> Iterator[int]:
        return iter(range(self._count))

    def __repr__(self) -> str:
        return f"DefaultLabels({self._count})"


def _labels(config: dict[str, Any], path: Path) -> Mapping[int, str]:
    """config.json's id2label (the ids 0..N-1 mapped to strings), or LABEL_i for `num_labels` (default 2)."""
    num_labels = _config_int(config, "num_labels", path, None, minimum=1)
    raw = config.get("id2label")
    if raw is None:
        return DefaultLabels(num_labels or 2)
    if not isinstance(raw, dict) or not raw:
        raise ArtifactError(
            f"`{path}` has id2label {short_repr(raw)}, not an object of label ids to names; re-export the artifact"
        )
    # Exactly the keys "0".."N-1" (JSON keys are strings): no gaps, no "01", no "-1", no non-numbers.
    expected = {str(i) for i in range(len(raw))}
    bad_key = next((k for k in raw if k not in expected), None)
    if bad_key is not None:
        raise ArtifactError(
            f"`{path}` has id2label key {short_repr(bad_key)}: label ids must be the integers 0..{len(raw) - 1}; "
            "re-export the artifact"
        )
    bad = next(((k, v) for k, v in raw.items() if not isinstance(v, str)), None)
    if bad is not None:
        raise ArtifactError(
            f"`{path}` has label {short_repr(bad[1])} for id {bad[0]}: label names must be strings; "
            "re-export the artifact"
        )
    if num_labels is not None and num_labels != len(raw):
        raise ArtifactError(
            f"`{path}` has num_labels {num_labels} but {len(raw)} labels in id2label; re-export the artifact"
        )
    return {int(k): v for k, v in sorted(raw.items(), key=lambda kv: int(kv[0]))}


def _config_int(config: dict[str, Any], key: str, path: Path, default: int | None, *, minimum: int) -> int | None:
    value = config.get(key)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ArtifactError(
            f"`{path}` has {key} {short_repr(value)}, not an integer of at least {minimum}; re-export the artifact"
        )
    return value


def _load_tokenizer(artifact_dir: Path, vocab_size: int | None, config_path: Path) -> Tokenizer:
    path = artifact_file(artifact_dir, TOKENIZER_NAME)
    if not is_file(path):
        raise ArtifactError(f"artifact `{artifact_dir}` has no {TOKENIZER_NAME}; re-export it with its fast tokenizer")
    text = read_text(path)
    try:
        tokenizer = Tokenizer.from_str(text)
    except BaseException as err:  # a bare `Exception`, or pyo3's PanicException (a BaseException) on odd input
        if isinstance(err, KeyboardInterrupt | SystemExit):
            raise
        raise ArtifactError(
            f"`{path}` cannot be loaded as a tokenizer ({_first_line(err)[:200]}); re-export it"
        ) from None
    tokenizer.no_padding()  # we pad ourselves (to the batch's longest row, or to `pad_to`)
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    top = max(vocab.values(), default=-1)
    if vocab_size is not None and top >= vocab_size:
        # A tokenizer of another model: its ids would index past the embedding (an ONNX Runtime error at run time).
        raise ArtifactError(
            f"`{path}` produces token ids up to {top} but `{config_path}` has vocab_size {vocab_size}; the "
            "tokenizer belongs to another model; re-export the artifact"
        )
    return tokenizer


def _tokenizer_max_length(tok_config: dict[str, Any]) -> int | None:
    value = tok_config.get("model_max_length")
    # transformers writes a huge float (1e30) for "no limit": then the manifest or the default decides.
    if isinstance(value, bool) or not isinstance(value, int | float) or not 2 <= value < 1_000_000:
        return None
    return int(value)


def _pad_id(
    tokenizer: Tokenizer, tok_config: dict[str, Any], config: dict[str, Any], config_path: Path, vocab: int | None
) -> int:
    pad_token = tok_config.get("pad_token")
    if isinstance(pad_token, dict):  # older tokenizer_config.json stores AddedToken dicts
        pad_token = pad_token.get("content")
    if isinstance(pad_token, str) and tokenizer.token_to_id(pad_token) is not None:
        return int(tokenizer.token_to_id(pad_token))
    pad_id = _config_int(config, "pad_token_id", config_path, 0, minimum=0)
    if vocab is not None and pad_id >= vocab:
        raise ArtifactError(
            f"`{config_path}` has pad_token_id {pad_id}, beyond its vocab_size {vocab}; re-export the artifact"
        )
    return pad_id


def session_options(
    threads: int | None, *, profile_prefix: str | None = None, flush_denormals: bool = False
) -> ort.SessionOptions:
    """The runtime's session settings: `threads` intra-op threads (None: ONNX Runtime's default, one per physical
    core), one inter-op thread, sequential execution, all graph optimisations; profiling when a prefix is given.

    `flush_denormals` (off by default): a padded position's attention score is masked with a huge negative number,
    and the softmax's exponential of it lands in the denormal range, where x86 arithmetic takes a slow microcode
    path: Softmax over (8, 128, 128) scores with all but 10 columns masked measured ~11× slower than with ONNX
    Runtime's `set_denormal_as_zero` (`python bench/denormals.py`). Off by default because ONNX Runtime sets the
    CPU's flush-to-zero/denormals-are-zero flags on the threads that run the session, the caller's thread
    included, and they stay set: every later float computation on that thread (numpy, torch, the host
    application) flushes values below 1.2e-38 to 0. Turn it on in a process that only serves the model.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = _ORT_QUIET  # fusion notices are not for users; errors are raised
    if flush_denormals:
        options.add_session_config_entry(DENORMAL_AS_ZERO, "1")
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return options


def _session(model_path: Path, threads: int | None, flush_denormals: bool = False) -> ort.InferenceSession:
    options = session_options(threads, flush_denormals=flush_denormals)
    try:
        return ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
    except _ORT_ERRORS as err:
        raise ArtifactError(
            f"`{model_path}` is not a loadable ONNX model ({_first_line(err)}); re-export it"
        ) from None


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


def check_external_data(
    model_path: Path, manifest: dict[str, Any] | None = None, *, hashed: bool = False
) -> list[Path]:
    """Refuse external data outside the model's directory; with a manifest, each file must be listed with its hash.

    Args:
        hashed: the manifest's files were already checked (`verify_artifact`): only require each to be listed.

    Returns the external data files (resolved). Raises ArtifactError when the file is not an ONNX protobuf.
    """
    model_path = artifact_file(model_path.parent, model_path.name)
    try:
        locations = external_locations(model_path.read_bytes())
    except _WireError:
        raise ArtifactError(
            f"`{model_path}` is not an ONNX model (it does not parse as an ONNX protobuf); re-export it"
        ) from None
    except OSError as err:
        raise ArtifactError(f"`{model_path}` cannot be read ({err.strerror or err}); check its permissions") from None
    base = model_path.parent.resolve()
    files: list[Path] = []
    for location in dict.fromkeys(locations):
        outside = ArtifactError(
            f"`{model_path}` reads external data from `{location}`, outside its directory; refusing to load it"
        )
        if os.path.isabs(location) or "\x00" in location:
            raise outside
        try:
            target = (base / location).resolve()
        except (OSError, RuntimeError):  # a symlink loop: not a file we could read
            raise outside from None
        if not target.is_relative_to(base):
            raise outside
        if not is_file(target):
            raise ArtifactError(f"`{model_path}` needs external data `{location}`, which is missing; re-export it")
        if manifest is not None:
            rel = target.relative_to(base).as_posix()
            entry = listed_files(manifest, base / MANIFEST_NAME).get(rel)
            if entry is None:
                raise ArtifactError(f"`{base / MANIFEST_NAME}` records no hash for {rel}; re-export the artifact")
            if not hashed:
                check_file(base, rel, entry)
        files.append(target)
    return files
