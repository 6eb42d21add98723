"""Issue 12: the web page of ``GET /`` in a real browser (Debian's chromium, headless,
driven by selenium through chromium-driver), against a real daemon subprocess and the
fault server: submit, progress, ``ok`` with its files, a failed job's error, every
button, the drop zone, the phone width, the token prompt, markup in names shown as
text, 10,000 jobs, and no console errors.

Skipped, with the reason, where chromium cannot start (``make test`` installs it).
``DROPFETCH_SCREENSHOT=docs/web.png`` makes the first test save the README's screenshot.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import plistlib
import re
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.select import Select

from archives import tar_bytes
from dropfetch.jobfile import OPTIONS
from harness import ROOT, Daemon, wait_for

pytestmark = pytest.mark.e2e

WAIT = 90.0  # headless chromium on a loaded 2-core machine is slow
TOKEN = "web-s3cret"  # noqa: S105 - a test token
LISTENING = re.compile(r"HTTP front end on http://127\.0\.0\.1:(\d+)")
CHROMIUM = ("chromium", "chromium-browser")
DRIVER = ("chromedriver", "chromium-driver")


def _which(names: tuple[str, ...]) -> str | None:
    for name in names:
        found = shutil.which(name) or (
            f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None
        )
        if found:
            return found
    return None


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    binary, driver_path = _which(CHROMIUM), _which(DRIVER)
    if binary is None or driver_path is None:
        pytest.skip("chromium and chromium-driver are not installed (make test installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1100,900",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
    except WebDriverException as exc:
        pytest.skip(f"chromium cannot start here: {exc.msg or exc}")
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def start_daemon(make_daemon: Callable[..., Daemon], **http: Any) -> tuple[Daemon, str]:
    d = make_daemon(http={"listen": "127.0.0.1:0", **http}, status={"update_interval": 0.1})
    found = wait_for(lambda: LISTENING.search(d.log()), message="the HTTP front end's line")
    return d, f"http://127.0.0.1:{found.group(1)}"


@pytest.fixture
def page(make_daemon, browser) -> tuple[Daemon, str, WebDriver]:
    d, base = start_daemon(make_daemon)
    browser.get(base + "/")
    until(browser, lambda: browser.find_element(By.ID, "app").is_displayed(), "the page")
    return d, base, browser


def until(driver: WebDriver, check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """``check()`` until it is truthy (a missing element counts as not yet)."""

    def safe() -> Any:
        try:
            return check()
        except (WebDriverException, LookupError):
            return None

    try:
        return wait_for(safe, timeout, interval=0.1, message=what)
    except pytest.fail.Exception:
        print(driver.page_source[-4000:])
        raise


def row(driver: WebDriver, job_id: str) -> WebElement:
    for item in driver.find_elements(By.CSS_SELECTOR, "#jobs > li.job"):
        if item.get_attribute("data-id") == job_id:
            return item
    raise LookupError(job_id)


def row_status(driver: WebDriver, job_id: str) -> str:
    return row(driver, job_id).find_element(By.CLASS_NAME, "status").text


def add(driver: WebDriver, *urls: str) -> None:
    box = driver.find_element(By.ID, "urls")
    box.clear()
    box.send_keys("\n".join(urls))
    driver.find_element(By.ID, "add-button").click()


def missing_routes(base: str, token: str | None = None) -> set[str]:
    """The stream routes of the API lane (SPEC §9) this daemon does not have yet: the
    page falls back to polling, and the browser logs the refused requests, which the
    console checks then allow."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    missing = set()
    for method, path in (("GET", "/events"), ("POST", "/session")):
        r = requests.request(method, base + path, headers=headers, timeout=30, stream=True)
        if r.status_code == 404 and "no such endpoint" in next(r.iter_content(4096), b"").decode():
            missing.add(path)
        r.close()
    if "/events" in missing:
        missing.add("text/event-stream")  # the stream's MIME-type complaint
    return missing


