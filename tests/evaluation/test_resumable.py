"""The one resumable answering loop that MedDr evaluation, GSCo arms and report evaluation share."""

import json

import pytest

from gsco.evaluation.resumable import answer_resumably, chunks


def rows_of(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_interrupted_run_resumes_and_a_left_out_row_is_retried(tmp_path, caplog):
    out = tmp_path / "sub" / "answers.jsonl"
    rows = [{"id": i, "q": f"question {i}"} for i in range(7)]
    unreadable, asked = {3}, []

    def ask(todo, fail_after=None):
        for k, chunk in enumerate(chunks(todo, 2, "answering")):
            if fail_after is not None and k == fail_after:
                raise KeyboardInterrupt
            asked.extend(r["id"] for r in chunk)
            yield [{"question_id": str(r["id"]), "answer": r["q"].upper()} for r in chunk if r["id"] not in unreadable]

    with pytest.raises(KeyboardInterrupt):
        answer_resumably(rows, out, lambda todo: ask(todo, fail_after=2), id_of=lambda r: str(r["id"]))
    assert [r["question_id"] for r in rows_of(out)] == ["0", "1", "2"]  # two chunks written; 3 left out

    asked.clear()
    with caplog.at_level("INFO", logger="gsco.evaluation.resumable"):
        done = answer_resumably(rows, out, ask, id_of=lambda r: str(r["id"]),
                                message="{done} of {total} answered, {todo} to go")
    assert asked == [3, 4, 5, 6] and done == {"rank": 0, "world": 1, "todo": 4, "written": 3}
    assert "3 of 7 answered, 4 to go" in caplog.text
    unreadable.clear()  # the image became readable: the next run answers only that row
    asked.clear()
    assert answer_resumably(rows, out, ask, id_of=lambda r: str(r["id"]))["written"] == 1 and asked == [3]
    assert [r["question_id"] for r in rows_of(out)] == ["0", "1", "2", "4", "5", "6", "3"]
    assert rows_of(out)[-1] == {"question_id": "3", "answer": "QUESTION 3"}
    asked.clear()
    assert answer_resumably(rows, out, ask, id_of=lambda r: str(r["id"]))["todo"] == 0 and asked == []


def test_rows_keyed_by_another_field_and_a_torn_last_line(tmp_path):
    out = tmp_path / "reports.jsonl"
    out.write_text(json.dumps({"id": "a", "answer": "x"}) + "\n" + '{"id": "b", "ans')  # a kill mid-write
    ids = ["a", "b", "c"]
    done = answer_resumably(list(range(3)), out, lambda todo: iter([[{"id": ids[i], "answer": "y"} for i in todo]]),
                            id_of=lambda i: ids[i], key="id")
    assert done["written"] == 2 and [r["id"] for r in rows_of(out)] == ["a", "b", "c"]


def _ask(asked):
    def ask(todo):
        asked.extend(r["id"] for r in todo)
        yield [{"question_id": str(r["id"]), "question": r["q"], "answer": r["q"].upper()} for r in todo]
    return ask


def test_a_run_of_another_model_or_input_is_refused_and_overwrite_starts_over(tmp_path):
    from gsco.evaluation.resumable import ResumeMismatchError

    out = tmp_path / "answers.jsonl"
    rows = [{"id": i, "q": f"question {i}"} for i in range(3)]
    first = {"model": {"path": "/models/a"}, "metafile": "sha-1", "max_new_tokens": 8}
    answer_resumably(rows[:2], out, _ask([]), id_of=lambda r: str(r["id"]), manifest=first)
    assert json.loads((tmp_path / "answers.manifest.json").read_text())["metafile"] == "sha-1"
    asked = []  # the same run, resumed: only the new row
    answer_resumably(rows, out, _ask(asked), id_of=lambda r: str(r["id"]), manifest=first)
    assert asked == [2]
    other = {**first, "model": {"path": "/models/b"}}
    with pytest.raises(ResumeMismatchError, match=r"holds 3 answers of another run \(model: .*/models/a.* -> "
                                                  r".*/models/b.*\): write to a new out_dir, or give overwrite=true"):
        answer_resumably(rows, out, _ask([]), id_of=lambda r: str(r["id"]), manifest=other)
    asked = []
    answer_resumably(rows, out, _ask(asked), id_of=lambda r: str(r["id"]), manifest=other, overwrite=True)
    assert asked == [0, 1, 2] and len(rows_of(out)) == 3
    assert json.loads((tmp_path / "answers.manifest.json").read_text())["model"] == {"path": "/models/b"}


def test_a_resumed_row_must_carry_the_question_asked_now(tmp_path):
    from gsco.evaluation.resumable import ResumeMismatchError

    out = tmp_path / "answers.jsonl"
    rows = [{"id": i, "q": f"question {i}"} for i in range(3)]
    answer_resumably(rows[:2], out, _ask([]), id_of=lambda r: str(r["id"]), question_of=lambda r: r["q"])
    changed = [{**r, "q": r["q"] + " with a hint"} if r["id"] == 1 else r for r in rows]
    with pytest.raises(ResumeMismatchError, match=r"answers.jsonl line 2 \(question_id 1\): its question is not "
                                                  r"the one asked now \(question 1 vs question 1 with a hint\)"):
        answer_resumably(changed, out, _ask([]), id_of=lambda r: str(r["id"]), question_of=lambda r: r["q"])


def test_rows_written_twice_are_reported_and_kept_once(tmp_path, caplog):
    out = tmp_path / "answers.jsonl"
    line = {"question_id": "0", "question": "q", "answer": "A"}
    out.write_text("".join(json.dumps(r) + "\n" for r in (line, {**line, "question_id": "1"}, line)))
    asked = []
    with caplog.at_level("WARNING"):
        answer_resumably([{"id": i, "q": "q"} for i in range(3)], out, _ask(asked), id_of=lambda r: str(r["id"]))
    assert "1 rows were written more than once (e.g. 0" in caplog.text and "without a manifest" in caplog.text
    assert [r["question_id"] for r in rows_of(out)] == ["0", "1", "2"] and asked == [2]


def test_one_writer_per_output_folder(tmp_path):
    import fcntl

    from gsco.runtime import OutputLockedError, output_lock

    with output_lock(tmp_path) as folder:  # held by this process: it may nest, the loop inside takes it too
        answer_resumably([{"id": 0, "q": "q"}], tmp_path / "a.jsonl", _ask([]), id_of=lambda r: str(r["id"]))
        assert (folder / ".gsco.lock").read_text().strip().isdigit()
        other = open(folder / ".gsco.lock")  # another holder's view: the lock is taken
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        other.close()
    with open(tmp_path / ".gsco.lock") as f:  # released at the end
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(OutputLockedError, match=f"{tmp_path} is being written by another run"):
            with output_lock(tmp_path):
                pass


def test_part_files_of_a_killed_data_parallel_run_pass_the_same_checks_and_are_adopted(tmp_path, caplog):
    """A killed torchrun leaves {stem}.rank{R}.jsonl beside the manifest; a re-run of any world size folds them into
    the main file first, so a changed prompt or model is refused for them too, and none is left behind."""
    from gsco.evaluation.resumable import ResumeMismatchError

    out = tmp_path / "answers.jsonl"
    rows = [{"id": i, "q": f"question {i}"} for i in range(6)]
    manifest = {"model": {"path": "/models/a"}}
    answer_resumably(rows[:1], out, _ask([]), id_of=lambda r: str(r["id"]), manifest=manifest)
    (tmp_path / "answers.rank0.jsonl").write_text(json.dumps({"question_id": "2", "question": "question 2",
                                                              "answer": "QUESTION 2"}) + "\n")
    (tmp_path / "answers.rank1.jsonl").write_text(json.dumps({"question_id": "3", "question": "question 3",
                                                              "answer": "QUESTION 3"}) + '\n{"question_id": "5"')
    changed = [{**r, "q": r["q"] + " (another prompt)"} if r["id"] >= 2 else r for r in rows]  # only parts' rows
    with pytest.raises(ResumeMismatchError, match=r"answers.jsonl line 2 \(question_id 2\): its question is not"):
        answer_resumably(changed, out, _ask([]), id_of=lambda r: str(r["id"]), manifest=manifest,
                         question_of=lambda r: r["q"])
    with pytest.raises(ResumeMismatchError, match=r"holds 3 answers of another run \(model: "):
        answer_resumably(rows, out, _ask([]), id_of=lambda r: str(r["id"]), manifest={"model": {"path": "/b"}})
    asked = []
    with caplog.at_level("INFO", logger="gsco.evaluation.resumable"):
        done = answer_resumably(rows, out, _ask(asked), id_of=lambda r: str(r["id"]), manifest=manifest,
                                question_of=lambda r: r["q"])
    assert asked == [1, 4, 5] and done["written"] == 3 and not list(tmp_path.glob("*.rank*"))
    assert sorted(r["question_id"] for r in rows_of(out)) == [str(i) for i in range(6)]
    asked = []  # parts and overwrite: both go
    (tmp_path / "answers.rank1.jsonl").write_text(json.dumps({"question_id": "9", "answer": "x"}) + "\n")
    answer_resumably(rows, out, _ask(asked), id_of=lambda r: str(r["id"]), manifest=manifest, overwrite=True)
    assert asked == list(range(6)) and not list(tmp_path.glob("*.rank*")) and len(rows_of(out)) == 6
