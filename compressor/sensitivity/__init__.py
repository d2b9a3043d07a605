"""Sensitivity analysis: registered importance scorers, the budget allocator, plan.json and its rendering.

Modules: `config` (AnalyseConfig and budgets, torch-free), `scorers` (SCORERS), `masks` (head/neuron masks and
batches), `cost` (params/FLOPs per unit), `latency` (measured cost table), `allocate` (budget → Plan), `plan`
(the Plan file), `analyse` (the verb), `view` (heatmap, terminal table, sensitivity.json).
"""
