"""Deep Q-network with keras-rl2: an agent that learns to act in a gymnasium env (chapter 12).

The agent sees an observation (CartPole's four numbers, LunarLander's eight, Breakout's
screen), picks one of a few discrete actions with an epsilon-greedy policy over the Q-values a
network predicts, and learns those Q-values from a replay memory of its own steps, against a
slowly updated copy of the network (the target model). The book's settings are the defaults:
CartPole-v1 with a 16-16-16 network, Adam 1e-3, epsilon annealed from 1.0 to 0.1 over 10,000
steps, 50,000 steps in all; presets `dqn-lunarlander` and `dqn-breakout` hold the book's other
two agents, and `dlref train dqn --env ID` picks them for those envs.

What it reaches here (2 CPU cores, the book's settings): with seed 42 the 5-episode tests rose
from 217 at step 5,279 to 488 at step 25,168 and then swung between 120 and 460 (DQN's
instability); the kept agent, the best test's, scored 426 over 20 test episodes against 18 for
random actions (CartPole-v1 counts 475 as solved), in 5.4 minutes. With seed 0 the mean of 20
test episodes passed 195 at step 7,614 (under a minute) and 475 at step 22,860.

The engine is keras-rl2, which runs under legacy Keras in its own process
(DESIGN.md section 7): dlref's runner starts `dlref.rl.worker`, which calls the functions
below. This module imports nothing heavy at the top, so the dlref process reads `Config`
without TensorFlow.
"""

import dataclasses

import numpy as np

NAME = "dqn"
CHAPTER = 12
SUMMARY = "Deep Q-network (keras-rl2) on a gymnasium env: CartPole, LunarLander, Breakout"
MONITOR = "test_reward"  # Mean reward of the periodic test episodes: picks the best weights.
MODE = "max"
ENGINE = "keras-rl2"  # Trains in its own process (dlref.rl), not through training.py.


# --- Config ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config:
    env: str = "CartPole-v1"  # gymnasium env id with discrete actions (--env)
    steps: int = 50_000  # environment steps to train (--steps); the book's CartPole run
    hidden_units: tuple = (16, 16, 16)  # dense layers for vector observations (the book's CartPole)
    conv_dense_units: int = 512  # image observations: the dense layer after the book's 3 convs
    memory_limit: int = 50_000  # replay memory (SequentialMemory), in steps
    window_length: int = 1  # observations stacked into one state (4 frames for Atari)
    warmup_steps: int = 10  # steps of experience before the first update
    epsilon_max: float = 1.0  # exploration at the start: the share of random actions
    epsilon_min: float = 0.1  # exploration after the annealing steps
    epsilon_steps: int = 10_000  # steps over which epsilon falls linearly from max to min
    epsilon_test: float = 0.05  # exploration in test episodes
    gamma: float = 0.99  # discount of future rewards
    learning_rate: float = 0.001  # Adam (the book: 1e-3 CartPole, 2.5e-4 LunarLander, Breakout)
    batch_size: int = 32  # transitions per update, sampled from the replay memory
    train_interval: int = 1  # steps between updates (the book's Breakout: 4)
    target_model_update: float = 0.01  # below 1: soft update rate per step; 1+: copy every N steps
    delta_clip: float = 0.0  # Huber loss threshold on the TD error; 0 = squared error (Breakout: 1)
    double_dqn: bool = True  # double DQN: the online network picks, the target network scores
    dueling: bool = False  # dueling network: separate state-value and advantage heads
    dueling_type: str = "avg"  # how the dueling heads combine: avg, max or naive
    max_episode_steps: int = 0  # end an episode after this many steps; 0 = the env's own limit
    test_interval: int = 5_000  # steps between periodic tests (at the next episode's end)
    test_episodes: int = 5  # episodes of each periodic test; their mean picks the best weights
    stop_at_reward: float = 0.0  # end training once a periodic test's mean reaches this; 0 = never
    eval_episodes: int = 20  # test episodes of the final evaluation, and of the random baseline
    record_episode: bool = True  # save a GIF of one test episode in plots/ (render_mode rgb_array)
    seed: int = 42  # env, exploration, replay sampling and initial weights


def check_config(config):
    """Settings that cannot train, refused before a run folder exists."""
    from dlref.errors import DlrefError

    at_least_one = ("steps", "memory_limit", "window_length", "epsilon_steps", "batch_size",
                    "train_interval", "test_interval", "test_episodes", "eval_episodes",
                    "conv_dense_units")
    for key in at_least_one:
        if getattr(config, key) < 1:
            raise DlrefError(f"{key} must be at least 1, got {getattr(config, key)}.")
    for key in ("epsilon_max", "epsilon_min", "epsilon_test"):
        if not 0 <= getattr(config, key) <= 1:
            raise DlrefError(f"{key} is a probability, from 0 to 1; got {getattr(config, key)}.")
    if config.epsilon_min > config.epsilon_max:
        raise DlrefError(f"epsilon_min ({config.epsilon_min}) is above epsilon_max "
                         f"({config.epsilon_max}); epsilon anneals from max down to min.")
    if not config.hidden_units or any(not isinstance(u, int) or u < 1
                                      for u in config.hidden_units):
        raise DlrefError(f"hidden_units needs whole numbers of at least 1, e.g. [64, 32, 16]; "
                         f"got {list(config.hidden_units)}.")
    if config.dueling_type not in ("avg", "max", "naive"):
        raise DlrefError(f"dueling_type is avg, max or naive; got {config.dueling_type!r}.")
    if config.target_model_update <= 0 or config.learning_rate <= 0 or config.warmup_steps < 0:
        raise DlrefError("target_model_update and learning_rate must be above 0, and "
                         "warmup_steps 0 or more.")
    if config.memory_limit < config.batch_size + config.window_length:
        raise DlrefError(f"memory_limit ({config.memory_limit}) must hold at least a batch "
                         f"({config.batch_size}) of states of window_length "
                         f"{config.window_length}.")


