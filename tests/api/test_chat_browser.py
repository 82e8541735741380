"""The chat panel in a real headless Chromium: a conversation that refines, asks, and opens a
product the assistant named. Screenshots go to test-artifacts/api/."""
import pytest

from tests.api.test_browser import browser, wait  # noqa: F401  (the Chromium fixture)

pytestmark = pytest.mark.slow


def answers_done(driver, n: int):
    from selenium.webdriver.common.by import By

    done = [m for m in driver.find_elements(By.CSS_SELECTOR, "#chat-log .msg.assistant")
            if "streaming" not in (m.get_attribute("class") or "")]
    return done if len(done) >= n else False


def say(driver, text: str, n: int):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.ID, "chat-input")
    box.send_keys(text, Keys.ENTER)
    return wait(driver, lambda d: answers_done(d, n))[n - 1]


def chips(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, "#chat-log .chat-products")
    return rows[-1].get_attribute("data-products").split() if rows else []


def test_chat_panel_follows_the_conversation(browser, live, catalog, artifacts):  # noqa: F811
    from selenium.webdriver.common.by import By

    from retrieval.vocabulary import Term, item_values, matches

    def is_(item_id, kind, value):
        return bool(matches(Term(kind, value, value), item_values(catalog.by_id[item_id])))

    browser.get(live.url + "/")
    wait(browser, lambda d: "items" in d.find_element(By.ID, "health").text)

    first = say(browser, "I'm looking for a black dress for a party", 1)
    assert first.text.startswith("Black dresses") and "(item " in first.text
    black = wait(browser, lambda d: chips(d))
    assert all(is_(i, "colour", "black") and is_(i, "product_type", "dress") for i in black)

    second = say(browser, "do you have something like that in red?", 2)
    assert second.text.startswith("Red dresses")
    red = wait(browser, lambda d: chips(d) != black and chips(d))
    assert all(is_(i, "colour", "red") and is_(i, "product_type", "dress") for i in red)
    browser.save_screenshot(str(artifacts / "5-chat-refined.png"))

    third = say(browser, "is the first one lined?", 3)
    assert f"(item {red[0]})" in third.text and third.get_attribute("data-turn") == "question"

    # a product the assistant named opens its explanation
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f'#chat-log .chat-product[data-id="{red[0]}"] img'))
    browser.find_elements(By.CSS_SELECTOR, f'#chat-log .chat-product[data-id="{red[0]}"]')[-1].click()
    wait(browser, lambda d: d.find_element(By.ID, "detail").get_attribute("open") is not None)
    assert browser.find_element(By.ID, "detail-title").text == catalog.by_id[red[0]].title
    wait(browser, lambda d: "explainer" in d.find_element(By.ID, "detail-backend").text)
    browser.save_screenshot(str(artifacts / "6-chat-product.png"))
