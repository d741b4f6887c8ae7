"""keras-rl2 kept in its own process (DESIGN.md section 7).

keras-rl2 1.0.5 runs only under legacy Keras and turns eager execution off for its whole
process, so the DQN recipe trains in a child process: `runner` (the dlref process: run folder,
progress, TensorBoard, signals) starts `worker` (`python -m dlref.rl.worker`), which imports
`legacy` first. `envs` adapts gymnasium to the gym 0.x API keras-rl2 expects.
"""
