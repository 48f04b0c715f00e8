"""The one resumable answering loop that MedDr evaluation, GSCo arms and report evaluation share."""

import json

import pytest

from gsco.generalist.resumable import answer_resumably, chunks


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
    with caplog.at_level("INFO", logger="gsco.generalist.resumable"):
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
