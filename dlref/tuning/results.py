"""What a search shows: progress lines, and the run folder's trials.csv, best.toml and run.json.

`SearchLog` takes the place of keras-tuner's Display on the oracle, so it runs where the oracle
lives (the only process, or the chief) and sees every trial, whichever worker trained it.
"""

import csv
import dataclasses
import io as stdio
import math
import time

from keras_tuner.src.engine.oracle import Display

from dlref import config as configlib
from dlref import io, runs
from dlref.text import plural

COMPLETED = "COMPLETED"


def config_for(module, config, hyperparameters):
    """The recipe Config a trial's hyperparameters stand for."""
    return module.search_space(hyperparameters.copy(), config)


@dataclasses.dataclass
class Results:
    """trials.csv, best.toml and run.json, rewritten from the oracle's trials."""

    run_dir: object
    module: object
    config: object
    settings: dict
    budget: dict

    def trial_epochs(self, trial):
        values = trial.hyperparameters.values
        if "tuner/epochs" in values:  # Hyperband: from tuner/initial_epoch to tuner/epochs.
            return values["tuner/epochs"] - values.get("tuner/initial_epoch", 0)
        return self.settings["max_epochs"]

    def ranked(self, oracle):
        """Completed trials best first, then the others in the order they started."""
        trials = sorted(oracle.trials.values(), key=lambda t: t.trial_id)
        done = [t for t in trials if t.status == COMPLETED and not _nan(t.score)]
        done.sort(key=lambda t: t.score, reverse=self.settings["direction"] == "max")
        return done + [t for t in trials if t not in done]

    def write(self, oracle, log):
        ranked = self.ranked(oracle)
        self._write_csv(oracle, ranked, log)
        done = [t for t in ranked if t.status == COMPLETED and not _nan(t.score)]
        if done:
            io.write_text(self.run_dir / "best.toml", self.best_toml(done[0], len(ranked)))
        counts = {status.lower(): sum(t.status == status for t in ranked)
                  for status in ("COMPLETED", "RUNNING", "FAILED", "INVALID")}
        runs.update_manifest(
            self.run_dir, trials={**counts, "total": len(ranked)},
            epochs_completed=sum(self.trial_epochs(t) for t in ranked if t.status == COMPLETED),
            best={"trial": done[0].trial_id, "value": float(done[0].score)} if done else None,
        )
        return ranked

    def _write_csv(self, oracle, ranked, log):
        names = [hp.name for hp in oracle.hyperparameters.space]
        hyperband = self.settings["algorithm"] == "hyperband"
        header = ["rank", "trial", "status", self.settings["objective"], "epochs", "seconds",
                  "worker", *(["bracket", "round", "from_trial"] if hyperband else []), *names]
        buffer = stdio.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        for rank, trial in enumerate(ranked, start=1):
            values = trial.hyperparameters.values
            scored = trial.status == COMPLETED and not _nan(trial.score)
            row = [rank if scored else "", trial.trial_id, trial.status.lower(),
                   trial.score if scored else "", self.trial_epochs(trial),
                   log.seconds.get(trial.trial_id, ""), log.workers.get(trial.trial_id, "")]
            if hyperband:
                row += [values.get("tuner/bracket", ""), values.get("tuner/round", ""),
                        values.get("tuner/trial_id", "")]
            writer.writerow(row + [values.get(name, "") for name in names])
        io.write_text(self.run_dir / "trials.csv", buffer.getvalue())

    def best_toml(self, trial, total):
        values = dataclasses.asdict(config_for(self.module, self.config, trial.hyperparameters))
        # The epochs the best trial trained for; `dlref train` adds early stopping where set.
        values["epochs"] = trial.hyperparameters.values.get("tuner/epochs",
                                                            self.settings["max_epochs"])
        summary = (f"Best of {plural(total, 'trial')} of {self.run_dir.name} "
                   f"({self.settings['algorithm']}): trial {trial.trial_id}, "
                   f"{self.settings['objective']} {trial.score:.6g}")
        # The data the search ran on, so that `dlref train --config best.toml` trains on it too.
        source = runs.read_manifest(self.run_dir).get("source") or {}
        return configlib.to_toml(self.module.NAME, values, summary=summary, data=source)

    def record_memory(self, rss, peak):
        runs.update_manifest(self.run_dir, memory={"rss_mib_after_trial": rss,
                                                   "peak_rss_mib": peak})


def _nan(value):
    return value is None or (isinstance(value, float) and math.isnan(value))


class SearchLog(Display):
    """Replaces keras-tuner's Display on the oracle: progress lines and outputs per trial."""

    def __init__(self, oracle, results):
        super().__init__(oracle, verbose=1)
        self.results, self.started = results, time.time()
        self.seconds, self.workers, self._began = {}, {}, {}

    def get_state(self):
        return {**super().get_state(), "seconds": self.seconds, "workers": self.workers}

    def set_state(self, state):
        super().set_state(state)
        self.seconds, self.workers = state.get("seconds", {}), state.get("workers", {})

    def on_trial_begin(self, trial):
        self._began[trial.trial_id] = time.time()
        worker = next((tuner for tuner, t in self.oracle.ongoing_trials.items()
                       if t.trial_id == trial.trial_id), "")
        self.workers[trial.trial_id] = worker
        values = trial.hyperparameters.values
        shown = " ".join(f"{k}={self.format_value(v)}" for k, v in values.items()
                         if not k.startswith("tuner/"))
        epochs = (f"epochs {values['tuner/initial_epoch'] + 1}-{values['tuner/epochs']}"
                  if "tuner/epochs" in values else f"{self.results.settings['max_epochs']} epochs")
        on = f" on {worker}" if worker and worker != "tuner0" else ""
        print(f"{self._name(trial)} started{on}: {shown}  ({epochs})", flush=True)

    def on_trial_end(self, trial):
        began = self._began.pop(trial.trial_id, None)
        if began is not None:
            self.seconds[trial.trial_id] = round(time.time() - began, 2)
        ranked = self.results.write(self.oracle, self)
        objective = self.results.settings["objective"]
        score = (f"{objective} {trial.score:.4f}" if trial.status == COMPLETED
                 and not _nan(trial.score) else trial.status.lower())
        best = ranked[0] if ranked and ranked[0].status == COMPLETED else None
        best_text = f"best {best.score:.4f} (trial {best.trial_id})" if best else "no best yet"
        elapsed = time.strftime("%H:%M:%S", time.gmtime(time.time() - self.started))
        print(f"{self._name(trial)} done: {score}, {best_text}  "
              f"({self.seconds.get(trial.trial_id, 0):.1f} s, elapsed {elapsed})", flush=True)

    def _name(self, trial):
        # keras-tuner numbers trials from 0 in the order they start.
        total = self.results.budget["trials"]
        return f"trial {trial.trial_id} ({int(trial.trial_id) + 1} of {total})"
