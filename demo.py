"""One-off questions to MedDr (or any transformers image-text-to-text model directory).

    python demo.py                                            # tiny preset, random weights: shows the path runs
    python demo.py model=/path/to/meddr-hf image=x.png question="What abnormality is seen?"
    python demo.py model=DIR image=a.png question="..." image=b.png question="..."
    python demo.py model=DIR pairs=questions.jsonl            # {"image": ..., "question": ...} per line

Keys (also from ``--config FILE``): model, image, question (repeat both, in pairs), pairs, system, show_prompt
(print what the model receives for the first question), max_new_tokens, num_beams,
eval_batch_size, device, dtype, device_map, quantization, the render keys (window, plane, view, ...), and backend=openai
base_url=... model_name=... for a model served behind an OpenAI-compatible API (API_KEY from the environment);
web=true opens the web app instead. Answers go to stdout, one per line (newlines inside an answer are kept as
"\\n"); logs go to stderr. A converted MedDr directory comes from
`python -m gsco.meddr.convert original=ORIGINAL out_dir=DIR`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from gsco.data.render import RenderSettings
from gsco.generalist.backends import GeneralistSettings

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
    image: list[str] = dataclasses.field(default_factory=list)  # image files, paired with the questions in order
    question: list[str] = dataclasses.field(default_factory=list)  # the questions, one per image (or none)
    pairs: str | None = None  # JSONL file of {image, question} rows
    system: str | None = None  # system message (null: none beyond what the chat template writes itself)
    max_new_tokens: int = 256  # answer length limit
    num_beams: int = 1  # 1: greedy
    eval_batch_size: int = 8  # questions per generate() call
    # --- the web app (python demo.py web=true) ---
    web: bool = False  # open the web app instead of answering on the command line
    specialists: list[str] | None = None  # web app, GSCo mode: the specialists' {...}_results.json files
    gsco: str | None = None  # web app, GSCo mode: a GSCo config (options, prompt pieces, rad_k; null: the defaults)
    data_path: str | None = None  # web app, GSCo mode: the specialists' data (null: where they were trained)
    port: int = 7860  # web app: the local port it listens on
    keep_uploads: str = "outputs/web/uploads"  # web app: where "keep my upload" copies a file (else none is kept)

    def validate(self) -> None:
        self.check()  # the render keys
        self.check_generalist()


def answer_and_print(cfg: DemoConfig) -> None:
    pairs = collect_pairs(cfg)
    from gsco.data.readers import open_image
    from gsco.generalist import check_model_argument
    from gsco.generalist.backends import load_generalist

    if cfg.backend == "local":
        check_model_argument(cfg.model)
    opened: dict[str, object] = {}  # one object per file: questions about one image share its prefix
    for image, _ in pairs:  # every image read (DICOM / NIfTI rendered as the render keys say) before loading
        if image is not None and image not in opened:
            opened[image] = open_image(image, cfg)
    images = [None if image is None else opened[image] for image, _ in pairs]
    generalist = load_generalist(cfg)
    from gsco.generalist.inputs import show_prompt

    show_prompt(generalist, cfg, images[0], pairs[0][1], cfg.system)
    answers = generalist.answer(images, [q for _, q in pairs], max_new_tokens=cfg.max_new_tokens,
                                num_beams=cfg.num_beams, batch_size=cfg.eval_batch_size, system=cfg.system)
    if None in answers:
        raise RuntimeError(f"{answers.count(None)} of {len(answers)} questions got no answer from the server (logged)")
    for answer in answers:
        print(answer.replace("\n", "\\n"))


def serve_web(cfg: DemoConfig) -> None:
    """The web app: the generalist (and the specialists, for GSCo mode) loaded once, then the page until Ctrl+C."""
    from gsco.collab.config import GscoConfig
    from gsco.collab.single import LiveSpecialist, Workbench
    from gsco.collab.web import build_app
    from gsco.config import load_config
    from gsco.generalist.backends import GENERALIST_KEYS
    from gsco.runtime import repo_file

    specialists = [LiveSpecialist(path, cfg.data_path, cfg.device) for path in cfg.specialists or []]
    keys = {k: getattr(cfg, k) for k in GENERALIST_KEYS} | {"max_new_tokens": cfg.max_new_tokens}
    if specialists and not cfg.gsco:
        keys["dataset"] = specialists[0].info.name
    workbench = Workbench(load_config(GscoConfig, repo_file(cfg.gsco) if cfg.gsco else None, keys), specialists)
    app = build_app(workbench, cfg.keep_uploads, render=cfg)
    print(f"web app: http://127.0.0.1:{cfg.port}", flush=True)
    app.launch(server_name="127.0.0.1", server_port=cfg.port, quiet=True)


def run_demo(cfg: DemoConfig) -> None:
    if cfg.web:
        serve_web(cfg)
    else:
        answer_and_print(cfg)


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
    from gsco.cli import command

    return command(DemoConfig, run_demo, description=__doc__.split("\n\n")[0])(argv)


if __name__ == "__main__":
    sys.exit(main())
