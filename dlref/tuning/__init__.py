"""dlref tune: keras-tuner over a recipe's `search_space` (DESIGN.md section 8, chapter 6).

`tune` checks everything it can before a run folder exists (recipe tunable, data, objective,
budget, roles), prints the budget, then runs keras-tuner into runs/<recipe>/tune-.../:
run.json, the keras-tuner project (project/), trials.csv, best.toml and TensorBoard logs with
the HParams dashboard (logs/). `resume` continues a stopped search in its folder, after checking
that the data and the search space are the ones it started with.

Modules: `plan` (settings, objective, search space, budget), `engine` (the
keras-tuner classes), `results` (progress and outputs), `distributed` (chief and
worker roles), `bench` (make bench).
"""

import dataclasses
import json
import sys
import time

from dlref import config as configlib
from dlref import backend, io, registry, runs
from dlref.data import Source
from dlref.errors import DlrefError
from dlref.interrupts import Latch
from dlref.text import plural
from dlref.training import describe_data, resolve_config, show_data, source_and_recipe, versions
from dlref.tuning.distributed import Cluster, check, check_port_free
from dlref.tuning.plan import Search, budget, budget_text, fingerprint, prepare, space_changes

__all__ = ["Search", "Cluster", "tune", "resume", "budget", "benchmark"]

# --- A new search ------------------------------------------------------------------------------


def tune(name, *, source=Source(), config_file=None, overrides=(), seed=None, search=Search(),
         cluster=Cluster(), run_name=None, runs_dir=None, argv=(), shortcuts=None):
    """Runs a search (or this worker's share of one); returns the run folder."""
    root = runs.runs_root(runs_dir)  # A runs folder that is a file fails before the data.
    name, source = source_and_recipe(name, source, config_file)
    recipe, preset, values = resolve_config(name, config_file, overrides, None, seed,
                                            shortcuts)
    if not registry.info(recipe)["tunable"]:
        tunable = [r for r in registry.RECIPES if registry.info(r)["tunable"]]
        raise DlrefError(f"Recipe {recipe} has no search_space, so it is not tunable. "
                         f"Tunable recipes: {', '.join(tunable)}.")
    if run_name is not None:
        runs.validate_name(run_name)
    check(cluster)
    module = registry.load(recipe, task="tune")
    config, data, settings, plan, hp, space = prepare(module, values, source, search)
    show_data(data)
    if cluster.role == "worker":
        from dlref.tuning.distributed import work

        return work(module, config, data, settings, space, cluster, root, run_name)
    if cluster.role == "chief":
        check_port_free(cluster)
    run_dir = runs.create_run(root, recipe, run_name, prefix="tune-")
    with runs.locked(run_dir):
        return _start(run_dir, module, config, data, settings, plan, hp, space, cluster,
                      recipe=recipe, preset=preset, values=values, source=source, argv=argv)


def _start(run_dir, module, config, data, settings, plan, hp, space, cluster, *, recipe, preset,
           values, source, argv):
    """A new search in its folder: manifest, HParams config, budget, then the search."""
    runs.new_manifest(
        run_dir, "tune", recipe, argv, preset=preset, config=values,
        source=source.to_dict(), seed=config.seed, versions=versions(),
        data=describe_data(data), search=settings, budget=plan,
        search_space={"fingerprint": fingerprint(space, values), "hyperparameters": space},
        role=cluster.role or "single", oracle=cluster.oracle, monitor=settings["objective"],
        mode=settings["direction"], epochs_completed=0, best=None, timings={"seconds": 0.0},
        backend=backend.current(),
    )
    from dlref.tuning import engine

    engine.write_hparams_config(run_dir / "logs", hp, settings["objective"])
    print(budget_text(settings, plan), flush=True)
    return _search(module, config, data, run_dir, settings, plan, cluster)


# --- Resume ------------------------------------------------------------------------------------


def resume(ref, *, name=None, source=Source(), config_file=None, overrides=(), seed=None,
           search=Search(), cluster=Cluster(), runs_dir=None, argv=()):
    """Continues a stopped search in its folder; refuses if its data or search space changed.

    Options given again (NAME, --data, --set, ...) must describe the same search: rerunning
    the original command with --resume works, a different one is refused with what differs.
    """
    run_dir = runs.find_run(ref, runs.runs_root(runs_dir))
    with runs.locked(run_dir):
        return _resume(run_dir, name=name, source=source, config_file=config_file,
                       overrides=overrides, seed=seed, search=search, cluster=cluster, argv=argv)


