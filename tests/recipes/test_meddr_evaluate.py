"""inference_meddr.sh / gsco.recipes.evaluate on an IU-Xray-style metafile (real reports, generated images), and the
answer/report metrics."""

import json
import logging
import subprocess

import numpy as np
import pytest
from PIL import Image

from gsco.config import ConfigError, load_config
from gsco.evaluation import TooManySkippedError
from gsco.evaluation.resumable import ResumeMismatchError
from gsco.recipes.evaluate import EvalConfig, evaluate, read_metafile

from conftest import REPO, kill_when_written, shared_path
from doc_commands import documented_argv, documented_env, run_documented


@pytest.fixture(scope="module")
def iu_xray(tmp_path_factory):
    """12 real IU-Xray test reports in the reference's metafile layout, with generated images."""
    root = tmp_path_factory.mktemp("iu_xray")
    test = json.loads(shared_path("data", "iu_xray", "annotation.json").read_text())["test"][:12]
    rng = np.random.default_rng(0)
    with open(root / "iu_xray_test.jsonl", "w") as f:
        for i, row in enumerate(test):
            image = root / row["image_path"][0]
            image.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (96, 96), dtype=np.uint8)).save(image)
            f.write(json.dumps({"id": row["id"], "split": "test", "image": row["image_path"][0],
                                "text": row["report"], "question_id": i, "answer": row["report"]}) + "\n")
    return root / "iu_xray_test.jsonl"


def cfg_of(metafile, out_dir, **kw):
    base = {"model": "tiny", "metafile": str(metafile), "out_dir": str(out_dir), "task": "report", "device": "cpu",
            "max_new_tokens": 12, "meteor": False, "prompts": str(REPO / "configs/meddr/prompts.yaml")}
    return load_config(EvalConfig, None, {**base, **kw})


@pytest.fixture(scope="module")
def uninterrupted(iu_xray, tmp_path_factory):
    cfg = cfg_of(iu_xray, tmp_path_factory.mktemp("full"), eval_batch_size=8)
    result = evaluate(cfg)
    return cfg.predictions_file.read_text(), result


