"""One-off questions to MedDr (or any transformers image-text-to-text model directory).

    python demo.py                                            # tiny preset, random weights: shows the path runs
    python demo.py model=/path/to/meddr-hf image=x.png question="What abnormality is seen?"
    python demo.py model=DIR image=a.png question="..." image=b.png question="..."
    python demo.py model=DIR pairs=questions.jsonl            # {"image": ..., "question": ...} per line

Keys (also from ``--config FILE``): model, image, question (repeat both, in pairs), pairs, max_new_tokens, num_beams,
eval_batch_size, device, dtype, device_map, quantization, the render keys (window, plane, view, ...), and backend=openai
base_url=... model_name=... for a model served behind an OpenAI-compatible API (API_KEY from the environment). The former flags (``--model``, ``--image``, ``--question``, ``--pairs``,
``--max-new-tokens``, ...) are read for one release. Answers go to stdout, one per line (newlines inside an answer
are kept as "\\n"); logs go to stderr. A converted MedDr directory comes from
`python -m gsco.meddr.convert original=ORIGINAL out_dir=DIR`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from gsco.data.render import RenderSettings
from gsco.generalist.served import GeneralistSettings

DEFAULT_IMAGE = Path(__file__).resolve().parent / "data" / "examples" / "images" / "case0.png"
DEFAULT_QUESTION = "Describe the findings in this chest X-ray."


def read_pairs(path: Path) -> list[tuple[str | None, str]]:
    """JSONL rows ``{"image": path-or-null, "question": text}``; relative image paths are relative to the file."""
    if not path.is_file():
        raise ValueError(f"key 'pairs': file {path} does not exist")
    pairs = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} line {lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict) or "question" not in row:
            raise ValueError(f"{path} line {lineno}: expected an object with 'question' (and 'image')")
        image = row.get("image")
        if image is not None and not Path(image).is_absolute():
            image = str(path.parent / image)
        pairs.append((image, str(row["question"])))
    return pairs


@dataclasses.dataclass
class DemoConfig(RenderSettings, GeneralistSettings):
    # earlier key names -> their names now; configs and overrides with an earlier name still load (a warning)
    RENAMED = {"batch_size": "eval_batch_size"}
    image: list[str] = dataclasses.field(default_factory=list)  # image files, paired with the questions in order
    question: list[str] = dataclasses.field(default_factory=list)  # the questions, one per image (or none)
    pairs: str | None = None  # JSONL file of {image, question} rows
    max_new_tokens: int = 256  # answer length limit
    num_beams: int = 1  # 1: greedy
    eval_batch_size: int = 8  # questions per generate() call

    def validate(self) -> None:
        self.check()  # the render keys
        self.check_generalist()


def answer_and_print(cfg: DemoConfig) -> None:
    pairs = collect_pairs(cfg)
    from gsco.data.readers import open_image
    from gsco.generalist import check_model_argument
    from gsco.generalist.served import load_generalist

    if cfg.backend == "local":
        check_model_argument(cfg.model)
    opened: dict[str, object] = {}  # one object per file: questions about one image share its prefix
    for image, _ in pairs:  # every image read (DICOM / NIfTI rendered as the render keys say) before loading
        if image is not None and image not in opened:
            opened[image] = open_image(image, cfg)
    images = [None if image is None else opened[image] for image, _ in pairs]
    generalist = load_generalist(cfg)
    answers = generalist.answer(images, [q for _, q in pairs], max_new_tokens=cfg.max_new_tokens,
                                num_beams=cfg.num_beams, batch_size=cfg.eval_batch_size)
    if None in answers:
        raise RuntimeError(f"{answers.count(None)} of {len(answers)} questions got no answer from the server (logged)")
    for answer in answers:
        print(answer.replace("\n", "\\n"))


def collect_pairs(cfg: DemoConfig) -> list[tuple[str | None, str]]:
    pairs = read_pairs(Path(cfg.pairs)) if cfg.pairs else []
    if cfg.image or cfg.question:
        if len(cfg.question) != len(cfg.image):
            raise ValueError(f"{len(cfg.image)} image but {len(cfg.question)} question: give image= and question= "
                             "in pairs")
        pairs += list(zip(cfg.image, cfg.question))
    if not pairs:
        pairs = [(str(DEFAULT_IMAGE), DEFAULT_QUESTION)]
    for i, (_, question) in enumerate(pairs, 1):
        if not question.strip():
            raise ValueError(f"question {i} is empty")
    return pairs


def main(argv: list[str] | None = None) -> int:
    from gsco.cli import Alias, command

    aliases = {f"--{key.replace('_', '-')}": Alias(key) for key in
               ("model", "image", "question", "pairs", "max_new_tokens", "num_beams", "device", "dtype",
                "device_map")} | {"--batch-size": Alias("eval_batch_size")}
    return command(DemoConfig, answer_and_print, description=__doc__.split("\n\n")[0], aliases=aliases)(argv)


if __name__ == "__main__":
    sys.exit(main())
