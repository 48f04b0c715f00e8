"""The package's import graph: no cycle, and the layers stay in order (collab sits on top of everything else)."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def import_graph() -> dict[str, set[str]]:
    """Module -> the gsco modules it imports (anywhere in the file, function-level imports included)."""
    modules = {}
    for path in (SRC / "gsco").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("gsco"):
                deps.add(node.module)
                deps |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("gsco")}
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep, path + [dep])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 30 and "gsco.specialists.report.train" in graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_nothing_below_collab_imports_collab():
    """Only the recipes, on top, use GSCo's library."""
    wrong = {m: sorted(d for d in deps if d.startswith("gsco.collab"))
             for m, deps in import_graph().items() if not m.startswith(("gsco.collab", "gsco.recipes"))}
    assert not {m: d for m, d in wrong.items() if d}


def test_the_generalist_layer_reaches_meddr_only_through_its_registry():
    graph = import_graph()
    generalist = {m: sorted(d for d in deps if d.startswith("gsco.meddr"))
                  for m, deps in graph.items() if m.startswith("gsco.generalist")}
    assert {"gsco.generalist", "gsco.generalist.model", "gsco.generalist.registry"} <= set(generalist)
    assert not {m: d for m, d in generalist.items() if d}


def test_a_registered_preset_family_is_what_generalist_load_builds(monkeypatch):
    import torch

    from gsco.generalist import Generalist, registry
    from gsco.meddr.presets import build_from_preset

    built = []

    def build(name, dtype=torch.float32):
        built.append(name)
        return build_from_preset("tiny", seed=3, dtype=dtype)

    checked = []
    monkeypatch.setitem(registry._PRESETS, "toyfamily", registry.PresetFamily(build, lambda: ["toy-preset"],
                                                                             checked.append))
    generalist = Generalist.load("toy-preset", device="cpu")
    assert built == checked == ["toy-preset"] and generalist.name == "toy-preset (random weights)"
    seed3, seed0 = build_from_preset("tiny", seed=3)[0].state_dict(), build_from_preset("tiny")[0].state_dict()
    weights = generalist.model.state_dict()
    assert all(torch.equal(weights[k], seed3[k]) for k in seed3)  # the registered builder's model (seed 3) ...
    assert not all(torch.equal(weights[k], seed0[k]) for k in seed0)  # ... not the shipped tiny preset (seed 0)
    assert len(generalist.answer([None], ["hi"], max_new_tokens=2)) == 1


def test_no_function_is_longer_than_80_lines():
    long = []
    for path in (SRC / "gsco").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})")
    assert not long, long


def readme_layers() -> list[str]:
    """The package's entries in README's layout tree, in order (``  config.py``, ``  data/``, ...)."""
    import re

    readme = (SRC.parent / "README.md").read_text()
    tree = readme[readme.index("## Layout"):].split("```")[1]
    return ["gsco." + m.group(1) for m in re.finditer(r"(?m)^  (\w+)(?:\.py|/)\s", tree)]


def test_readme_layout_names_every_package_once_in_import_order():
    layers = readme_layers()
    top = {"gsco." + (p.stem if p.suffix == ".py" else p.name) for p in (SRC / "gsco").iterdir()
           if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert sorted(layers) == sorted(top) and len(layers) == len(set(layers))

    def layer(module: str) -> int:
        return next(i for i, name in enumerate(layers) if module == name or module.startswith(name + "."))

    upward = [(m, d) for m, deps in import_graph().items() if m != "gsco" for d in deps
              if d != "gsco" and layer(d) > layer(m)]
    assert upward == [], f"imports from a layer listed below in README's layout: {upward}"


def test_only_gsco_evaluation_process_reads_the_launchers_rank_and_world_size():
    """One place knows which process this is; everything else asks it (is_main_process, main_process_lock, ...)."""
    names = {"RANK", "WORLD_SIZE", "LOCAL_RANK"}
    readers = set()
    for path in (SRC / "gsco").rglob("*.py"):
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
                      and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        if any(isinstance(n, ast.Constant) and n.value in names and id(n) not in docstrings for n in ast.walk(tree)):
            readers.add(".".join(path.relative_to(SRC).with_suffix("").parts))
    assert readers == {"gsco.evaluation.process"}


def test_no_test_module_imports_another():
    """Tests share through conftest (fixtures) and the helper modules (builders, doc_commands, reference_sources)."""
    tests = Path(__file__).resolve().parent
    wrong = []
    for path in sorted(tests.rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            wrong += [f"{path.name}: {n}" for n in names if n.split(".")[0].startswith("test_")]
    assert not wrong, wrong


def test_the_recipes_import_nothing_of_meddr():
    """Evaluating and fine-tuning work for any generalist: a model family is reached through the registry."""
    graph = import_graph()
    recipes = {m: sorted(d for d in deps if d.startswith("gsco.meddr"))
               for m, deps in graph.items() if m.startswith("gsco.recipes")}
    assert {"gsco.recipes.evaluate", "gsco.recipes.finetune", "gsco.recipes.merge_lora",
            "gsco.recipes.gsco"} <= set(recipes)
    assert not {m: d for m, d in recipes.items() if d}


def test_every_error_gsco_defines_derives_from_gsco_error():
    """One base: an entry point turns any of them into one line and exit status 2 (gsco.cli.command)."""
    import importlib
    import inspect

    from gsco.errors import GscoError

    classes = []
    for path in (SRC / "gsco").rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        if "class " not in path.read_text():
            continue
        module = importlib.import_module(name)
        classes += [c for _, c in inspect.getmembers(module, inspect.isclass)
                    if c.__module__ == name and issubclass(c, Exception)]
    assert len(classes) >= 15 and [c.__name__ for c in classes if not issubclass(c, GscoError)] == []
