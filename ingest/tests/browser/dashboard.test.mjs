// End-to-end test of the web dashboard in Debian's Chromium, driven by playwright-core. Run by
// ingest/tests/dashboard.rs against a real ingest + worker that already holds the events
// described by FAULTLINE_EXPECT; exits non-zero (with the failed step) on any failure.
//
//   FAULTLINE_URL=http://127.0.0.1:8080 FAULTLINE_KEY=... FAULTLINE_EXPECT='{"groups":[...],"events":6}' \
//   node dashboard.test.mjs

import { chromium } from "playwright-core";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const BASE = required("FAULTLINE_URL");
const KEY = required("FAULTLINE_KEY");
const EXPECT = JSON.parse(required("FAULTLINE_EXPECT"));
const SHOTS = process.env.FAULTLINE_SCREENSHOTS || null;
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
// Generous: CI runs the whole workspace's tests in parallel on two cores next to this browser.
const TIMEOUT = 20_000;

function required(name) {
  const v = process.env[name];
  if (!v) fail(`environment variable ${name} is not set`);
  return v;
}

function fail(message) {
  console.error(`FAIL: ${message}`);
  process.exit(1);
}

function check(condition, message) {
  if (!condition) throw new Error(message);
  console.log(`ok - ${message}`);
}

if (!existsSync(CHROMIUM)) {
  fail(`${CHROMIUM} not found: install Debian's chromium (scripts/browser-setup.sh does)`);
}
// The whole run must finish, whatever hangs.
const watchdog = setTimeout(() => fail("the browser test took longer than 200 s"), 200_000);

