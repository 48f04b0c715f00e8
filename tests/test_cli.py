"""One command line for every entry point (gsco.cli): found by scanning the package, so a new entry point is tested
without writing a test — its --help, a bad key (status 2, one line naming it), its keys read and other flags refused."""

import dataclasses
import importlib
import importlib.util
import sys
import typing
from pathlib import Path

import pytest

from gsco.config import ConfigError, parse_overrides

from conftest import REPO

SRC = REPO / "src"


def entry_points() -> list[str]:
    """Every ``python -m gsco....`` module (it runs ``main`` under ``__main__``), and demo.py."""
    found = []
    for path in sorted((SRC / "gsco").rglob("*.py")):
        if 'if __name__ == "__main__"' in path.read_text():
            found.append(".".join(path.relative_to(SRC).with_suffix("").parts))
    return found + ["demo"]


def load(name: str, monkeypatch):
    if name != "demo":
        return importlib.import_module(name)
    spec = importlib.util.spec_from_file_location("demo", REPO / "demo.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "demo", module)  # its config dataclass looks its module up
    spec.loader.exec_module(module)
    return module


def status(main, argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse and config errors exit from the parser
        return exc.code


def test_every_entry_point_is_found():
    names = entry_points()
    assert {"gsco.specialists.train", "gsco.collab.build_cases", "gsco.meddr.convert", "gsco.data.r2gen",
            "gsco.collab.hint_samples", "gsco.data.diagnosis_questions", "demo"} <= set(names)
    assert len(names) >= 15


def test_only_the_shared_parser_builds_an_argument_parser():
    builders = [p for p in [*(SRC / "gsco").rglob("*.py"), REPO / "demo.py"]
                if "ArgumentParser(" in p.read_text() and p != SRC / "gsco" / "cli.py"]
    assert builders == []


@pytest.mark.parametrize("name", entry_points())
def test_entry_point_help_lists_its_keys(name, monkeypatch, capsys):
    main = load(name, monkeypatch).main
    assert status(main, ["--help"]) == 0
    out = capsys.readouterr().out
    assert "--config FILE" in out and "key=value" in out and "exit status" in out
    # every key with its default and its meaning, written once beside its field in the config dataclass
    lines = out[out.index("keys (default; meaning):"):].splitlines()
    keys = [i for i, line in enumerate(lines) if line.startswith("  ") and not line.startswith("   ") and " = " in line]
    assert keys, out
    undocumented = [lines[i].split(" = ")[0].strip() for i in keys if not lines[i + 1].startswith(" " * 6)]
    assert undocumented == [], f"{name}: keys without a meaning in their dataclass: {undocumented}"


@pytest.mark.parametrize("name", entry_points())
def test_entry_point_bad_key_is_status_2_and_one_line(name, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)  # nothing it could find by accident
    main = load(name, monkeypatch).main
    assert status(main, ["no_such_key=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown key 'no_such_key'" in err[0], err


# module, the function main hands the config to, its keys on the command line (and one of its flags of earlier
# drafts, now refused)
ENTRY_POINTS = [
    ("gsco.data.r2gen", "_write_and_print", "--annotation",
     ["annotation=a.json", "split=val", "metafile=m.jsonl", "views=first", "image_prefix=images/"]),
    ("gsco.data.diagnosis_questions", "_write_and_print", "--dataset",
     ["dataset=breastmnist", "data_path=d", "out_dir=o", "img_size=64", "splits=[train,test]",
      "extra_datasets=r.yaml"]),
    ("gsco.meddr.convert", "_convert_and_print", "--src",
     ["original=orig", "out_dir=hf", "dtype=bfloat16", "lora_alpha=32", "tokenizer=tok", "overwrite=true"]),
    ("gsco.recipes.merge_lora", "_merge_and_print", "--adapter",
     ["adapter=a", "out_dir=m", "base=b"]),
    ("gsco.meddr.presets", "_save_and_print", "--preset",
     ["preset=tiny", "out_dir=m", "seed=3"]),
    ("gsco.collab.build_cases", "_build_and_print", "--results",
     ["specialists=[a.json,b.json]", "rad_from=1", "rad_k=5", "data_path=d", "cases=c.json"]),
    ("gsco.collab.build_cases", "_build_and_print", "--reports",
     ["task=report", "specialists=e/test_reports.jsonl", "retrieval=e/r.json", "annotation=ann.json", "rad_k=3",
      "cases=c.json", "report_cleaning=mimic_cxr"]),
    ("gsco.collab.hint_samples", "_write_and_print", "--cases",
     ["cases=c.json", "samples=s.json", "arms=[moed,rad]", "arms_per_case=2", "seed=4"]),
    ("demo", "answer_and_print", "--model",
     ["model=m", "image=a.png", "question=Is it benign?", "image=b.png", "question=What: no?", "max_new_tokens=5",
      "device_map=auto"]),
]


@pytest.mark.parametrize("name, runner, flag, keys", ENTRY_POINTS, ids=[f"{c[0]}-{c[2]}" for c in ENTRY_POINTS])
def test_entry_points_read_keys_and_refuse_other_flags(name, runner, flag, keys, monkeypatch, capsys):
    """One form: ``key=value`` (and ``--config``); a flag such as ``--out`` is refused with status 2 and argparse's
    one line, never read as something else."""
    module = load(name, monkeypatch)
    seen = []
    monkeypatch.setattr(module, runner, seen.append)
    assert module.main(keys) == 0 and len(seen) == 1
    capsys.readouterr()
    assert status(module.main, [flag, "x", *keys]) == 2 and len(seen) == 1
    assert f"unrecognized arguments: {flag}" in capsys.readouterr().err


def test_demo_keys_keep_their_text_and_pair_up(monkeypatch):
    demo = load("demo", monkeypatch)
    seen = []
    monkeypatch.setattr(demo, "answer_and_print", seen.append)
    assert demo.main(["image=a.png", "question=no", "image=b.png", "question=What is seen: a mass?"]) == 0
    assert seen[0].image == ["a.png", "b.png"] and seen[0].question == ["no", "What is seen: a mass?"]


def test_values_are_read_for_their_key_type():
    from gsco.collab.config import GscoConfig

    got = parse_overrides(["hint_separator= | ", "arms=[moed,rad]", "k=3", "options=null", "specialists=a.json",
                           "intro='quoted'", "no_finding=no"], GscoConfig)
    assert got == {"hint_separator": " | ", "arms": ["moed", "rad"], "k": 3, "options": None,
                   "specialists": ["a.json"], "intro": "quoted", "no_finding": "no"}
    assert parse_overrides(["k=3", "flag=no"]) == {"k": 3, "flag": False}  # without a class: YAML, as before


def test_a_missing_required_key_names_it(monkeypatch, capsys):
    from gsco.data.r2gen import main

    assert status(main, ["annotation=a.json"]) == 2
    assert "missing key(s) 'metafile'; give metafile=..." in capsys.readouterr().err
    with pytest.raises(ConfigError, match="missing key"):
        from gsco.config import load_config
        from gsco.recipes.merge_lora import MergeLoraConfig

        load_config(MergeLoraConfig, None, {"adapter": "a"})


def test_run_errors_are_status_2_and_one_line(tmp_path, capsys):
    from gsco.meddr.convert import main

    assert main([f"original={tmp_path / 'none'}", f"out_dir={tmp_path / 'hf'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "key 'original'" in err[0]
    assert not Path(tmp_path / "hf").exists()


def test_every_entry_point_follows_its_launcher(tmp_path, monkeypatch):
    """Under torchrun a worker stops with its launcher (tests/e2e/test_reliability.py kills one): command() arms it
    before the run starts, for every entry point."""
    import gsco.runtime
    from gsco.meddr.convert import main

    armed = []
    monkeypatch.setattr(gsco.runtime, "follow_launcher", lambda: armed.append(True))
    assert main([f"original={tmp_path / 'none'}", f"out_dir={tmp_path / 'hf'}"]) == 2
    assert armed == [True]


def config_classes():
    import demo  # noqa: F401  (imported by load() in the tests above; here for its DemoConfig)
    from gsco.collab.config import GscoConfig
    from gsco.recipes.evaluate import EvalConfig
    from gsco.recipes.finetune import FinetuneConfig
    from gsco.specialists.config import SpecialistConfig
    from gsco.specialists.report.config import ReportConfig

    return [GscoConfig, EvalConfig, FinetuneConfig, SpecialistConfig, ReportConfig, demo.DemoConfig]


@pytest.fixture
def demo_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))


@pytest.mark.parametrize("index", range(6))
def test_sections_hold_existing_keys_once(index, demo_importable):
    from gsco.config import config_sections

    cls = config_classes()[index]
    sections = config_sections(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    keys = [k for ks in sections.values() for k in ks]
    assert len(keys) == len(set(keys)) and set(keys) <= set(fields) and not set(sections) & set(fields)


SHIPPED_SECTIONED = ["configs/gsco/breastmnist.yaml", "configs/gsco/chestmnist.yaml", "configs/gsco/pcam200.yaml",
                     "configs/gsco/iu_xray.yaml", "configs/meddr/eval.yaml", "configs/meddr/reference/iu_xray.yaml",
                     "configs/meddr/reference/pmcvqa.yaml", "configs/meddr/reference/pcam200.yaml",
                     "configs/meddr/finetune_tiny.yaml", "configs/meddr/finetune_meddr_lora.yaml",
                     "configs/report/tiny.yaml", "configs/report/iu_xray_shallow.yaml",
                     "configs/report/mimic_cxr_shallow.yaml"]


@pytest.mark.parametrize("path", SHIPPED_SECTIONED)
def test_shipped_configs_use_their_sections_and_load_as_flat_keys(path, tmp_path):
    """A config holding several parts shows them as sections; the same keys written flat load to the same config,
    and ``section.key=value`` overrides a key as ``key=value`` does."""
    import yaml

    from gsco.collab.config import GscoConfig
    from gsco.config import config_sections, load_config
    from gsco.recipes.evaluate import EvalConfig
    from gsco.recipes.finetune import FinetuneConfig
    from gsco.specialists.report.config import ReportConfig

    cls = {"gsco": GscoConfig, "report": ReportConfig}.get(path.split("/")[1]) or (
        FinetuneConfig if "finetune" in path else EvalConfig)
    sections = config_sections(cls)
    data = yaml.safe_load((REPO / path).read_text())
    in_sections = [k for k, v in data.items() if k in sections]
    assert in_sections and all(isinstance(data[k], dict) for k in in_sections)
    flat = {}
    for key, value in data.items():
        flat.update(value if key in sections else {key: value})
    outside = [k for k in flat if any(k in keys for keys in sections.values()) and k in data]
    assert outside == [], f"{path}: keys outside their section: {outside}"
    if "include" in flat:  # the copy starts from the same base file
        flat["include"] = str((REPO / path).parent / flat["include"])
    (tmp_path / "flat.yaml").write_text(yaml.safe_dump(flat))
    required = {"model": "x", "data": "y"} if cls is FinetuneConfig else {}
    assert load_config(cls, REPO / path, required) == load_config(cls, tmp_path / "flat.yaml", required)
    hints = typing.get_type_hints(cls)
    section, key = next((s, k) for s, ks in sections.items() for k in ks if hints[k] is int)
    dotted = load_config(cls, REPO / path, {**required, **parse_overrides([f"{section}.{key}=7"], cls)})
    assert getattr(dotted, key) == 7 == getattr(load_config(cls, REPO / path, {**required, key: 7}), key)


def test_a_key_in_the_wrong_section_or_given_twice_is_named(tmp_path):
    from gsco.collab.config import GscoConfig
    from gsco.config import load_config

    (tmp_path / "a.yaml").write_text("prompt:\n  max_new_tokens: 3\n")
    with pytest.raises(ConfigError, match=r"prompt.max_new_tokens: key 'max_new_tokens' is not in section 'prompt'; "
                                          r"it goes in section 'generation'"):
        load_config(GscoConfig, tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("generation:\n  max_new_tokens: 3\nmax_new_tokens: 4\n")
    with pytest.raises(ConfigError, match="key 'max_new_tokens' is given twice"):
        load_config(GscoConfig, tmp_path / "b.yaml")
    (tmp_path / "c.yaml").write_text("generation: 3\n")
    with pytest.raises(ConfigError, match="section 'generation' must be a mapping of its keys"):
        load_config(GscoConfig, tmp_path / "c.yaml")
    cfg = load_config(GscoConfig, None, parse_overrides(["generation.max_new_tokens=5", "prompt.intro=Hi: no"],
                                                        GscoConfig))
    assert cfg.max_new_tokens == 5 and cfg.intro == "Hi: no"


@pytest.mark.parametrize("cls_name", ["GscoConfig", "EvalConfig"])
def test_max_skipped_fraction_is_a_fraction(cls_name):
    from gsco.collab.config import GscoConfig
    from gsco.config import load_config
    from gsco.recipes.evaluate import EvalConfig

    cls = {"GscoConfig": GscoConfig, "EvalConfig": EvalConfig}[cls_name]
    assert load_config(cls, None, {"max_skipped_fraction": 1}).max_skipped_fraction == 1.0
    with pytest.raises(ConfigError, match="key 'max_skipped_fraction': must be between 0 and 1, got 5"):
        load_config(cls, None, {"max_skipped_fraction": 5})


