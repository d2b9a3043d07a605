"""The ground every other package stands on: where each model family keeps its parts, and structural surgery.

`table` (the architecture table, torch-free), `parts` (find the parts of a loaded model), `modules` (the modules a
pruned layer may need), `structure` (the saved description of a pruned model), `surgery` (physical removal).
"""