def _resume(run_dir, *, name, source, config_file, overrides, seed, search, cluster, argv):
    manifest = runs.read_manifest(run_dir)
    if manifest.get("kind") != "tune":
        raise DlrefError(f"{run_dir} is a {manifest.get('kind', 'unknown')} run, not a tuning "
                         f"run (dlref tune makes folders named tune-...).")
    if manifest["status"] == "completed":
        raise DlrefError(f"{run_dir} has already completed; nothing to resume.")
    role = manifest.get("role", "single")
    if role == "worker" or (cluster.role or "single") != role:
        raise DlrefError(f"{run_dir} was a {role} search: resume it with "
                         f"{_resume_command(run_dir, manifest)}.")
    _check_project(run_dir)
    check(cluster)
    module = registry.load(manifest["recipe"], manifest.get("backend"))
    values = _values_on_resume(manifest, module, name, config_file, overrides, seed)
    source = source.over(Source.from_dict(manifest["source"]))
    config, data, settings, plan, hp, space = prepare(
        module, values, source, _search_on_resume(manifest["search"], search))
    if data.fingerprint != manifest["data"]["fingerprint"]:
        raise DlrefError(
            f"The data changed since {run_dir.name} started (fingerprint {data.fingerprint}, was "
            f"{manifest['data']['fingerprint']}; {source.describe()}): start a new search instead "
            "of mixing trials on two datasets.")
    changes = space_changes(manifest["search_space"]["hyperparameters"], space,
                            manifest["config"], values)
    changes += [f"--{k.replace('_', '-')}: {manifest['search'].get(k)} -> {v}"
                for k, v in settings.items() if manifest["search"].get(k) != v]
    if changes:
        what = "search space" if not changes[0].startswith("--") else "search settings"
        raise DlrefError(f"The {what} changed since {run_dir.name} started: "
                         + "; ".join(changes) + ". Start a new search instead of mixing trials "
                         "of two searches in one ranking.")
    if cluster.role == "chief":
        check_port_free(cluster)
    io.remove_temporaries(run_dir)  # What a kill mid-write left; the lock keeps others out.
    runs.mark_running(run_dir)
    runs.update_manifest(run_dir, oracle=cluster.oracle, resumed=[
        *manifest.get("resumed", []), {"argv": list(argv), "at": time.strftime("%FT%T%z")}])
    done = (manifest.get("trials") or {}).get("completed", 0)
    print(f"Resuming {run_dir}: {done} of {plural(plan['trials'], 'trial')} completed.",
          flush=True)
    return _search(module, config, data, run_dir, settings, plan, cluster)


def _check_project(run_dir):
    """keras-tuner reloads its state files on resume and fails on a damaged one with a bare
    JSONDecodeError; this names the file first, while the run is still untouched."""
    project = run_dir / "project"
    for path in sorted([*project.glob("*.json"), *project.glob("trial_*/trial.json")]):
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            problem = None if isinstance(state, dict) else "not a JSON object"
        except OSError as error:
            problem = error.strerror
        except ValueError as error:
            problem = f"not valid JSON: {error}"
        if problem:
            raise DlrefError(
                f"{path} is truncated or damaged ({problem}), so keras-tuner cannot reload this "
                f"search. The trials so far are kept in {run_dir / 'trials.csv'} and best.toml: "
                "restore the file from a backup, or start a new search with the same options.")


def _values_on_resume(manifest, module, name, config_file, overrides, seed):
    layers = [("run.json", manifest["config"])]
    if name:
        recipe, preset = registry.resolve(name)
        if recipe != manifest["recipe"]:
            raise DlrefError(f"This search tunes {manifest['recipe']}, not {recipe}.")
        if preset:
            layers.append((f"preset {name}", preset.get("config", {})))
    if config_file:
        layers.append((str(config_file), configlib.read_toml(config_file).get("config", {})))
    layers.append(("--set", configlib.parse_overrides(overrides)))
    layers.append(("--seed", {"seed": seed} if seed is not None else {}))
    return configlib.merge(configlib.field_defaults(module.Config), layers)


def _search_on_resume(recorded, given):
    """The recorded settings, with what was given again on top (compared afterwards)."""
    if given.algorithm and given.algorithm != recorded["algorithm"]:
        raise DlrefError(f"This search uses {recorded['algorithm']}, not {given.algorithm}: "
                         "resume it as it started, or start a new search.")
    objective = given.objective or f"{recorded['objective']}:{recorded['direction']}"
    fields = {f.name: getattr(given, f.name) for f in dataclasses.fields(Search)}
    fields = {k: recorded.get(k) if v is None else v for k, v in fields.items()}
    return Search(**{**fields, "objective": objective})


