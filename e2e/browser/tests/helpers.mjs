// Shared steps of the journeys.
import { expect, test } from "@playwright/test";

/** A fresh email address for this run. */
export function email(who) {
  return `${who}-${Date.now()}-${Math.floor(Math.random() * 1e6)}@test.io`;
}

/** Every test leaves a screenshot of where it ended under artifacts/ (git-ignored). */
export function screenshotEachTest() {
  test.afterEach(async ({ page }, testInfo) => {
    const name = testInfo.title.replace(/[^a-z0-9]+/gi, "-").toLowerCase();
    await page.screenshot({ path: `artifacts/${name}.png`, fullPage: true });
  });
}

export async function signUp(page, address, password = "password") {
  await page.goto("/auth/signup");
  await page.getByLabel("Email Address").fill(address);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign Up" }).click();
  await expect(page).toHaveURL(/\/$/);
  await expect(page.getByRole("button", { name: "Sign Out" })).toBeVisible();
}

/** Fills in and submits the sign-in form (the caller checks where it lands). */
export async function signIn(page, address, password = "password") {
  await page.goto("/auth/signin");
  await page.getByLabel("Email Address").fill(address);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign In" }).click();
}

export async function signOut(page) {
  await page.getByRole("button", { name: "Sign Out" }).click();
  await expect(page.getByRole("link", { name: "Sign In" })).toBeVisible();
}

export async function sell(page, title, price) {
  await page.getByRole("link", { name: "Sell Tickets" }).click();
  await page.getByLabel("Title").fill(title);
  await page.getByLabel("Price").fill(price);
  await page.getByRole("button", { name: "Submit" }).click();
  await expect(page).toHaveURL(/\/$/);
}

/** From the tickets page: opens the ticket, purchases it, lands on its order. */
export async function purchase(page, title) {
  await page.goto("/");
  const row = page.getByRole("row").filter({ hasText: title });
  await row.getByRole("link", { name: "View" }).click();
  await expect(page.getByRole("heading", { name: title })).toBeVisible();
  await page.getByRole("button", { name: "Purchase" }).click();
  await expect(page).toHaveURL(/\/orders\/[0-9a-f-]{36}$/);
}

/** A seller lists a ticket; returns to a signed-out page. */
export async function listedTicket(page, title, price = "20") {
  await signUp(page, email("seller"));
  await sell(page, title, price);
  await signOut(page);
}
