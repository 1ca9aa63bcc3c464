import { expect, test } from "@playwright/test";

import { email, listedTicket, purchase, screenshotEachTest, sell, signOut, signUp } from "./helpers.mjs";

screenshotEachTest();

test("a seller sells a ticket and a buyer buys and pays for it", async ({ page }) => {
  const title = `Concert ${Date.now()}`;
  await signUp(page, email("seller"));
  await page.getByRole("link", { name: "Sell Tickets" }).click();
  await page.getByLabel("Title").fill(title);
  const price = page.getByLabel("Price");
  await price.fill("12.5");
  await price.blur();
  await expect(price).toHaveValue("12.50");
  await page.getByRole("button", { name: "Submit" }).click();
  await expect(page).toHaveURL(/\/$/);
  await signOut(page);

  await signUp(page, email("buyer"));
  const row = page.getByRole("row").filter({ hasText: title });
  await expect(row).toContainText("$12.50");
  await purchase(page, title);

  const seconds = page.locator("[data-seconds]");
  await expect(page.getByText(/Time left to pay: \d+ seconds/)).toBeVisible();
  const first = Number(await seconds.textContent());
  await expect.poll(async () => Number(await seconds.textContent()), { timeout: 5_000 }).toBeLessThan(first);

  await page.getByLabel("Visa (succeeds)").check();
  await page.getByRole("button", { name: /^Pay/ }).click();
  await expect(page).toHaveURL(/\/orders$/);
  const order = page.getByRole("listitem").filter({ hasText: title });
  await expect(order).toContainText("complete");

  await page.goto("/");
  await expect(page.getByRole("row").filter({ hasText: title })).toHaveCount(0);
});

test("a declined card is shown and the order stays payable", async ({ page }) => {
  const title = `Declined ${Date.now()}`;
  await listedTicket(page, title);
  await signUp(page, email("buyer"));
  await purchase(page, title);

  await page.getByLabel("Declined card").check();
  await page.getByRole("button", { name: /^Pay/ }).click();
  await expect(page.getByRole("alert")).toContainText("Your card was declined.");
  await expect(page.getByText(/Time left to pay/)).toBeVisible();
  await expect(page.getByRole("button", { name: /^Pay/ })).toBeVisible();

  await page.getByLabel("Visa (succeeds)").check();
  await page.getByRole("button", { name: /^Pay/ }).click();
  await expect(page.getByRole("listitem").filter({ hasText: title })).toContainText("complete");
});

test("an order left to expire shows Order Expired, then is cancelled", async ({ page }) => {
  const title = `Expiring ${Date.now()}`;
  await listedTicket(page, title);
  await signUp(page, email("buyer"));
  await purchase(page, title);
  const orderUrl = page.url();

  // The stack under test runs with a short EXPIRATION_WINDOW_SECONDS.
  await expect(page.getByText("Order Expired")).toBeVisible({ timeout: 75_000 });
  await expect(page.getByRole("button", { name: /^Pay/ })).toBeHidden();
  await expect
    .poll(
      async () => {
        await page.goto("/orders");
        return page.getByRole("listitem").filter({ hasText: title }).textContent();
      },
      { timeout: 30_000 },
    )
    .toContain("cancelled");
  await page.goto(orderUrl);
  await expect(page.getByText("Order Expired")).toBeVisible();
});
