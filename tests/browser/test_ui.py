"""The Prefect UI as a user sees it: Debian's chromium, driven by Playwright, against a real
Prefect server on 127.0.0.1 and a real process worker running the train-local deployment.

Skipped only when chromium or Playwright's Python package is missing (no browser download).
Screenshots go to the test's tmp folder; their paths are printed when the test fails.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO_ROOT
from tests.prefect_api import http
from tests.train_helpers import write_original_layout_csv

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
POOL = "kubetrain-local"
DEPLOYMENT = "train-local"
RUN_TIMEOUT = 150.0

pytestmark = pytest.mark.browser


def _api(api: str, method: str, path: str, **kwargs: Any) -> Any:
    response = httpx.request(method, f"{api}{path}", timeout=30, **kwargs)
    response.raise_for_status()
    return response.json()


@pytest.fixture(scope="module")
def deployment(prefect_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """train-local deployed on a process pool, with a real process worker polling it."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="Playwright's Python package is missing")
    api = prefect_server.api_url
    env = dict(os.environ, PREFECT_API_URL=api, PWD=str(REPO_ROOT))
    resp = http.post(f"{api}/work_pools/", json={"name": POOL, "type": "process"}, timeout=30)
    assert resp.status_code in (201, 409), resp.text
    deploy = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--name", DEPLOYMENT],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
    found = _api(api, "POST", "/deployments/filter", json={})
    spec = next(d for d in found if d["name"] == DEPLOYMENT)
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    worker_env = env | {"PREFECT_WORKER_QUERY_SECONDS": "2", "KUBETRAIN_TRAIN_WORKERS": "1"}
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prefect",
                "worker",
                "start",
                "--pool",
                POOL,
                "--type",
                "process",
            ],
            cwd=REPO_ROOT,
            env=worker_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield spec | {"worker_log": log_path}
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()


def _text(markdown: str) -> str:
    """What a markdown description reads as on the page: no backticks, single spaces."""
    return " ".join(markdown.replace("`", "").split())


