"""What flushing denormals to zero does to latency: why the runtime sets ONNX Runtime's `set_denormal_as_zero`, and
why the benchmark's fixed-length input is real text rather than one padded sentence.

A padded position's attention score is masked with a huge negative number; the softmax's exponential of it lands
in the denormal range, which x86 computes on a slow microcode path. The flush-to-zero flags are per thread and
stay set once a session sets them, so every setting here is timed in a fresh process, settings alternating over
rounds (medians of the rounds' p50s).

    python bench/denormals.py                       # Softmax alone, and the SST-2 sweep's artifacts if present
    python bench/denormals.py --artifacts A B ...   # other artifact directories

It prints a table and writes the `denormals` section of docs/benchmarks.md (`--no-docs`: print only).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # `python bench/denormals.py`: import the repository's packages
    sys.path[0] = str(ROOT)

SWEEP_ROWS = ("optimum-fp32", "optimum-int8", "3-layers-s42")
SEQ = 128
VISIBLE = 10  # unmasked columns in the Softmax case


def _options(flush: bool):  # noqa: ANN202
    """The runtime's session settings at 1 thread, with or without the flush."""
    from exporters.runtime import session_options

    return session_options(1, flush_denormals=flush)


def _p50(session, feed: dict, runs: int) -> float:  # noqa: ANN001
    for _ in range(max(3, runs // 10)):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def child(flush: bool, artifacts: list[str], runs: int) -> dict[str, float]:
    """p50 ms of every case in this process, with the flag as given."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from exporters.measure import fixed_rows
    from exporters.runtime import Runtime

    heads = 8
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["y"], axis=-1)],
        "softmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, heads, SEQ, SEQ])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, heads, SEQ, SEQ])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    scores = np.random.default_rng(0).standard_normal((1, heads, SEQ, SEQ)).astype(np.float32)
    masked = scores.copy()
    masked[..., VISIBLE:] += np.finfo(np.float32).min  # what the exported graphs add for a padded position
    session = ort.InferenceSession(model.SerializeToString(), _options(flush), providers=["CPUExecutionProvider"])
    out = {
        "softmax, no masked column": _p50(session, {"x": scores}, runs * 3),
        f"softmax, {SEQ - VISIBLE} of {SEQ} columns masked": _p50(session, {"x": masked}, runs * 3),
    }
    texts = [line.split("\t")[0] for line in (ROOT / "samples/data/sst2/validation.tsv").read_text().splitlines()[1:]]
    for path in artifacts:
        runtime = Runtime(Path(path), threads=1)
        session = ort.InferenceSession(str(runtime.model_path), _options(flush), providers=["CPUExecutionProvider"])
        for fill in (False, True):
            feed = runtime.encode(fixed_rows(texts, 1, seq_len=SEQ, fill=fill), pad_to=SEQ)
            feed = {i.name: feed[i.name] for i in session.get_inputs()}
            label = "128 real tokens" if fill else "one sentence padded to 128"
            out[f"{_name(Path(path))}, {label}"] = _p50(session, feed, runs)
    return out


def _name(artifact: Path) -> str:
    """A run's name for its exported artifact (RUN/NN-export/artifact), else the directory's name."""
    return artifact.parents[1].name if artifact.name == "artifact" else artifact.name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", nargs="*", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=3, help="Processes per setting, alternating.")
    parser.add_argument("--runs", type=int, default=100, help="Timed runs per case and process.")
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.artifacts is None:
        sweep = ROOT / "runs" / "bench" / "sst2"
        args.artifacts = [sweep / name for name in SWEEP_ROWS if (sweep / name).is_dir()]
    from compressor.stages.compare import resolve

    args.artifacts = [resolve(a).artifact for a in args.artifacts]  # a run directory: its last exported artifact
    if args.child:
        print(json.dumps(child(args.child == "on", [str(a) for a in args.artifacts], args.runs)))
        return 0
    command = "python " + " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    results: dict[str, dict[str, list[float]]] = {"off": {}, "on": {}}
    for _ in range(args.rounds):
        for flag in ("off", "on"):
            argv_child = [sys.executable, str(Path(__file__).resolve()), "--child", flag, "--runs", str(args.runs)]
            argv_child += ["--artifacts", *map(str, args.artifacts)]
            done = subprocess.run(argv_child, check=True, capture_output=True, text=True, cwd=ROOT)
            for case, ms in json.loads(done.stdout.strip().splitlines()[-1]).items():
                results[flag].setdefault(case, []).append(ms)
    from bench.sweep import write_docs
    from compressor.stages.render import md_table
    from exporters.measure import machine_info

    rows = []
    for case, off in results["off"].items():
        a, b = statistics.median(off), statistics.median(results["on"][case])
        rows.append([case, f"{a:.3f}", f"{b:.3f}", f"{a / b:.2f}×"])
    table = md_table(["case (1 thread)", "p50 ms, denormals kept", "p50 ms, flushed to zero", "gain"], rows)
    print(table)
    if not args.no_docs:
        text = "\n".join(
            [
                "## Denormals: the masked softmax, with and without the flush",
                "",
                f"Generated by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
                f"{machine_info(1)['cpu']}, 1 thread, the median over {args.rounds} processes per setting "
                f"(alternating) of {args.runs} timed runs each. Artifact rows are the SST-2 sweep's when present.",
                "",
                "The flush is opt-in (`--flush-denormals` on `predict`, `benchmark` and `compare`; "
                "`Runtime(..., flush_denormals=True)`): ONNX Runtime sets the calling thread's FTZ/DAZ flags for the "
                "rest of the process. The SST-2 table's fixed-length input is 128 tokens of real text, where the "
                "flush changes nothing: a short sentence padded to 128 mostly measures masked positions.",
                "",
                table,
            ]
        )
        write_docs({"name": "denormals"}, text, ROOT / "docs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
