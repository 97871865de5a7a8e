"""Serve a Space's ``app.py`` and drive its Gradio page in headless Chromium, as a person would.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install -y chromium chromium-driver``).
Both paths are given to Selenium explicitly, so Selenium Manager never tries to download a driver.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Literal

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
    "--window-size=1280,1400",
)
INSTALL_HINT = (
    "install Debian's Chromium: apt-get update && apt-get install -y chromium chromium-driver"
)

#: A guard against hangs only (a loaded two-core machine can be slow), never a speed requirement.
PAGE_TIMEOUT_S = 60


def chromium_paths() -> tuple[str, str]:
    """The Chromium binary and its driver; RuntimeError with the install command if either is missing."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver is None:
        raise RuntimeError(f"chromium={browser}, chromedriver={driver}: {INSTALL_HINT}")
    return browser, driver


def headless_chromium(profile_dir: Path) -> WebDriver:
    """A fresh headless Chromium with its own profile folder."""
    browser, driver = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile_dir}")
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServedApp:
    """``python app.py`` in its Space folder on a free port of 127.0.0.1, offline."""

    def __init__(self, app: Path, work_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = work_dir / "app.log"
        env = {
            **os.environ,
            "GRADIO_SERVER_NAME": "127.0.0.1",
            "GRADIO_SERVER_PORT": str(self.port),
            "GRADIO_ANALYTICS_ENABLED": "False",
            "GRADIO_TEMP_DIR": str(work_dir / "gradio"),
            "HF_HOME": str(work_dir / "hf"),
            "HF_HUB_OFFLINE": "1",
            "HF_EVALUATE_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
        }
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, app.name], cwd=app.parent, env=env, stdout=log, stderr=log
            )

    def wait_until_serving(self, timeout_s: float = 180) -> str:
        """The URL once Gradio answers; RuntimeError with the log if the app died or never answered."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"app exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "gradio_api/info", timeout=5) as answer:
                    if answer.status == 200:
                        return self.url
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.3)
        raise RuntimeError(f"app not serving after {timeout_s} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class GradioPage:
    """The metric page: inputs found by their ``elem_id`` (the ``compute`` argument names)."""

    def __init__(self, driver: WebDriver, url: str) -> None:
        self.driver = driver
        self.wait = WebDriverWait(
            driver, PAGE_TIMEOUT_S, ignored_exceptions=(StaleElementReferenceException,)
        )
        driver.get(url)
        self.wait.until(lambda d: d.find_elements(By.ID, "submit"))
        self._shown_before = ""

    def type_into(self, elem_id: str, text: str) -> None:
        box = self.driver.find_element(By.CSS_SELECTOR, f"#{elem_id} textarea, #{elem_id} input")
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(Keys.DELETE)
        if text:
            box.send_keys(text)

    def choose(self, elem_id: str, option: str) -> None:
        self.driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input").click()
        item = f"li[data-testid='dropdown-option'][aria-label='{option}']"
        self.wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, item))[0].click()
        self.wait.until(
            lambda d: (
                d.find_element(By.CSS_SELECTOR, f"#{elem_id} input").get_attribute("value")
                == option
            )
        )

    def tick(self, elem_id: str) -> None:
        self.driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=checkbox]").click()

    def submit(self) -> None:
        self._shown_before = self.driver.find_element(By.ID, "result").text
        self.driver.find_element(By.ID, "submit").click()

    def result(self) -> Any:
        """The JSON in ``#result`` once the last submit finished and changed it.

        Two submits in a row must therefore produce different results.
        """

        def shown(driver: WebDriver) -> str | Literal[False]:
            box = driver.find_element(By.ID, "result")
            trackers = box.find_elements(By.CSS_SELECTOR, "[data-testid='status-tracker']")
            if any("hide" not in (tracker.get_attribute("class") or "") for tracker in trackers):
                return False  # still running: the old result shows under a progress timer
            text = box.text
            if "{" not in text or text == self._shown_before:
                return False
            return text[text.index("{") :]

        # The JSON viewer puts every token on its own line; no value here holds a newline.
        return json.loads("".join(self.wait.until(shown).splitlines()))

    def error(self) -> str:
        """The text of the error toast, once one shows."""

        def shown(driver: WebDriver) -> str | Literal[False]:
            toasts = driver.find_elements(By.CSS_SELECTOR, "[data-testid='toast-text']")
            return str(toasts[0].text) if toasts and toasts[0].text else False

        return self.wait.until(shown)