@pytest.mark.e2e
def test_predictions_have_the_reference_keys_and_metrics_are_written(uninterrupted, iu_xray):
    text, result = uninterrupted
    rows = [json.loads(line) for line in text.splitlines()]
    assert len(rows) == 12 and {"question_id", "question", "answer", "annotation"} <= set(rows[0])
    assert rows[3]["annotation"] == json.loads(iu_xray.read_text().splitlines()[3])["answer"]
    assert rows[0]["question"].startswith("You are a helpful medical assistant. Your task is report generation.")
    assert set(result["metrics"]) == {"BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "ROUGE_L", "CIDEr"}
    assert result["n_answered"] == 12 and result["skipped"] == []


@pytest.mark.e2e
def test_batch_one_writes_the_same_file(uninterrupted, iu_xray, tmp_path):
    cfg = cfg_of(iu_xray, tmp_path, eval_batch_size=1)
    evaluate(cfg)
    assert cfg.predictions_file.read_text() == uninterrupted[0]


@pytest.mark.e2e
def test_a_rerun_after_a_cut_mid_write_completes_the_same_file(uninterrupted, iu_xray, tmp_path):
    cfg = cfg_of(iu_xray, tmp_path, eval_batch_size=4)
    lines = uninterrupted[0].splitlines(keepends=True)
    cfg.predictions_file.parent.mkdir(parents=True, exist_ok=True)
    cfg.predictions_file.write_text("".join(lines[:5]) + lines[5][:17])  # 5 rows and a torn sixth
    result = evaluate(cfg)
    assert cfg.predictions_file.read_text() == uninterrupted[0] and result["n_answered"] == 12


@pytest.mark.e2e
def test_inference_meddr_sh_killed_halfway_then_restarted(uninterrupted, iu_xray, tmp_path):
    cmd = documented_argv("MODEL=/path/to/meddr-hf METAFILE=data/iu_xray/test.jsonl IMAGE_ROOT=data/iu_xray/images "
                          "TASK=report OUT_DIR=outputs/meddr BATCH_SIZE=8 bash inference_meddr.sh",
                          replace={"/path/to/meddr-hf": "tiny", "data/iu_xray/test.jsonl": str(iu_xray),
                                   "data/iu_xray/images": str(iu_xray.parent), "outputs/meddr": str(tmp_path),
                                   "BATCH_SIZE=8": "BATCH_SIZE=2"},
                          append=["device=cpu", "max_new_tokens=12", "meteor=false"])
    env = documented_env()
    preds = tmp_path / "iu_xray_test_predictions.jsonl"
    killed_at = kill_when_written(cmd, env, preds, min_lines=4)
    assert 0 < killed_at < 12, "the run was not caught halfway"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert f"{killed_at} of 12 questions already answered; {12 - killed_at} to go" in done.stderr
    assert preds.read_text() == uninterrupted[0]
    assert "metrics:" in done.stdout and (tmp_path / "iu_xray_test_metrics.json").is_file()
    metrics = (tmp_path / "iu_xray_test_metrics.json").read_text()
    # score_only with the command's settings (in this process) scores the same file again; scoring checks the
    # manifest as resuming does: another model's name never lands on these answers
    command = {"model": "tiny", "metafile": str(iu_xray), "image_root": str(iu_xray.parent), "task": "report",
               "out_dir": str(tmp_path), "eval_batch_size": 2, "device": "cpu", "max_new_tokens": 12,
               "meteor": False, "score_only": True}
    rescored = evaluate(load_config(EvalConfig, REPO / "configs/meddr/eval.yaml", command))
    assert rescored["metrics"] == json.loads(metrics)["metrics"]
    with pytest.raises(ResumeMismatchError, match="iu_xray_test_predictions.jsonl holds 12 answers of another run "
                       "\\(model: .*score it with the settings that wrote it"):
        evaluate(load_config(EvalConfig, REPO / "configs/meddr/eval.yaml", {**command, "model": "meddr-40b"}))
    assert json.loads((tmp_path / "iu_xray_test_metrics.json").read_text())["model"] == "tiny"


@pytest.mark.e2e
def test_an_unreadable_image_is_logged_and_skipped(iu_xray, tmp_path, caplog):
    rows = [json.loads(line) for line in iu_xray.read_text().splitlines()[:3]]
    rows[1]["image"] = "missing/0.png"
    (tmp_path / "broken.png").write_bytes(b"not a png")
    rows[2]["image"] = str(tmp_path / "broken.png")
    meta = tmp_path / "meta.jsonl"
    meta.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = cfg_of(meta, tmp_path / "out", image_root=str(iu_xray.parent), max_skipped_fraction=1.0)
    result = evaluate(cfg)
    assert result["n_answered"] == 1 and [s["question_id"] for s in result["skipped"]] == ["1", "2"]
    assert "skipping question 1 (line 2)" in caplog.text
    # with the default max_skipped_fraction (0.05) two of three skipped is an error — after the metrics are written
    cfg = cfg_of(meta, tmp_path / "strict", image_root=str(iu_xray.parent))
    with pytest.raises(TooManySkippedError, match=r"^2 of 3 questions skipped \(e.g. line 2: image .*missing/0.png "
                                                  r"cannot be read.*\) — .*More than max_skipped_fraction 0.05"):
        evaluate(cfg)
    written = json.loads((tmp_path / "strict" / "meta_metrics.json").read_text())
    assert written["n_answered"] == 1 and len(written["skipped"]) == 2


def test_a_row_without_an_image_is_an_error_unless_text_only_is_declared(tmp_path):
    meta = tmp_path / "m.jsonl"
    meta.write_text('{"id": 1, "image": "a.png", "answer": "x"}\n{"id": 2, "imgae": "b.png", "answer": "y"}\n')
    with pytest.raises(ConfigError, match="m.jsonl line 2: no image \\(key 'image'\\); a text-only question needs "
                                          "allow_text_only=true"):
        read_metafile(cfg_of(meta, tmp_path))
    items = read_metafile(cfg_of(meta, tmp_path, allow_text_only=True))
    assert items[1].image is None and items[0].image == tmp_path / "a.png"


def test_metafile_errors_name_file_and_line(tmp_path):
    meta = tmp_path / "m.jsonl"
    meta.write_text('{"id": 1, "image": "a.png", "answer": "x"}\n{"id": 1, "image": "b.png", "answer": "y"}\n')
    with pytest.raises(ConfigError, match="m.jsonl line 2: question_id '1' repeats line 1"):
        evaluate(cfg_of(meta, tmp_path))
    meta.write_text('{"id": 1, "image": "a.png"}\n')
    with pytest.raises(ConfigError, match="line 1: no ground truth"):
        evaluate(cfg_of(meta, tmp_path))
    meta.write_text("{not json\n")
    with pytest.raises(ConfigError, match="line 1: not valid JSON"):
        evaluate(cfg_of(meta, tmp_path))
    meta.write_text('{"id": 1, "image": "a.png", "answer": "x"}\n')
    with pytest.raises(ConfigError, match="no prompt 'nope' for task 'report'; available: .*'default'"):
        evaluate(cfg_of(meta, tmp_path, prompt_set="nope"))
    with pytest.raises(ConfigError, match="needs options"):
        evaluate(cfg_of(meta, tmp_path, task="diagnosis"))


def test_diagnosis_and_vqa_tasks_score_parsed_answers(tmp_path):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    meta = tmp_path / "d.jsonl"
    meta.write_text("".join(json.dumps({"id": i, "image": "a.png", "answer": lab}) + "\n"
                            for i, lab in enumerate(["Tumor", "normal", "tumor"])))
    cfg = cfg_of(meta, tmp_path / "o", task="diagnosis", options=["normal", "tumor"])
    result = evaluate(cfg)
    m = result["metrics"]
    assert m["n"] == 3 and sum(map(sum, m["confusion"])) == 3 and len(m["confusion"][0]) == 3  # + unparsed column
    rows = [json.loads(line) for line in cfg.predictions_file.read_text().splitlines()]
    assert "The possible diagnoses are: 'normal', 'tumor'." in rows[0]["question"]

    # answers as a generalist writes them, scored again (score_only) with the natural reading and the literal one
    sentences = ["This is most likely a tumor.", "No tumor is seen.", "Tumor cells fill the patch."]
    cfg.predictions_file.write_text("".join(json.dumps({**r, "answer": a}) + "\n" for r, a in zip(rows, sentences)))
    natural = evaluate(cfg_of(meta, tmp_path / "o", task="diagnosis", options=["normal", "tumor"], score_only=True))
    assert natural["metrics"]["accuracy"] == 1.0 and natural["metrics"]["unparsed"] == 0
    literal = evaluate(cfg_of(meta, tmp_path / "o", task="diagnosis", options=["normal", "tumor"], score_only=True,
                              answer_parsing="literal"))
    assert literal["metrics"]["confusion"] == [[0, 1, 0], [0, 2, 0]]  # "No tumor is seen." read as tumor

    vqa = REPO / "data/examples/meddr/vqa_sample.jsonl"
    result = evaluate(cfg_of(vqa, tmp_path / "v", task="vqa"))
    assert result["metrics"]["n_closed"] == 2 and result["metrics"]["n_open"] == 1


@pytest.mark.e2e
def test_two_data_parallel_processes_write_the_same_file(uninterrupted, iu_xray, tmp_path, caplog):
    """GPUS=2 runs torchrun; on a CPU both processes use gloo, each answers half and the first merges."""
    lines = uninterrupted[0].splitlines(keepends=True)
    (tmp_path / "iu_xray_test_predictions.jsonl").write_text("".join(lines[:3]))  # an interrupted earlier run
    (tmp_path / "iu_xray_test_predictions.rank1.jsonl").write_text(lines[7] + lines[9][:20])
    proc = run_documented("GPUS=4 MODEL=/path/to/meddr-hf METAFILE=data/iu_xray/test.jsonl bash inference_meddr.sh",
                          replace={"GPUS=4": "GPUS=2", "/path/to/meddr-hf": "tiny",
                                   "data/iu_xray/test.jsonl": str(iu_xray)},
                          append=[f"out_dir={tmp_path}", "eval_batch_size=8", "device=cpu", "max_new_tokens=12",
                                  "meteor=false"])
    assert "4 of 12 questions already answered; 4 to go on rank 1/2" in proc.stderr
    assert (tmp_path / "iu_xray_test_predictions.jsonl").read_text() == uninterrupted[0]
    assert not list(tmp_path.glob("*.rank*.jsonl"))

    # what a killed GPUS=2 run leaves (its manifest and each rank's part file), resumed by one process (in this one:
    # the command's settings through inference_meddr.sh's config): with another prompt every stale answer is refused;
    # with the same settings the parts are adopted, none left
    (tmp_path / "iu_xray_test_predictions.jsonl").unlink()  # killed before any merge: all answers in parts
    (tmp_path / "iu_xray_test_predictions.rank0.jsonl").write_text("".join(lines[:5]))
    (tmp_path / "iu_xray_test_predictions.rank1.jsonl").write_text("".join(lines[6:8]))
    command = {"model": "tiny", "metafile": str(iu_xray), "out_dir": str(tmp_path), "eval_batch_size": 8,
               "device": "cpu", "max_new_tokens": 12, "meteor": False}
    with pytest.raises(ResumeMismatchError, match="iu_xray_test_predictions.jsonl line 1 \\(question_id 0\\): its "
                       "question is not the one asked now"):
        evaluate(load_config(EvalConfig, REPO / "configs/meddr/eval.yaml", {**command, "prompt_set": "iu_xray"}))
    with caplog.at_level(logging.INFO):
        evaluate(load_config(EvalConfig, REPO / "configs/meddr/eval.yaml", command))
    assert "7 of 12 questions already answered; 5 to go" in caplog.text
    assert sorted((tmp_path / "iu_xray_test_predictions.jsonl").read_text().splitlines(keepends=True)) == sorted(lines)
    assert not list(tmp_path.glob("*.rank*.jsonl"))


@pytest.mark.e2e
def test_r2gen_annotation_becomes_a_metafile_the_evaluator_reads(tmp_path):
    from gsco.data.r2gen import main as r2gen_main
    from gsco.recipes.evaluate import read_metafile

    from doc_commands import run_documented

    out = tmp_path / "iu_test.jsonl"
    run_documented("python -m gsco.data.r2gen annotation=data/iu_xray/annotation.json split=test "
                   "metafile=data/iu_xray/test.jsonl",
                   replace={"data/iu_xray/annotation.json": str(shared_path("data", "iu_xray", "annotation.json")),
                            "data/iu_xray/test.jsonl": str(out)})
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 1180 and rows[1]["answer"] == rows[0]["answer"] == rows[0]["text"]  # one row per view
    assert [r["question_id"] for r in rows] == list(range(1180))
    items = read_metafile(cfg_of(out, tmp_path, image_root="/images"))
    assert len(items) == 1180 and str(items[0].image) == f"/images/{rows[0]['image']}"
    assert r2gen_main([f"annotation={shared_path('data', 'iu_xray', 'annotation.json')}", "views=first",
                       f"metafile={tmp_path / 'studies.jsonl'}"]) == 0
    studies = [json.loads(line) for line in (tmp_path / "studies.jsonl").read_text().splitlines()]
    assert len(studies) == 590 and studies[0]["image"] == studies[0]["images"][0] == rows[0]["image"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"test": [{"id": "x", "report": "r"}]}')
    assert r2gen_main([f"annotation={bad}", f"metafile={out}"]) == 2


@pytest.mark.e2e
def test_a_registered_dataset_becomes_diagnosis_questions_the_trainer_and_evaluator_read(tmp_path):
    from gsco.data.conversations import read_training_data
    from gsco.data.diagnosis_questions import main as questions_main
    from gsco.recipes.evaluate import read_metafile

    data = shared_path("data", "medmnist", "breastmnist.npz").parent
    assert questions_main(["dataset=breastmnist", f"data_path={data}", f"out_dir={tmp_path}",
                           "splits=[val,test]"]) == 0
    samples = read_training_data(tmp_path / "breastmnist_val_conversations.json")
    assert len(samples) == 78 and samples[0].image.is_file()
    assert samples[0].conversations[1]["value"] in ("malignant", "normal or benign")
    assert "breast ultrasound image. The possible diagnoses are: 'malignant', 'normal or benign'." \
        in samples[0].conversations[0]["value"]
    items = read_metafile(cfg_of(tmp_path / "breastmnist_test.jsonl", tmp_path, task="diagnosis"))
    assert len(items) == 156 and items[0].options == ["malignant", "normal or benign"]
    assert sum(it.annotation == "malignant" for it in items) == 42


def test_a_multi_label_dataset_becomes_questions_scored_label_by_label(tmp_path, toy_registry):
    from gsco.data.diagnosis_questions import write_diagnosis_questions
    from gsco.metrics.answers import multilabel_metrics

    from conftest import TOY_DATASETS, write_npz

    entry = TOY_DATASETS["toy_multilabel"]
    npz = write_npz(tmp_path / "data", "toy_multilabel", entry["task"], 4, sizes=(6, 4, 5))
    labels = np.load(npz)["test_labels"]
    written = write_diagnosis_questions("toy_multilabel", tmp_path / "data", tmp_path / "q", splits=("test",),
                                        extra_datasets=str(toy_registry))
    samples = json.loads(written["test"].read_text())
    names = entry["label_names"]
    for sample, row in zip(samples, labels):
        expected = " and ".join(n for n, on in zip(names, row) if on) or "no finding"
        assert sample["conversations"][1]["value"] == expected
    assert "name every diagnosis that applies, or 'no finding'" in samples[0]["conversations"][0]["value"]
    # answers already written (the run resumes, nothing to generate): scored as label sets
    meta = tmp_path / "q" / "toy_multilabel_test.jsonl"
    items = [json.loads(line) for line in meta.read_text().splitlines()]
    answers = ["X and y.", "no finding", "w", "I am not sure", samples[4]["conversations"][1]["value"]]
    cfg = cfg_of(meta, tmp_path / "o", task="diagnosis")
    cfg.predictions_file.parent.mkdir(parents=True)
    cfg.predictions_file.write_text("".join(json.dumps({"question_id": it["question_id"], "answer": a}) + "\n"
                                            for it, a in zip(items, answers)))
    m = evaluate(cfg)["metrics"]
    truth = [[n for n, on in zip(names, row) if on] for row in labels]
    parsed = [["x", "y"], [], ["w"], None, truth[4]]
    assert m == multilabel_metrics(truth, parsed, names) and m["unparsed"] == 1


def test_questions_about_one_image_share_its_prefix_and_answer_as_without(tmp_path, vision_tower_calls):
    """VQA rows asking several questions about one image: in a batch the image is opened once and goes through the
    vision tower once (share_prefix, the default); the predictions file equals share_prefix=false's."""
    rng = np.random.default_rng(2)
    rows = []
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(tmp_path / f"v{i}.png")
        rows += [{"id": i, "image": f"v{i}.png", "question_id": f"{i}-{j}", "question": q, "answer": "yes"}
                 for j, q in enumerate(["Is there an effusion?", "Is the heart enlarged?", "What organ is shown?"])]
    meta = tmp_path / "vqa.jsonl"
    meta.write_text("".join(json.dumps(r) + "\n" for r in rows))
    seen, files = vision_tower_calls, {}
    for share in (False, True):
        seen.clear()
        cfg = cfg_of(meta, tmp_path / str(share), task="vqa", eval_batch_size=6, share_prefix=share)
        evaluate(cfg)
        files[share] = cfg.predictions_file.read_text()
        assert seen == ([6, 3] if not share else [2, 1])  # batches of 6 questions: images 0-1, then 2
    assert files[True] == files[False] and len(files[True].splitlines()) == 9
