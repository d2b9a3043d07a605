"""The pipeline's stages, one module each, registered here once, in pipeline order.

A stage module is importable without torch (its work imports the training stack inside `run`), so the CLI and the
report can read the registry on an edge install. See compressor/stages/base.py for what a stage declares.
"""

from compressor.stages.analyse import AnalyseStage
from compressor.stages.base import STAGES, Context, Stage
from compressor.stages.benchmark import BenchmarkStage
from compressor.stages.export import ExportStage
from compressor.stages.finetune import FinetuneStage
from compressor.stages.merge import MergeStage
from compressor.stages.prune import PruneStage

for _stage in (FinetuneStage(), MergeStage(), AnalyseStage(), PruneStage(), ExportStage(), BenchmarkStage()):
    STAGES.register(_stage.key, _stage)

__all__ = ["STAGES", "Context", "Stage"]
