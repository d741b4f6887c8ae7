"""The plan of a search: its settings, objective, search space and budget (used by dlref.tuning).

Everything here is checked before a run folder exists, and stored in run.json so that
`dlref tune --resume` can tell whether it would continue the same search: the settings
(algorithm, budget, objective), the search space as JSON with a fingerprint, and the budget in
trials and epochs, exact for Hyperband.
"""

import dataclasses
import hashlib
import json

from dlref.errors import DlrefError, close_match
from dlref.training import fit_options, seeded_load, uses_roc_auc

ALGORITHMS = ("hyperband", "random", "bayesian")


@dataclasses.dataclass(frozen=True)
class Search:
    """--algorithm, its budget and --objective; None = the default (on resume: as recorded)."""

    algorithm: str | None = None
    objective: str | None = None
    max_epochs: int | None = None
    factor: int | None = None
    iterations: int | None = None
    max_trials: int | None = None


# --- Checks, before a run folder exists --------------------------------------------------------


def settings_for(search, module, config, data):
    """The resolved search settings (as stored in run.json), or a DlrefError naming the problem."""
    algorithm = search.algorithm or "hyperband"
    if algorithm not in ALGORITHMS:
        raise DlrefError(f"Unknown --algorithm {algorithm!r}.{close_match(algorithm, ALGORITHMS)}"
                         f" Known: {', '.join(ALGORITHMS)}.")
    resolved = {"algorithm": algorithm, "max_epochs": search.max_epochs or config.epochs}
    if search.max_epochs is not None and search.max_epochs < 1:
        raise DlrefError(f"--max-epochs must be at least 1, got {search.max_epochs}: "
                         "a budget of zero trains nothing.")
    if algorithm == "hyperband":
        if search.max_trials is not None:
            raise DlrefError("--max-trials is for random and bayesian; Hyperband's budget comes "
                             "from --max-epochs, --factor and --iterations.")
        resolved.update(factor=3 if search.factor is None else search.factor,
                        iterations=1 if search.iterations is None else search.iterations)
        if resolved["factor"] < 2 or resolved["iterations"] < 1:
            raise DlrefError("Hyperband needs --factor 2 or more and --iterations 1 or more "
                             f"(got {resolved['factor']} and {resolved['iterations']}).")
    else:
        if search.factor is not None or search.iterations is not None:
            raise DlrefError(f"--factor and --iterations are Hyperband's; {algorithm} search "
                             "runs --max-trials trials of --max-epochs epochs.")
        resolved["max_trials"] = 10 if search.max_trials is None else search.max_trials
        if resolved["max_trials"] < 1:
            raise DlrefError(f"--max-trials must be at least 1, got {resolved['max_trials']}: "
                             "a budget of zero trains nothing.")
    return {**resolved, **objective_for(search.objective, module, config, data)}


def objective_for(spec, module, config, data):
    """--objective NAME[:min|max], checked against the metrics this recipe's model logs."""
    name, _, direction = (spec or module.MONITOR).partition(":")
    available = available_metrics(module, config, data)
    if name not in available:
        raise DlrefError(f"Unknown objective {name!r}.{close_match(name, available)} "
                         f"Available metrics: {', '.join(available)}.")
    if not direction:
        from keras_tuner.src.engine.metrics_tracking import infer_metric_direction

        direction = module.MODE if name == module.MONITOR else infer_metric_direction(name)
    if direction not in ("min", "max"):
        raise DlrefError(f"Say whether {name} should go down or up: --objective {name}:min "
                         f"or --objective {name}:max.")
    return {"objective": name, "direction": direction}


def available_metrics(module, config, data):
    """What the model writes into Keras' logs, found by evaluating it on one validation batch
    of the size training validates with (a stateful network has its batch size built in)."""
    import keras

    model = module.build_model(config, data)
    x_val, y_val = data.val
    rows = min(len(y_val), fit_options(module, config)["validation_batch_size"])

    def head(part):  # A model with several inputs (seq2seq) takes a tuple of arrays.
        return tuple(head(p) for p in part) if isinstance(part, (tuple, list)) else part[:rows]

    names = list(model.evaluate(head(x_val), head(y_val), batch_size=rows, verbose=0,
                                return_dict=True))
    keras.backend.clear_session()
    extra = ["roc_auc"] if uses_roc_auc(module) else []
    return names + [f"val_{name}" for name in names + extra]


