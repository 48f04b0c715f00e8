"""Every command README.md, INSTALLATION.md and DATASET.md show is run by a test, as a user runs it.

The first test checks the coverage: each documented command must appear, as the docs write it, as the command of a
``run_documented`` / ``documented_argv`` call in some test (a bare mention of an entry point is covered by any run of
it). The other tests here run the commands that no other test runs — the rest run inside the tests of their part
of the code (train.sh in test_meddr_train.py, inference_gsco.sh in test_collab.py, ...).
"""

import ast
import json
import os

import numpy as np
import pytest
import torch

from conftest import REPO, shared_path, write_npz
from doc_commands import documented_commands, entry_point, is_bare, normalize, run_documented

TINY_MODEL = "/path/to/meddr-hf"


def commands_run_by_tests() -> set[str]:
    """Every string constant (whitespace normalised) in the test modules that run documented commands
    (``run_documented`` / ``documented_argv``, which refuse any text the docs do not show)."""
    found = set()
    for path in (REPO / "tests").rglob("test_*.py"):
        source = path.read_text()
        if "run_documented(" not in source and "documented_argv(" not in source:
            continue
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.add(normalize(node.value))
    return found


def test_every_documented_command_is_run_by_a_test():
    documented = documented_commands()
    assert len(documented) > 30  # the parser finds the docs' commands
    run = commands_run_by_tests()
    entry_points = {entry_point(c) for c in run if c in documented}
    missing = [f"{where}: {command}" for command, where in documented.items()
               if command not in run and not (is_bare(command) and entry_point(command) in entry_points)]
    assert not missing, "documented commands that no test runs:\n" + "\n".join(missing)


def test_the_parser_reads_fenced_blocks_continuations_and_inline_commands():
    documented = documented_commands()
    assert documented["python demo.py"].startswith("README.md:")  # its trailing comment is not part of it
    continued = [c for c in documented if c.startswith("MODEL=/path/to/meddr-hf METAFILE=data/iu_xray/test.jsonl "
                                                       "IMAGE_ROOT=data/iu_xray/images TASK=report")]
    assert continued == ["MODEL=/path/to/meddr-hf METAFILE=data/iu_xray/test.jsonl IMAGE_ROOT=data/iu_xray/images "
                         "TASK=report OUT_DIR=outputs/meddr BATCH_SIZE=8 bash inference_meddr.sh"]
    assert documented["python -m gsco.collab.hint_samples"].startswith("DATASET.md:")  # inline, bare
    with pytest.raises(AssertionError, match="not a command the docs show"):
        run_documented("bash inference_meddr.sh --undocumented")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """``python -m gsco.meddr.presets``: the tiny preset saved as a model directory, standing in for MODEL=."""
    out = tmp_path_factory.mktemp("meddr") / "tiny"
    proc = run_documented("python -m gsco.meddr.presets preset=tiny out_dir=outputs/meddr-tiny",
                          replace={"outputs/meddr-tiny": str(out)})
    assert f"model: {out}" in proc.stdout and (out / "config.json").is_file()
    return out


# ---------------------------------------------------------------------------------------------------- specialists
@pytest.mark.e2e
def test_readme_specialist_commands(tmp_path):
    """Train on a (generated) PneumoniaMNIST at 64 px, then evaluate with the script; shortened by overrides."""
    write_npz(tmp_path / "data", "pneumoniamnist", "binary-class", 2, img_size=64, channels=1, sizes=(32, 12, 16))
    short = [f"data_path={tmp_path / 'data'}", f"output_path={tmp_path / 'out'}", "architecture=test_resnet",
             "pretrained=false", "epochs=1", "batch_size=16", "preprocess=native", "device=cpu", "search_top_n=3"]
    run_documented("python -m gsco.specialists.train --config configs/config.yaml dataset=pneumoniamnist img_size=64 "
                   "architecture=vgg16", append=short)
    run_documented("DATASET=pneumoniamnist ARCH=vgg16 IMG_SIZE=64 bash inference_specialist.sh", append=short)
    results_file = tmp_path / "out" / "pneumoniamnist_64_endToEnd_test_resnet_s9930641_results.json"
    results = json.loads(results_file.read_text())
    assert len(results["y_true"]) == 16 and np.array(results["all_search_train_ids"]).shape == (16, 3)


