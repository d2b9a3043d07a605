"""Sensitivity analysis: registered importance scorers, the budget allocator, plan.json and the report.

`analyse(model, tokenizer, config, data=...)` scores every head, FFN neuron and tensor and returns a plan under
one budget (params, FLOPs or latency); `apply_plan_(model, Plan.load(path))` prunes a model to that plan.
"""

from compressor.sensitivity.allocate import allocate, predict
from compressor.sensitivity.analyse import AnalyseReport, analyse
from compressor.sensitivity.config import AnalyseConfig, Budget, parse_budget
from compressor.sensitivity.cost import encoder_flops, encoder_params, layer_shapes
from compressor.sensitivity.masks import make_batches
from compressor.sensitivity.plan import Plan, apply_plan_, check_plan_fits
from compressor.sensitivity.scorers import (
    SCORERS,
    Scorer,
    Scores,
    head_importance,
    score_fisher,
    score_head_gradient,
    score_magnitude,
    score_taylor,
    score_tensor_loss,
)

# The full list, in one place (compressor.sensitivity.config.SCORER_NAMES must name the same set).
SCORERS.register(
    "head-gradient",
    Scorer(
        score_head_gradient,
        needs_data=True,
        help="Σ|∂L/∂ξ| of head and neuron masks, normalised per layer (Michel et al. 2019)",
    ),
)
SCORERS.register(
    "taylor", Scorer(score_taylor, needs_data=True, help="first-order |θ·∂L/∂θ| summed per head, neuron and tensor")
)
SCORERS.register(
    "tensor-loss",
    Scorer(
        score_tensor_loss,
        needs_data=True,
        help=(
            "our proxy of Sensi-BERT's per-tensor ranking: loss increase when one tensor is magnitude-pruned, "
            "per weight"
        ),
    ),
)
SCORERS.register(
    "fisher",
    Scorer(
        score_fisher,
        needs_data=True,
        help="diagonal empirical Fisher Σ(∂L/∂ξ)² of head and neuron masks (Kwon et al. 2022)",
    ),
)
SCORERS.register("magnitude", Scorer(score_magnitude, needs_data=False, help="mean |w| per unit (data-free)"))

__all__ = [
    "SCORERS",
    "AnalyseConfig",
    "AnalyseReport",
    "Budget",
    "Plan",
    "Scorer",
    "Scores",
    "allocate",
    "analyse",
    "apply_plan_",
    "check_plan_fits",
    "encoder_flops",
    "encoder_params",
    "head_importance",
    "layer_shapes",
    "make_batches",
    "parse_budget",
    "predict",
]
