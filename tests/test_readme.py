"""The README's tour, run as a user would run it, so that the README cannot drift from the tool.

Which commands are the tour: those in the README sections named in TOUR_SECTIONS ("A short
tour" and "Tuning (chapter 6)"). Any heading starts a new section, so "### Distributed search"
(several machines and a shared folder) is not part of it, nor are the set-up block above the
tour (`make demo`, `make test`) and "Development". In a tour section:

- in a ```bash block every line is a command: comment lines are skipped, a line ending in a
  backslash continues on the next, and a trailing `# comment` stays (bash ignores it);
- in any other fenced block (a transcript), a line starting with `$ ` is a command and the lines
  up to the next `$ ` line are its output excerpt;
- a command whose excerpt holds a line starting with `Error:` must exit 2 and print that line;
  every other command must exit 0;
- `make ...` lines are set-up, never tour commands;
- a command in SERVERS runs until stopped: the README must give its URL in a comment
  (`# http://127.0.0.1:6006/`), and the slow test checks that the URL answers, then presses
  Ctrl-C (SIGINT to its process group).

The commands run in order, in a working folder under tmp_path that holds a copy of `examples/`
(as the repository root does on a clone), with DLREF_RUNS_DIR under tmp_path and the venv's
`bin` folder first on PATH.

- test_tour_as_written (slow): every command through bash, exactly as the README writes it.
- test_tour_smoke (default suite): the same commands in the same order, with `dlref` run
  in-process and its training shortened (`train ... --epochs 1`, `tune ... --max-epochs 1`,
  and helpers.QUICK's settings for the recipes that train on large built-in data);
  servers are skipped. It catches a renamed option, a missing file or a changed error message.
- The static tests check that the tour was found and that every file it names exists.
"""

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import helpers

README = helpers.REPO / "README.md"
EXAMPLES = helpers.REPO / "examples"
TOUR_SECTIONS = ("A short tour", "Tuning (chapter 6)")
SHELL_BLOCKS = ("bash", "sh")
# Commands that serve until stopped (checked by the slow test only).
SERVERS = ("dlref tensorboard",)
# Options whose value is an input file that must exist before the command runs.
FILE_OPTIONS = ("--data", "--val-data", "--test-data")
COMMAND_TIMEOUT = 600  # seconds; the slowest tour command (a Hyperband search) takes about 50.
SERVER_TIMEOUT = 90  # seconds for a server to answer its URL.


@dataclass(frozen=True)
class TourCommand:
    text: str  # As the README writes it (continuation lines joined).
    line: int  # Line number in README.md, for the failure message.
    error: str | None = None  # The `Error:` line the README shows for it, if any.

    def __str__(self):
        return f"README.md:{self.line}: {self.text}"

    @property
    def argv(self):
        return shlex.split(self.text, comments=True)

    @property
    def is_server(self):
        return any(self.text.startswith(server) for server in SERVERS)


# --- Reading the tour out of the README ------------------------------------------------------


def sections(text):
    """[(title, [(line number, line), ...])] split at every heading outside a fenced block."""
    found, in_fence = [("", [])], False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("```"):
            in_fence = not in_fence
        heading = None if in_fence else re.match(r"#{1,6}\s+(.*)", line)
        if heading:
            found.append((heading.group(1).strip(), []))
        else:
            found[-1][1].append((number, line))
    return found


def fenced_blocks(lines):
    """[(info string, [(line number, line), ...])] of the fenced blocks among lines."""
    blocks, current = [], None
    for number, line in lines:
        if current is None and line.startswith("```"):
            current = (line[3:].strip(), [])
        elif current is not None and line.strip() == "```":
            blocks.append(current)
            current = None
        elif current is not None:
            current[1].append((number, line))
    return blocks


def shell_commands(lines):
    """Commands of a ```bash block: comment lines skipped, backslash continuations joined."""
    commands, pending, start = [], "", None
    for number, line in lines:
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        start = start if pending else number
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        commands.append(TourCommand(pending + stripped, start))
        pending = ""
    return commands