@pytest.mark.e2e
def test_dataset_md_own_registry_command(tmp_path):
    proc = run_documented("python -m gsco.specialists.train extra_datasets=my_datasets.yaml dataset=my_set",
                          replace={"my_datasets.yaml": "data/examples/my_datasets.yaml", "my_set": "toy_xray"},
                          append=["data_path=data", f"output_path={tmp_path}", "architecture=test_resnet",
                                  "pretrained=false", "epochs=1", "img_size=28", "preprocess=native", "device=cpu"])
    assert (tmp_path / "toy_xray_28_endToEnd_test_resnet_s9930641_best.pth").is_file(), proc.stdout


# ---------------------------------------------------------------------------------------------------------- MedDr
@pytest.mark.parametrize("command", [
    "python -m gsco.meddr.convert original=/path/to/MedDr_0401 out_dir=/path/to/meddr-hf dtype=bfloat16",
    "python -m gsco.meddr.convert original=MedDr_0401 out_dir=meddr-hf",
])
@pytest.mark.e2e
def test_convert_commands(tmp_path, command):
    os.symlink(shared_path("fixtures", "meddr_original_tiny"), tmp_path / "MedDr_0401")
    run_documented(command, replace={"/path/to/": ""} if "/path/to/" in command else None, cwd=tmp_path)
    config = json.loads((tmp_path / "meddr-hf" / "config.json").read_text())
    assert config["model_type"] == "meddr"
    assert config["dtype"] == ("bfloat16" if "bfloat16" in command else "float32")
    if "bfloat16" in command:  # README's next command writes it back in the original layout, as stored (bf16)
        run_documented("python -m gsco.meddr.export model=/path/to/meddr-hf out_dir=/path/to/meddr-internvl",
                       replace={"/path/to/": ""}, cwd=tmp_path)
        exported = json.loads((tmp_path / "meddr-internvl" / "config.json").read_text())
        assert exported["model_type"] == "internvl_chat" and exported["ps_version"] == "v1"
        from safetensors import safe_open

        with safe_open(str(tmp_path / "meddr-internvl" / "model.safetensors"), "pt") as f:
            assert f.get_tensor("mlp1.1.weight").dtype == torch.bfloat16


@pytest.mark.e2e
def test_inference_meddr_with_device_map_auto(tiny_model, tmp_path):
    proc = run_documented("MODEL=/path/to/meddr-hf METAFILE=data/iu_xray/test.jsonl bash inference_meddr.sh "
                          "device_map=auto",
                          replace={TINY_MODEL: str(tiny_model),
                                   "data/iu_xray/test.jsonl": "data/examples/meddr/iu_xray_sample.jsonl"},
                          append=[f"out_dir={tmp_path}", "max_new_tokens=4", "meteor=false", "report_tokenize=none"])
    assert "predictions:" in proc.stdout and (tmp_path / "iu_xray_sample_metrics.json").is_file()


