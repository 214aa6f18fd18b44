"""Test data: a fixed random linear policy (HalfCheetah and Walker2d: 17 observations, 6 actions), its
episodes recorded as a minari dataset, and a tiny Decision Transformer.

(The harness's ``eva_bench.rl`` records the real datasets; a published package's tests may not import it.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import DecisionTransformerConfig, DecisionTransformerModel

STATE_DIM, ACT_DIM = 17, 6

JAX_MUJOCO_OPENGL = ("jax", "jaxlib", "mujoco", "OpenGL", "glfw")
"""What eva-rl must never need: dataset creation (jax) and the MuJoCo environments (MuJoCo, OpenGL)."""

Policy = Callable[[np.ndarray], np.ndarray]


def python_without(blocked: Sequence[str], script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter in which importing any of the packages ``blocked`` (top-level
    names) raises ``ImportError``, through a meta-path finder installed before anything else is imported."""
    prelude = textwrap.dedent(
        f"""
        import importlib.abc, sys

        BLOCKED = {set(blocked)!r}

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in BLOCKED:
                    raise ImportError(f"{{name}} is blocked in this test")
                return None

        sys.meta_path.insert(0, Block())
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    code = prelude + textwrap.dedent(script)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def random_policy(seed: int = 0) -> Policy:
    """``a = clip(W s, -1, 1)`` with W (d_a, d_s) drawn from N(0, 0.3^2)."""
    weight = np.random.default_rng(seed).normal(0, 0.3, (ACT_DIM, STATE_DIM))
    return lambda observation: np.clip(weight @ observation, -1.0, 1.0)


def record_minari(
    env_id: str,
    policy: Policy,
    episodes: int,
    dataset_id: str,
    *,
    root: Path,
    max_episode_steps: int,
    noise: Sequence[float] = (0.0,),
) -> Path:
    """Record ``episodes`` episodes of ``policy`` (episode i: reset seed i, Gaussian action noise of std
    ``noise[i % len(noise)]``) as the hdf5 minari dataset ``dataset_id`` under ``root``; its folder."""
    import gymnasium as gym

    rng = np.random.default_rng(0)
    env = gym.make(env_id, max_episode_steps=max_episode_steps)
    buffers = [_episode(env, policy, rng, noise[i % len(noise)], i) for i in range(episodes)]
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        import minari

        minari.create_dataset_from_buffers(
            dataset_id, buffers, env=env.spec, eval_env=env.spec, algorithm_name="random linear policy",
            author="eva-rl tests", author_email="eva-rl@localhost", code_permalink="packages/eva-rl/tests/rl_data.py",
            description=f"{episodes} episodes of a random linear policy on {env_id}", data_format="hdf5",
        )  # fmt: skip
    finally:
        env.close()
        if previous is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous
    return root / dataset_id


def _episode(env: Any, policy: Policy, rng: np.random.Generator, std: float, seed: int) -> Any:
    """One episode as a minari ``EpisodeBuffer``: observations (L + 1, d_s), actions (L, d_a), rewards (L,)."""
    from minari.data_collector import EpisodeBuffer

    observation, _ = env.reset(seed=seed)
    observations, actions, rewards, terminations, truncations = [observation], [], [], [], []
    while not (terminations and (terminations[-1] or truncations[-1])):
        action = np.clip(policy(observation) + (rng.normal(0.0, std, ACT_DIM) if std else 0.0), -1.0, 1.0)
        observation, reward, terminated, truncated, _ = env.step(action.astype(np.float32))
        observations.append(observation)
        actions.append(action.astype(np.float32))
        rewards.append(float(reward))
        terminations.append(bool(terminated))
        truncations.append(bool(truncated))
    return EpisodeBuffer(
        id=seed, seed=seed, observations=np.stack(observations), actions=np.stack(actions), rewards=rewards,
        terminations=terminations, truncations=truncations, infos={},
    )  # fmt: skip


def tiny_decision_transformer(
    state_dim: int = STATE_DIM, act_dim: int = ACT_DIM, *, hidden_size: int = 32, layers: int = 2, heads: int = 2,
    max_ep_len: int = 64, seed: int = 0,
) -> DecisionTransformerModel:  # fmt: skip
    """A random Decision Transformer (GPT-2 blocks with 4x MLPs, ReLU, tanh actions), in eval mode."""
    torch.manual_seed(seed)
    config = DecisionTransformerConfig(
        state_dim=state_dim, act_dim=act_dim, hidden_size=hidden_size, n_layer=layers, n_head=heads,
        n_inner=4 * hidden_size, activation_function="relu", max_ep_len=max_ep_len, action_tanh=True,
        bos_token_id=None, eos_token_id=None,
    )  # fmt: skip
    return DecisionTransformerModel(config).eval()