def test_custom_run_form_refuses_bad_input_and_a_run_shows_fits_artifacts_and_plots(
    prefect_server: Any, deployment: dict, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    api = prefect_server.api_url
    ui = api.removesuffix("/api")
    shots: list[Path] = []
    data = write_original_layout_csv(tmp_path / "tiny.csv", classes=3, per_class=6, features=3)
    destination = tmp_path / "store"

    def shot(page: Any, name: str) -> None:
        path = tmp_path / f"{len(shots):02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        shots.append(path)

    def runs() -> list[dict]:
        return _api(
            api,
            "POST",
            "/flow_runs/filter",
            json={"deployments": {"id": {"any_": [deployment["id"]]}}},
        )

    with sync_playwright() as playwright:
        # A fresh profile per run: Playwright's persistent context takes it as user_data_dir.
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1800},
            timeout=60_000,
        )
        page = browser.new_page()
        page.set_default_timeout(30_000)
        try:
            # 1. The form: every parameter's title and its description, as written.
            page.goto(f"{ui}/deployments/deployment/{deployment['id']}/run")
            expect(page.get_by_text("Parameters").first).to_be_visible()
            schema = deployment["parameter_openapi_schema"]["properties"]
            # The form renders its fields as it goes: wait for the last field's description
            # (scrolled into view) before reading the page.
            last = list(schema.values())[-1]
            expect(page.get_by_text(last["title"], exact=False).first).to_be_attached()
            page.get_by_text(last["title"], exact=False).first.scroll_into_view_if_needed()
            for prop in schema.values():
                snippet = _text(prop["description"]).split(". ")[0][:40]
                expect(page.get_by_text(snippet, exact=False).first).to_be_attached()
            body = " ".join(page.inner_text("body").split())
            shot(page, "form")
            for name, prop in schema.items():
                assert prop["title"] in body, name
                assert _text(prop["description"]) in body, name

            # 2. folds = 1 is refused by the form: no run is created.
            folds = page.locator("input[type=number]").first
            expect(folds).to_have_value("5")
            folds.fill("1")
            page.get_by_role("button", name="Submit").click()
            expect(
                page.get_by_text(
                    re.compile(r"(greater than or equal to|minimum).{0,20}2", re.I)
                ).first
            ).to_be_visible()
            shot(page, "folds-refused")
            time.sleep(2)
            assert runs() == []

            # 3. A valid run: lda only, 2 folds, tiny data, a store in tmp_path.
            folds.fill("2")
            _fill_textarea(page, "data/sample_letters.csv", str(data))
            _fill_textarea(page, "./artifacts", str(destination))
            _fill_textarea(page, "letters", "ui-test")
            # The dismiss button of the `nn` tag in the models field removes it.
            page.locator(".p-tag", has_text=re.compile(r"^nn$")).locator(".p-tag__dismiss").click()
            expect(page.get_by_role("button", name=re.compile(r"^lda$"))).to_have_count(1)
            shot(page, "form-valid")
            page.get_by_role("button", name="Submit").click()
            deadline = time.monotonic() + RUN_TIMEOUT
            while not runs() and time.monotonic() < deadline:
                time.sleep(1)
            (run,) = runs()
            assert run["parameters"]["folds"] == 2
            assert run["parameters"]["models"] == ["lda"]
            while time.monotonic() < deadline:
                run = _api(api, "GET", f"/flow_runs/{run['id']}")
                if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                    break
                time.sleep(2)
            assert run["state_type"] == "COMPLETED", (
                run["state"],
                deployment["worker_log"].read_text()[-4000:],
            )
            assert run["name"] == "ui-test: lda, 2 folds"

            # 4. The run page names each fit.
            page.goto(f"{ui}/runs/flow-run/{run['id']}")
            expect(page.get_by_text(run["name"]).first).to_be_visible()
            page.get_by_text("Task Runs", exact=True).first.click()
            for fit in ("fit-lda-final", "fit-lda-fold-1", "fit-lda-fold-2"):
                expect(page.get_by_text(fit).first).to_be_visible()
            shot(page, "task-runs")

            # 5. The artifacts: CV table, link to the version, plots rendered.
            artifacts = _api(
                api,
                "POST",
                "/artifacts/filter",
                json={"artifacts": {"flow_run_id": {"any_": [run["id"]]}}},
            )
            by_key = {a["key"]: a for a in artifacts}
            page.goto(f"{ui}/artifacts/artifact/{by_key['ui-test-cv-results']['id']}")
            row = page.get_by_role("row").filter(has_text="lda")
            expect(row.first).to_contain_text(re.compile(r"\d\.\d{4} ± \d\.\d{4}"))
            shot(page, "cv-table")
            version_dir = next((destination / "ui-test").glob("2*"))
            page.goto(f"{ui}/artifacts/artifact/{by_key['ui-test-version-link']['id']}")
            expect(page.locator(f'a[href="{version_dir.as_uri()}"]')).to_have_count(1)
            page.goto(f"{ui}/artifacts/artifact/{by_key['ui-test-model-version']['id']}")
            images = page.locator('img[src^="data:image/png;base64,"]')
            expect(images).to_have_count(2)  # CV scores per fold, lda's confusion matrix
            page.wait_for_function(
                "Array.from(document.images).filter(i => i.src.startsWith('data:'))"
                ".every(i => i.complete && i.naturalWidth > 0)"
            )
            shot(page, "version-plots")
        except BaseException:
            try:
                shot(page, "failure")
            finally:
                print("screenshots:", *map(str, shots), sep="\n  ")
            raise
        finally:
            browser.close()


def _fill_textarea(page: Any, current: str, value: str) -> None:
    """Replace the text of the form's textarea that now holds `current`."""
    boxes = page.locator("textarea")
    for index in range(boxes.count()):
        if boxes.nth(index).input_value() == current:
            boxes.nth(index).fill(value)
            return
    raise AssertionError(f"no textarea holds {current!r}")
