"""Chapter 1 in JupyterLab, as a learner uses it: open it, run all cells, move the alpha slider, see the figure change.

JupyterLab runs on a free local port with a random token, on a copy of the chapter with the smoke
preset's parameters injected (as papermill would), and with its own settings folders, so that nothing
of the user's JupyterLab set-up is read or written. The server and its kernel are stopped in every case.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from _browser import chromium_context, free_port, require_chromium
from heatup_lib.reproduce import KERNEL_NAME, chapters, inject_parameters, load_preset, project_root

ROOT = project_root()
SCREENSHOTS = ROOT / "_build" / "screenshots" / "lab"
SLIDER_LABEL = "alpha"  # the panel slider the test moves


class Lab:
    """A JupyterLab server started for one test, with its REST API at hand."""

    def __init__(self, root_dir: Path, home: Path) -> None:
        self.port = free_port()
        self.token = secrets.token_hex(24)
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = home / "jupyterlab.log"
        env = {**os.environ,
               "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
               "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
               "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
        command = [str(Path(sys.executable).with_name("jupyter")), "lab", "--no-browser",
                   "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
                   f"--ServerApp.token={self.token}", f"--ServerApp.root_dir={root_dir}",
                   "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        if os.geteuid() == 0:
            command.append("--allow-root")
        # no "would you like to get notified about Jupyter news?" toast over the notebook
        notification = home / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        notification.parent.mkdir(parents=True, exist_ok=True)
        notification.write_text('{"fetchNews": "false"}\n')
        self._log = open(self.log_path, "wb")
        # its own process group, so that the kernels it starts can be stopped with it
        self.process = subprocess.Popen(command, cwd=root_dir, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)

    def log(self, tail: int = 4000) -> str:
        """The end of the server's log."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-tail:]

    def api(self, path: str, method: str = "GET", timeout: float = 10) -> Any:
        """Call the server's REST API; return the decoded JSON (None when there is no body)."""
        import json

        request = urllib.request.Request(f"{self.base}{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"},
                                         data=b"" if method in ("POST", "DELETE") else None)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def wait_ready(self, timeout: float = 120) -> None:
        """Wait until the server answers, or fail with its log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"JupyterLab exited with status {self.process.returncode}:\n{self.log()}", pytrace=False)
            try:
                self.api("/api/status", timeout=2)
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        pytest.fail(f"JupyterLab did not answer on {self.base} within {timeout:.0f} s:\n{self.log()}", pytrace=False)

    def kernels(self) -> list[dict]:
        """The running kernels (id, name, execution_state, ...)."""
        return self.api("/api/kernels")

    def stop(self) -> None:
        """Shut the kernels and the server down; kill the process group if they do not stop."""
        try:
            if self.process.poll() is None:
                for kernel in self.kernels():
                    self.api(f"/api/kernels/{kernel['id']}", method="DELETE")
                self.api("/api/shutdown", method="POST")
                self.process.wait(timeout=30)
        except Exception:  # the server may already be gone or stuck: fall through to the signals
            pass
        finally:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if self.process.poll() is not None:
                    break
                try:
                    os.killpg(self.process.pid, sig)
                    self.process.wait(timeout=15)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
            self._log.close()


def _wait(predicate, timeout: float, what: str, lab: Lab, interval: float = 0.5) -> Any:
    """Poll ``predicate`` until it returns something true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\nserver log:\n{lab.log()}", pytrace=False)


_IMAGE_DIGEST = """async (img) => {
    const bytes = await (await fetch(img.src)).arrayBuffer();
    const digest = await crypto.subtle.digest('SHA-256', bytes);
    return Array.from(new Uint8Array(digest), b => b.toString(16).padStart(2, '0')).join('');
}"""


def _prompts(page) -> list[str]:
    """The input prompts of the notebook's code cells, e.g. ['[1]:', '[*]:', '[ ]:']."""
    return [t.strip() for t in page.locator(".jp-CodeCell .jp-InputPrompt").all_text_contents()]