def describe_space(module, config):
    """(HyperParameters with defaults, the space as JSON) of the recipe's search_space."""
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    try:
        module.search_space(hp, config)
    except ValueError as error:
        raise DlrefError(f"The search space does not fit this config: {error}") from None
    return hp, space_json(hp)


def space_json(hp):
    """The hyperparameters of a keras-tuner HyperParameters, as plain JSON."""
    space = [{"name": p.name, "type": type(p).__name__,
              **{k: v for k, v in p.get_config().items() if k != "name"}} for p in hp.space]
    return json.loads(json.dumps(space))


def fingerprint(space, values):
    text = json.dumps({"hyperparameters": space, "config": values}, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def space_changes(old_space, new_space, old_values=None, new_values=None):
    """Human lines saying how a search space (and its base config) changed."""
    old, new = ({p["name"]: p for p in s} for s in (old_space, new_space))
    lines = [f"hyperparameter {n} removed" for n in old if n not in new]
    lines += [f"hyperparameter {n} added" for n in new if n not in old]
    for name in (n for n in old if n in new and old[n] != new[n]):
        keys = [k for k in {**old[name], **new[name]} if old[name].get(k) != new[name].get(k)]
        lines += [f"{name} {k}: {old[name].get(k)} -> {new[name].get(k)}" for k in keys]
    for key in (old_values or {}):
        before, after = old_values[key], (new_values or {}).get(key)
        if json.dumps(before, default=list) != json.dumps(after, default=list):
            lines.append(f"config {key}: {before} -> {after}")
    return lines


def budget(settings):
    """Trials and epochs the search will run; exact for Hyperband, from keras-tuner's brackets.

    Hyperband round r of bracket b trains size(b, r) models from epoch epochs(b, r - 1) to
    epochs(b, r), each warm-started from the best of round r - 1; one iteration runs every
    bracket once. The oracle's own methods give the sizes, so the figures match what runs.
    """
    if settings["algorithm"] != "hyperband":
        trials = settings["max_trials"]
        return {"trials": trials, "epochs": trials * settings["max_epochs"], "brackets": []}
    from keras_tuner.oracles import HyperbandOracle

    oracle = HyperbandOracle(max_epochs=settings["max_epochs"], factor=settings["factor"])
    brackets = []
    for bracket in reversed(range(oracle._get_num_brackets())):
        rounds = []
        for round_num in range(oracle._get_num_rounds(bracket)):
            start = oracle._get_epochs(bracket, round_num - 1) if round_num else 0
            rounds.append([oracle._get_size(bracket, round_num), start,
                           oracle._get_epochs(bracket, round_num)])
        brackets.append(rounds)
    iterations = settings["iterations"]
    trials = iterations * sum(size for rounds in brackets for size, _, _ in rounds)
    epochs = iterations * sum(size * (end - start) for rounds in brackets
                              for size, start, end in rounds)
    return {"trials": trials, "epochs": epochs, "brackets": brackets}


def budget_text(settings, plan):
    from dlref.text import plural

    trials, epochs = plural(plan["trials"], "trial"), plural(plan["epochs"], "epoch")
    if settings["algorithm"] != "hyperband":
        return (f"Budget: {trials} x {plural(settings['max_epochs'], 'epoch')} = {epochs} "
                f"({settings['algorithm']} search).")
    lines = [f"Budget: {trials}, {epochs} in total (Hyperband: max_epochs "
             f"{settings['max_epochs']}, factor {settings['factor']}, "
             f"{plural(settings['iterations'], 'iteration')} of "
             f"{plural(len(plan['brackets']), 'bracket')})."]
    for number, rounds in enumerate(plan["brackets"], start=1):
        (size, _, end), later = rounds[0], rounds[1:]
        steps = [f"{plural(size, 'model')} x {plural(end, 'epoch')}"]
        steps += [f"the best {size} on to epoch {end}" for size, _, end in later]
        lines.append(f"  bracket {number}: " + ", then ".join(steps))
    return "\n".join(lines)


def prepare(module, values, source, search):
    """(config, data, settings, plan, hp, space) or a DlrefError; no run folder yet."""
    config = module.Config(**values)
    if hasattr(module, "check_config"):
        module.check_config(config)  # Bad settings fail here, as in training.
    data = seeded_load(module, config, source)  # Bad data fails here.
    settings = settings_for(search, module, config, data)
    hp, space = describe_space(module, config)
    return config, data, settings, budget(settings), hp, space
