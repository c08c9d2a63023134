// The local demo's first steps, by keyboard only, in Debian's Chromium:
// the dev sign-in button (shown because the server has api.dev_login on),
// the demo user's personas and balance, a persona picked with the arrow keys,
// then the one ad-supported persona, marked in the list, whose balance says
// how much is earned from ads (agent/tests/it/web.rs earns the demo user 60 s
// with a signed rewarded-ad callback) and how much paid, on the home screen
// and beside a call's countdown (the worker runs without voice).
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
const browser = await chromium.launch({
  executablePath: env("CHROMIUM"),
  args: ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"],
});
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
  // The list marks ad-supported personas in the radio's own name; earned
  // time pays only with them, before paid time: at x0.5, the 60 s earned buy
  // 2 minutes and the five-minute card 10.
  const ad = page.getByRole("radio", { name: /ad-supported/ });
  check((await ad.count()) === 1, "one persona is marked ad-supported", await ad.count());
  report.ad_supported = await ad.evaluate((r) => r.closest("label")?.querySelector(".persona-name")?.textContent);
  check(report.ad_supported === "Quizmaster Quinn", "the trivia host is the ad-supported persona", report.ad_supported);
  await ad.focus();
  await page.keyboard.press("Space");
  await page.waitForFunction(() => document.querySelector(".balance")?.textContent?.includes("Quizmaster Quinn"));
  report.ad_balance = await page.locator(".balance").textContent();
  check(
    report.ad_balance === "12 min 00 s with Quizmaster Quinn (×0.5), of which 2 min 00 s earned from ads and 10 min 00 s paid",
    "the ad-supported persona's balance splits earned and paid time",
    report.ad_balance,
  );
  await page.screenshot({ path: join(env("ARTIFACTS"), "dev-sign-in-earned.png"), fullPage: true });
  // In a call with it, beside the countdown: earned time goes first, so it
  // shrinks while the paid part stays, and the two add up to the time left.
  await page.getByRole("button", { name: "Start a call with Quizmaster Quinn" }).click();
  const split = page.locator(".countdown-split");
  await split.waitFor();
  await page.waitForFunction(() => {
    const s = document.querySelector(".countdown-split");
    const left = Number(document.querySelector(".countdown")?.getAttribute("data-seconds"));
    const earned = Number(s?.getAttribute("data-earned-seconds"));
    const paid = Number(s?.getAttribute("data-paid-seconds"));
    return earned < 120 && paid === 600 && earned + paid === left;
  });
  report.call_split = await split.textContent();
  check(/^of which earned 1:[0-5]\d, paid 10:00$/.test(report.call_split), "the call screen splits the time left", report.call_split);
  await page.screenshot({ path: join(env("ARTIFACTS"), "dev-sign-in-call.png"), fullPage: true });
  await page.getByRole("button", { name: "Hang up" }).click();
  await page.locator(".end-reason").waitFor();
  await page.getByRole("button", { name: "Back to personas" }).click();
  await page.getByRole("heading", { name: "Pick a persona" }).waitFor();
  // Back on a persona ads do not pay for, the earned time is not counted
  // (and the paid time is whole: the call drew earned time only).
  await page.getByRole("radio", { name: /Professor Ada/ }).check();
  await page.waitForFunction(() => document.querySelector(".balance")?.textContent?.includes("Professor Ada"));
  report.paid_balance = await page.locator(".balance").textContent();
  check(
    report.paid_balance.startsWith("5 min 00 s with Professor Ada (×1.0)") && report.paid_balance.includes("only with ad-supported"),
    "a persona without ads counts paid time only and says why",
    report.paid_balance,
  );
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
