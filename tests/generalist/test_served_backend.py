"""The served generalist's own behaviour, against a scripted local HTTP server: what it sends (greedy, the image as
a lossless data URL, the API key only in its header), retries on 429 / 5xx, a failed question skipped and said,
a silent server stopping the run, and what the API cannot honour said once."""

import base64
import http.server
import io
import json
import logging
import threading

import numpy as np
import pytest
from PIL import Image

from gsco.config import ConfigError, load_config
from gsco.generalist.served import ServedGeneralist, ServerUnavailableError


class Scripted(http.server.BaseHTTPRequestHandler):
    """Answers /v1/models with one model and each chat completion with the next scripted status (200: an answer
    echoing the question)."""

    script: list = []
    seen: list = []

    def do_GET(self):  # noqa: N802 - http.server's name
        self._send(200, {"object": "list", "data": [{"id": "served-model", "object": "model", "created": 0,
                                                      "owned_by": "test"}]})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Scripted.seen.append({"body": body, "auth": self.headers.get("Authorization")})
        status = Scripted.script.pop(0) if Scripted.script else 200
        if isinstance(status, (str, dict)):  # a 200 whose body is not a usable chat completion
            data = status.encode() if isinstance(status, str) else json.dumps(status).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain" if isinstance(status, str) else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if status != 200:
            self._send(status, {"error": {"message": f"scripted {status}"}}, {"retry-after-ms": "5"})
            return
        question = body["messages"][-1]["content"][-1]["text"]
        self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": f" re: {question} "}}]})

    def _send(self, status, payload, headers=None):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def scripted(monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    Scripted.script, Scripted.seen = [], []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("API_KEY", "sk-scripted-secret")
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_requests_are_greedy_carry_the_exact_pixels_and_retry_429_and_5xx(scripted, caplog):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (9, 7, 3), dtype=np.uint8))
    Scripted.script = [429, 503]  # the first question's first two tries
    generalist = ServedGeneralist(scripted, concurrency=1, max_retries=3)
    assert generalist.model_name == "served-model"
    with caplog.at_level(logging.INFO):
        answers = generalist.answer([image, None], ["What is seen?", "Text only?"], max_new_tokens=7,
                                    system="Be brief.")
    assert answers == ["re: What is seen?", "re: Text only?"] and len(Scripted.seen) == 4
    body = Scripted.seen[0]["body"]
    assert body["temperature"] == 0 and body["max_tokens"] == 7 and body["model"] == "served-model"
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    url = body["messages"][1]["content"][0]["image_url"]["url"]
    sent = Image.open(io.BytesIO(base64.b64decode(url.removeprefix("data:image/png;base64,"))))
    assert np.array_equal(np.asarray(sent), np.asarray(image))  # lossless
    assert Scripted.seen[-1]["body"]["messages"][-1]["content"] == [{"type": "text", "text": "Text only?"}]
    assert {s["auth"] for s in Scripted.seen} == {"Bearer sk-scripted-secret"}
    assert "sk-scripted-secret" not in caplog.text


def test_a_refused_question_is_skipped_a_silent_server_stops_and_unsupported_keys_are_said_once(scripted, caplog):
    generalist = ServedGeneralist(scripted, model_name="m", concurrency=2, max_retries=0)
    Scripted.script = [400]
    with caplog.at_level(logging.WARNING):
        answers = generalist.answer([None, None], ["first", "second"], 5, num_beams=3, min_new_tokens=2)
        generalist.answer([None], ["third"], 5, num_beams=3, min_new_tokens=2)
    assert answers.count(None) == 1 and set(answers) - {None} <= {"re: first", "re: second"}  # one got the 400
    assert caplog.text.count("num_beams=3: the OpenAI API has no beam search") == 1
    assert caplog.text.count("min_new_tokens=2: not part of the OpenAI API") == 1
    assert "HTTP 400" in caplog.text and "a re-run asks it again" in caplog.text
    Scripted.script = [500, 500]
    with pytest.raises(ServerUnavailableError, match="answered none of 2 questions .HTTP 500.*re-run to resume"):
        generalist.answer([None, None], ["a", "b"], 5)


def test_backend_keys_are_checked_when_the_config_loads():
    from gsco.recipes.evaluate import EvalConfig

    with pytest.raises(ConfigError, match="key 'base_url': backend=openai needs the server's URL"):
        load_config(EvalConfig, None, {"backend": "openai"})
    with pytest.raises(ConfigError, match="'concurrency' .>= 1."):
        load_config(EvalConfig, None, {"backend": "openai", "base_url": "http://x/v1", "concurrency": 0})
    with pytest.raises(ConfigError, match="backend"):
        load_config(EvalConfig, None, {"backend": "vllm"})


NULL_CONTENT = {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": None}}]}


@pytest.mark.parametrize("body, reason", [({"unexpected": "shape"}, "a malformed response: no choices[0].message"),
                                          ({**NULL_CONTENT, "choices": []}, "a malformed response"),
                                          (NULL_CONTENT, "an answer without text (content None)"),
                                          ("<html>proxy error</html>", "")])
def test_malformed_empty_or_null_responses_are_unanswered_questions_not_tracebacks(scripted, caplog, body, reason):
    """Each is one line, and the question stays unanswered (None), so a re-run asks it again — a null content
    used to be recorded as an empty answer and never asked again."""
    generalist = ServedGeneralist(scripted, model_name="m", concurrency=1, max_retries=0)
    Scripted.script = [body]
    with caplog.at_level(logging.WARNING):
        answers = generalist.answer([None, None], ["first", "second"], 5)
    assert answers == [None, "re: second"]
    assert "a question was not answered (" + reason in caplog.text and "re-run asks it again" in caplog.text