def console_errors(driver: WebDriver, allowed: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    return [
        e["message"]
        for e in driver.get_log("browser")
        if e["level"] == "SEVERE" and not any(a in e["message"] for a in allowed)
    ]


def is_ok(driver: WebDriver, job_id: str) -> bool:
    return row_status(driver, job_id) == "ok"


def record_fetches(driver: WebDriver) -> None:
    driver.execute_script(
        "window.__calls = []; const f = window.fetch;"
        "window.fetch = function (u, o) {"
        "  window.__calls.push([(o && o.method) || 'GET', String(u)]);"
        "  return f.apply(this, arguments); };"
    )


def fetches(driver: WebDriver) -> list[list[str]]:
    return driver.execute_script("return window.__calls || []")  # type: ignore[no-any-return]


# -- the tests -------------------------------------------------------------------------


def test_submit_progress_ok_files_and_an_error(page, fault_server):
    d, base, driver = page
    files = {f"dir/file-{i}.bin": os.urandom(300_000) for i in range(6)}
    body = tar_bytes(files, compression="gz")
    fault_server.add("/debian-7.tar.gz", body, rate=250_000)  # about 7 s
    fault_server.add("/slow.bin", os.urandom(4_000_000), rate=100_000)
    if "/events" not in missing_routes(base):  # the stream is up: no polling
        until(driver, lambda: driver.find_element(By.ID, "live").text == "live", "live")
    add(driver, fault_server.url("/debian-7.tar.gz"), fault_server.url("/nothing-here.zip"))
    result = driver.find_element(By.ID, "add-result")
    until(driver, lambda: "Added nothing-here" in result.text, "both added")
    assert "Added debian-7" in result.text
    assert (
        d.inbox.joinpath("debian-7.url").exists() and d.inbox.joinpath("nothing-here.url").exists()
    )
    until(
        driver, lambda: driver.find_element(By.ID, "urls").get_attribute("value") == "", "cleared"
    )

    seen: list[int] = []

    def progressing() -> bool:
        bar = row(driver, "debian-7").find_element(By.TAG_NAME, "progress")
        value = bar.get_attribute("value")
        if value is not None and row_status(driver, "debian-7") == "downloading":
            seen.append(int(float(value)))
        return any(0 < v < 100 for v in seen) and len(set(seen)) >= 2

    until(driver, progressing, "the progress value to rise")
    assert seen == sorted(seen), seen  # it only rises
    figures = row(driver, "debian-7").find_element(By.CLASS_NAME, "figures").text
    assert " of " in figures and "/s" in figures, figures  # size, speed (and ETA)

    failed = until(driver, lambda: row_status(driver, "nothing-here") == "failed", "failed")
    assert failed
    error = row(driver, "nothing-here").find_element(By.CLASS_NAME, "error").text
    assert "http_404" in error and len(error) > 20, error  # the plain words and the code

    # one job with a name from the options
    driver.find_element(By.CSS_SELECTOR, "#options summary").click()
    driver.find_element(By.ID, "opt-name").send_keys("slow one")
    add(driver, fault_server.url("/slow.bin"))
    until(driver, lambda: row_status(driver, "slow one") == "downloading", "slow one downloading")
    driver.find_element(By.ID, "opt-name").clear()

    until(driver, lambda: row_status(driver, "debian-7") == "ok", "ok")
    details = row(driver, "debian-7").find_element(By.CLASS_NAME, "files")
    assert details.get_attribute("open") is None  # collapsed
    assert details.find_element(By.TAG_NAME, "summary").text == "6 files"
    details.find_element(By.TAG_NAME, "summary").click()
    listed = lambda: [li.text for li in details.find_elements(By.CSS_SELECTOR, "ul li")]  # noqa: E731
    until(driver, lambda: listed() == sorted(files), "the file list")
    bar = row(driver, "debian-7").find_element(By.TAG_NAME, "progress")
    assert bar.get_attribute("value") == "100"
    if os.environ.get("DROPFETCH_SCREENSHOT"):  # the README's picture
        driver.find_element(By.CSS_SELECTOR, "#options summary").click()  # folded again
        driver.execute_script("document.getElementById('add-result').replaceChildren()")
        driver.set_window_size(820, 1180)
        driver.save_screenshot(str(ROOT / os.environ["DROPFETCH_SCREENSHOT"]))
    assert console_errors(driver, missing_routes(base)) == []


def test_job_options_reach_the_job_file(page, fault_server):
    d, base, driver = page
    data = os.urandom(50_000)
    # the file needs the job's header: the download fails without it
    fault_server.add("/raw.tar", tar_bytes({"inner.txt": data}), require_headers={"X-Token": "t:1"})
    driver.find_element(By.CSS_SELECTOR, "#options summary").click()
    driver.find_element(By.ID, "opt-headers").send_keys("X-Token: t:1\n\nCookie: a=1")
    driver.find_element(By.ID, "opt-name").send_keys("with options")
    driver.find_element(By.ID, "opt-filename").send_keys("kept-as-is.tar")
    tarred = tar_bytes({"inner.txt": data})
    driver.find_element(By.ID, "opt-sha256").send_keys(hashlib.sha256(tarred).hexdigest())
    sha512 = hashlib.sha512(tarred).hexdigest()
    fault_server.add("/SHA512SUMS", f"{sha512}  kept-as-is.tar\n".encode())  # the filename's
    driver.find_element(By.ID, "opt-checksum").send_keys(f"sha512:{sha512}")
    driver.find_element(By.ID, "opt-checksum-url").send_keys(fault_server.url("/SHA512SUMS"))
    mirrors = [fault_server.url("/m1/raw.tar"), fault_server.url("/m2/raw.tar")]
    driver.find_element(By.ID, "opt-mirrors").send_keys("\n".join(mirrors))
    Select(driver.find_element(By.ID, "opt-extract")).select_by_value("false")
    driver.find_element(By.ID, "opt-keep").click()
    driver.find_element(By.ID, "opt-segments").send_keys("2")
    priority = "priority" in OPTIONS  # the queue lane's option, once it is there
    if priority:
        Select(driver.find_element(By.ID, "opt-priority")).select_by_value("high")
    add(driver, fault_server.url("/raw.tar"))
    until(driver, lambda: row_status(driver, "with options") == "ok", "with options ok")
    job = yaml.safe_load((d.inbox / "with options.url").read_text())
    want = {"extract": False, "filename": "kept-as-is.tar", "keep_archive": True}
    assert {k: job.get(k) for k in want} == want, job
    assert job["sha256"] == hashlib.sha256(tarred).hexdigest()
    assert job["checksum"] == f"sha512:{sha512}"
    assert job["checksum_url"] == fault_server.url("/SHA512SUMS")
    assert job["mirrors"] == mirrors
    assert job["segments"] == 2
    assert job.get("priority") == ("high" if priority else None)
    assert job["headers"] == {"X-Token": "t:1", "Cookie": "a=1"}
    assert d.output_files("with options") == ["kept-as-is.tar"]
    # a name fits one URL only: the page says so and sends nothing
    add(driver, fault_server.url("/raw.tar"), fault_server.url("/raw.tar"))
    until(driver, lambda: "one URL only" in driver.find_element(By.ID, "add-result").text, "why")
    assert not (d.inbox / "raw.url").exists()
    assert console_errors(driver, missing_routes(base)) == []


def test_updates_fall_back_to_polling_while_the_daemon_is_away(make_daemon, browser):
    with socket.socket() as s:  # a fixed port: the page must find the daemon again
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d, base = start_daemon(make_daemon, listen=f"127.0.0.1:{port}")
    driver = browser
    driver.get(base + "/")
    live = lambda: driver.find_element(By.ID, "live").text  # noqa: E731
    streaming = "/events" not in missing_routes(base)
    until(driver, lambda: live() == ("live" if streaming else "updating every 3 s"), "connected")
    d.stop()
    until(driver, lambda: live() == "updating every 3 s", "polling while the daemon is away")
    until(
        driver,
        lambda: "cannot be reached" in driver.find_element(By.ID, "list-error").text,
        "the page to say the daemon is away",
    )
    d.start()
    d.drop("back", "http://127.0.0.1:9/never.bin\n")
    until(driver, lambda: row(driver, "back").is_displayed(), "a job dropped after the restart")
    assert driver.find_element(By.ID, "list-error").text == ""
    if streaming:
        until(driver, lambda: live() == "live", "the stream again")
    away = {"ERR_CONNECTION_REFUSED", "ERR_EMPTY_RESPONSE", "ERR_CONNECTION_RESET"}
    assert console_errors(driver, away | missing_routes(base)) == []


def test_every_button_sends_its_request_and_shows_the_answer(page, fault_server):
    d, base, driver = page
    fault_server.add("/big.bin", os.urandom(6_000_000), rate=100_000)  # a minute
    fault_server.add("/small.tar", tar_bytes({"a.txt": b"a" * 1000}))
    d.drop("big", fault_server.url("/big.bin") + "\n")
    d.drop("small", fault_server.url("/small.tar") + "\n")
    d.drop("broken", fault_server.url("/missing.bin") + "\n")
    until(driver, lambda: row_status(driver, "big") == "downloading", "big downloading")
    until(driver, lambda: row_status(driver, "small") == "ok", "small ok")
    until(driver, lambda: row_status(driver, "broken") == "failed", "broken failed")
    record_fetches(driver)

    def press(job_id: str, label: str) -> str:
        button = row(driver, job_id).find_element(
            By.CSS_SELECTOR, f"button[aria-label='{label} {job_id}']"
        )
        assert button.text == label and button.is_displayed()
        button.click()
        note = lambda: row(driver, job_id).find_element(By.CLASS_NAME, "note").text  # noqa: E731
        return until(
            driver, lambda: (t := note()) and not t.endswith("…") and t, f"{label} answered"
        )

    refused = set()  # the browser logs each refused request: allowed once the page showed it
    answer = press("big", "Pause")
    assert ["POST", "/archive/big/pause"] in fetches(driver)
    assert answer.startswith("pause: done") or answer.startswith("pause refused: "), answer
    if answer.startswith("pause: done"):
        until(driver, lambda: row_status(driver, "big") == "paused", "paused")
        answer = press("big", "Resume")
        assert ["POST", "/archive/big/resume"] in fetches(driver)
        assert answer.startswith("resume: done"), answer
        until(driver, lambda: row_status(driver, "big") != "paused", "resumed")
    else:  # the queue lane's pause is not in this daemon: the page shows its refusal
        assert len(answer) > len("pause refused: "), answer
        refused.add("/archive/big/pause")

    answer = press("broken", "Retry")
    assert ["POST", "/archive/broken/retry"] in fetches(driver)
    assert answer.startswith(("retry: done", "retry refused: ")), answer
    if answer.startswith("retry refused: "):
        refused.add("/archive/broken/retry")

    answer = press("small", "Delete")
    assert ["DELETE", "/archive/small"] in fetches(driver)
    assert answer == "delete: done (deleting)"
    until(
        driver,
        lambda: (
            not any(
                r.get_attribute("data-id") == "small"
                for r in driver.find_elements(By.CSS_SELECTOR, "#jobs > li")
            )
        ),
        "the deleted job to leave the list",
    )
    assert not (d.outbox / "small").exists()
    assert console_errors(driver, missing_routes(base) | refused) == []


def test_drop_zone_takes_links_and_link_files(page, fault_server):
    d, base, driver = page
    for name in ("one", "two", "three", "four"):
        fault_server.add(f"/{name}.bin", name.encode() * 100)
    url = fault_server.url
    webloc = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<plist version="1.0"><dict>'
        f"<key>URL</key><string>{url('/two.bin')}?a=1&amp;b=2</string></dict></plist>\n"
    )
    driver.execute_script(
        """
        const [shortcut, webloc, plain, link] = arguments;
        const zone = document.getElementById("drop");
        const fire = (dt) => zone.dispatchEvent(
            new DragEvent("drop", {dataTransfer: dt, bubbles: true}));
        const files = new DataTransfer();
        files.items.add(new File([shortcut], "One.url"));
        files.items.add(new File([webloc], "Two.webloc"));
        files.items.add(new File([plain], "three.url"));
        fire(files);
        const dragged = new DataTransfer();
        dragged.setData("text/uri-list", "# a comment\\r\\n" + link + "\\r\\n");
        setTimeout(() => fire(dragged), 1500);
        """,
        f"[InternetShortcut]\r\nURL={url('/one.bin')}\r\n",
        webloc,
        f"\n# comment\n{url('/three.bin')}\n",
        url("/four.bin"),
    )
    for name in ("one.bin", "two.bin", "three.bin", "four.bin"):
        until(driver, functools.partial(is_ok, driver, name), f"{name} ok")
    two = (d.inbox / "two.bin.url").read_text()
    assert url("/two.bin") + "?a=1&b=2" in two
    # binary property lists (an ASCII and a UTF-16 string) and a Type=Link .desktop are jobs
    fault_server.add("/five.bin", b"five" * 100)
    fault_server.add("/six.bin", b"six" * 100)
    fault_server.add("/s%C3%A9pt.bin", b"sept" * 100)
    binary = plistlib.dumps({"Name": "x", "URL": url("/five.bin")}, fmt=plistlib.FMT_BINARY)
    wide = plistlib.dumps({"URL": url("/s\u00e9pt.bin")}, fmt=plistlib.FMT_BINARY)
    assert b"\x00\xe9" in wide  # the UTF-16BE string form
    desktop = (
        "# a comment\n[Desktop Entry]\nName=Six\nType=Link\n"
        f"URL[de]={url('/de.bin')}\nURL={url('/six.bin')}\n"
    )
    driver.execute_script(
        """
        const [binary, wide, desktop] = arguments;
        const bytes = (list) => new Uint8Array(list);
        const files = new DataTransfer();
        files.items.add(new File([bytes(binary)], "Five.webloc"));
        files.items.add(new File([bytes(wide)], "Sept.webloc"));
        files.items.add(new File([desktop], "Six.desktop"));
        document.getElementById("drop").dispatchEvent(
            new DragEvent("drop", {dataTransfer: files, bubbles: true}));
        """,
        list(binary),
        list(wide),
        desktop,
    )
    for name in ("five.bin", "six.bin"):
        until(driver, functools.partial(is_ok, driver, name), f"{name} ok")

    def sept() -> list[str]:
        return [p.name for p in d.inbox.glob("*.url") if "pt.bin" in p.read_text()]

    jobs = until(driver, sept, "the UTF-16 one's job file")
    assert url("/s\u00e9pt.bin") in (d.inbox / jobs[0]).read_text()
    until(driver, functools.partial(is_ok, driver, jobs[0][: -len(".url")]), "sept ok")
    # a .desktop that is no link, a truncated and a garbage binary list: refused, said why
    cut = binary[: len(binary) - 5]
    driver.execute_script(
        """
        const [cut] = arguments;
        const files = new DataTransfer();
        files.items.add(new File(["[Desktop Entry]\\nType=Application\\nExec=true\\n"],
                                 "App.desktop"));
        files.items.add(new File([new Uint8Array(cut)], "Cut.webloc"));
        files.items.add(new File([new Uint8Array([98, 112, 108, 105, 115, 116, 48, 48, 0, 1])],
                                 "Binary.webloc"));
        document.getElementById("drop").dispatchEvent(
            new DragEvent("drop", {dataTransfer: files, bubbles: true}));
        """,
        list(cut),
    )
    result = driver.find_element(By.ID, "add-result")
    until(driver, lambda: "Binary.webloc: no URL found" in result.text, "the garbage one refused")
    assert "Cut.webloc: no URL found" in result.text
    assert "App.desktop: not a link (Type=Application)" in result.text
    assert console_errors(driver, missing_routes(base)) == []


