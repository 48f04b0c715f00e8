"""Nothing destroyed before it is replaced, images read as they are (issue 13's faults, reproduced)."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from gsco.runtime import OutputFolderError, building_folder

from conftest import REPO, shared_path


def tree_digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------- whole-folder writes
def test_a_folder_appears_only_when_complete(tmp_path):
    dst = tmp_path / "model"
    with pytest.raises(RuntimeError, match="half-way"):
        with building_folder(dst) as out:
            (out / "shard-1").write_text("1")
            raise RuntimeError("half-way")
    assert not dst.exists() and list(tmp_path.iterdir()) == []
    with building_folder(dst) as out:
        (out / "shard-1").write_text("1")
        assert not dst.exists()  # still beside it
    assert (dst / "shard-1").read_text() == "1" and [p.name for p in tmp_path.iterdir()] == ["model"]


@pytest.mark.e2e
def test_a_saved_model_folder_has_the_umasks_modes_not_safetensors_0600(tmp_path):
    """transformers' safetensors writer leaves model.safetensors at 0600: other accounts (a serving engine's) could
    not read a converted or saved model. The finished folder's files get what the umask gives new files."""
    import stat

    from doc_commands import run_documented

    old = os.umask(0o022)
    try:
        result = run_documented("python -m gsco.meddr.presets preset=tiny out_dir=outputs/meddr-tiny",
                                replace={"outputs/meddr-tiny": str(tmp_path / "tiny")})
    finally:
        os.umask(old)
    assert result.returncode == 0
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "tiny").iterdir()}
    assert modes["model.safetensors"] == 0o644 and set(modes.values()) == {0o644}


def test_overwrite_replaces_only_after_success_and_never_a_source(tmp_path):
    dst = tmp_path / "model"
    dst.mkdir()
    (dst / "old").write_text("old")
    with pytest.raises(OutputFolderError, match="exists and is not empty; give overwrite=true"):
        with building_folder(dst):
            pass
    with pytest.raises(ValueError):
        with building_folder(dst, overwrite=True) as out:
            (out / "new").write_text("new")
            raise ValueError("failed")
    assert [p.name for p in dst.iterdir()] == ["old"]  # the old one is still there
    with building_folder(dst, overwrite=True) as out:
        (out / "new").write_text("new")
    assert [p.name for p in dst.iterdir()] == ["new"] and [p.name for p in tmp_path.iterdir()] == ["model"]
    for target in (dst, dst / "inside", tmp_path):  # the source itself, inside it, around it
        with pytest.raises(OutputFolderError, match="is the source .* or overlaps it"):
            with building_folder(target, overwrite=True, sources=(dst,)):
                pass
    assert (dst / "new").read_text() == "new"


