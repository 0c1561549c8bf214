"""The one-shot protocol: the engine's phases, the one training loop, distillation, path sampling, the search,
BN recalibration, the checks before a run, seeds and the distributed helpers."""
