"""Answers that survive interruption: the one loop every evaluation uses (MedDr, GSCo arms, the report specialist).

Rows are appended to a JSONL file batch by batch and flushed; a re-run reads what is there (dropping a line torn by
a kill) and does only the rest. Under torchrun each process appends to its own part file
(``{stem}.rank{R}.jsonl``); when all are done the first process folds the parts into the main file, in the input's
order, so one and many processes leave the same file. Parts left by a killed run are folded in before a re-run (of
any world size) checks what it resumes, so they pass the same checks as the main file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from gsco.errors import GscoError
from gsco.evaluation.process import distributed_context
from gsco.runtime import append_rows, read_json, read_predictions

logger = logging.getLogger(__name__)
Row = TypeVar("Row")


class ResumeMismatchError(GscoError, ValueError):
    """An output file written by a run that is not this one (another model, input, prompt or setting)."""


@dataclass
class Output:
    """One resumable output of :func:`answer_resumably_many`: its JSONL file, the manifest of what produces it, the
    question each of its rows must carry (None: not checked) and its log line (fields as ``answer_resumably``)."""

    path: Path
    manifest: dict | None = None
    question_of: Callable | None = None
    message: str = "{out}: {done} of {total} already answered, {todo} to go"


def answer_resumably(rows: Sequence[Row], out: Path, ask: Callable[[list[Row]], Iterable[list[dict]]],
                     id_of: Callable[[Row], str], key: str = "question_id",
                     message: str = "{out}: {done} of {total} already answered, {todo} to go",
                     rank_note: str = " (rank {rank} of {world} takes every {world}th)", *,
                     manifest: dict | None = None, question_of: Callable[[Row], str] | None = None,
                     question_key: str = "question", overwrite: bool = False) -> dict:
    """The one resumable answering loop (MedDr evaluation, GSCo arms, report evaluation).

    ``rows`` are the inputs in order, ``id_of(row)`` their ids, which the written rows carry under ``key``.
    ``ask(todo)`` gets this process's rows that are not answered yet and yields lists of output rows, each list
    appended and flushed as it comes (a row it leaves out, e.g. an unreadable image, is retried by the next run).
    Under torchrun each process takes every world-th row into its part file, and the first folds the parts into
    ``out`` in the input's order. ``message`` (+ ``rank_note`` under data parallel) is the log line before the
    work, in the caller's words: fields ``out``, ``done``, ``total``, ``todo`` (all processes), ``mine`` (this
    one's), ``rank``, ``world``. Returns ``rank``, ``world``, ``todo`` (this process's rows) and ``written``.

    A run knows what it resumes: ``manifest`` (what produced the answers: model identity, input fingerprint,
    settings that shape them) is kept beside ``out`` as ``{stem}.manifest.json``, and a re-run whose manifest
    differs is refused with what differs (``overwrite=True`` starts over instead); with ``question_of`` each
    resumed row's stored ``question_key`` must equal the question that would be asked now. One writer per folder
    (:func:`gsco.runtime.output_lock`); rows found twice are reported and kept once."""
    def ask_one(todo: list[tuple[Row, list[str]]]) -> Iterator[dict[str, list[dict]]]:
        for batch in ask([row for row, _ in todo]):
            yield {"": batch}

    return answer_resumably_many(rows, {"": Output(out, manifest, question_of, message)}, ask_one, id_of, key,
                                 rank_note, question_key=question_key, overwrite=overwrite)


def answer_resumably_many(rows: Sequence[Row], outputs: dict[str, Output],
                          ask: Callable[[list[tuple[Row, list[str]]]], Iterable[dict[str, list[dict]]]],
                          id_of: Callable[[Row], str], key: str = "question_id",
                          rank_note: str = " (rank {rank} of {world} takes every {world}th)", *,
                          question_key: str = "question", overwrite: bool = False) -> dict:
    """:func:`answer_resumably` for several outputs over the same rows (a GSCo case's arms), each with its own
    file, manifest and resume: ``ask`` gets (row, names of the outputs it still lacks) pairs and yields
    {output name: rows}, each appended to its output as it comes. Under torchrun a process takes every world-th
    row that any output lacks, so the work for one row stays together (the arms of a case in one batch)."""
    from gsco.runtime import output_lock

    rank, world = distributed_context()
    with contextlib.ExitStack() as held:
        for folder in sorted({o.path.parent for o in outputs.values()}):
            folder.mkdir(parents=True, exist_ok=True)
            if rank == 0:
                held.enter_context(output_lock(folder))
        ids = [id_of(r) for r in rows]
        lacking: dict[str, set[str]] = {}
        for name, o in outputs.items():
            if rank == 0:
                written_rows = prepare_output(o.path, o.manifest, overwrite, key)
                if o.question_of is not None:
                    check_questions(o.path, written_rows, rows, id_of, o.question_of, key, question_key)
            done = answered_ids(o.path, rank, world, key)
            lacking[name] = {i for i in ids if i not in done}
        todo = [(r, [n for n in outputs if i in lacking[n]]) for r, i in zip(rows, ids)
                if any(i in lacking[n] for n in outputs)]
        mine, written = todo[rank::world], 0
        for name, o in outputs.items():
            fields = {"out": o.path, "done": len(rows) - len(lacking[name]), "total": len(rows),
                      "todo": len(lacking[name]), "mine": sum(name in names for _, names in mine), "rank": rank,
                      "world": world}
            logger.info((o.message + (rank_note if world > 1 else "")).format(**fields))
        parts = {n: o.path if world == 1 else o.path.with_name(f"{o.path.stem}.rank{rank}.jsonl")
                 for n, o in outputs.items()}
        if mine:
            for batch in ask(mine):
                for name, produced in batch.items():
                    if produced:
                        append_rows(parts[name], produced)
                        written += len(produced)
        if world > 1:
            for o in outputs.values():
                merge_parts(o.path, ids, rank, world, key)
    return {"rank": rank, "world": world, "todo": len(mine), "written": written}


def manifest_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}.manifest.json")


def prepare_output(out: Path, manifest: dict | None, overwrite: bool, key: str) -> list[dict]:
    """Before resuming ``out``: start over (``overwrite``), or check that the stored manifest is this run's; keep
    each row once; record the manifest. Returns the rows kept."""
    import gsco
    from gsco.runtime import write_json

    stored_file = manifest_path(out)
    if overwrite:
        for old in [out, stored_file, *part_files(out)]:
            old.unlink(missing_ok=True)
    rows = adopt_parts(out, key)
    if manifest is None:
        manifest = {}
    current = {**manifest, "gsco": gsco.__version__}
    if rows and stored_file.is_file():
        check_manifest(out, manifest, len(rows), "write to a new out_dir, or give overwrite=true to start over")
    elif rows:
        logger.warning("%s: %d answers without a manifest (written before runs recorded one); resuming them as "
                       "this run's", out, len(rows))
    seen: dict[str, int] = {}
    for r in rows:
        seen[str(r[key])] = seen.get(str(r[key]), 0) + 1
    twice = [i for i, n in seen.items() if n > 1]
    if twice:
        logger.warning("%s: %d rows were written more than once (e.g. %s; two runs at once?); kept the first of each",
                       out, len(twice), twice[0])
        kept, first = [], set()
        for r in rows:
            if str(r[key]) not in first:
                first.add(str(r[key]))
                kept.append(r)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
        tmp.replace(out)
        rows = kept
    write_json(current, stored_file)
    return rows


def check_manifest(out: Path, manifest: dict, n_rows: int, advice: str) -> None:
    """``out``'s stored manifest must be ``manifest`` (what this run would write): else one ResumeMismatchError
    naming what differs, then ``advice``."""
    import gsco

    stored = read_json(manifest_path(out), "run manifest")
    differ = [k for k in sorted(set(manifest) | set(stored) - {"gsco"}) if stored.get(k) != manifest.get(k)]
    if differ:
        shown = "; ".join(f"{k}: {_short(stored.get(k))} -> {_short(manifest.get(k))}" for k in differ[:3])
        raise ResumeMismatchError(f"{out} holds {n_rows} answers of another run ({shown}): {advice}")
    if stored.get("gsco") != gsco.__version__:
        logger.warning("%s: written by gsco %s, read by %s", out, stored.get("gsco"), gsco.__version__)


def part_files(out: Path) -> list[Path]:
    """The per-process files (``{stem}.rank{R}.jsonl``) a data-parallel run appends to before its merge."""
    return sorted(out.parent.glob(f"{out.stem}.rank*.jsonl"))


def adopt_parts(out: Path, key: str) -> list[dict]:
    """Fold the part files that an interrupted data-parallel run left (any world size) into ``out`` before
    anything is checked, so its answers pass the same manifest and question checks as the main file's and no part
    file outlives the run that resumes them. Returns ``out``'s rows."""
    parts = part_files(out)
    rows = read_predictions(out)
    if not parts:
        return rows
    have = {str(r[key]) for r in rows}
    adopted = []
    for part in parts:
        for r in read_predictions(part):
            if str(r[key]) not in have:
                have.add(str(r[key]))
                adopted.append(r)
    if adopted:
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows + adopted))
        tmp.replace(out)
    for part in parts:
        part.unlink()
    logger.info("%s: took %d answers from %d part files of an interrupted data-parallel run", out, len(adopted),
                len(parts))
    return rows + adopted