def transcript_commands(lines):
    """`$ ` lines of a transcript, each with the `Error:` line of its output excerpt."""
    commands = []
    for number, line in lines:
        if line.startswith("$ "):
            commands.append(TourCommand(line[2:].strip(), number))
        elif commands and line.startswith("Error:") and commands[-1].error is None:
            last = commands[-1]
            commands[-1] = TourCommand(last.text, last.line, line.strip())
    return commands


def tour_commands(text, titles=TOUR_SECTIONS):
    """The tour's commands, in README order (see the module docstring for the rules)."""
    commands = []
    for title, lines in sections(text):
        if title not in titles:
            continue
        for info, block in fenced_blocks(lines):
            read = shell_commands if info in SHELL_BLOCKS else transcript_commands
            commands += [c for c in read(block) if not c.text.startswith("make ")]
    return commands


def named_files(command):
    """Input files a command names: the value of a FILE_OPTIONS option, or any examples/ path."""
    argv, files = command.argv, []
    for index, token in enumerate(argv):
        option, _, value = token.partition("=")
        if option in FILE_OPTIONS:
            files.append(value or (argv[index + 1] if index + 1 < len(argv) else ""))
        elif token.startswith("examples/"):
            files.append(token)
    return list(dict.fromkeys(files))  # An --data value under examples/ is seen twice.


@pytest.fixture(scope="module")
def tour():
    return tour_commands(README.read_text(encoding="utf-8"))


@pytest.fixture
def workdir(tmp_path):
    """A user's clone as the tour sees it: examples/ here; runs under tmp_path (conftest)."""
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    return tmp_path


# --- Static checks ---------------------------------------------------------------------------


SAMPLE = """\
# Title
```bash
make demo
```
## A short tour
```
$ dlref list
Recipes:
$ dlref train binary --data examples/iris.csv --target species
Error: Target 'species' has 3 classes.
```
```bash
# a comment
dlref train --data examples/titanic.csv \\
    --target Survived   # binary
make test
```
### Elsewhere
```bash
dlref tune binary --role chief
```
"""


def test_extraction_follows_the_documented_rules():
    commands = tour_commands(SAMPLE, titles=("A short tour",))
    assert [(c.text, c.line, c.error) for c in commands] == [
        ("dlref list", 7, None),
        ("dlref train binary --data examples/iris.csv --target species", 9,
         "Error: Target 'species' has 3 classes."),
        ("dlref train --data examples/titanic.csv --target Survived   # binary", 14, None),
    ]
    assert named_files(commands[2]) == ["examples/titanic.csv"]
    assert named_files(TourCommand("dlref predict x --data=new.csv", 1)) == ["new.csv"]


def test_the_tour_is_found(tour):
    text = README.read_text(encoding="utf-8")
    titles = [title for title, _ in sections(text)]
    for title in TOUR_SECTIONS:
        assert title in titles, f"README.md has no section {title!r}: update TOUR_SECTIONS"
    programs = {tuple(c.argv[:2]) for c in tour}
    for expected in [("dlref", "train"), ("dlref", "evaluate"), ("dlref", "predict"),
                     ("dlref", "tune"), ("dlref", "runs")]:
        assert expected in programs, f"the tour has no `{' '.join(expected)}` command"
    assert any(c.error for c in tour), "the tour shows no Error: example"


def test_every_file_the_tour_names_exists(tour):
    missing = [f"{command}  ->  {path}" for command in tour for path in named_files(command)
               if not (helpers.REPO / path).exists()]  # A file, or a folder of images.
    assert not missing, "README tour commands name files that do not exist:\n" + "\n".join(missing)


def test_every_example_file_is_described():
    described = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    files = sorted(p.name + ("/" if p.is_dir() else "") for p in EXAMPLES.iterdir()
                   if p.name != "README.md")
    assert files, "examples/ is empty"
    assert not [name for name in files if f"`{name}`" not in described], files
    size = sum(p.stat().st_size for p in EXAMPLES.rglob("*") if p.is_file())
    assert size < 200_000, f"examples/ holds {size:,} bytes: keep it small"


