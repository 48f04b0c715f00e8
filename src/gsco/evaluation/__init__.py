"""What every evaluation shares, whatever answers (a generalist, GSCo's arms, the report specialist): the process's
place in a data-parallel job (:mod:`~gsco.evaluation.process`, the one reader of RANK / WORLD_SIZE), the resumable
answering loop with its part files and manifests (:mod:`~gsco.evaluation.resumable`), and the run around it —
lock, answer, score on the first process, skip check (:mod:`~gsco.evaluation.runner`)."""

from gsco.evaluation.process import distributed_context, is_main_process, main_process_lock, process_device
from gsco.evaluation.resumable import Output, ResumeMismatchError, answer_resumably, answer_resumably_many, chunks
from gsco.evaluation.runner import TooManySkippedError, check_skipped, run_evaluation

__all__ = ["Output", "ResumeMismatchError", "TooManySkippedError", "answer_resumably", "answer_resumably_many",
           "check_skipped", "chunks", "distributed_context", "is_main_process", "main_process_lock",
           "process_device", "run_evaluation"]
