"""The published site in a real browser: Debian's chromium, headless, driven by Selenium
through Debian's chromedriver (packages chromium and chromium-driver).

Each page opens from file:// with no console error, every chart holds data points, every
link resolves to a file of the site, nothing is fetched from elsewhere; a screenshot of each
page is kept in tests/artifacts/browser/. The site is the `site` fixture of
tests/integration/conftest.py, the one test_publish checks.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from tests.builders import CLAIM, ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "tests" / "artifacts" / "browser"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs /usr/bin/chromium: apt-get install chromium chromium-driver"
)

# Data points of a chart: the markers matplotlib draws as <use> elements, leaving out the
# axes' tick marks and the legend's samples, drawn the same way in groups named *tick* and *legend*.
COUNT_POINTS = """
return Array.from(document.querySelectorAll('.chart svg')).map(svg => Array.from(svg.querySelectorAll('use'))
    .filter(use => !use.closest('[id*="tick"], [id*="legend"]')).length);
"""
LINKS = "return Array.from(document.querySelectorAll('a[href]')).map(a => a.href);"
FETCHED = "return performance.getEntriesByType('resource').map(entry => entry.name);"


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert CHROMEDRIVER.exists(), f"{CHROMEDRIVER} is missing: apt-get install chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def pages(site) -> dict[str, tuple[Path, int]]:
    """name -> (page, how many charts it must hold)."""
    newest_report = next(run for run in site.runs if (run.path / "index.html").is_file())
    return {
        "index": (site.path / "index.html", 0),
        "run-report": (site.path / "runs" / newest_report.run_id / "index.html", 4),
        "compare": (site.path / site.comparisons[0], 1),
        "claim": (site.path / "claims" / f"{CLAIM}.html", 1),
    }


@pytest.mark.parametrize("name", ["index", "run-report", "compare", "claim"])
def test_page_in_a_browser(site, browser, name):
    page, charts = pages(site)[name]
    browser.get(page.as_uri())
    assert browser.title, page

    errors = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]
    assert errors == [], errors

    points = browser.execute_script(COUNT_POINTS)
    assert len(points) == charts and all(count > 0 for count in points), points

    links = browser.execute_script(LINKS)
    assert links, "a page without links"
    for link in links:
        target = urlparse(link)
        assert target.scheme == "file", link  # relative links only: no http, no CDN
        path = Path(unquote(target.path))
        assert path.exists(), link
        assert path.resolve().is_relative_to(site.path.resolve()), link  # stays inside the site
        if target.fragment and path == page:
            assert browser.execute_script("return document.getElementById(arguments[0]) !== null", target.fragment), (
                link
            )
    fetched = browser.execute_script(FETCHED)
    assert all(url.startswith(("file:", "data:")) for url in fetched), fetched

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, min(max(height, 900), 8000))
    shot = ARTIFACTS / f"{name}.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    browser.set_window_size(1280, 900)
