"""One-off questions to MedDr (or any transformers image-text-to-text model directory).

    python demo.py                                            # tiny preset, random weights: shows the path runs
    python demo.py --model /path/to/meddr-hf --image x.png --question "What abnormality is seen?"
    python demo.py --model DIR --image a.png --question "..." --image b.png --question "..."
    python demo.py --model DIR --pairs questions.jsonl        # {"image": ..., "question": ...} per line

Answers go to stdout, one per line (newlines inside an answer are kept as "\\n"); logs go to stderr.
A converted MedDr directory comes from `python -m gsco.meddr.convert --src ORIGINAL --dst DIR`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_IMAGE = Path(__file__).resolve().parent / "data" / "examples" / "images" / "case0.png"
DEFAULT_QUESTION = "Describe the findings in this chest X-ray."


def read_pairs(path: Path) -> list[tuple[str | None, str]]:
    """JSONL rows ``{"image": path-or-null, "question": text}``; relative image paths are relative to the file."""
    if not path.is_file():
        raise ValueError(f"--pairs file {path} does not exist")
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model directory, or a MedDr preset name (default: tiny)")
    parser.add_argument("--image", action="append", default=[], help="image file (repeat, paired with --question)")
    parser.add_argument("--question", action="append", default=[], help="question text (repeat)")
    parser.add_argument("--pairs", type=Path, default=None, help="JSONL file of {image, question} rows")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU), bfloat16, float16, float32")
    parser.add_argument("--device-map", default=None, help="e.g. auto: shard a large model over the visible GPUs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from gsco.runtime import setup_logging

    setup_logging()
    try:
        pairs = collect_pairs(args)
        from gsco.data.readers import open_image
        from gsco.generalist import Generalist, check_model_argument

        check_model_argument(args.model)
        images = [None if image is None else open_image(image) for image, _ in pairs]  # fail before loading
        generalist = Generalist.load(args.model, args.device, args.dtype, args.device_map)
        answers = generalist.answer(images, [q for _, q in pairs], max_new_tokens=args.max_new_tokens,
                                    num_beams=args.num_beams, batch_size=args.batch_size)
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for answer in answers:
        print(answer.replace("\n", "\\n"))
    return 0


def collect_pairs(args: argparse.Namespace) -> list[tuple[str | None, str]]:
    pairs = read_pairs(args.pairs) if args.pairs else []
    if args.image or args.question:
        if len(args.question) != len(args.image):
            raise ValueError(f"{len(args.image)} --image but {len(args.question)} --question: give them in pairs")
        pairs += list(zip(args.image, args.question))
    if not pairs:
        pairs = [(str(DEFAULT_IMAGE), DEFAULT_QUESTION)]
    for i, (_, question) in enumerate(pairs, 1):
        if not question.strip():
            raise ValueError(f"question {i} is empty")
    return pairs


if __name__ == "__main__":
    sys.exit(main())
