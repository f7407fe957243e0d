"""A real browser (headless Chromium through chromedriver): two proposals' users log in
(a gateway token, and OIDC), one watches a job appear and finish live, opens its result
view and downloads a file; the other tries the first one's job, output and file URLs and
is refused. Screenshots are kept under the test's tmp dir (and $PANREDUCE_TEST_ARTIFACTS)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def browser_factory(tmp_path):
    if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
        reason = f"no headless Chromium here ({CHROMIUM}, {DRIVER}): apt-get install chromium chromium-driver"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    drivers = []

    def make(name: str):
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for flag in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--window-size=1280,1000",
            f"--user-data-dir={tmp_path / ('profile-' + name)}",
        ):
            opts.add_argument(flag)
        d = webdriver.Chrome(service=Service(DRIVER), options=opts)
        d.set_page_load_timeout(60)
        drivers.append(d)
        return d

    yield make
    for d in drivers:
        d.quit()


def shot(driver, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 1000
    target = os.environ.get("PANREDUCE_TEST_ARTIFACTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)


def wait_for(driver, condition, timeout: float = 60.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition(driver)
        except Exception:  # an element re-rendered by the live table between find and read
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


FETCH = """
const done = arguments[arguments.length - 1];
fetch(arguments[0], {credentials: "same-origin"}).then(async (r) => {
  const buf = await r.arrayBuffer();
  const digest = await crypto.subtle.digest("SHA-256", buf);
  done({status: r.status, size: buf.byteLength,
        sha256: Array.from(new Uint8Array(digest)).map((b) => b.toString(16).padStart(2, "0")).join("")});
}).catch((e) => done({status: -1, error: String(e)}));
"""


def test_two_users_in_a_real_browser(browser_factory, web, web_oidc, site, idp, tmp_path):
    from selenium.webdriver.common.by import By

    # alice: the token login form
    alice = browser_factory("alice")
    alice.get(web.url + "/")
    wait_for(alice, lambda d: d.find_element(By.ID, "token"), what="the login form")
    alice.find_element(By.ID, "token").send_keys("token-a")
    alice.find_element(By.ID, "login-submit").click()
    wait_for(alice, lambda d: d.find_element(By.ID, "jobs"), what="the job list")
    shot(alice, tmp_path, "01-alice-list")
    # a new job appears and finishes in the open page, without a reload
    marker = alice.execute_script("window.__same_page = 1; return window.__same_page;")
    jid = site.submit(site.a, "propA", title="live")
    row = f'#jobs tr[data-id="{jid}"]'
    wait_for(alice, lambda d: d.find_elements(By.CSS_SELECTOR, row), timeout=30, what="the new job's row")
    shot(alice, tmp_path, "02-alice-job-appeared")
    wait_for(
        alice,
        lambda d: "SUCCEEDED" in d.find_element(By.CSS_SELECTOR, row).text,
        timeout=120,
        what="the job to finish live",
    )
    assert alice.execute_script("return window.__same_page;") == marker  # the same page: it updated live
    shot(alice, tmp_path, "03-alice-job-finished")
    assert site.jobs["propB"] not in alice.page_source
    # the job page: parameters, catalogue, events, outputs with their plots
    alice.find_element(By.CSS_SELECTOR, f"{row} a").click()
    wait_for(alice, lambda d: d.find_element(By.ID, "job-id").text == jid, what="the job page")
    wait_for(
        alice,
        lambda d: d.find_elements(By.CSS_SELECTOR, '.plots[data-state="ready"] .js-plotly-plot'),
        timeout=60,
        what="the plots",
    )
    figures = alice.find_elements(By.CSS_SELECTOR, ".plots .figure")
    assert figures and any(f.get_attribute("data-kind") == "curve" for f in figures)
    assert alice.find_elements(By.CSS_SELECTOR, ".plots .js-plotly-plot .scatterlayer .trace")
    shot(alice, tmp_path, "04-alice-job-page")
    # the result view page of the first output
    alice.find_element(By.CSS_SELECTOR, "#outputs a.view").click()
    wait_for(
        alice,
        lambda d: d.find_elements(By.CSS_SELECTOR, '.plots[data-state="ready"] .js-plotly-plot'),
        timeout=60,
        what="the result view",
    )
    shot(alice, tmp_path, "05-alice-result-view")
    # download a file in the browser, with its session: the bytes are the output's
    job = site.a.get_job(jid)
    got = alice.execute_async_script(FETCH, f"/jobs/{jid}/outputs/0")
    assert got["status"] == 200 and got["sha256"] == job.result.outputs[0].sha256, got

    # bob: the OIDC login (authorization code with PKCE) in the browser
    idp.user = "bob"
    bob = browser_factory("bob")
    bob.get(web_oidc.url + "/")
    wait_for(bob, lambda d: d.find_element(By.ID, "jobs"), what="bob's job list after the OIDC login")
    assert "bob" in bob.find_element(By.CSS_SELECTOR, "header .who").text
    assert jid not in bob.page_source and site.jobs["propA"] not in bob.page_source
    assert site.jobs["propB"] in bob.page_source
    shot(bob, tmp_path, "06-bob-list")
    # alice's job, output, view and file URLs: not found
    for path in (f"/jobs/{jid}", f"/jobs/{jid}/outputs/0/view"):
        bob.get(web_oidc.url + path)
        wait_for(bob, lambda d: d.find_element(By.ID, "error"), what=f"the refusal of {path}")
        assert bob.find_element(By.TAG_NAME, "h1").text == "404"
        assert "not found" in bob.find_element(By.ID, "error").text
        assert jid not in bob.page_source and "propA" not in bob.page_source
    shot(bob, tmp_path, "07-bob-refused")
    for path in (f"/jobs/{jid}/outputs/0", f"/jobs/{jid}/outputs/0/plots", f"/jobs/{jid}/outputs/0/metadata"):
        got = bob.execute_async_script(FETCH, path)
        assert got["status"] == 404, (path, got)
