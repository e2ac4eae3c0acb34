"""Fine-tuning the edge encoder (EfficientNet-Lite0) on the photos, so the default model can beat a frozen probe.

The result is an ordinary linear run (ARCHITECTURE.md, contract 1): its encoder weights are a safetensors file inside
the run directory and its head.json is the network's final linear layer, so export, INT8 calibration, parity,
eval and bench treat it like any other run. Modules: `augment` (the augmentation table), `data` (validation
split and decoded crops), `model` (freezing, head conversion), `weights` (safetensors files and resumable
checkpoints), `history` (per-epoch metrics and curves), `trainer` (the loop and the run directory).
"""
