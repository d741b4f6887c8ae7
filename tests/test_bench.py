"""scripts/bench.py's count of training FLOPs, which its GFLOP/s column and goal 2 rest on."""

import importlib.util
from pathlib import Path

import keras

_spec = importlib.util.spec_from_file_location(
    "bench", Path(__file__).resolve().parent.parent / "scripts" / "bench.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_the_first_layer_with_weights_has_no_input_gradient():
    # regression's network: forward + the kernel's gradient for the first layer (2 x 2 x
    # 784 x 32), and the input gradient as well for the second (3 x 2 x 32).
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dropout(0.1), keras.layers.Dense(1)])
    assert bench.training_flops(model) == 2 * 2 * 784 * 32 + 3 * 2 * 32


def test_layers_after_an_embedding_need_their_input_gradient():
    model = keras.Sequential([keras.Input((20,), dtype="int32"), keras.layers.Embedding(50, 8),
                              keras.layers.Conv1D(4, 3), keras.layers.GlobalMaxPooling1D(),
                              keras.layers.Dense(1)])
    assert bench.training_flops(model) == 3 * 2 * (3 * 8 * 4) * 18 + 3 * 2 * 4


def test_convolutions_count_each_output_position_and_lstms_their_recurrence():
    conv = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Rescaling(1 / 255),
                             keras.layers.Conv2D(2, 3), keras.layers.Flatten(),
                             keras.layers.Dense(3)])
    assert bench.training_flops(conv) == 2 * 2 * 9 * 2 * 36 + 3 * 2 * 72 * 3
    lstm = keras.Sequential([keras.Input((10, 4)), keras.layers.LSTM(8), keras.layers.Dense(1)])
    # Per step: the input kernel without its input gradient, the recurrent one with it.
    assert bench.training_flops(lstm) == 10 * (2 * 2 * 4 * 32 + 3 * 2 * 8 * 32) + 3 * 2 * 8


def test_unknown_costs_give_none():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    nested = keras.Sequential([keras.Input((4,)), inner, keras.layers.Dense(1)])
    assert bench.training_flops(nested) is None
    normed = keras.Sequential([keras.Input((4,)), keras.layers.LayerNormalization(),
                               keras.layers.Dense(1)])
    assert bench.training_flops(normed) is None


def test_the_matmul_ceiling_times_the_matmuls_the_flops_count():
    model = keras.Sequential([keras.Input((30,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dropout(0.1), keras.layers.Dense(3)])
    matmuls = bench.training_matmuls(model, 16)
    assert [m[:3] for m in matmuls] == [("", (16, 30), (30, 8)), ("left", (16, 30), (16, 8)),
                                        ("", (16, 8), (8, 3)), ("left", (16, 8), (16, 3)),
                                        ("right", (16, 3), (8, 3))]
    assert sum(m[3] for m in matmuls) == 16 * bench.training_flops(model)
    assert bench.matmul_ceiling(model, 16, keras.backend.backend(), repeat=1,
                                seconds=0.01) > 0
    conv = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3),
                             keras.layers.Flatten(), keras.layers.Dense(1)])
    assert bench.training_matmuls(conv, 16) is None
    assert bench.matmul_ceiling(conv, 16, keras.backend.backend()) is None
