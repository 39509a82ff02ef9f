"""A real installation (``launch.py standalone`` in a temporary directory) and Debian's chromium
driven by Playwright. Missing chromium or Playwright skips with the reason, or fails when
CI=true (the test command installs both)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.polling import wait_until
from tests.servers import unavailable

ROOT = Path(__file__).resolve().parents[2]
#: Where the tests save their screenshots (``TACTUS_SCREENSHOTS=docs/screenshots`` refreshes the
#: ones the README shows).
SCREENSHOTS = Path(os.environ.get("TACTUS_SCREENSHOTS") or ROOT / "build" / "screenshots")
#: Chromium flags for a closed network as root (no sandbox without user namespaces; no calls home).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Seconds the page may take to show what the scheduler and the workers did.
LIVE = 60_000


@dataclass(frozen=True)
class Installation:
    base_url: str
    token: str
    directory: Path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def installation(tmp_path_factory):
    """``launch.py standalone`` with the browser context, on a free port, for the session."""
    directory = tmp_path_factory.mktemp("browser")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TACTUS_")}
    env.update(
        PYTHONPATH=str(ROOT),
        TACTUS_MX_PORT=str(port),
        TACTUS_HEARTBEAT_INTERVAL="0.5",
        TACTUS_SUPERVISOR_POLL="0.2",
        TACTUS_STOPWAITSECS="5",
    )
    log = (directory / "standalone.out").open("wb")
    context = ROOT / "tests" / "fixtures" / "contexts" / "browser.py"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "launch.py"), "standalone", "--context", str(context)],
        cwd=directory,
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    token_file = directory / "var" / "admin.token"
    try:
        wait_until(
            lambda: token_file.exists() or proc.poll() is not None,
            deadline=60,
            what="the admin token file",
        )
        assert proc.poll() is None, (directory / "standalone.out").read_text()[-3000:]
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(port), deadline=30, what="mx to listen")
        yield Installation(base, token_file.read_text().strip(), directory)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright is not installed (pip install -e '.[dev]')")
    executable = os.environ.get("TACTUS_CHROMIUM") or shutil.which("chromium")
    if executable is None:
        unavailable("chromium is not installed (apt-get install chromium)")
    try:
        playwright = sync_playwright().start()
    except Exception as exc:  # noqa: BLE001 - whatever stops the driver, with its reason
        unavailable(
            f"Playwright's driver did not start ({_first_line(exc)}); on Debian it needs"
            " libatomic1 (scripts/test-services installs it)"
        )
    try:
        try:
            browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        except Exception as exc:  # noqa: BLE001 - a chromium that cannot start, with its reason
            unavailable(f"{executable} did not start under Playwright ({_first_line(exc)})")
        yield browser
        browser.close()
    finally:
        playwright.stop()


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


@pytest.fixture
def page(browser, installation):
    """A fresh browser context logged in with the installation's admin token."""
    context = browser.new_context(
        base_url=installation.base_url, viewport={"width": 1360, "height": 860}
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    # Script errors and policy refusals; an answer's HTTP status is the tests' own to check.
    page.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and "the server responded with a status of" not in m.text
            else None
        ),
    )
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto("/")
    assert "/login" in page.url
    page.fill("input[name=token]", installation.token)
    page.click("button:has-text('Log in')")
    page.wait_for_url(f"{installation.base_url}/")
    yield page
    context.close()
    # The page loads nothing it cannot find and breaks no rule of its own security policy.
    assert errors == []


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
