"""Every seed of a run is derived from the run's ``seed`` and a named salt, so that no two random streams
coincide and each stays fixed however the code around it changes.

The values are part of every run's results: changing one changes the weights a resumed run continues from
and the architectures a search proposes, so they never change. A salt that is not used any more is retired,
not reused.
"""

from __future__ import annotations

import numpy as np

# phases: derived_seed(run seed, SALT) seeds a training phase's batch order and supernet paths
PRETRAIN = 10  # supernet pre-training
FINETUNE = 20  # supernet fine-tuning
DISTILL = 11  # block-wise distillation of the supernet from the baseline
STANDALONE_PRETRAIN = 31  # a standalone network's pre-training (the distillation teacher's too: it is reused)
STANDALONE_FINETUNE = 32  # a standalone network's fine-tuning

# initial weights: torch.manual_seed(derived_seed(run seed, ...)) right before a model is built
SUPERNET_INIT = 99  # derived_seed(run seed, phase salt, SUPERNET_INIT): a phase's fresh supernet
STANDALONE_INIT = 30  # derived_seed(run seed, STANDALONE_INIT, arch_salt(arch)): a standalone backbone
STANDALONE_HEAD = 33  # derived_seed(run seed, STANDALONE_HEAD, arch_salt(arch)): its detection head

# inside a phase
ITERATION = 1  # derived_seed(phase seed, ITERATION, iteration): torch's generator at each training iteration
PATHS = 7  # numpy's generator of supernet paths: default_rng([phase seed, PATHS, iteration])


def derived_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (stable across processes and Python versions)."""
    return int(np.random.SeedSequence([abs(int(p)) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


def arch_salt(arch) -> int:
    """The salt of an architecture's own streams: the same architecture gets the same weights in every run
    with the same seed (a retrained winner, a rank-check candidate, the random baseline)."""
    return derived_seed(*arch)