@pytest.mark.e2e
def test_partial_folders_of_dead_runs_are_cleared(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".model.partial-{dead.stdout.strip()}"
    stale.mkdir()
    (stale / "shard").write_text("x")
    with building_folder(tmp_path / "model") as out:
        (out / "ok").write_text("ok")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.e2e
def test_convert_refuses_its_source_as_destination_and_leaves_it_intact(tmp_path):
    src = tmp_path / "MedDr_0401"
    shutil.copytree(shared_path("fixtures", "meddr_original_tiny"), src)
    before = tree_digest(src)
    proc = subprocess.run([sys.executable, "-m", "gsco.meddr.convert", f"original={src}", f"out_dir={src}",
                           "overwrite=true"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "overlaps it" in proc.stderr, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1
    from gsco.meddr.convert import ConversionError, convert

    with pytest.raises(ConversionError, match="overlaps it"):  # a folder inside it, in this process
        convert(src, src / "hf", overwrite=True)
    assert tree_digest(src) == before


@pytest.mark.e2e
def test_a_conversion_killed_midway_leaves_no_destination(tmp_path):
    """Killed (SIGKILL) after the weights are written and before the config: no destination folder; the next
    conversion clears the dead run's partial folder and succeeds."""
    src, dst = shared_path("fixtures", "meddr_original_tiny"), tmp_path / "hf"
    kill_after_weights = (
        "import os, signal, sys\n"
        "import gsco.meddr.convert as c\n"
        "weights = c.convert_weights\n"
        "def convert_weights(*args, **kwargs):\n"
        "    weights(*args, **kwargs)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "c.convert_weights = convert_weights\n"
        f"c.convert({str(src)!r}, {str(dst)!r})\n")
    proc = subprocess.run([sys.executable, "-c", kill_after_weights], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == -signal.SIGKILL
    assert not dst.exists()
    partial = [p for p in tmp_path.iterdir() if p.name.startswith(".hf.partial-")]
    assert len(partial) == 1 and any(partial[0].glob("*.safetensors"))
    from gsco.meddr.convert import convert

    convert(src, dst)
    assert (dst / "config.json").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


# ----------------------------------------------------------------------------------------------- images as they are
@pytest.fixture(scope="module")
def xray():
    """A real 8-bit chest X-ray spanning 0..255, cut to 128 px."""
    image = np.asarray(Image.open(shared_path("data", "cxr", "00000001_000.png")).convert("L"))[::4, ::4]
    assert image.min() == 0 and image.max() == 255
    return image


WRITERS = {  # a medical file's modes as Pillow opens them, each made from the 8-bit original
    "L png": lambda a: (Image.fromarray(a), "png"),
    "I;16 png (16-bit)": lambda a: (Image.fromarray(a.astype(np.uint16) * 257), "png"),
    "I;16 png (12-bit data)": lambda a: (Image.fromarray(a.astype(np.uint16) * 16), "png"),
    "I tiff (32-bit)": lambda a: (Image.fromarray(a.astype(np.int32) * 65536 - 2**30), "tiff"),
    "F tiff (float)": lambda a: (Image.fromarray(a.astype(np.float32) / 255 * 3.5 - 1.0), "tiff"),
    "LA png": lambda a: (Image.fromarray(a).convert("LA"), "png"),
    "RGB png": lambda a: (Image.fromarray(a).convert("RGB"), "png"),
    "RGBA png": lambda a: (Image.fromarray(a).convert("RGBA"), "png"),
}


@pytest.mark.e2e
@pytest.mark.parametrize("kind", list(WRITERS))
def test_every_mode_reads_as_its_8bit_original(kind, xray, tmp_path):
    from gsco.data.readers import open_image, read_image

    image, ext = WRITERS[kind](xray)
    path = tmp_path / f"x.{ext}"
    image.save(path)
    assert Image.open(path).mode == image.mode  # the file really holds that mode
    read = np.asarray(open_image(path).convert("L")).astype(int)
    assert np.abs(read - xray).max() <= 1, kind
    native = read_image(path, 128, as_rgb=False).astype(int)  # the specialists' reader: grey stays grey
    assert native.ndim == (3 if image.mode in ("RGB", "RGBA") else 2)
    assert np.abs(native - (xray[..., None] if native.ndim == 3 else xray)).max() <= 1
    assert read_image(path, 128, as_rgb=True).shape == (128, 128, 3)


@pytest.mark.e2e
def test_a_16bit_png_is_not_clipped_white(xray, tmp_path):
    path = tmp_path / "x16.png"
    Image.fromarray(xray.astype(np.uint16) * 257).save(path)
    clipped = np.asarray(Image.open(path).convert("L"))  # what Pillow alone does with it
    assert (clipped == 255).mean() > 0.9
    from gsco.data.readers import open_image
    from gsco.generalist.model import Generalist  # noqa: F401  (its answer() opens images with open_image)

    assert (np.asarray(open_image(path).convert("RGB"))[..., 0] == 255).mean() < 0.1


def test_float_and_constant_images_scale_without_dividing_by_zero():
    from gsco.data.render import minmax as to_8bit

    assert to_8bit(np.full((2, 2), 7.0)).tolist() == [[0, 0], [0, 0]]
    assert to_8bit(np.array([[0.0, np.nan], [0.5, 1.0]])).tolist() == [[0, 0], [128, 255]]
    assert to_8bit(np.array([[-1000, 3000]], dtype=np.int16)).tolist() == [[0, 255]]


def test_images_are_opened_by_the_one_reader_only():
    """Pillow opens image files in gsco.data.render only (the one rendering path; readers.open_image calls it)."""
    offenders = [str(p.relative_to(REPO)) for p in [*(REPO / "src" / "gsco").rglob("*.py"), REPO / "demo.py"]
                 if "Image.open(" in p.read_text() and p.name != "render.py"]
    assert offenders == []


# ------------------------------------------------------------------------------- runs that know what they resume
def _evaluate(tmp_path, *extra, env=None):
    return subprocess.run(
        ["bash", "inference_meddr.sh", f"out_dir={tmp_path / 'out'}", "max_new_tokens=3", "meteor=false",
         "report_tokenize=none", "device=cpu", *extra],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHON": sys.executable, **(env or {})})


@pytest.mark.e2e
def test_another_model_or_metafile_into_the_same_out_dir_is_refused(tmp_path):
    """The command refuses (status 2, the advice in its last line); the runs around it are the same settings in this
    process."""
    from gsco.config import load_config
    from gsco.evaluation.resumable import ResumeMismatchError
    from gsco.generalist.registry import save_preset
    from gsco.recipes.evaluate import EvalConfig, evaluate

    settings = {"out_dir": str(tmp_path / "out"), "max_new_tokens": 3, "meteor": False, "report_tokenize": "none",
                "device": "cpu"}
    evaluate(load_config(EvalConfig, REPO / "configs/meddr/eval.yaml", settings))
    predictions = tmp_path / "out" / "iu_xray_sample_predictions.jsonl"
    answers = predictions.read_text()
    other_model = save_preset("tiny", tmp_path / "other-model", seed=1)
    refused = _evaluate(tmp_path, env={"MODEL": str(other_model)})
    assert refused.returncode == 2 and "holds 5 answers of another run (model:" in refused.stderr
    assert "write to a new out_dir, or give overwrite=true" in refused.stderr.strip().splitlines()[-1]
    metafile = tmp_path / "meta" / "iu_xray_sample.jsonl"  # the same stem, other rows
    metafile.parent.mkdir()
    rows = (REPO / "data/examples/meddr/iu_xray_sample.jsonl").read_text().splitlines()
    metafile.write_text("\n".join(rows[:1]) + "\n")
    with pytest.raises(ResumeMismatchError, match="metafile: "):
        evaluate(load_config(EvalConfig, REPO / "configs/meddr/eval.yaml",
                             {**settings, "metafile": str(metafile), "image_root": str(REPO / "data/examples/meddr")}))
    assert predictions.read_text() == answers  # nothing touched
    evaluate(load_config(EvalConfig, REPO / "configs/meddr/eval.yaml",
                         {**settings, "model": str(other_model), "overwrite": True}))
    assert predictions.read_text() != answers


@pytest.mark.e2e
def test_two_concurrent_runs_one_refuses_one_finishes_no_duplicate(tmp_path):
    """Two inference_meddr.sh runs into one OUT_DIR at once: the second refuses at once naming the first's process,
    the first finishes, every question is answered once. (The first is stopped while the second starts: it holds the
    folder however fast either runs.)"""
    import signal
    import time

    rows = [json.loads(line) for line in (REPO / "data/examples/meddr/iu_xray_sample.jsonl").read_text().splitlines()]
    meta = tmp_path / "long.jsonl"
    meta.write_text("".join(json.dumps({**rows[i % len(rows)], "question_id": f"q{i}"}) + "\n" for i in range(40)))
    args = [f"metafile={meta}", f"image_root={REPO / 'data/examples/meddr'}", "eval_batch_size=1",
            "max_new_tokens=24"]
    first = subprocess.Popen(
        ["bash", "inference_meddr.sh", f"out_dir={tmp_path / 'out'}", "meteor=false", "report_tokenize=none",
         "device=cpu", *args], cwd=REPO, env={**os.environ, "PYTHON": sys.executable},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "out" / ".gsco.lock"
    deadline = time.time() + 120
    while time.time() < deadline and not (lock.is_file() and lock.read_text().strip() == str(first.pid)):
        time.sleep(0.1)
    os.kill(first.pid, signal.SIGSTOP)
    try:
        second = _evaluate(tmp_path, *args)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    out, err = first.communicate(timeout=600)
    assert second.returncode == 2, second.stderr[-2000:]
    assert f"is being written by another run (process {first.pid})" in second.stderr.strip().splitlines()[-1]
    assert first.returncode == 0, err[-2000:]
    ids = [json.loads(line)["question_id"] for line in (tmp_path / "out" / "long_predictions.jsonl").read_text()
           .splitlines()]
    assert sorted(ids) == sorted(f"q{i}" for i in range(40))  # each once


# ------------------------------------------------------------------------------------ silent emptiness is an error
@pytest.mark.e2e
def test_a_wrong_image_root_or_a_missing_image_key_exits_non_zero(tmp_path):
    wrong_root = _evaluate(tmp_path, env={"IMAGE_ROOT": str(tmp_path / "nowhere")})
    assert wrong_root.returncode == 2
    last = wrong_root.stderr.strip().splitlines()[-1]
    assert "5 of 5 questions skipped" in last and "More than max_skipped_fraction 0.05" in last
    metrics = json.loads((tmp_path / "out" / "iu_xray_sample_metrics.json").read_text())
    assert metrics["n_answered"] == 0 and len(metrics["skipped"]) == 5  # the summary is written first
    rows = [json.loads(line) for line in (REPO / "data/examples/meddr/iu_xray_sample.jsonl").read_text().splitlines()]
    rows[1]["img"] = rows[1].pop("image")  # a misspelt key
    meta = tmp_path / "misspelt.jsonl"
    meta.write_text("".join(json.dumps(r) + "\n" for r in rows))
    misspelt = _evaluate(tmp_path, f"metafile={meta}", f"image_root={REPO / 'data/examples/meddr'}")
    assert misspelt.returncode == 2
    assert "misspelt.jsonl line 2: no image (key 'image')" in misspelt.stderr.strip().splitlines()[-1]


def test_gsco_arms_that_could_not_read_their_images_fail_after_the_table(tmp_path):
    from gsco.collab.config import GscoConfig
    from gsco.config import load_config
    from gsco.recipes.gsco import run

    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(tmp_path / "c0.png")
    cases = [{"id": f"c{i}", "image": "c0.png" if i == 0 else f"missing{i}.png", "label": "tumor",
              "rad": ["normal"], "moed": ["tumor"]} for i in range(4)]
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    cfg = load_config(GscoConfig, None, {"dataset": "pcam200", "options": ["normal", "tumor"], "device": "cpu",
                                         "cases": str(tmp_path / "cases.json"), "out_dir": str(tmp_path / "out"),
                                         "max_new_tokens": 3, "arms": ["specialist_0", "generalist"]})
    with pytest.raises(RuntimeError, match=r"^generalist: 3 of 4 cases skipped — unreadable images, or a wrong "
                                           r"image_root\? More than max_skipped_fraction 0.05"):
        run(cfg)
    assert "| generalist | 1 |" in (tmp_path / "out" / "ablation.md").read_text()  # each arm's case count


def test_gsco_with_no_readable_image_and_a_case_without_predictions_says_so(tmp_path):
    """No readable image at all: the table (n 0) then one error, not an IndexError; a case lacking the specialists'
    predictions skips their arms with a line each, instead of dropping them from the table."""
    from gsco.collab.config import GscoConfig
    from gsco.config import load_config
    from gsco.recipes.gsco import run

    cases = [{"id": f"c{i}", "image": f"missing{i}.png", "label": "tumor",
              **({"moed": ["tumor", "normal"]} if i else {})} for i in range(3)]
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    cfg = load_config(GscoConfig, None, {"dataset": "pcam200", "device": "cpu", "cases": str(tmp_path / "cases.json"),
                                         "out_dir": str(tmp_path / "out"), "max_new_tokens": 3})
    with pytest.raises(RuntimeError, match=r"generalist: 3 of 3 cases skipped — unreadable images"):
        run(cfg)
    table = (tmp_path / "out" / "ablation.md").read_text()
    assert "| generalist | 0 |" in table
    for arm in ("specialist_0", "specialist_1", "specialist_vote"):
        assert f"- {arm}: 1 of 3 cases carry fewer than 2 specialist predictions ('moed', e.g. case c0)" in table


def test_gsco_checks_every_prompt_before_generating(tmp_path):
    from gsco.collab.config import GscoConfig
    from gsco.config import ConfigError, load_config
    from gsco.recipes.gsco import run

    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(tmp_path / "c0.png")
    cases = [{"id": f"c{i}", "image": "c0.png", "label": "tumor", "rad": ["normal", "tumor"],
              "moed": ["tumor"], "moed_prob": [0.9]} for i in range(3)]
    cases[2]["rad"] = ["normal", "lymphoma"]  # not an option (nor an alias: "benign" is pcam200's for normal)
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    cfg = load_config(GscoConfig, None, {"dataset": "pcam200", "options": ["normal", "tumor"], "device": "cpu",
                                         "cases": str(tmp_path / "cases.json"), "out_dir": str(tmp_path / "out"),
                                         "max_new_tokens": 3, "arms": ["generalist", "moed", "rad_counts"]})
    with pytest.raises(ConfigError, match=r"cases.json: case c2: rad hint 'lymphoma' names none of the options "
                                          r"\['normal', 'tumor'\]"):
        run(cfg)
    assert not list((tmp_path / "out").glob("*_predictions.jsonl"))  # nothing was generated first
    # multi-label hints are read as label sets when the prompts are built: also before anything is generated
    cases = [{"id": f"c{i}", "image": "c0.png", "label": ["x"], "rad": ["x", "y"], "moed": ["x"]} for i in range(3)]
    cases[1]["moed"] = ["zzz"]
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    multi = load_config(GscoConfig, None, {"dataset": "chestmnist", "options": ["x", "y"], "device": "cpu",
                                           "multi_label": True, "cases": str(tmp_path / "cases.json"),
                                           "out_dir": str(tmp_path / "multi"), "arms": ["generalist", "moed"]})
    with pytest.raises(ConfigError, match=r"case c1"):
        run(multi)
    assert not list((tmp_path / "multi").glob("*_predictions.jsonl"))


# ------------------------------------------------------------------ damaged files: one line naming them, status 2
def _one_line(capsys, status, *expected):
    """The entry point's stderr ends in one ``error:`` line holding each of ``expected``; no traceback."""
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and all(e in last for e in expected), last
    return last


def _specialist_argv(toy_data, **extra):
    return [f"{k}={v}" for k, v in {**toy_data("toy_binary"), "epochs": 1, **extra}.items()]


def test_a_corrupt_npz_member_names_the_file(toy_data, tmp_path, capsys):
    import zipfile

    from gsco.specialists.train import main

    argv = _specialist_argv(toy_data)
    npz = tmp_path / "data" / "toy_binary.npz"
    member = zipfile.ZipFile(npz).getinfo("train_images.npy")
    raw = bytearray(npz.read_bytes())
    start = member.header_offset + 30 + len(member.filename) + len(member.extra)  # the member's deflated bytes
    raw[start:start + 40] = bytes(b ^ 0xFF for b in raw[start:start + 40])
    npz.write_bytes(bytes(raw))
    _one_line(capsys, main(argv), f"{npz}: not a readable npz file (zlib.error", "replace it with a fresh copy")


def test_a_truncated_last_checkpoint_names_itself(toy_data, tmp_path, capsys):
    from gsco.specialists.train import main

    argv = _specialist_argv(toy_data)
    assert main(argv) == 0
    last = next((tmp_path / "out").glob("*_last.pth"))
    last.write_bytes(last.read_bytes()[:1000])
    _one_line(capsys, main(argv), f"{last}: not a readable training checkpoint (RuntimeError: PytorchStreamReader",
              "delete it to train from the start, or give overwrite=true")
    assert main([*argv, "overwrite=true"]) == 0  # the named way out works


class _RunsCode:
    """A pickle that would create a file if it were ever unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_model_folders_with_damaged_or_pickled_weights_name_the_file(tmp_path, capsys):
    import pickle

    import torch

    from demo import main
    from gsco.generalist.registry import save_preset

    good = save_preset("tiny", tmp_path / "good")
    argv = ["question=What is shown?", f"image={REPO / 'data/examples/images/case0.png'}", "max_new_tokens=2",
            "device=cpu"]
    truncated = shutil.copytree(good, tmp_path / "truncated")
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    _one_line(capsys, main([f"model={truncated}", *argv]),
              f"{weights}: not a readable safetensors weight file (SafetensorError", "copy, convert or save it again")
    from gsco.meddr.export import main as export_main
    from gsco.recipes.finetune import main as train_main

    for entry, args in ((export_main, [f"model={truncated}", f"out_dir={tmp_path / 'exported'}"]),  # tracebacks once
                        (train_main, [f"model={truncated}", f"out_dir={tmp_path / 'ft'}", "max_steps=1"])):
        _one_line(capsys, entry(args), f"{weights}: not a readable safetensors weight file (SafetensorError",
                  "copy, convert or save it again")
    marker = tmp_path / "code-ran"
    for save in (lambda obj, f: pickle.dump(obj, f), torch.save):  # a bare pickle and torch's zip format
        pickled = tmp_path / "pickled"
        shutil.rmtree(pickled, ignore_errors=True)
        shutil.copytree(good, pickled)
        (pickled / "model.safetensors").unlink()
        with open(pickled / "pytorch_model.bin", "wb") as f:
            save({"weight": _RunsCode(marker)}, f)
        last = _one_line(capsys, main([f"model={pickled}", *argv]), f"{pickled / 'pytorch_model.bin'}: not a readable "
                         "weight file of plain tensors (it holds pickled objects that are not plain tensors")
        assert "re-save it as safetensors" in last and "weights_only=False);" in last
    assert not marker.exists()


def test_a_damaged_predictions_line_and_an_out_dir_that_is_a_file_are_named(tmp_path, capsys):
    from gsco.recipes.evaluate import main

    meta = REPO / "data/examples/meddr/iu_xray_sample.jsonl"
    argv = ["--config", str(REPO / "configs/meddr/eval.yaml"), f"metafile={meta}", "device=cpu", "max_new_tokens=2"]
    out = tmp_path / "out"
    out.mkdir()
    rows = [json.loads(line) for line in meta.read_text().splitlines()][:2]
    damaged = json.dumps({"question_id": rows[0]["question_id"], "answer": "x"}) + "\n" + '{"question_id": "1", "ans\n'
    (out / "iu_xray_sample_predictions.jsonl").write_text(damaged)  # a complete last line that is not JSON
    _one_line(capsys, main([*argv, f"out_dir={out}"]), f"{out / 'iu_xray_sample_predictions.jsonl'} line 2: not a "
              "JSON row", "delete that line (its question is asked again) or give overwrite=true")
    (tmp_path / "a-file").write_text("")
    _one_line(capsys, main([*argv, f"out_dir={tmp_path / 'a-file' / 'sub'}"]),
              f"{tmp_path / 'a-file'} is a file, not a folder; give another out_dir")


@pytest.mark.e2e
def test_a_truncated_source_shard_is_named_by_the_converter(tmp_path, capsys):
    from gsco.meddr.convert import main

    src = shutil.copytree(shared_path("fixtures", "meddr_original_tiny"), tmp_path / "original")
    shard = src / "model.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    _one_line(capsys, main([f"original={src}", f"out_dir={tmp_path / 'hf'}"]),
              f"{shard}: not a readable safetensors shard (SafetensorError", "download it again")
    assert not (tmp_path / "hf").exists()


def test_damaged_report_checkpoints_and_histories_are_named(tmp_path):
    import torch

    from gsco.runtime import UnreadableFileError
    from gsco.specialists.report.model import load_checkpoint_file
    from gsco.training import History

    checkpoint = tmp_path / "checkpoint.pth"
    torch.save({"model": {"w": torch.zeros(2)}}, checkpoint)
    checkpoint.write_bytes(checkpoint.read_bytes()[:200])
    with pytest.raises(UnreadableFileError, match=f"{checkpoint}: not a readable checkpoint"):
        load_checkpoint_file(checkpoint)
    history = tmp_path / "history.jsonl"
    history.write_text('{"epoch": 1}\n{"epoch": 2, "loss\n')
    with pytest.raises(UnreadableFileError, match=f"{history} line 2: not a JSON row"):
        History(history).rows()


def test_gsco_traceback_shows_the_traceback_instead(tmp_path, monkeypatch):
    from gsco.recipes.evaluate import main
    from gsco.runtime import OutputFolderError

    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("GSCO_TRACEBACK", "1")
    with pytest.raises(OutputFolderError, match="is a file, not a folder"):
        main([f"metafile={REPO / 'data/examples/meddr/iu_xray_sample.jsonl'}", f"out_dir={tmp_path / 'a-file'}"])


# ----------------------------------------------------------------------- stopping the launcher stops its workers
WORKER = """
import os, sys, time
from gsco.runtime import follow_launcher
follow_launcher()
open(sys.argv[1] + "." + os.environ["LOCAL_RANK"], "w").write(str(os.getpid()))
time.sleep(120)
"""


@pytest.mark.e2e
def test_workers_stop_when_the_launcher_is_killed(tmp_path):
    """torchrun forwards SIGTERM and Ctrl-C to its workers but cannot forward SIGKILL; the workers of every entry
    point (gsco.cli.command calls follow_launcher) stop with it anyway."""
    import time

    (tmp_path / "worker.py").write_text(WORKER)
    launcher = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                                 "2", str(tmp_path / "worker.py"), str(tmp_path / "pid")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 60
        while len(list(tmp_path.glob("pid.*"))) < 2 and time.time() < deadline:
            time.sleep(0.2)
        pids = [int(p.read_text()) for p in tmp_path.glob("pid.*")]
        assert len(pids) == 2
        launcher.kill()
        launcher.wait()
        deadline = time.time() + 10
        while time.time() < deadline and any(_running(pid) for pid in pids):
            time.sleep(0.2)
        assert not any(_running(pid) for pid in pids)
    finally:
        for p in tmp_path.glob("pid.*"):
            with __import__("contextlib").suppress(ProcessLookupError, ValueError):
                os.kill(int(p.read_text()), signal.SIGKILL)


def _running(pid: int) -> bool:
    """Alive and not a zombie (a killed worker re-parented to init is reaped there)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


# ------------------------------------------------ a fault of our own on each entry point that writes (README table)
def test_render_checks_its_output_first_and_never_leaves_half_a_picture(tmp_path, capsys):
    from gsco.data.render import main as render_main

    (tmp_path / "out").mkdir()
    source = str(REPO / "data/examples/images/case0.png")
    _one_line(capsys, render_main([source, str(tmp_path / "out")]), "output", "expected an image file name ending "
              ".png", "(it is a folder)")
    _one_line(capsys, render_main([source, str(tmp_path / "picture.dcm")]), "expected an image file name")
    assert render_main([source, str(tmp_path / "sub" / "picture.png")]) == 0
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["picture.png"]  # written through a partial, renamed


def test_score_only_without_a_predictions_file_is_one_line(tmp_path, capsys):
    from gsco.recipes.evaluate import main as evaluate_main

    _one_line(capsys, evaluate_main([f"out_dir={tmp_path}", "score_only=true", "device=cpu"]),
              "score_only:", "iu_xray_sample_predictions.jsonl does not exist (run without score_only first)")


def test_gsco_into_a_folder_another_run_holds_is_refused_before_anything_is_asked(tmp_path, capsys):
    import fcntl

    from gsco.recipes.gsco import main as gsco_main

    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(tmp_path / "c0.png")
    (tmp_path / "cases.json").write_text(json.dumps([{"id": "c0", "image": "c0.png", "label": "tumor",
                                                       "moed": ["tumor"], "rad": ["normal"]}]))
    (tmp_path / "out").mkdir()
    with open(tmp_path / "out" / ".gsco.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _one_line(capsys, gsco_main(["--config", str(REPO / "configs/gsco/pcam200.yaml"),
                                     f"cases={tmp_path / 'cases.json'}",
                                     f"out_dir={tmp_path / 'out'}", "device=cpu", "max_new_tokens=2"]),
                  "out is being written by another run")
    assert [p.name for p in (tmp_path / "out").iterdir()] == [".gsco.lock"]


def test_hint_samples_never_overwrite_the_case_file_they_read(tmp_path, capsys):
    from gsco.collab.hint_samples import main as hint_main

    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps([{"id": "c0", "image": "c0.png", "label": "tumor", "moed": ["tumor"],
                                  "rad": ["normal"]}]))
    before = cases.read_bytes()
    _one_line(capsys, hint_main(["--config", str(REPO / "configs/gsco/pcam200.yaml"), f"cases={cases}",
                                 f"samples={tmp_path / '.' / 'cases.json'}"]), "is the case file it reads")
    assert cases.read_bytes() == before  # it used to be replaced by the samples


@pytest.mark.e2e
def test_case_builder_refuses_results_of_another_dataset_with_as_many_cases(tmp_path):
    from gsco.collab.build_cases import build_cases
    from gsco.data.registry import DatasetError

    from builders import fake_results

    data = shared_path("data", "medmnist", "breastmnist.npz")
    y_true = np.load(data)["test_labels"].ravel()
    fake_results(tmp_path / "a.json", y_true, 0)
    other = fake_results(tmp_path / "b.json", y_true, 1)
    (tmp_path / "b.json").write_text(json.dumps({**other, "dataset": "pneumoniamnist",
                                                 "label_names": ["normal", "pneumonia"]}))
    with pytest.raises(DatasetError, match=r"b.json and .*a.json are not on the same cases \(pneumoniamnist test vs "
                                           r"breastmnist test\)"):
        build_cases([tmp_path / "a.json", tmp_path / "b.json"], tmp_path / "c.json", data.parent)
    assert not (tmp_path / "c.json").exists()


def test_a_specialist_runs_damaged_settings_record_is_named(toy_data, tmp_path, capsys):
    from gsco.specialists.train import main as train_main

    args = [f"{k}={v}" for k, v in {**toy_data("toy_binary"), "epochs": 1}.items()]
    assert train_main(["--config", str(REPO / "configs/config.yaml"), *args]) == 0
    record = next((tmp_path / "out").glob("*_config.json"))
    record.write_text(record.read_text()[:40])  # a disk that filled up while it was written
    capsys.readouterr()
    _one_line(capsys, train_main(["--config", str(REPO / "configs/config.yaml"), *args]), f"{record}: not")


def test_export_into_its_own_source_is_refused_and_the_source_untouched(tmp_path, capsys):
    from gsco.generalist.registry import save_preset
    from gsco.meddr.export import main as export_main

    model = save_preset("tiny", tmp_path / "model")
    before = {p.name: p.stat().st_mtime_ns for p in model.iterdir()}
    _one_line(capsys, export_main([f"model={model}", f"out_dir={model / 'internvl'}"]), "is the source",
              "overlaps it")
    assert {p.name: p.stat().st_mtime_ns for p in model.iterdir()} == before


def test_demo_pairs_file_with_a_damaged_line_names_it_before_loading(tmp_path, capsys):
    from demo import main as demo_main

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"image": "%s", "question": "Normal?"}\n{"image": \n' % (REPO / "data/examples/images/case0.png"))
    _one_line(capsys, demo_main([f"pairs={pairs}", "device=cpu"]), f"{pairs} line 2: not valid JSON")
