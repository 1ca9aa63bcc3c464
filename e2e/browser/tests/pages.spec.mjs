import { expect, test } from "@playwright/test";

import { email, purchase, screenshotEachTest, sell, signIn, signOut, signUp } from "./helpers.mjs";

screenshotEachTest();

test("signed out, selling leads to the sign-in page", async ({ page }) => {
  await page.goto("/tickets/new");
  await expect(page).toHaveURL(/\/auth\/signin$/);
  await expect(page.getByRole("heading", { name: "Sign In" })).toBeVisible();
  await expect(page.getByRole("link", { name: "GitTix" })).toBeVisible();
  await expect(page.getByRole("link", { name: "Sign Up" })).toBeVisible();
});

test("sign-up validation errors are shown on the page", async ({ page }) => {
  await page.goto("/auth/signup");
  await page.getByLabel("Email Address").fill("not-an-email@x");
  await page.getByLabel("Password").fill("ab");
  // The browser's own checks would stop an invalid address; the server's are the rule.
  await page.locator("form").evaluate((form) => form.setAttribute("novalidate", ""));
  await page.getByRole("button", { name: "Sign Up" }).click();
  const alert = page.getByRole("alert");
  await expect(alert).toContainText("Email must be valid");
  await expect(alert).toContainText("Password must be between 4 and 20 characters");
  await expect(page.getByLabel("Email Address")).toHaveValue("not-an-email@x");
});

test("the header follows the session", async ({ page }) => {
  const address = email("header");
  await page.goto("/");
  await expect(page.getByRole("link", { name: "Sign In" })).toBeVisible();
  await expect(page.getByRole("link", { name: "Sell Tickets" })).toHaveCount(0);
  await signUp(page, address);
  for (const name of ["Sell Tickets", "My Orders"]) {
    await expect(page.getByRole("link", { name })).toBeVisible();
  }
  // Signing out is a form post: following a link to it signs nobody out.
  await page.goto("/auth/signout");
  await expect(page.getByRole("heading", { name: "Sign Out" })).toBeVisible();
  await page.goto("/");
  await expect(page.getByRole("link", { name: "My Orders" })).toBeVisible();
  const before = (await page.context().cookies()).find((c) => c.name === "session");
  await signOut(page);
  await expect(page.getByRole("link", { name: "Sign Up" })).toBeVisible();
  // The old cookie, kept by someone and sent again, no longer signs anybody in: the
  // session was revoked, not only forgotten by this browser.
  await page.context().addCookies([before]);
  await page.goto("/");
  await expect(page.getByRole("link", { name: "Sign Up" })).toBeVisible();
  await page.goto("/orders");
  await expect(page.getByRole("link", { name: "My Orders" })).toHaveCount(0);
  await page.context().clearCookies();

  // Signing in again: a wrong password is shown on the form, the right one signs in.
  await signIn(page, address, "wrong-password");
  await expect(page.getByRole("alert")).toContainText("Invalid credentials");
  await expect(page.getByLabel("Email Address")).toHaveValue(address);
  await signIn(page, address);
  await expect(page).toHaveURL(/\/$/);
  await expect(page.getByRole("button", { name: "Sign Out" })).toBeVisible();
});

test("at phone width every page fits and works", async ({ browser }) => {
  const context = await browser.newContext({ viewport: { width: 375, height: 740 }, isMobile: true });
  const page = await context.newPage();
  const title = `Phone ${Date.now()}`;
  await signUp(page, email("phone"));
  await sell(page, title, "9");
  await purchase(page, title);
  for (const path of ["/", "/orders", page.url()]) {
    await page.goto(path);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    expect(overflow, `no sideways scrolling on ${path}`).toBeLessThanOrEqual(0);
  }
  await page.screenshot({ path: "artifacts/phone-order.png", fullPage: true });
  await context.close();
});

test("without JavaScript, signing up, selling and purchasing still work", async ({ browser }) => {
  const context = await browser.newContext({ javaScriptEnabled: false });
  const page = await context.newPage();
  const title = `No script ${Date.now()}`;
  await signUp(page, email("seller"));
  await sell(page, title, "7.5");
  await expect(page.getByRole("row").filter({ hasText: title })).toContainText("$7.50");
  await signOut(page);
  await signUp(page, email("buyer"));
  await purchase(page, title);
  await expect(page.getByText(/Time left to pay: \d+ seconds/)).toBeVisible();
  await page.getByLabel("Visa (succeeds)").check();
  await page.getByRole("button", { name: /^Pay/ }).click();
  await expect(page.getByRole("listitem").filter({ hasText: title })).toContainText("complete");
  await page.screenshot({ path: "artifacts/no-javascript-orders.png", fullPage: true });
  await context.close();
});