@pytest.mark.parametrize("name, metafile, command", [
    ("iu_xray", "data/iu_xray/iu_mrg_meta.jsonl",
     "CONFIG=configs/meddr/reference/iu_xray.yaml MODEL=/path/to/meddr-hf METAFILE=data/iu_xray/iu_mrg_meta.jsonl "
     "IMAGE_ROOT=data/iu_xray bash inference_meddr.sh"),
    ("pmcvqa", "data/pmcvqa/PMC-VQA_VQA_Test.jsonl",
     "CONFIG=configs/meddr/reference/pmcvqa.yaml MODEL=/path/to/meddr-hf METAFILE=data/pmcvqa/PMC-VQA_VQA_Test.jsonl "
     "IMAGE_ROOT=data/pmcvqa bash inference_meddr.sh"),
    ("pcam200", "data/pcam200/test.jsonl",
     "CONFIG=configs/meddr/reference/pcam200.yaml MODEL=/path/to/meddr-hf METAFILE=data/pcam200/test.jsonl "
     "IMAGE_ROOT=data/pcam200 bash inference_meddr.sh"),
])
@pytest.mark.e2e
def test_meddr_reference_evaluation_commands(tiny_model, tmp_path, name, metafile, command):
    """The configs that reproduce MedDr's numbers run end to end (tiny model, two rows): the first one on the
    metafile the documented r2gen command writes from the real IU-Xray annotation."""
    from PIL import Image

    root = tmp_path / "root"
    if name == "iu_xray":
        run_documented("python -m gsco.data.r2gen annotation=data/iu_xray/annotation.json split=test "
                       "image_prefix=images/ metafile=data/iu_xray/iu_mrg_meta.jsonl",
                       replace={"data/iu_xray/annotation.json": str(shared_path("data", "iu_xray", "annotation.json")),
                                "data/iu_xray/iu_mrg_meta.jsonl": str(tmp_path / "meta.jsonl")})
        rows = [json.loads(line) for line in (tmp_path / "meta.jsonl").read_text().splitlines()][:2]
    else:
        rows = [{"id": i, "split": "test", "image": f"images/{i}.png", "question_id": i,
                 "answer": ["normal", "tumor"][i] if name == "pcam200" else "CT",
                 **({"question": "What modality is used"} if name == "pmcvqa" else {})} for i in range(2)]
    for row in rows:
        (root / row["image"]).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((64, 64, 3), 80, np.uint8)).save(root / row["image"])
    (tmp_path / "two.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_documented(command, replace={TINY_MODEL: str(tiny_model),
                                     f"METAFILE={metafile}": f"METAFILE={tmp_path / 'two.jsonl'}",
                                     f"IMAGE_ROOT={metafile.rsplit('/', 1)[0]}": f"IMAGE_ROOT={root}"},
                   append=[f"out_dir={tmp_path / 'out'}", "max_new_tokens=4", "meteor=false", "report_tokenize=none",
                           "device=cpu"])
    predictions = [json.loads(line) for line in (tmp_path / "out" / "two_predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 2 and predictions[0]["question"].startswith("You are a helpful medical assistant.")


@pytest.mark.e2e
def test_dataset_md_diagnosis_questions_then_meddr_diagnosis(tmp_path):
    run_documented("python -m gsco.data.diagnosis_questions dataset=breastmnist data_path=../shared/data/medmnist "
                   "out_dir=DIR", replace={"../shared/data/medmnist": str(shared_path("data", "medmnist")),
                                         "DIR": str(tmp_path / "q")})
    assert len((tmp_path / "q" / "breastmnist_test.jsonl").read_text().splitlines()) == 156
    run_documented("TASK=diagnosis bash inference_meddr.sh",
                   append=[f"metafile={tmp_path / 'q' / 'breastmnist_test.jsonl'}", f"out_dir={tmp_path / 'out'}",
                           "limit=3", "max_new_tokens=4", "device=cpu"])
    metrics = json.loads((tmp_path / "out" / "breastmnist_test_metrics.json").read_text())
    assert metrics["task"] == "diagnosis" and metrics["n_answered"] == 3


@pytest.mark.e2e
def test_bash_train_sh_as_shipped_runs(tmp_path):
    proc = run_documented("bash train.sh", append=[f"out_dir={tmp_path}", "max_steps=2", "save_steps=100"])
    assert f"model: {tmp_path / 'final'}" in proc.stdout and (tmp_path / "adapter" / "adapter_config.json").is_file()
    # a second job into that OUT_DIR while one holds it (here: this test, as a running train.sh would) is refused
    # before it loads anything, instead of resuming the other's checkpoints and writing final/ beside it
    import fcntl
    import os

    final = (tmp_path / "final" / "model.safetensors").stat().st_mtime_ns
    with open(tmp_path / ".gsco.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(f"{os.getpid()}\n")
        held.flush()
        second = run_documented("bash train.sh", append=[f"out_dir={tmp_path}", "max_steps=4", "save_steps=100"],
                                check=False)
    assert second.returncode == 2 and f"{tmp_path} is being written by another run (process {os.getpid()})" in \
        second.stderr.strip().splitlines()[-1]
    assert (tmp_path / "final" / "model.safetensors").stat().st_mtime_ns == final
    # the checkpoint left there is resumed only by the run that wrote it: another mode (or model, or data) is refused
    other = run_documented("bash train.sh", append=[f"out_dir={tmp_path}", "max_steps=4", "mode=full"], check=False)
    assert other.returncode == 2 and f"{tmp_path} holds checkpoint-2 of another training run (mode: lora -> full)" \
        in other.stderr.strip().splitlines()[-1]


# ----------------------------------------------------------------------------------------------------------- GSCo
@pytest.fixture
def gsco_workdir(tmp_path):
    """A checkout laid out as configs/gsco/breastmnist.yaml expects, for commands run from its root: the scripts and
    configs (linked), two specialists' results files under outputs/specialists, the data under data/medmnist."""
    from builders import fake_results

    for name in ("inference_gsco.sh", "configs"):
        os.symlink(REPO / name, tmp_path / name)
    (tmp_path / "data" / "medmnist").mkdir(parents=True)
    os.symlink(shared_path("data", "medmnist", "breastmnist.npz"), tmp_path / "data" / "medmnist" / "breastmnist.npz")
    (tmp_path / "outputs" / "specialists").mkdir(parents=True)
    y_true = np.load(shared_path("data", "medmnist", "breastmnist.npz"))["test_labels"].ravel()
    for seed, arch in enumerate(("resnet18", "mobilenetv3_small_100")):
        fake_results(tmp_path / "outputs" / "specialists" / f"breastmnist_28_endToEnd_{arch}_s9930641_results.json",
                     y_true, seed)
    return tmp_path


@pytest.mark.e2e
def test_readme_gsco_commands(gsco_workdir, tiny_model):
    specialists = gsco_workdir / "outputs" / "specialists"
    run_documented("python -m gsco.collab.build_cases specialists=[A_results.json,B_results.json] rad_from=0 rad_k=10 "
                   "data_path=../shared/data/medmnist cases=outputs/gsco/breastmnist_cases.json",
                   replace={"A_results.json": str(specialists
                                                  / "breastmnist_28_endToEnd_resnet18_s9930641_results.json"),
                            "B_results.json": str(specialists / "breastmnist_28_endToEnd_mobilenetv3_small_100_s9930641"
                                                                "_results.json"),
                            "../shared/data/medmnist": str(shared_path("data", "medmnist"))}, cwd=gsco_workdir)
    first = (gsco_workdir / "outputs" / "gsco" / "breastmnist_cases.json").read_text()
    run_documented("python -m gsco.collab.build_cases --config configs/gsco/breastmnist.yaml", cwd=gsco_workdir)
    assert (gsco_workdir / "outputs" / "gsco" / "breastmnist_cases.json").read_text() == first  # "the same"
    assert len(json.loads(first)) == 156
    # the generalist answers one arm in the first run; the second (README's follow-up to make demo) scores the
    # specialists only
    for command, arms in (("DATASET=breastmnist MODEL=/path/to/meddr-hf CASES=outputs/gsco/breastmnist_cases.json "
                           "bash inference_gsco.sh", ["specialist_0", "specialist_vote", "moed_rad"]),
                          ("MODEL=/path/to/meddr-hf CASES=outputs/demo/gsco/breastmnist_cases.json "
                           "bash inference_gsco.sh", ["specialist_0", "specialist_1"])):
        out = gsco_workdir / arms[-1]
        proc = run_documented(command, cwd=gsco_workdir,
                              replace={TINY_MODEL: str(tiny_model),
                                       **({"outputs/demo/gsco": "outputs/gsco"} if "demo" in command else {})},
                              append=[f"out_dir={out}", "device=cpu", "max_new_tokens=3", "eval_batch_size=52",
                                      f"arms=[{','.join(arms)}]"])
        table = json.loads((out / "ablation.json").read_text())
        assert list(table["arms"]) == arms and table["n_cases"] == 156
        assert f"| {arms[-1]} | 156 |" in proc.stdout


@pytest.mark.e2e
def test_readme_training_split_cases_command(gsco_workdir):
    from builders import fake_results

    y_true = np.load(shared_path("data", "medmnist", "breastmnist.npz"))["train_labels"].ravel()
    for name, seed in (("A", 0), ("B", 1)):
        fake_results(gsco_workdir / f"{name}_train_results.json", y_true, seed, split="train")
    run_documented("python -m gsco.collab.build_cases specialists=[A_train_results.json,B_train_results.json] "
                   "data_path=DATA cases=outputs/gsco/train/cases.json",
                   replace={"DATA": str(shared_path("data", "medmnist"))}, cwd=gsco_workdir)
    cases = json.loads((gsco_workdir / "outputs" / "gsco" / "train" / "cases.json").read_text())
    assert len(cases) == 546 and {c["split"] for c in cases} == {"train"}


def test_modules_and_config_files_named_in_code_and_configs_exist():
    """Headers of configs, docstrings and scripts name entry points (``python -m gsco....``) and config files
    (``configs/....yaml``): each must exist (a header once named gsco.meddr.build, a docstring finetune_lora.yaml)."""
    import importlib.util
    import re

    files = [*REPO.glob("configs/**/*.yaml"), *REPO.glob("src/gsco/**/*.py"), *REPO.glob("*.sh"), REPO / "Makefile",
             REPO / "demo.py"]
    modules, configs = set(), set()
    for path in files:
        text = path.read_text()
        modules |= {(m, path.name) for m in re.findall(r"-m (gsco(?:\.\w+)+)", text)}
        configs |= {(c, path.name) for c in re.findall(r"\b(configs/[\w./-]+\.(?:yaml|json))", text)}
    assert len(modules) > 10 and len(configs) > 10
    missing = [f"{m} (in {where})" for m, where in sorted(modules) if importlib.util.find_spec(m) is None]
    missing += [f"{c} (in {where})" for c, where in sorted(configs) if not (REPO / c).is_file()]
    assert not missing, missing