def _resume_command(run_dir, manifest):
    if manifest.get("role") == "chief":
        return f"dlref tune --resume {run_dir} --role chief --oracle {manifest.get('oracle')}"
    if manifest.get("role") == "worker":
        return "its chief's --resume (a worker restarts with the same --worker-id)"
    return f"dlref tune --resume {run_dir}"


# --- Running -----------------------------------------------------------------------------------


def _search(module, config, data, run_dir, settings, plan, cluster):
    from dlref.tuning import distributed, engine
    from dlref.tuning.results import Results

    results = Results(run_dir, module, config, settings, plan)
    started, tuner = time.time(), None
    try:
        # SIGTERM ends a search the way Ctrl-C does, so run.json says 'interrupted'.
        with distributed.environment(cluster), Latch() as latch:
            tuner = engine.make_tuner(module, config, data, run_dir, settings, results)
            tuner.save()  # So that a kill during the first trial still leaves a project to reload.
            if cluster.role == "chief":
                distributed.serve(tuner, cluster, latch=latch)
            else:
                engine.search(tuner, run_dir, settings, latch)
    except KeyboardInterrupt:
        _write(results, tuner)
        return _stopped(run_dir, started, "interrupted", "stopped by Ctrl-C or SIGTERM")
    except Exception as error:
        _write(results, tuner)
        _stopped(run_dir, started, "failed", _last_line(error))
        if "consecutive failures" in str(error):  # keras-tuner gives up after 3 failed trials.
            raise DlrefError("The search stopped after repeated failed trials: "
                             f"{_last_line(error)}. See trials.csv and the messages above."
                             ) from None
        raise
    ranked = _write(results, tuner)
    best = next((t for t in ranked if t.status == "COMPLETED"), None)
    _stopped(run_dir, started, "completed" if best else "failed",
             None if best else "no trial completed")
    if best is None:
        raise DlrefError(f"No trial completed; see {run_dir / 'trials.csv'}.")
    _print_summary(run_dir, module, settings, ranked, tuner)
    return run_dir


def _write(results, tuner):
    """trials.csv, best.toml and run.json as the oracle has them now (also after a failure)."""
    return results.write(tuner.oracle, tuner.log) if tuner is not None else []


def _last_line(error):
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _stopped(run_dir, started, status, reason):
    manifest = runs.read_manifest(run_dir)
    seconds = (manifest.get("timings") or {}).get("seconds", 0.0) + time.time() - started
    runs.update_manifest(run_dir, status=status, error=reason,
                         timings={"seconds": round(seconds, 2)})
    if status == "interrupted":
        print(f"\nSearch interrupted ({reason}); completed trials are kept.\nResume with:  "
              f"{_resume_command(run_dir, manifest)}", file=sys.stderr)
    return run_dir


def _print_summary(run_dir, module, settings, ranked, tuner):
    done = [t for t in ranked if t.status == "COMPLETED"]
    names = [hp.name for hp in tuner.oracle.hyperparameters.space]
    objective = settings["objective"]
    rows = [["rank", "trial", objective, "epochs", *names]]
    for rank, trial in enumerate(done[:5], start=1):
        values = trial.hyperparameters.values
        rows.append([str(rank), trial.trial_id, f"{trial.score:.4f}",
                     str(tuner.log.results.trial_epochs(trial)),
                     *(f"{values[n]:.4g}" if isinstance(values.get(n), float)
                       else str(values.get(n, "")) for n in names)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print(f"\nBest trials by {objective} ({settings['direction']}), "
          f"{len(done)} of {len(ranked)} completed:")
    for row in rows:
        print("  " + "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
    if tuner.rss_mib:
        print(f"\nMemory (RSS): {tuner.rss_mib[0]:.0f} MiB after the first trial, "
              f"{tuner.rss_mib[-1]:.0f} MiB after the last.")
    best = run_dir / "best.toml"
    source = Source.from_dict(runs.read_manifest(run_dir)["source"])
    print(f"\nBest config:  {best}   (data: {source.describe()})"
          f"\nTrain it:     dlref train {module.NAME} --config {best}"
          f"\nAll trials:   {run_dir / 'trials.csv'}\n"
          f"TensorBoard:  dlref tensorboard {run_dir / 'logs'}   (HParams tab)")


def benchmark(**options):
    """Trials per minute (1 process; chief + 2 workers) and RSS after 1 and 20 trials."""
    from dlref.tuning.bench import benchmark as run

    return run(**options)
