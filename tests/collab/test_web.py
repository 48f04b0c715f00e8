"""The web app (``python demo.py web=true``) in headless Chromium, as a user meets it: upload a real chest X-ray, ask,
and read demo.py's own answer; in GSCo mode the specialist's prediction, the retrieved training cases as
thumbnails and every arm's prompt and answer; a non-image upload is one readable message on the page. The test's
browser also makes README's screenshot (GSCO_SCREENSHOT=docs/gsco_web.png writes it there)."""

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from gsco.collab.arms import generalist_arms

from conftest import REPO, shared_path
from doc_commands import documented_argv, documented_env, run_documented

pytestmark = pytest.mark.e2e
QUESTION = "What abnormality is seen?"


def chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or "/usr/lib/chromium/chromedriver"
    assert browser and Path(driver).exists(), ("headless Chromium is needed: apt-get install chromium "
                                                "chromium-driver (.ci/run installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,2300"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.fixture(scope="module")
def specialist(tmp_path_factory):
    from gsco.config import load_config
    from gsco.specialists.config import SpecialistConfig
    from gsco.specialists.predict import predict_specialist
    from gsco.specialists.train import train_specialist

    cfg = load_config(SpecialistConfig, None, {
        "dataset": "breastmnist", "data_path": str(shared_path("data", "medmnist")), "architecture": "test_resnet",
        "output_path": str(tmp_path_factory.mktemp("specialist")), "epochs": 1, "img_size": 28,
        "preprocess": "native", "pretrained": False, "device": "cpu", "search_top_n": 3})
    train_specialist(cfg)
    return predict_specialist(cfg)["files"].results


def wait_for(condition, timeout=120, what="the page"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_web_app_answers_as_demo_py_and_shows_gscos_evidence(specialist, tmp_path):
    from selenium.webdriver.common.by import By

    image = sorted(shared_path("data", "cxr").glob("*.png"))[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    keys = ["max_new_tokens=6", "device=cpu"]
    argv = documented_argv("python demo.py web=true model=/path/to/meddr-hf "
                           "specialists=[A_results.json,B_results.json] gsco=configs/gsco/breastmnist.yaml",
                           replace={"/path/to/meddr-hf": "tiny", "[A_results.json,B_results.json]": f"[{specialist}]"},
                           append=[f"port={port}", f"keep_uploads={tmp_path / 'kept'}", *keys])
    server = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=documented_env({"GRADIO_ANALYTICS_ENABLED": "False",
                                                  "GRADIO_TEMP_DIR": str(tmp_path / "gradio")}))
    cli = run_documented('python demo.py model=/path/to/meddr-hf image=chest.png question="What abnormality is seen?"',
                         replace={"/path/to/meddr-hf": "tiny", "chest.png": str(image)}, append=keys)
    browser = None
    try:
        wait_for(lambda: _up(port) or server.poll() is not None, what="the web app to start")
        assert server.poll() is None, server.stdout.read()[-3000:]
        browser = chromium()
        browser.get(f"http://127.0.0.1:{port}")
        upload = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))[0]
        upload.send_keys(str(image))
        question = browser.find_element(By.CSS_SELECTOR, "#question textarea")
        question.clear()
        question.send_keys(QUESTION)
        time.sleep(1)  # the upload settles
        browser.find_element(By.CSS_SELECTOR, "#ask").click()
        answer = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "#answer textarea").get_attribute("value"),
                          what="MedDr's answer")
        assert answer == cli.stdout.splitlines()[0].replace("\\n", "\n")  # demo.py's answer, same model and image

        browser.find_element(By.XPATH, "//*[@id='mode']//label[contains(., 'GSCo')]").click()
        browser.find_element(By.CSS_SELECTOR, "#keep input").click()  # the user asks to keep this upload
        browser.find_element(By.CSS_SELECTOR, "#ask").click()
        def arms_shown():
            shown = browser.find_element(By.CSS_SELECTOR, "#arms").text
            return shown if "moed_prob" in shown else ""

        text = wait_for(arms_shown, what="the arms")
        lines = text.splitlines()
        for arm in generalist_arms(report=False):  # each registered arm, its prompt, its answer
            at = lines.index(arm)
            assert lines[at + 1].startswith("You are a helpful medical assistant.") and lines[at + 2].strip(), arm
        assert "(no answer)" not in text and "'malignant', 'normal or benign'" in text
        thumbnails = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#neighbours img"), what="thumbnails")
        assert len(thumbnails) >= 4 and "test_resnet" in browser.find_element(By.CSS_SELECTOR, "#specialists").text
        shot = Path(os.environ.get("GSCO_SCREENSHOT") or tmp_path / "gsco_web.png")
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000

        (tmp_path / "notes.txt").write_text("not an image")
        browser.refresh()
        upload = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))[0]
        upload.send_keys(str(tmp_path / "notes.txt"))
        time.sleep(1)
        browser.find_element(By.CSS_SELECTOR, "#ask").click()
        message = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "#message").text, what="the message")
        assert message.startswith("This file cannot be read as an image") and "Traceback" not in message
        assert [p.name for p in (tmp_path / "kept").iterdir()] == [image.name]  # kept as asked, nothing else
        # the reload ended the first page's session: its upload is gone; this page's stays until its tab closes
        assert not list((tmp_path / "gradio").rglob(image.name)) and list((tmp_path / "gradio").rglob("notes.txt"))
        browser.quit()
        browser = None
        wait_for(lambda: not list((tmp_path / "gradio").rglob("notes.txt")), timeout=90,
                 what="the upload to be deleted when its tab closed")
    finally:
        if browser is not None:
            browser.quit()
        server.terminate()
        server.wait(timeout=30)


def _up(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}", timeout=2).status == 200
    except OSError:
        return False
