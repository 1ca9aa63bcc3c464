// Takes docs/images/order-page.png, the README's picture of the order page, from a
// running stack: `node order-page.mjs` (BASE_URL, default the local stack of `make up`).
import { chromium } from "@playwright/test";

const base = process.env.BASE_URL ?? "http://localhost:8080";
const out = process.argv[2] ?? "../../docs/images/order-page.png";
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run"],
});
const page = await browser.newPage({ viewport: { width: 960, height: 540 } });
const stamp = Date.now();

async function signUp(who) {
  await page.goto(`${base}/auth/signup`);
  await page.getByLabel("Email Address").fill(`${who}-${stamp}@example.com`);
  await page.getByLabel("Password").fill("password");
  await page.getByRole("button", { name: "Sign Up" }).click();
  await page.getByRole("button", { name: "Sign Out" }).waitFor();
}

await signUp("seller");
await page.goto(`${base}/tickets/new`);
await page.getByLabel("Title").fill("Concert, front row");
await page.getByLabel("Price").fill("45");
await page.getByRole("button", { name: "Submit" }).click();
await page.waitForURL(`${base}/`);
await page.getByRole("button", { name: "Sign Out" }).click();
await page.getByRole("link", { name: "Sign In" }).waitFor();

await signUp("buyer");
const row = page.getByRole("row").filter({ hasText: "Concert, front row" });
await row.getByRole("link", { name: "View" }).click();
await page.getByRole("button", { name: "Purchase" }).click();
await page.waitForURL(/\/orders\/[0-9a-f-]{36}$/);
await page.getByText(/Time left to pay/).waitFor();
await page.waitForTimeout(1500);
await page.screenshot({ path: out });
await browser.close();
console.log(`wrote ${out}`);
