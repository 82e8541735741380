"""The web page in a real headless Chromium (Debian's chromium + chromedriver, `make browser`),
driven by selenium: search by text, open an explanation, search by photo. Screenshots go to
test-artifacts/api/."""
import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = pytest.mark.slow


@pytest.fixture()
def browser(tmp_path):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("chromium and chromedriver are needed: run `make browser` (apt-get install chromium chromium-driver)")
    os.environ.setdefault("SE_AVOID_STATS", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1000"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait(driver, condition, timeout=60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def images_loaded(driver, css: str) -> bool:
    return driver.execute_script(
        "const imgs=[...document.querySelectorAll(arguments[0])];"
        "return imgs.length>0 && imgs.every(i=>i.complete && i.naturalWidth>0);", css)


def test_search_explain_and_image_search_in_chromium(browser, live, catalog, shopper, artifacts):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(live.url + "/")
    wait(browser, lambda d: "items" in d.find_element(By.ID, "health").text)

    # 1. type a query: a grid of results, each with its photo and a "why" line
    box = browser.find_element(By.ID, "q")
    box.send_keys("black dress", Keys.ENTER)
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .card")) >= 4)
    wait(browser, lambda d: images_loaded(d, "#results .card img"))
    wait(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, "#results .why.pending"))  # the why lines stream in
    cards = browser.find_elements(By.CSS_SELECTOR, "#results .card")
    whys = [c.find_element(By.CSS_SELECTOR, ".why").text for c in cards]
    assert all(len(w) > 20 for w in whys), whys
    first = catalog.by_id[cards[0].get_attribute("data-id")]
    assert first.colour.lower() == "black"
    assert "black" in whys[0].lower() and "dress" in whys[0].lower()
    assert "results" in browser.find_element(By.ID, "status").text
    browser.save_screenshot(str(artifacts / "1-search-results.png"))

    # 2. click a result: the full explanation, its backend, and the evidence
    cards[0].click()
    wait(browser, lambda d: d.find_element(By.ID, "detail").get_attribute("open") is not None)
    wait(browser, lambda d: "explainer" in d.find_element(By.ID, "detail-backend").text)
    assert "grounded" in browser.find_element(By.ID, "detail-backend").text
    evidence = browser.find_element(By.ID, "evidence").text
    assert "matched" in evidence and "black" in evidence
    assert browser.find_element(By.ID, "detail-title").text == first.title
    wait(browser, lambda d: images_loaded(d, "#detail-image"))
    browser.save_screenshot(str(artifacts / "2-explanation.png"))
    browser.find_element(By.ID, "detail-close").click()

    # 3. upload a photo: similar items, the photographed item first
    target = next(p for p in catalog.products if p.image_paths and p.id != first.id)
    box.clear()
    browser.find_element(By.ID, "image-input").send_keys(str(catalog.image_file(target)))
    wait(browser, lambda d: (d.find_elements(By.CSS_SELECTOR, "#results .card")
                             and d.find_elements(By.CSS_SELECTOR, "#results .card")[0].get_attribute("data-id") == target.id))
    wait(browser, lambda d: images_loaded(d, "#results .card img"))
    assert "like" in browser.find_element(By.ID, "status").text
    assert browser.find_element(By.ID, "image-preview").is_displayed()
    browser.save_screenshot(str(artifacts / "3-image-search.png"))

    # 4. pick a shopper: recommendations from their history, explained by what they bought
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element(By.ID, "shopper")).select_by_value(shopper)
    wait(browser, lambda d: "shopper" in d.find_element(By.ID, "status").text)
    wait(browser, lambda d: images_loaded(d, "#results .card img"))
    whys = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#results .card .why")]
    assert whys and any("bought" in w for w in whys), whys
    browser.save_screenshot(str(artifacts / "4-shopper.png"))
