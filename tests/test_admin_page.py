"""The admin page in a real headless browser (Debian's chromium, driven by playwright): an admin
signs in, sees another user's envs, kills one and sees it die; a viewer sees no kill button."""

import shutil
from collections.abc import Iterator

import pytest

from tests.conftest import ROOT, create, faulty
from tests.lab import Lab, lab_fixture

pytestmark = pytest.mark.timeout(120)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = ROOT / "test-artifacts"
# As root, with a closed network: no sandbox, and nothing that phones home.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

try:
    from playwright.sync_api import Page, expect, sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None  # type: ignore[assignment]


lab = lab_fixture("--allow-module", "tests.faulty_envs")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if sync_playwright is None:
        pytest.skip("playwright is not installed (pip install playwright)")
    if CHROMIUM is None:
        pytest.skip("no chromium on this machine (apt-get install chromium; scripts/test does so as root)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def sign_in(browser: object, lab: Lab, name: str) -> "Page":
    page = browser.new_page(viewport={"width": 1400, "height": 900})  # type: ignore[attr-defined]
    page.on("dialog", lambda dialog: dialog.accept())  # the kill buttons ask first
    page.goto(f"{lab.server.url}/admin")
    page.fill("#token", lab.tokens[name])
    page.click("#signin")
    expect(page.locator("#who")).to_contain_text(f"signed in as {name}")
    return page


def test_an_admin_sees_another_users_env_kills_it_and_sees_it_die(browser: object, lab: Lab) -> None:
    with lab.client("bob") as bob:
        stuck = create(bob, "CartPole-v1")
        frames = create(bob, faulty("Image"), kwargs={"render_mode": "rgb_array"})
        bob.post(f"/v1/envs/{frames}/reset/")
        bob.post(f"/v1/envs/{frames}/step/", json={"action": 2})
    page = sign_in(browser, lab, "root")
    row = page.locator(f"#envs tbody tr[data-instance='{stuck}']")
    expect(row).to_contain_text("bob")
    expect(row).to_contain_text("CartPole-v1")
    page.wait_for_function(
        f"() => {{ const i = document.querySelector(\"tr[data-instance='{frames}'] img.frame\");"
        " return i && i.naturalWidth === 84; }", timeout=15000)
    expect(page.locator("#users tbody tr[data-user='bob']")).to_contain_text("2")
    page.click("th[data-key='rss_bytes']")  # sortable by memory
    page.wait_for_function("() => { const c = [...document.querySelectorAll('#envs tbody tr td:nth-child(7)')]"
                           ".map(td => parseFloat(td.textContent) || 0);"
                           " return c.length > 1 && c.every((v, i) => i === 0 || c[i - 1] >= v); }")
    row.get_by_role("button", name="Kill").click()
    expect(row).to_have_count(0, timeout=10000)  # gone from the live envs
    death = page.locator(f"#deaths tbody tr[data-instance='{stuck}']")
    expect(death).to_contain_text("admin_kill")
    expect(death).to_contain_text("was killed by admin root")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "admin-page.png"), full_page=True)
    with lab.client("bob") as bob:
        assert bob.post(f"/v1/envs/{stuck}/step/", json={"action": 0}).status_code == 410
        for iid in (stuck, frames):
            bob.post(f"/v1/envs/{iid}/close/")
    page.close()


def test_a_viewer_sees_the_envs_but_no_kill_or_restart_button(browser: object, lab: Lab) -> None:
    with lab.client("alice") as alice:
        iid = create(alice, "CartPole-v1")
    page = sign_in(browser, lab, "vic")
    row = page.locator(f"#envs tbody tr[data-instance='{iid}']")
    expect(row).to_contain_text("alice")
    expect(page.get_by_role("button", name="Kill")).to_have_count(0)
    expect(page.get_by_role("button", name="Restart")).to_have_count(0)
    page.close()
    with lab.client("alice") as alice:
        alice.post(f"/v1/envs/{iid}/close/")


def test_a_user_token_is_refused_by_the_page(browser: object, lab: Lab) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(f"{lab.server.url}/admin")
    page.fill("#token", lab.tokens["alice"])
    page.click("#signin")
    expect(page.locator("#error")).to_contain_text("needs 'viewer' or 'admin'")
    expect(page.locator("#main")).to_be_hidden()
    page.fill("#token", "not-a-token")
    page.click("#signin")
    expect(page.locator("#error")).to_contain_text("401")
    page.close()


def test_the_page_loads_nothing_from_outside(lab: Lab) -> None:
    import httpx

    html = httpx.get(f"{lab.server.url}/admin", timeout=30).text
    assert "<script src" not in html and "<link" not in html and "http" not in html.replace(
        "http://www.w3.org/2000/svg", "")
