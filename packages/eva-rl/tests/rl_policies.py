"""A fixed random linear policy for the tests (HalfCheetah and Walker2d: 17 observations, 6 actions)."""

from __future__ import annotations

import numpy as np

from eva_rl.policies import LinearPolicy

STATE_DIM, ACT_DIM = 17, 6


def random_policy(seed: int = 0) -> LinearPolicy:
    rng = np.random.default_rng(seed)
    return LinearPolicy(rng.normal(0, 0.3, (ACT_DIM, STATE_DIM)), np.zeros(STATE_DIM), np.ones(STATE_DIM))
