// The local demo's first steps, by keyboard only, in Debian's Chromium:
// the dev sign-in button (shown because the server has api.dev_login on),
// the demo user's personas and balance, a persona picked with the arrow keys.
// Input: BASE_URL, CHROMIUM, ARTIFACTS. Prints a JSON report; exits non-zero
// on a failed check.
import { chromium } from "playwright-core";
import { join } from "node:path";

const env = (n) => process.env[n] ?? (() => { throw new Error(`${n} is required`); })();
const report = { checks: [] };
const check = (ok, what, detail) => {
  report.checks.push({ what, ok: !!ok, detail });
  if (!ok) throw new Error(`check failed: ${what}: ${JSON.stringify(detail)}`);
};
const browser = await chromium.launch({ executablePath: env("CHROMIUM") });
const page = await browser.newPage({ viewport: { width: 390, height: 844 } });
const errors = [];
page.on("pageerror", (e) => errors.push(String(e)));
try {
  await page.goto(env("BASE_URL"));
  const dev = page.getByRole("button", { name: "Dev sign-in as the demo user" });
  await dev.waitFor();
  // The first thing Tab reaches is the dev sign-in; Enter presses it.
  await page.keyboard.press("Tab");
  check(await dev.evaluate((b) => b === document.activeElement), "Tab reaches the dev sign-in first");
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: "Pick a persona" }).waitFor();
  const balance = page.locator(".balance strong");
  await balance.waitFor();
  report.balance = await balance.textContent();
  check(report.balance === "5 min 00 s", "the demo user's five-minute card at x1.0", report.balance);
  // Arrow keys move through the persona radio group; the balance follows the multiplier.
  const radios = page.getByRole("radio");
  const first = radios.first();
  await first.focus();
  await page.keyboard.press("ArrowDown");
  const chosen = await page.evaluate(() => document.activeElement?.closest("label")?.querySelector(".persona-name")?.textContent);
  await page.waitForFunction(
    (name) => document.querySelector(".balance")?.textContent?.includes(name),
    chosen,
  );
  report.after_arrow = await page.locator(".balance").textContent();
  check(report.after_arrow.includes(chosen), "the balance is shown at the persona picked by keyboard", report.after_arrow);
  await page.screenshot({ path: join(env("ARTIFACTS"), "dev-sign-in.png"), fullPage: true });
  check(errors.length === 0, "no page errors", errors);
  report.ok = true;
} catch (e) {
  report.ok = false;
  report.error = String(e?.stack ?? e);
} finally {
  await browser.close();
  console.log(JSON.stringify(report));
  process.exit(report.ok ? 0 : 1);
}
