"""Recipe name -> module path (a plain dict), preset discovery, and metadata read without import.

`dlref list` and `dlref show` must not import TensorFlow, but recipe modules import Keras at the
top like any keras-io example. So the identity constants (NAME, CHAPTER, SUMMARY, MONITOR, MODE)
and the Config defaults are read from each module's source with `ast`, and the module itself is
imported only by the commands that train.
"""

import ast
import importlib
import importlib.util
from pathlib import Path

from dlref import config as configlib
from dlref.errors import DlrefError, close_match

RECIPES = {  # In the book's order of chapters.
    "regression": "dlref.recipes.regression",
    "binary": "dlref.recipes.binary",
    "multiclass": "dlref.recipes.multiclass",
    "cnn": "dlref.recipes.cnn",
    "transfer": "dlref.recipes.transfer",
    "timeseries": "dlref.recipes.timeseries",
    "text": "dlref.recipes.text",
    "seq2seq": "dlref.recipes.seq2seq",
    "dqn": "dlref.recipes.dqn",
    "gan": "dlref.recipes.gan",
}

# ENGINE (optional): "keras-rl2" for the recipe that trains in its own process (dlref.rl).
# BACKEND (optional, default tensorflow): the Keras backend the recipe trains on unless told;
# TUNE_BACKEND (optional, default BACKEND): the one it is tuned on (a search builds and
# compiles dozens of models, where JAX's compile per model can cost more than it saves);
# BACKENDS (optional, default both): the backends it can run on.
_IDENTITY = ("NAME", "CHAPTER", "SUMMARY", "MONITOR", "MODE", "ENGINE", "BACKEND",
             "TUNE_BACKEND", "BACKENDS")


def preset_dir():
    """Presets ship inside the wheel as dlref/presets; in a checkout they are ./recipes."""
    packaged = Path(__file__).parent / "presets"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "recipes"


def presets():
    """Preset name -> its parsed TOML document (with 'recipe', 'summary', 'config')."""
    found = {}
    for path in sorted(preset_dir().glob("*.toml")):
        document = configlib.read_toml(path)
        if document.get("recipe") not in RECIPES:
            raise DlrefError(f"Preset {path} names an unknown recipe {document.get('recipe')!r}.")
        found[path.stem] = document
    return found


def resolve(name):
    """Returns (recipe name, preset document or None) for a recipe or preset NAME."""
    if name in RECIPES:
        return name, None
    known_presets = presets()
    if name in known_presets:
        return known_presets[name]["recipe"], known_presets[name]
    known = sorted(RECIPES) + sorted(known_presets)
    raise DlrefError(
        f"Unknown recipe or preset {name!r}.{close_match(name, known)} Known: {', '.join(known)}."
    )


def default_backend(recipe, task="train"):
    """The Keras backend a recipe declares for a task ("train" or "tune")."""
    found = info(recipe)
    chosen = found.get("backend", "tensorflow")
    return found.get("tune_backend", chosen) if task == "tune" else chosen


def load(recipe, recorded_backend=None, task="train"):
    """Imports a recipe module (this is where Keras and TensorFlow get imported, except for a
    recipe with its own process: the DQN's module is light, its worker imports the rest).

    Args:
        recorded_backend: the Keras backend a run was trained on, for resume, evaluate and
            predict (backend.use says which backend wins).
        task: "train" or "tune", for the recipe's default backend.
    """
    from dlref import backend

    if own_process(recipe):
        if backend.REQUESTED:
            raise DlrefError(f"--backend does not apply to {recipe}: keras-rl2 runs on legacy "
                             "Keras, which is TensorFlow's.")
    else:
        backend.use(default_backend(recipe, task), recorded_backend,
                    info(recipe).get("backends", backend.BACKENDS), recipe)
        backend.import_tensorflow()
    return importlib.import_module(RECIPES[recipe])


def own_process(recipe):
    """Whether a recipe trains in its own worker process (keras-rl2), not through training.py."""
    return recipe in RECIPES and info(recipe).get("engine") == "keras-rl2"


def _module_tree(recipe):
    spec = importlib.util.find_spec(RECIPES[recipe])
    return ast.parse(Path(spec.origin).read_text(encoding="utf-8")), Path(spec.origin)


def info(recipe):
    """The recipe's identity constants, its docstring's title, and whether it is tunable."""
    tree, _ = _module_tree(recipe)
    found = {"tunable": False, "title": (ast.get_docstring(tree) or "").splitlines()[0]}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name) and target.id in _IDENTITY:
                found[target.id.lower()] = ast.literal_eval(node.value)
        if isinstance(node, ast.FunctionDef) and node.name == "search_space":
            found["tunable"] = True
    return found


def config_fields(recipe):
    """[(name, default, comment)] of the recipe's Config dataclass, read from its source."""
    tree, origin = _module_tree(recipe)
    lines = origin.read_text(encoding="utf-8").splitlines()
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Config":
            return [
                (item.target.id, ast.literal_eval(item.value), _comment(lines[item.lineno - 1]))
                for item in node.body
                if isinstance(item, ast.AnnAssign) and item.value is not None
            ]
    raise DlrefError(f"Recipe {recipe} has no Config class.")


def _comment(line):
    _, _, comment = line.partition("  # ")
    return comment.strip()
