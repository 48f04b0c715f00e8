"""What several test modules build (test modules import nothing from each other): a specialist results file, a tiny
LLaVA generalist, PCam-style cases, a local Range-capable HTTP server (the ``server`` fixture in conftest), and the
generated quadrant task the fine-tuning tests (and bench/bench_quantization.py) learn."""

import contextlib
import functools
import http.server
import json
import threading

import numpy as np
from PIL import Image


def fake_results(path, y_true, seed, top_n=10, n_train=546, split="test"):
    """A specialist results file with the reference's keys (predictions drawn at random)."""
    rng = np.random.default_rng(seed)
    prob = rng.dirichlet([1, 1], size=len(y_true))
    path.write_text(json.dumps({
        "dataset": "breastmnist", "split": split, "task": "binary-class",
        "label_names": ["malignant", "normal or benign"],
        "img_size": 28, "y_true": [[int(y)] for y in y_true], "y_pred": prob.argmax(1).tolist(),
        "y_prob": prob.tolist(), "all_search_train_labels": rng.integers(0, 2, (len(y_true), top_n)).tolist(),
        "all_search_train_ids": rng.integers(0, n_train, (len(y_true), top_n)).tolist(),
        "all_search_sims": np.sort(rng.random((len(y_true), top_n)), axis=1).tolist()}))
    return json.loads(path.read_text())


def build_tiny_llava(path):
    """A second, non-InternVL generalist built locally: tiny LLaVA (CLIP vision tower + Llama) with a chat
    template, saved as a transformers directory."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from gsco.meddr.processor import build_byte_tokenizer

    tok = build_byte_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    template = (
        "{%- for m in messages -%}{{- m['role'] | upper + ': ' -}}"
        "{%- if m['content'] is string -%}{{- m['content'] -}}{%- else -%}{%- for c in m['content'] -%}"
        "{%- if c['type'] == 'image' -%}{{- '<image>\\n' -}}{%- else -%}{{- c['text'] -}}{%- endif -%}"
        "{%- endfor -%}{%- endif -%}{{- '\\n' -}}{%- endfor -%}{%- if add_generation_prompt -%}ASSISTANT:{%- endif -%}")
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, image_size=28, patch_size=14),
        text_config=LlamaConfig(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, vocab_size=300),
        image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="full")
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(path)
    LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 28},
                                                      crop_size={"height": 28, "width": 28}),
                   tokenizer=tok, patch_size=14, vision_feature_select_strategy="full", num_additional_image_tokens=1,
                   chat_template=template).save_pretrained(path)
    return path


def pcam_cases(folder, n):
    """``folder/cases.json``: n PCam200-style cases over generated images, with growing RAD hints."""
    from PIL import Image

    rng = np.random.default_rng(3)
    cases = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(folder / f"c{i}.png")
        cases.append({"id": f"c{i}", "image": f"c{i}.png", "label": "tumor", "rad": ["normal"] * (i + 1),
                      "moed": ["tumor", "normal"]})
    (folder / "cases.json").write_text(json.dumps(cases))
    return cases


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """A static server that honours ``Range: bytes=N-`` (206), as zenodo does; it counts the bytes it sends."""

    sent: list = []
    drop_after: int | None = None  # send only this many bytes of the next response, then close the connection
    ignore_range = False  # answer a range request with the whole file (200), as servers without range support do

    def do_GET(self):  # noqa: N802 - http.server's name
        path = self.translate_path(self.path)
        try:
            data = open(path, "rb").read()
        except OSError:
            self.send_error(404)
            return
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        start = 0 if RangeHandler.ignore_range else start
        self.sent.append(len(data) - start)  # before the body: the client may be done before this thread returns
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if RangeHandler.drop_after is not None:
            cut, RangeHandler.drop_after = RangeHandler.drop_after, None
            self.wfile.write(data[start:start + cut])
            self.close_connection = True
            return
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve_folder(served):
    """``served`` behind a local :class:`RangeHandler` server: yields its base URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(RangeHandler, directory=str(served)))
    RangeHandler.sent, RangeHandler.drop_after, RangeHandler.ignore_range = [], None, False
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


QUADRANTS = ["top left", "top right", "bottom left", "bottom right"]
OPTIONS = " Options: top left, top right, bottom left, bottom right."
QUESTIONS = {"square": "Which quadrant holds the bright square?" + OPTIONS,
             "disc": "Which quadrant holds the red disc?" + OPTIONS}


def quadrant_task(root, n, seed, shape="square"):
    """Dark noise with one bright 24 px square (or a red disc); the answer is its quadrant (chance: 25 %)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        q = int(rng.integers(4))
        img = rng.integers(0, 60, (112, 112, 3)).astype(np.uint8)
        y0, x0 = (q // 2) * 56 + int(rng.integers(6, 26)), (q % 2) * 56 + int(rng.integers(6, 26))
        if shape == "square":
            img[y0:y0 + 24, x0:x0 + 24] = 255
        else:
            yy, xx = np.mgrid[:112, :112]
            img[(yy - y0 - 12) ** 2 + (xx - x0 - 12) ** 2 <= 144] = (255, 80, 80)
        name = f"{shape}{seed}_{i}.png"
        Image.fromarray(img).save(root / name)
        rows.append({"id": name, "image": name, "answer": QUADRANTS[q], "question": QUESTIONS[shape],
                     "conversations": [{"from": "human", "value": "<image>\n" + QUESTIONS[shape]},
                                       {"from": "gpt", "value": QUADRANTS[q]}]})
    return rows
