"""keras-rl2 kept in its own process (DESIGN.md section 7).

keras-rl2 1.0.5 runs only under legacy Keras and turns eager execution off for its whole
process, so the DQN recipe trains in a child process: `runner` (the dlref process: run folder,
progress, TensorBoard, signals) starts `worker` (`python -m dlref.rl.worker`), which imports
`legacy` first. `envs` adapts gymnasium to the gym 0.x API keras-rl2 expects.
"""

from pathlib import Path

from dlref import io


def read_state(run_dir):
    """The worker's checkpoints/state.json: the step and episode its last weights are from,
    the best test ({"step", "value"} or None), the next test's step, whether training is over.
    A run stopped before its first save has none: it starts at step 0."""
    path = Path(run_dir) / "checkpoints" / "state.json"
    state = io.read_json(path) if path.is_file() else {}
    return {"step": 0, "episode": 0, "best": None, "next_test": None, "fit_done": False,
            **state}
