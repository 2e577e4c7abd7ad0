"""The web demo end to end in a real headless browser: upload an image, every task's picture renders."""

from __future__ import annotations

import shutil
import socket

import numpy as np
import pytest
import torch
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

import scenemtl
from scenemtl.engine.serve import build_app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def browser() -> webdriver.Chrome:
    """Debian's chromium, headless, driven by its chromedriver (``make install`` installs both)."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert binary and driver, "the browser test needs chromium and chromedriver: apt-get install chromium chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1600"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.mark.slow
def test_an_uploaded_image_shows_every_task_in_the_browser(tmp_path):
    torch.manual_seed(0)
    model = scenemtl.create_model(
        "hps", tasks=["semseg", "depth", "normals", "edge"], dataset="nyud", backbone="test_resnet", head_channels=8
    )
    tasks = list(model.meta.config.tasks)
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(image)
    app = build_app(model, device="cpu")
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    driver = browser()
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(driver, 60)
        upload = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#input-image input[type=file]")))
        upload.send_keys(str(image))
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#input-image img")))
        driver.find_element(By.ID, "predict").click()
        for task in tasks:  # each task panel gets its picture, with a label naming the task
            picture = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, f"#task-{task} img")))
            wait.until(lambda _: picture.get_attribute("naturalWidth") not in (None, "0"))
            assert task in driver.find_element(By.ID, f"task-{task}").text
        assert int(driver.find_element(By.CSS_SELECTOR, "#task-semseg img").get_attribute("naturalWidth")) == 64
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#raw a")))  # the raw outputs to download
    finally:
        driver.quit()
        app.close()
    saved = sorted(app.scenemtl_outputs.glob("*.npz"))
    assert len(saved) == 1 and set(np.load(saved[0]).files) == set(tasks)
