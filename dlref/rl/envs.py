"""gymnasium environments for keras-rl2, and what dlref checks about one before training.

keras-rl2 was written for gym 0.x: `reset()` returns the observation alone and `step()` four
values. gymnasium 1.x returns (observation, info) and five values, with the end of an episode
split into `terminated` (the task ended: no future reward) and `truncated` (a time limit). The
adapter reports either as `done`, as gym did. This module imports gymnasium, not TensorFlow,
so the dlref process can check an env id before it creates a run folder.
"""

import difflib
import os

from dlref.errors import DlrefError

DEFAULT_ENV = "CartPole-v1"
# Continuous-control envs and the discrete version of the same task (or the nearest one).
DISCRETE_ALTERNATIVES = {
    "LunarLanderContinuous": "LunarLander-v3",
    "MountainCarContinuous": "MountainCar-v0",
    "Pendulum": "Acrobot-v1",
    "CarRacing": "LunarLander-v3",
    "BipedalWalker": "LunarLander-v3",
}


class GymAdapter:
    """A gymnasium env with gym 0.x's `reset` and `step`, seeded on its first reset."""

    def __init__(self, env, seed):
        self.env, self.seed = env, seed
        self.action_space, self.observation_space = env.action_space, env.observation_space
        self.action_space.seed(seed)
        self._first_reset = True

    def reset(self):
        seed, self._first_reset = (self.seed if self._first_reset else None), False
        observation, _ = self.env.reset(seed=seed)
        return observation

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        return observation, float(reward), bool(terminated or truncated), info

    def render(self, mode=None):
        return self.env.render()

    def close(self):
        self.env.close()


def make(env_id, seed, render_mode=None):
    """The env `env_id` wrapped for keras-rl2, seeded with `seed`."""
    gymnasium = _gymnasium(env_id)
    return GymAdapter(gymnasium.make(env_id, render_mode=render_mode), seed)


def _gymnasium(env_id):
    # SDL (pygame, used by the box2d and classic-control renderers) must not look for a display.
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    import gymnasium

    if env_id.startswith("ALE/"):
        import ale_py  # Registers the Atari envs (their ROMs ship with ale-py).

        gymnasium.register_envs(ale_py)
    return gymnasium


def describe(env_id):
    """What the DQN recipe needs to know about an env, checked without TensorFlow.

    Returns a dict: `observation` ('flat', 'image' or 'discrete'), `observation_shape`,
    `actions` (the number of discrete actions), `solved` (gymnasium's reward threshold or
    None), `max_episode_steps` and `render_fps`. Raises DlrefError for an unknown id, an env
    that cannot be made here, or a space the recipe cannot learn.
    """
    gymnasium = _gymnasium(env_id)
    if env_id not in gymnasium.registry:
        match = difflib.get_close_matches(env_id, list(gymnasium.registry), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(match)}?" if match else ""
        raise DlrefError(f"Unknown gymnasium env {env_id!r}.{hint} Ids look like CartPole-v1, "
                         "LunarLander-v3 or ALE/Breakout-v5.")
    from dlref.backend import quiet_stderr

    try:
        with quiet_stderr():  # The Atari emulator prints a banner.
            env = gymnasium.make(env_id)
    except Exception as error:  # A missing extra (box2d, mujoco), a missing ROM...
        raise DlrefError(f"Cannot make the env {env_id}: {type(error).__name__}: {error}") from None
    try:
        return _spaces(env_id, env, gymnasium.spaces)
    finally:
        env.close()


def _spaces(env_id, env, spaces):
    if not isinstance(env.action_space, spaces.Discrete):
        family = env_id.split("/")[-1].split("-")[0]
        alternative = DISCRETE_ALTERNATIVES.get(family, "CartPole-v1 or LunarLander-v3")
        raise DlrefError(
            f"{env_id} has a continuous action space ({env.action_space}); a DQN picks one of a "
            f"few discrete actions. Use a discrete env instead, such as {alternative}.")
    observation = env.observation_space
    if isinstance(observation, spaces.Discrete):
        kind, shape = "discrete", (int(observation.n),)
    elif isinstance(observation, spaces.Box) and len(observation.shape) == 1:
        kind, shape = "flat", tuple(observation.shape)
    elif isinstance(observation, spaces.Box) and (
            len(observation.shape) == 2 or (len(observation.shape) == 3
                                            and observation.shape[2] in (1, 3, 4))):
        kind, shape = "image", tuple(observation.shape)  # Grayscale, RGB or RGBA frames.
    else:
        raise DlrefError(f"{env_id}'s observations are {observation}; the DQN recipe learns from "
                         "a vector (dense network), an image (conv network) or a discrete state.")
    spec = env.spec
    return {"env": env_id, "observation": kind, "observation_shape": list(shape),
            "actions": int(env.action_space.n), "solved": spec.reward_threshold,
            "max_episode_steps": spec.max_episode_steps,
            "render_fps": env.metadata.get("render_fps") or 30}
