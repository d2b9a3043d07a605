"""Training glue: `config` (TrainConfig, torch-free), `loop` (HF Trainer, evaluation), `distill` (losses)."""