def check_questions(out: Path, written: list[dict], rows: Sequence[Row], id_of: Callable[[Row], str],
                    question_of: Callable[[Row], str], key: str, question_key: str) -> None:
    """Each answered row's stored question must be the one this run would ask (a changed prompt or case file)."""
    asked = {id_of(r): r for r in rows}
    for lineno, stored in enumerate(written, 1):
        row = asked.get(str(stored[key]))
        if row is not None and question_key in stored and stored[question_key] != question_of(row):
            raise ResumeMismatchError(
                f"{out} line {lineno} ({key} {stored[key]}): its question is not the one asked now "
                f"({_short(stored[question_key])} vs {_short(question_of(row))}); the prompt or its inputs changed: "
                "write to a new out_dir, or give overwrite=true to start over")


def _short(value, width: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return text if len(text) <= width else text[: width - 1] + "…"


def chunks(rows: Sequence[Row], size: int, desc: str) -> Iterator[list[Row]]:
    """``rows`` in lists of ``size``, with a progress bar (the first process's only)."""
    from tqdm import tqdm

    rank, _ = distributed_context()
    with tqdm(total=len(rows), desc=desc, file=sys.stderr, disable=rank != 0) as bar:
        for start in range(0, len(rows), size):
            chunk = list(rows[start:start + size])
            yield chunk
            bar.update(len(chunk))


def answered_ids(out: Path, rank: int, world: int, key: str = "question_id") -> set[str]:
    """Ids (rows' ``key``) already answered (the predictions file and, under data parallel, every process's part
    file). The first process reads, the others receive its set, so all split the remaining work the same way."""
    if world == 1:
        return {r[key] for r in read_predictions(out)}
    import torch.distributed as dist

    shared: list = [None]
    if rank == 0:
        files = [out, *part_files(out)]
        shared = [{r[key] for f in files for r in read_predictions(f)}]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


def merge_parts(out: Path, order: list[str], rank: int, world: int, key: str = "question_id") -> None:
    """After every process is done, the first one folds the part files into ``out`` in ``order`` (ids, the rows'
    ``key``), then removes them."""
    import torch.distributed as dist

    dist.barrier()
    if rank == 0:
        parts = [out.with_name(f"{out.stem}.rank{r}.jsonl") for r in range(world)]
        rows = {r[key]: r for p in [out, *parts] for r in read_predictions(p)}
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text("".join(json.dumps(rows[q], ensure_ascii=False) + "\n" for q in order if q in rows))
        tmp.replace(out)
        for p in parts:
            p.unlink(missing_ok=True)
    dist.barrier()
