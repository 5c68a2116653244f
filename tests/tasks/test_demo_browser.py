"""The demo page in a real headless browser (Debian's chromium, driven by Selenium through chromium-driver):
open the page, move a slider, generate, and see the steered text of that strength; a screenshot is saved."""

from __future__ import annotations

import shutil
from importlib.util import find_spec

import pytest
import torch

import lineas
from lineas.tasks.configs import DemoConfig, Sampling
from lineas.tasks.demo import build_app, load_demo, serve
from lineas.tasks.generate import generate
from tests.helpers import random_maps_for

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
MISSING = [
    what
    for what, present in (
        ("chromium (apt-get install chromium)", shutil.which(CHROMIUM)),
        ("chromium-driver (apt-get install chromium-driver)", shutil.which(DRIVER)),
        ("selenium (pip install selenium)", find_spec("selenium")),
        ("gradio (pip install lineas[demo])", find_spec("gradio")),
    )
    if not present
]
PROMPT = "Hello there, how are you today?"


@pytest.mark.slow
@pytest.mark.skipif(bool(MISSING), reason=f"no headless browser test without {', '.join(MISSING)}")
def test_move_a_slider_and_generate_in_a_real_browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    backbone = lineas.CausalLM("tiny:llama")
    maps = random_maps_for(backbone, "mlp_out", scale=0.5, generator=torch.Generator().manual_seed(5))
    sampling = Sampling(max_new_tokens=12, seed=3)
    cfg = DemoConfig(maps=str(maps.save(tmp_path / "maps")), prompt=PROMPT, sampling=sampling)
    app = build_app(load_demo(cfg), cfg)
    url = serve(app, block=False)
    # What the page must show at strength 0.5 (the slider starts at 1 and moves ten steps of 0.05 down).
    expected = [
        r["continuation"]
        for r in generate(backbone.model, backbone.tokenizer, [PROMPT], maps, (0.5,), sampling, progress=False)
    ]
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        browser.get(url)
        wait = WebDriverWait(browser, 120)
        slider = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#strength-0 input[type=range]"))
        slider.click()
        slider.send_keys(Keys.END)  # all the way to 1, wherever the click landed
        for _ in range(10):
            slider.send_keys(Keys.ARROW_LEFT)
        assert float(slider.get_attribute("value")) == pytest.approx(0.5)
        browser.find_element(By.ID, "generate").click()
        steered = browser.find_element(By.CSS_SELECTOR, "#steered textarea")
        wait.until(lambda b: steered.get_attribute("value") == expected[0])
        base = browser.find_element(By.CSS_SELECTOR, "#base textarea").get_attribute("value")
        assert base and base != expected[0]
        shot = tmp_path / "page.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        browser.quit()
        app.close()