# --- Observations ----------------------------------------------------------------------------
# keras-rl2 passes every observation, reward and batch through a processor (rl.core.Processor).
# These two follow its interface without importing it, so this module stays light.


class _Processor:
    def process_step(self, observation, reward, done, info):
        return self.process_observation(observation), self.process_reward(reward), done, info

    def process_observation(self, observation):
        return observation

    def process_reward(self, reward):
        return reward

    def process_info(self, info):
        return info

    def process_action(self, action):
        return action

    def process_state_batch(self, batch):
        return batch

    @property
    def metrics(self):
        return []

    @property
    def metrics_names(self):
        return []


class AtariProcessor(_Processor):
    """The book's Breakout processor: 84x84 grayscale frames kept as uint8 in the replay memory
    (1M frames take 7 GB, four times less than float32), scaled to 0-1 per batch, and rewards
    clipped to -1..1 so one learning rate suits every game."""

    SIZE = (84, 84)

    def process_observation(self, observation):
        from PIL import Image

        frame = np.asarray(observation, dtype=np.uint8)
        if frame.ndim == 3 and frame.shape[2] != 3:  # One channel, or RGBA.
            frame = frame[..., 0] if frame.shape[2] == 1 else frame[..., :3]
        image = Image.fromarray(frame)
        return np.asarray(image.resize(self.SIZE, Image.BILINEAR).convert("L"), dtype=np.uint8)

    def process_state_batch(self, batch):
        return batch.astype("float32") / 255.0

    def process_reward(self, reward):
        return float(np.clip(reward, -1.0, 1.0))


class OneHotProcessor(_Processor):
    """Envs whose state is one number of n (FrozenLake, Taxi): a one-hot vector of n."""

    def __init__(self, states):
        self.states = states

    def process_observation(self, observation):
        return np.eye(self.states, dtype=np.float32)[int(observation)]


def processor(info):
    """The processor for an env's observations (envs.describe's `info`), or None."""
    if info["observation"] == "image":
        return AtariProcessor()
    if info["observation"] == "discrete":
        return OneHotProcessor(info["observation_shape"][0])
    return None


# --- Model -----------------------------------------------------------------------------------


def build_model(config, info, keras):
    """The Q-network: one linear output per action.

    Vector observations: the book's dense network (Flatten, then hidden_units of ReLU). Image
    observations: the book's Breakout network (32 8x8 / 4, 64 4x4 / 2, 64 3x3 convolutions,
    then conv_dense_units), on window_length stacked 84x84 frames.

    Args:
        keras: the legacy Keras module (tf-keras) of the worker process.
    """
    layers = keras.layers
    if info["observation"] == "image":
        inputs = keras.Input((config.window_length, *AtariProcessor.SIZE[::-1]))
        x = layers.Permute((2, 3, 1))(inputs)  # Frames last: (84, 84, window).
        for filters, size, stride in ((32, 8, 4), (64, 4, 2), (64, 3, 1)):
            x = layers.Conv2D(filters, size, strides=stride, activation="relu")(x)
        x = layers.Dense(config.conv_dense_units, activation="relu")(layers.Flatten()(x))
    else:
        inputs = keras.Input((config.window_length, *info["observation_shape"]))
        x = layers.Flatten()(inputs)
        for units in config.hidden_units:
            x = layers.Dense(units, activation="relu")(x)
    outputs = layers.Dense(info["actions"], activation="linear", name="q_values")(x)
    return keras.Model(inputs, outputs, name="q_network")


# --- Agent -----------------------------------------------------------------------------------


def build_agent(config, info, keras, optimizer):
    """A compiled keras-rl2 DQNAgent with the book's memory and annealed epsilon-greedy policy.

    Args:
        optimizer: a legacy Keras optimizer (keras-rl2 calls its get_updates).
    """
    from rl.agents.dqn import DQNAgent
    from rl.memory import SequentialMemory
    from rl.policy import EpsGreedyQPolicy, LinearAnnealedPolicy

    memory = SequentialMemory(limit=config.memory_limit, window_length=config.window_length)
    policy = LinearAnnealedPolicy(EpsGreedyQPolicy(), attr="eps", value_max=config.epsilon_max,
                                  value_min=config.epsilon_min, value_test=config.epsilon_test,
                                  nb_steps=config.epsilon_steps)
    target_update = config.target_model_update
    agent = DQNAgent(
        model=build_model(config, info, keras), nb_actions=info["actions"], memory=memory,
        policy=policy, processor=processor(info), nb_steps_warmup=config.warmup_steps,
        gamma=config.gamma, batch_size=config.batch_size, train_interval=config.train_interval,
        target_model_update=int(target_update) if target_update >= 1 else target_update,
        delta_clip=config.delta_clip or np.inf, enable_double_dqn=config.double_dqn,
        enable_dueling_network=config.dueling, dueling_type=config.dueling_type,
    )
    agent.compile(optimizer, metrics=["mae"])
    return agent


def epsilon(agent):
    """The exploration rate the policy uses at the agent's current step."""
    return float(agent.policy.get_current_value())