def exercise_panel(notebook: Path, work: Path, chromium: str, shots: Path | None = SCREENSHOTS) -> dict[str, Any]:
    """Open ``notebook`` in JupyterLab, run all cells, move the alpha slider; return what the figure did."""
    root_dir, home = work / "notebooks", work / "jupyter"
    root_dir.mkdir(parents=True, exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    lab = Lab(root_dir, home)
    try:
        lab.wait_ready()
        with chromium_context(chromium) as context:
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{lab.base}/lab/tree/{notebook.name}?token={lab.token}", wait_until="load", timeout=120_000)
            page.locator(".jp-NotebookPanel .jp-CodeCell").first.wait_for(timeout=120_000)
            _wait(lambda: [k for k in lab.kernels() if k["name"] == KERNEL_NAME and k["execution_state"] == "idle"],
                  120, f"the {KERNEL_NAME!r} kernel to start", lab)

            # Run > Run All Cells, as a learner does
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name=re.compile(r"^Run All Cells")).click()
            _wait(lambda: any(p == "[*]:" for p in _prompts(page)) or all(re.fullmatch(r"\[\d+\]:", p) for p in _prompts(page)),
                  60, "the cells to start running", lab)
            _wait(lambda: all(k["execution_state"] == "idle" for k in lab.kernels())
                  and not any(p == "[*]:" for p in _prompts(page)), 600, "Run All Cells to finish", lab)
            prompts = _prompts(page)
            not_run = [i for i, p in enumerate(prompts) if not re.fullmatch(r"\[\d+\]:", p)]
            assert not not_run, f"code cells {not_run} did not run (a cell before them failed?): prompts {prompts}"
            tracebacks = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').filter(
                has_text=re.compile(r"Traceback|Error")).all_text_contents()
            assert not tracebacks, f"cells raised errors in JupyterLab:\n{tracebacks[0][:3000]}"

            label = page.locator(".widget-label", has_text=re.compile(rf"^\s*{SLIDER_LABEL}\s*$"))
            slider = page.locator(".widget-slider", has=label).first
            slider.wait_for(timeout=60_000)
            output = page.locator(".jp-OutputArea-output", has=slider).first
            image = output.locator("img").first
            image.wait_for(timeout=60_000)
            slider.scroll_into_view_if_needed()
            readout = slider.locator(".widget-readout")
            before = {"src": image.get_attribute("src"), "digest": image.evaluate(_IMAGE_DIGEST),
                      "readout": readout.inner_text().strip()}
            if shots:
                output.screenshot(path=str(_shot(shots, "01_panel_before.png")))

            # keyboard, as a learner moves a focused slider: two steps up
            slider.locator(".noUi-handle").first.focus()
            page.keyboard.press("ArrowRight")
            page.keyboard.press("ArrowRight")
            _wait(lambda: image.get_attribute("src") != before["src"], 60, "the panel's figure to be redrawn", lab)
            _wait(lambda: all(k["execution_state"] == "idle" for k in lab.kernels()), 60, "the kernel to go idle", lab)
            page.wait_for_timeout(300)
            after = {"src": image.get_attribute("src"), "digest": image.evaluate(_IMAGE_DIGEST),
                     "readout": readout.inner_text().strip()}
            if shots:
                output.screenshot(path=str(_shot(shots, "01_panel_after.png")))
                page.screenshot(path=str(_shot(shots, "01_notebook.png")))
            return {"before": before, "after": after, "errors": errors, "prompts": prompts}
    finally:
        lab.stop()


def _shot(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def test_chapter1_panel_redraws_in_jupyterlab(tmp_path: Path) -> None:
    chromium = require_chromium()
    found = chapters(ROOT, ["01"])
    assert found, "chapter 1 (notebooks/01_*.ipynb) is missing"
    params = load_preset("smoke", ROOT)
    # absolute paths: the copy runs outside notebooks/, where the preset's relative paths point from
    params["runs_dir"] = str(tmp_path / "runs")
    params["records_dir"] = str(ROOT / "records")
    notebook = inject_parameters(found[0], tmp_path / "work" / "notebooks" / found[0].name, params)
    result = exercise_panel(notebook, tmp_path / "work", chromium)

    before, after = result["before"], result["after"]
    assert after["readout"] != before["readout"], f"the {SLIDER_LABEL} slider did not move: readout {before['readout']!r}"
    assert after["digest"] != before["digest"], "the figure's bytes did not change when alpha moved"
    assert not result["errors"], f"JavaScript errors in JupyterLab: {result['errors']}"