if (SHOTS) mkdirSync(SHOTS, { recursive: true });
const profile = mkdtempSync(join(tmpdir(), "faultline-chromium-"));
let context;
let step = "launch";
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 860 },
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  context.setDefaultTimeout(TIMEOUT);
  const page = context.pages()[0] || (await context.newPage());
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error" && !/status of 40[0134]|ERR_CONNECTION_REFUSED|net::ERR_FAILED/.test(m.text())) problems.push(`console error: ${m.text()}`);
  });
  const urls = [];
  page.on("framenavigated", (f) => {
    if (f === page.mainFrame()) urls.push(f.url());
  });
  page.on("request", (r) => {
    if (!r.url().startsWith(BASE)) problems.push(`request outside the server: ${r.url()}`);
  });

  step = "the page asks for a key";
  await page.goto(`${BASE}/`);
  await page.getByRole("textbox", { name: "API key" }).waitFor();
  check(await page.getByRole("heading", { name: "Sign in with an API key" }).isVisible(), "the page asks for an API key");

  step = "keyboard: the skip link comes first";
  check(
    (await page.evaluate(() => document.activeElement?.id)) === "api-key",
    "the key field has the focus",
  );
  check(
    (await page.evaluate(() => document.querySelector("a[href], button:not([hidden]), input, select")?.className)) ===
      "skip-link",
    "the skip link is the first thing Tab reaches",
  );

  step = "a wrong key is refused with the request id";
  await page.getByRole("textbox", { name: "API key" }).fill("fl_wrong_key_for_the_test");
  await page.keyboard.press("Enter");
  const refused = page.locator("#key-result .error-panel");
  await refused.waitFor();
  const refusedText = await refused.innerText();
  check(/refused/i.test(refusedText), `a wrong key is refused: ${refusedText.split("\n")[0]}`);
  check((await refused.locator(".request-id").count()) === 1, "the refusal shows the request id");

  step = "the key opens the errors list";
  await page.getByRole("textbox", { name: "API key" }).fill(KEY);
  await page.getByRole("button", { name: "Open the dashboard" }).click();
  await page.locator("table.errors tbody tr").first().waitFor();
  await page.locator("#connection[data-state=ok]").waitFor();
  const rows = await page.locator("table.errors tbody tr").evaluateAll((trs) =>
    trs.map((tr) => ({
      message: tr.querySelector("td.message a")?.textContent,
      count: Number(tr.querySelector("td.count")?.textContent.replace(/\D/g, "")),
      level: tr.querySelector("td .badge")?.textContent,
    })),
  );
  check(rows.length === EXPECT.groups.length, `the list shows ${EXPECT.groups.length} groups (got ${rows.length})`);
  for (const g of EXPECT.groups) {
    const row = rows.find((r) => r.message === g.message);
    check(row && row.count === g.count && row.level === g.level, `"${g.message}" is listed as ${g.level} with ${g.count} events`);
  }
  await page.locator("table.errors svg.sparkline").first().waitFor();
  const sparks = await page.locator("table.errors tbody tr").evaluateAll((trs) =>
    trs.map((tr) => ({
      message: tr.querySelector("td.message a")?.textContent,
      total: Number(tr.querySelector("svg.sparkline")?.dataset.total),
      bars: tr.querySelectorAll("svg.sparkline rect").length,
    })),
  );
  for (const g of EXPECT.groups) {
    const s = sparks.find((r) => r.message === g.message);
    check(s && s.total === g.count && s.bars === 24, `the sparkline of "${g.message}" has 24 hourly bars adding up to ${g.count}`);
  }
  const stored = await page.evaluate(() => localStorage.getItem("faultline.apiKey"));
  check(stored === KEY, "the key is kept in local storage");
  if (SHOTS) await page.screenshot({ path: join(SHOTS, "errors.png"), fullPage: true });

  step = "filters live in the URL";
  await page.getByLabel("Level").focus();
  await page.getByLabel("Level").selectOption("warning");
  await page.waitForURL(/level=warning/);
  await page.waitForFunction(() => {
    const levels = [...document.querySelectorAll("table.errors tbody td:first-child .badge")].map((b) => b.textContent);
    return levels.length > 0 && levels.every((l) => l === "warning");
  });
  check((await page.evaluate(() => document.activeElement?.name)) === "level", "the focus stays on the Level filter after it re-renders");
  const warnings = EXPECT.groups.filter((g) => g.level === "warning").length;
  check((await page.locator("table.errors tbody tr").count()) === warnings, `level=warning shows the ${warnings} warning group(s)`);
  step = "a shared link restores the view";
  await page.goto(`${BASE}/#/errors?q=${encodeURIComponent(EXPECT.groups[0].message.slice(0, 12))}`);
  await page.waitForFunction((m) => {
    const links = [...document.querySelectorAll("table.errors td.message a")];
    return links.length === 1 && links[0].textContent === m;
  }, EXPECT.groups[0].message);
  check((await page.getByLabel("Search").inputValue()) === EXPECT.groups[0].message.slice(0, 12), "a link with q= fills the search box and filters the list");

  step = "paging";
  await page.goto(`${BASE}/#/errors?limit=2`);
  await page.locator(".pager", { hasText: `Page 1 of ${Math.ceil(EXPECT.groups.length / 2)}` }).waitFor();
  check((await page.locator("table.errors tbody tr").count()) === 2, "limit=2 shows two groups on the first page");
  await page.getByRole("link", { name: "Next →" }).click();
  await page.waitForURL(/limit=2&page=2|page=2&limit=2/);
  await page.locator(".pager", { hasText: "Page 2 of" }).waitFor();
  await page.waitForFunction((n) => document.querySelectorAll("table.errors tbody tr").length === n, EXPECT.groups.length - 2);
  check(true, `Next shows the remaining ${EXPECT.groups.length - 2} group(s) on page 2`);

  step = "the detail of a group";
  const target = EXPECT.groups[0];
  await page.getByRole("link", { name: target.message }).click();
  await page.waitForURL(/#\/errors\/[0-9a-f-]{36}/);
  await page.getByRole("heading", { level: 1, name: target.message }).waitFor();
  await page.locator("#detail-status .badge-unresolved").waitFor();
  check((await page.locator("ol.stack li.in-app").count()) > 0, "the stack trace sets in-app frames apart");
  check((await page.locator("ol.stack li.library").count()) > 0, "library frames are marked as such");
  const occurrences = await page.locator("ol.occurrences > li").count();
  check(occurrences === Math.min(10, target.count), `the detail lists ${occurrences} occurrences`);
  check(
    (await page.getByRole("heading", { name: "Why these events were grouped" }).isVisible()) &&
      (await page.locator("section", { hasText: "Normalised message" }).count()) > 0,
    "the detail explains the grouping",
  );

  step = "resolve";
  await page.getByRole("button", { name: "Resolve" }).click();
  await page.locator("#detail-status .badge-resolved").waitFor();
  await page.getByRole("button", { name: "Reopen" }).waitFor();
  check(await page.getByText("Marked as resolved.").isVisible(), "Resolve marks the group resolved and offers Reopen");
  await page.getByRole("button", { name: "Reopen" }).click();
  await page.locator("#detail-status .badge-unresolved").waitFor();
  await page.getByRole("button", { name: "Resolve" }).click();
  await page.locator("#detail-status .badge-resolved").waitFor();
  check(true, "Reopen and Resolve again toggle the status");
  const apiView = await page.evaluate(async ({ key, message }) => {
    const r = await fetch(`/api/errors?resolved=true&q=${encodeURIComponent(message)}`, { headers: { "X-API-Key": key } });
    return r.json();
  }, { key: KEY, message: target.message });
  check(apiView.data.total === 1, "the API agrees the group is resolved");
  if (SHOTS) await page.screenshot({ path: join(SHOTS, "detail.png"), fullPage: true });

  step = "an API error is shown with its message and request id";
  await page.goto(`${BASE}/#/errors/not-a-uuid`);
  const apiError = page.locator("main .error-panel");
  await apiError.waitFor();
  const apiErrorText = await apiError.innerText();
  check(/invalid UUID/i.test(apiErrorText) && /HTTP 400/.test(apiErrorText), `a bad id shows the server's message: ${apiErrorText.split("\n")[0]}`);
  check((await apiError.locator(".request-id").innerText()).length > 8, "and the request id");

  step = "the overview chart is drawn from the real figures";
  await page.getByRole("link", { name: "Overview" }).click();
  await page.waitForURL(/#\/overview/);
  await page.getByLabel("Period").selectOption("day");
  await page.waitForURL(/period=day&group_by=hour/);
  const svg = page.locator("svg.trends-svg");
  await svg.waitFor();
  await page.waitForFunction((n) => document.querySelector("svg.trends-svg")?.dataset.total === String(n), EXPECT.events);
  const bars = await svg.locator("rect[data-count]").evaluateAll((rs) =>
    rs.map((r) => ({ count: Number(r.dataset.count), height: Number(r.getAttribute("height")) })),
  );
  check(bars.length >= 24, `the day chart has one bar per hour (${bars.length})`);
  check(bars.reduce((a, b) => a + b.count, 0) === EXPECT.events, `the bars add up to the ${EXPECT.events} posted events`);
  check(bars.every((b) => (b.count > 0) === (b.height > 0)), "exactly the buckets with events have visible bars");
  const figure = async (k) => (await page.locator(`[data-stat=${k}] dd`).innerText()).trim();
  await page.waitForFunction(() => document.querySelector("[data-stat=resolved_errors] dd")?.textContent === "1");
  check((await figure("total_errors")) === String(EXPECT.groups.length), "the figures count the groups");
  check((await figure("resolved_errors")) === "1", "the figures count the resolution");
  check((await figure("errors_today")) === String(EXPECT.events), "the figures count today's events");
  if (SHOTS) await page.screenshot({ path: join(SHOTS, "overview.png"), fullPage: true });

  step = "auto-refresh shows new errors without reloading";
  const marker = await page.evaluate(() => (window.__noReload = Math.random()));
  await page.goto(`${BASE}/#/errors`);
  await page.evaluate((m) => (window.__noReload = m), marker);
  await page.locator("table.errors tbody tr").first().waitFor();
  // No long digit runs: ingest scrubs what looks like a card number (a 13-digit timestamp can).
  const fresh = `Fresh failure ${Math.random().toString(36).slice(2, 8)}`;
  const posted = await page.evaluate(async ({ key, message }) => {
    const r = await fetch("/api/errors", {
      method: "POST",
      headers: { "X-API-Key": key, "Content-Type": "application/json" },
      body: JSON.stringify({ message, level: "error", source: "browser-test" }),
    });
    return r.status;
  }, { key: KEY, message: fresh });
  check(posted === 202, "an event posted while the page is open is accepted");
  await page.getByRole("link", { name: fresh }).waitFor({ timeout: 30_000 });
  check((await page.evaluate(() => window.__noReload)) === marker, "the new group appears without a reload");

  step = "delete";
  const victim = EXPECT.groups[EXPECT.groups.length - 1];
  await page.getByRole("link", { name: victim.message }).click();
  await page.getByRole("heading", { level: 1, name: victim.message }).waitFor();
  await page.getByRole("button", { name: "Delete…" }).click();
  await page.getByRole("button", { name: "Delete this group and its events" }).click();
  await page.waitForURL(/#\/errors$/);
  await page.locator("table.errors tbody tr").first().waitFor();
  await page.waitForFunction((m) => ![...document.querySelectorAll("table.errors td.message a")].some((a) => a.textContent === m), victim.message);
  check(true, `"${victim.message}" is gone after Delete`);

  step = "health";
  await page.getByRole("link", { name: "Health" }).click();
  await page.locator("#services table tbody tr").first().waitFor();
  const services = await page.locator("#services tbody th").allInnerTexts();
  check(services.length >= 3, `the health view lists the services (${services.join(", ")})`);
  const folded = page.locator("#services tr[data-component=worker] details");
  if (await folded.count()) {
    await folded.locator("summary").click();
    await page.evaluate(() => (window.__servicesTable = document.querySelector("#services table")));
    await page.waitForFunction(() => document.querySelector("#services table") !== window.__servicesTable);
    check((await page.locator("#services tr[data-component=worker] details").getAttribute("open")) !== null, "opened details stay open when the view refreshes");
  }
  if (SHOTS) await page.screenshot({ path: join(SHOTS, "health.png"), fullPage: true });

  step = "settings: create and revoke a key";
  await page.getByRole("link", { name: "Settings" }).click();
  await page.locator("#keys table tbody tr").first().waitFor();
  const keysBefore = await page.locator("#keys tbody tr").count();
  await page.getByLabel("Name", { exact: true }).first().fill("browser-test key");
  await page.getByRole("button", { name: "Create key" }).click();
  const secret = page.locator("#new-key-secret");
  await secret.waitFor();
  check((await secret.innerText()).length > 20, "a new key is shown once");
  await page.waitForFunction((n) => document.querySelectorAll("#keys tbody tr").length === n + 1, keysBefore);
  await page.getByRole("button", { name: "Revoke browser-test key" }).click();
  await page.getByRole("button", { name: "Revoke for good" }).click();
  await page.waitForFunction((n) => document.querySelectorAll("#keys tbody tr").length === n, keysBefore);
  await page.locator("#new-key-secret").waitFor({ state: "detached" });
  check(true, "the new key is revoked and its secret no longer shown");
  if (SHOTS) await page.screenshot({ path: join(SHOTS, "settings.png"), fullPage: true });

  step = "integrations: configure a webhook and send a test";
  const webhook = page.locator("details.integration[data-name=webhook]");
  await webhook.locator("summary").click();
  await webhook.getByLabel("URL").fill("http://127.0.0.1:9/faultline-hook");
  await webhook.getByLabel(/Signing secret/).fill("a-test-secret-of-enough-length");
  await webhook.getByRole("button", { name: "Save" }).click();
  await page.locator("details.integration[data-name=webhook] .badge-configured, details.integration[data-name=webhook] .badge-connected, details.integration[data-name=webhook] .badge-unhealthy").waitFor();
  const webhook2 = page.locator("details.integration[data-name=webhook]");
  if (!(await webhook2.getAttribute("open"))) await webhook2.locator("summary").click();
  await webhook2.getByRole("button", { name: "Send test" }).click();
  const outcome = webhook2.locator("p.ok, p.bad, .error-panel").first();
  await outcome.waitFor({ timeout: 30_000 });
  check(/Test (sent|failed)|refused|not allowed/i.test(await outcome.innerText()), `"Send test" reports its outcome: ${(await outcome.innerText()).split("\n")[0]}`);

  step = "alerts: create, disable, edit and delete a rule";
  await page.getByRole("link", { name: "Alerts" }).click();
  await page.waitForURL(/#\/alerts/);
  const ruleForm = page.locator("#rule-form");
  await ruleForm.waitFor();
  await page.locator("#rules").getByText(/No rules yet|Rule/).first().waitFor();
  await ruleForm.getByLabel("Name", { exact: true }).fill("Database errors spike");
  await ruleForm.getByLabel("Threshold", { exact: true }).fill("5");
  await ruleForm.getByLabel("Window", { exact: true }).fill("5m");
  await ruleForm.getByLabel("Level", { exact: true }).selectOption("error");
  await ruleForm.getByLabel("webhook", { exact: true }).check();
  await ruleForm.getByRole("button", { name: "Create rule" }).click();
  const ruleRow = page.locator("#rules tbody tr", { hasText: "Database errors spike" });
  await ruleRow.waitFor();
  const condition = await ruleRow.locator("td.condition").innerText();
  check(/5/.test(condition) && condition.length > 10, `the new rule reads: ${condition.split("\n")[0]}`);
  await ruleRow.getByRole("checkbox").uncheck();
  await page.getByText('Disabled "Database errors spike".').waitFor();
  const ruleApi = await page.evaluate(async (key) => (await (await fetch("/api/alerts/rules", { headers: { "X-API-Key": key } })).json()).data.rules, KEY);
  check(ruleApi.length === 1 && ruleApi[0].enabled === false, "disabling the rule is saved");
  await page.getByRole("button", { name: "Edit rule Database errors spike" }).click();
  await ruleForm.getByLabel("Threshold", { exact: true }).fill("7");
  await ruleForm.getByRole("button", { name: "Save rule" }).click();
  await page.waitForFunction(() => /7/.test(document.querySelector("#rules td.condition")?.textContent || ""));
  check(true, "editing the threshold changes the condition");

  step = "alerts: an incident's status changes";
  const incidentStatus = await page.evaluate(async (key) => {
    const r = await fetch("/api/alerts/incidents", {
      method: "POST",
      headers: { "X-API-Key": key, "Content-Type": "application/json" },
      body: JSON.stringify({ title: "Checkout is failing", severity: "high", description: "made by the browser test" }),
    });
    return r.status;
  }, KEY);
  check(incidentStatus === 201, "an incident can be opened through the API");
  const incidentRow = page.locator("#incidents tbody tr", { hasText: "Checkout is failing" });
  await incidentRow.waitFor({ timeout: 30_000 });
  await incidentRow.getByLabel("status of Checkout is failing").selectOption("investigating");
  await page.getByText('"Checkout is failing": status is now investigating.').waitFor();
  check(true, "the incident's status is changed from the page");
  if (SHOTS) await page.screenshot({ path: join(SHOTS, "alerts.png"), fullPage: true });
  await page.getByRole("button", { name: "Delete rule Database errors spike" }).click();
  await page.getByRole("button", { name: "Delete for good" }).click();
  await page.locator("#rules").getByText("No rules yet.").waitFor();
  check(true, "the rule is deleted");

  step = "an unreachable API is reported";
  await page.route("**/api/**", (route) => route.abort("connectionrefused"));
  await page.locator("#connection[data-state=down]").waitFor({ timeout: 30_000 });
  check((await page.locator("#connection").innerText()).includes("unreachable"), "the header says the API is unreachable");
  check(await page.locator("#banner").isVisible(), "a banner explains it");
  await page.unroute("**/api/**");
  await page.locator("#connection[data-state=ok]").waitFor({ timeout: 30_000 });
  check(true, "the page recovers by itself when the API is back");

  step = "a key revoked mid-session is reported";
  await page.evaluate(() => localStorage.setItem("faultline.apiKey", "fl_revoked_in_the_meantime"));
  await page.getByRole("link", { name: "Errors", exact: true }).click();
  await page.locator("#connection[data-state=refused]").waitFor();
  check((await page.locator("#banner").innerText()).includes("refused the key"), "the banner says the key was refused");
  await page.locator("#banner").getByRole("button", { name: "Enter another key" }).click();
  await page.getByRole("textbox", { name: "API key" }).waitFor();
  check(true, "it offers to enter another key");

  step = "the key never appears in a URL";
  check(urls.every((u) => !u.includes(KEY)), `no URL carried the key (${urls.length} navigations)`);
  check(problems.length === 0, `no page errors, console errors or outside requests${problems.length ? `: ${problems.join("; ")}` : ""}`);
} catch (e) {
  console.error(`FAIL at step "${step}": ${e.message}`);
  try {
    const page = context?.pages()[0];
    if (page && SHOTS) await page.screenshot({ path: join(SHOTS, "failure.png"), fullPage: true });
  } catch {
    // The failure itself is what matters.
  }
  process.exitCode = 1;
} finally {
  await context?.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  clearTimeout(watchdog);
}