def test_phone_width_has_no_horizontal_scrolling(page, fault_server):
    d, base, driver = page
    long = "a-very-long-job-name-" * 6
    d.drop(long[:180], fault_server.url("/" + "x" * 150 + ".bin") + "\n")
    fault_server.add("/f.tar", tar_bytes({("deep/" * 12) + "file-with-a-long-name.txt": b"x"}))
    d.drop("files", fault_server.url("/f.tar") + "\n")
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True},
    )
    driver.refresh()
    until(driver, lambda: row_status(driver, long[:180]) == "failed", "the long one failed")
    until(driver, lambda: row_status(driver, "files") == "ok", "files ok")
    driver.find_element(By.CSS_SELECTOR, "#options summary").click()
    row(driver, "files").find_element(By.CSS_SELECTOR, ".files summary").click()
    assert driver.execute_script("return innerWidth") == 390
    widths = driver.execute_script("return [document.scrollingElement.scrollWidth, innerWidth]")
    assert widths[0] <= widths[1], widths
    assert console_errors(driver, missing_routes(base)) == []


def test_token_is_asked_once_and_a_wrong_one_is_an_error(make_daemon, browser, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    d, base = start_daemon(make_daemon, token_file=str(token_file))
    d.drop("waiting-job", "http://127.0.0.1:9/never.bin\n")
    driver = browser
    driver.get(base + "/")
    until(driver, lambda: driver.find_element(By.ID, "login").is_displayed(), "the token prompt")
    field = driver.find_element(By.ID, "token")
    assert field.get_attribute("type") == "password"
    assert not driver.find_element(By.ID, "app").is_displayed()
    field.send_keys("wrong-token")
    driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
    until(driver, lambda: "refused" in driver.find_element(By.ID, "login-error").text, "an error")
    assert not driver.find_element(By.ID, "app").is_displayed()
    field.clear()
    field.send_keys(TOKEN)
    driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
    until(driver, lambda: row(driver, "waiting-job").is_displayed(), "the jobs")
    assert driver.execute_script("return localStorage.getItem('dropfetch.token')") == TOKEN
    if "/events" not in missing_routes(base, TOKEN):  # the stream, by the session cookie
        until(driver, lambda: driver.find_element(By.ID, "live").text == "live", "live")
    driver.refresh()  # kept: not asked again
    until(driver, lambda: row(driver, "waiting-job").is_displayed(), "the jobs after a reload")
    assert not driver.find_element(By.ID, "login").is_displayed()
    # the refused requests of the wrong token are the only errors
    assert console_errors(driver, {"401", *missing_routes(base, TOKEN)}) == []


def test_markup_in_names_urls_and_errors_is_shown_as_text(page, fault_server):
    d, base, driver = page
    name = "<img src=x onerror=\"document.title='pwned'\">"
    d.drop(name, fault_server.url("/<b>bold</b><script>document.title='pwned'</script>.bin") + "\n")
    fault_server.add("/r.bin", b"", statuses=[403], reason="<img src=y onerror=alert(2)>")
    d.drop("reason", fault_server.url("/r.bin") + "\n")
    until(driver, lambda: row_status(driver, name) == "failed", "the odd one failed")
    until(driver, lambda: row_status(driver, "reason") == "failed", "the reason one failed")
    member = "<img src=z onerror=\"document.title='pwned'\">.txt"
    fault_server.add("/m.tar", tar_bytes({member: b"x", "<i>plain</i>": b"y"}))
    d.drop("members", fault_server.url("/m.tar") + "\n")
    until(driver, lambda: row_status(driver, "members") == "ok", "members ok")
    files = row(driver, "members").find_element(By.CLASS_NAME, "files")
    files.find_element(By.TAG_NAME, "summary").click()
    listed = until(
        driver, lambda: [li.text for li in files.find_elements(By.CSS_SELECTOR, "ul li")], "files"
    )
    assert sorted(listed) == sorted([member, "<i>plain</i>"])
    error = row(driver, "reason").find_element(By.CLASS_NAME, "error").text
    assert "<img src=y onerror=alert(2)>" in error, error  # the reason phrase, as text
    shown = row(driver, name)
    assert shown.find_element(By.CLASS_NAME, "name").text == name
    assert "<b>bold</b>" in shown.find_element(By.CLASS_NAME, "url").text
    jobs = driver.find_element(By.ID, "jobs")
    assert jobs.find_elements(By.CSS_SELECTOR, "img, b, i, script") == []
    assert driver.title == "dropfetch"
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018
    assert console_errors(driver, missing_routes(base)) == []


@pytest.fixture
def front_only(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """The front end alone (no daemon, which would purge sidecars without a job file)."""
    from dropfetch.config import config_from_mapping
    from dropfetch.events import EventBus
    from dropfetch.httpapi import HttpFrontEnd
    from dropfetch.lifecycle import Deadline
    from dropfetch.metrics import Metrics

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = config_from_mapping(
        {"inbox": str(inbox), "outbox": str(tmp_path / "outbox"), "http": {"listen": "127.0.0.1:0"}}
    )
    server = HttpFrontEnd(config, Metrics(inbox), EventBus())
    server.start()
    try:
        yield inbox, f"http://127.0.0.1:{server.address[1]}"
    finally:
        assert server.stop(Deadline(30))


def sidecar(job_id: str, status: str) -> dict[str, Any]:
    return {
        "schema": 1,
        "id": job_id,
        "job": f"{job_id}.url",
        "job_sha256": "0" * 64,
        "url": f"http://127.0.0.1:9/{job_id}.bin",
        "status": status,
        "progress": 100 if status == "ok" else None,
        "bytes_done": 0,
        "bytes_total": None,
        "speed": None,
        "eta": None,
        "attempt": 1,
        "next_attempt_at": None,
        "host": "h",
        "created": "2026-12-01T00:00:00Z",
        "updated": "2026-12-01T00:00:00Z",
        "finished": "2026-12-01T00:00:00Z",
        "archive": None,
        "output": None,
        "files": [],
        "error": {"code": "network", "message": "the host did not answer"}
        if status == "failed"
        else None,
    }


def test_ten_thousand_jobs_are_paged(front_only, browser):
    inbox, base = front_only
    statuses = ["failed"] * 3 + ["ok"] * 7
    for i in range(10_000):
        job_id = f"job-{i:05d}"
        (inbox / f"{job_id}.status.json").write_text(json.dumps(sidecar(job_id, statuses[i % 10])))
    driver = browser
    driver.get(base + "/")
    count = lambda: driver.find_element(By.ID, "count").text  # noqa: E731
    rows = lambda: driver.find_elements(By.CSS_SELECTOR, "#jobs > li")  # noqa: E731
    until(driver, lambda: count() == "1\u2013100 of 10000 jobs", "the first page", timeout=2 * WAIT)
    until(driver, lambda: len(rows()) == 100, "100 rows")
    driver.find_element(By.ID, "next").click()
    until(
        driver, lambda: count() == "101\u2013200 of 10000 jobs", "the second page", timeout=2 * WAIT
    )
    until(driver, lambda: row(driver, "job-00100").is_displayed(), "job-00100 on page 2")
    Select(driver.find_element(By.ID, "filter")).select_by_visible_text("failed")
    until(driver, lambda: count() == "1\u2013100 of 3000 jobs", "the failed ones", timeout=2 * WAIT)
    until(driver, lambda: len(rows()) == 100, "100 failed rows")
    assert {r.find_element(By.CLASS_NAME, "status").text for r in rows()} == {"failed"}
    assert console_errors(driver, missing_routes(base)) == []