# --- Running it ------------------------------------------------------------------------------


def check_exit(command, code, output):
    """Exit 0, or exit 2 with the README's Error: line where it shows one."""
    if command.error:
        assert code == 2, f"{command}\nexpected exit 2, got {code}:\n{output}"
        assert command.error in output, f"{command}\nexpected {command.error!r} in:\n{output}"
    else:
        assert code == 0, f"{command}\nexit {code}:\n{output}"
    assert "Traceback" not in output, f"{command}\n{output}"


def user_env(workdir):
    """The environment of a user with the venv activated (bin first on PATH)."""
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "dlref").exists(), f"no dlref in {bin_dir}: run `make install`"
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "DLREF_RUNS_DIR": str(workdir / "runs")}


def run_in_bash(command, workdir):
    done = subprocess.run(["bash", "-c", command.text], cwd=workdir, env=user_env(workdir),
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    return done.returncode, done.stdout + done.stderr


def answers(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def port_in_use(url):
    parts = urlsplit(url)
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((parts.hostname, parts.port)) == 0


def serve_then_stop(command, workdir):
    """Starts a server command, waits for its URL (from its README comment) to answer, then
    presses Ctrl-C: SIGINT to its process group, as a terminal sends it."""
    url = re.search(r"#.*?(http://[^\s/]+/)", command.text)
    assert url, f"{command}\na server in the tour must give its URL in a comment"
    url = url.group(1)
    if port_in_use(url):
        warnings.warn(f"{url} is taken by another program; not checking `{command.text}`",
                      stacklevel=1)
        return
    log = workdir / "server.log"
    with open(log, "w", encoding="utf-8") as output:
        server = subprocess.Popen(["bash", "-c", command.text], cwd=workdir,
                                  env=user_env(workdir), stdout=output,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_TIMEOUT
        while not answers(url):
            exited = server.poll()
            assert exited is None, f"{command}\nexit {exited}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"{command}\n{url} never answered"
            time.sleep(0.5)
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
            pytest.fail(f"{command}\nstill running 30 s after Ctrl-C")


@pytest.mark.slow
def test_tour_as_written(tour, workdir):
    for command in tour:
        if command.is_server:
            serve_then_stop(command, workdir)
            continue
        code, output = run_in_bash(command, workdir)
        check_exit(command, code, output)


def needs_shell(text):
    """Pipes, redirections, lists, variables or substitutions: bash runs it, not the runner."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return any(set(token) <= set("();<>|&") for token in lexer) or "$" in text or "`" in text


# The DQN counts environment steps, not epochs: a few hundred, with short tests.
STEPS = {"dqn": ["--steps", "300", "--set", "test_interval=150", "--set", "test_episodes=2",
                 "--set", "eval_episodes=2"]}


def shortened(argv):
    """argv of a training command cut to its first epoch (the smoke test's only change, with
    helpers.QUICK's settings for the recipes that train on large built-in data: smaller
    networks, less pretraining and judging)."""
    if argv[:2] == ["dlref", "train"] and "--resume" not in argv:
        recipe = argv[2] if len(argv) > 2 else ""
        if recipe.split("-")[0] in STEPS:
            return argv + STEPS[recipe.split("-")[0]]
        return argv + ["--epochs", "1"] + helpers.QUICK.get(recipe, [])
    if argv[:2] == ["dlref", "tune"] and "--resume" not in argv:
        trials = ["--max-trials", "1"] if {"random", "bayesian"} & set(argv) else []
        return argv + ["--max-epochs", "1"] + trials
    return argv


def test_tour_smoke(tour, workdir):
    for command in tour:
        if command.is_server:
            continue
        argv = command.argv
        if argv[0] != "dlref" or needs_shell(command.text):
            code, output = run_in_bash(command, workdir)
        else:
            result = helpers.invoke(*shortened(argv)[1:])
            code, output = result.exit_code, result.output
            if not isinstance(result.exception, (SystemExit, type(None))):
                output += f"\n{result.exception!r}"
        check_exit(command, code, output)
