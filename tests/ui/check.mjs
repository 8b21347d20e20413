// Drives llmtape's web view (or a `probe --html` report) in a real headless
// Chromium and checks what a person would look at. Run by tests/it/ui.rs:
//
//   node check.mjs page   BASE_URL  EXPECT_JSON  SHOT_DIR
//   node check.mjs report FILE      EXPECT_JSON  SHOT_DIR
//
// EXPECT_JSON says what the page must show (see tests/it/ui.rs). Every
// request the page makes is recorded; any to a host other than 127.0.0.1
// is refused and fails the check (the report may make none at all). On
// success prints one JSON line {"ok":true,"requests":[...],"screenshots":[...]};
// on failure prints the reason on stderr and exits 1. Every wait is bounded.

import { chromium } from "playwright-core";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const WAIT_MS = 15000;
const [mode, target, expectJson, shotDir] = process.argv.slice(2);
if (!["page", "report"].includes(mode) || !target || !expectJson || !shotDir) {
  console.error("usage: node check.mjs page|report URL|FILE EXPECT_JSON SHOT_DIR");
  process.exit(2);
}
const expect = JSON.parse(expectJson);
const executablePath = process.env.LLMTAPE_TEST_CHROMIUM || "/usr/bin/chromium";

function check(condition, message) {
  if (!condition) throw new Error(message);
}

// Waits until fn() (run in the page) is truthy; fails naming what.
async function until(page, what, fn, arg) {
  try {
    await page.waitForFunction(fn, arg, { timeout: WAIT_MS, polling: 50 });
  } catch (e) {
    throw new Error(`timed out waiting for ${what}`);
  }
}

const count = (page, testid) => page.locator(`[data-testid="${testid}"]`).count();
const text = (page, testid) => page.locator(`[data-testid="${testid}"]`).first().innerText();
const rows = (n) => () => document.querySelectorAll('[data-testid="recording-row"]').length === n;

async function checkPage(page, base, shots) {
  const ui = base + "/_llmtape/ui";
  await page.goto(ui, { timeout: WAIT_MS });

  // Recordings: the table lists the newest page of them, with the total,
  // and the next page holds the rest.
  const firstPage = Math.min(expect.total, expect.page);
  await until(page, `${firstPage} rows`, (n) =>
    document.querySelectorAll('[data-testid="recording-row"]').length === n, firstPage);
  const total = expect.total.toLocaleString("en-US");
  check((await text(page, "row-count")).startsWith(`${total} recording`),
    `row count says ${await text(page, "row-count")}`);
  check((await text(page, "page-info")) === `1\u2013${firstPage} of ${total}`,
    `page info says ${await text(page, "page-info")}`);
  check(await page.locator('[data-testid="page-prev"]').isDisabled(), "no newer page");
  // The counters are live before anything happens.
  await until(page, "the live counters", () =>
    document.querySelector('[data-testid="live"]').classList.contains("on"));
  await shots("recordings", null, { fullPage: false });
  if (expect.total > expect.page) {
    await page.locator('[data-testid="page-next"]').click();
    const rest = Math.min(expect.total - expect.page, expect.page);
    await until(page, `${rest} rows on the second page`, (n) =>
      document.querySelectorAll('[data-testid="recording-row"]').length === n, rest);
    check(page.url().includes("offset=" + expect.page), "the page is in the URL");
    check((await text(page, "page-info")).startsWith(`${expect.page + 1}\u2013`), "the second page's range");
    await page.locator('[data-testid="page-prev"]').click();
    await until(page, "the first page again", (n) =>
      document.querySelectorAll('[data-testid="recording-row"]').length === n, firstPage);
  }

  // A filter from the facets narrows them, and clearing it brings them back.
  const model = page.locator('[data-testid="filter-model"]');
  check((await model.locator("option").allInnerTexts()).includes(expect.filter.model),
    `the model filter offers ${expect.filter.model}`);
  await model.selectOption(expect.filter.model);
  await until(page, `${expect.filter.rows} rows for model ${expect.filter.model}`, (n) =>
    document.querySelectorAll('[data-testid="recording-row"]').length === n, expect.filter.rows);
  check(page.url().includes("model=" + encodeURIComponent(expect.filter.model)), "the filter is in the URL");
  // One recording whole (found through the filter): a stream, with its
  // events on the time axis; back leads to the filtered table.
  await page.locator(`[data-testid="recording-row"][data-key="${expect.stream.key}"]`).click();
  await until(page, "the recording's detail", () => document.querySelector('[data-testid="recording-detail"]'));
  check((await text(page, "recording-detail")).includes(expect.stream.key), "the detail names its key");
  check((await text(page, "request-body")).includes(expect.stream.request_contains),
    `the request body shows ${expect.stream.request_contains}`);
  await until(page, `${expect.stream.events} events on the chart`, (n) =>
    document.querySelectorAll('[data-testid="events-chart"] [data-testid="chart-event"]').length === n,
    expect.stream.events);
  await shots("recording");

  await page.goBack();
  await until(page, "the filtered table again", (n) =>
    document.querySelectorAll('[data-testid="recording-row"]').length === n, expect.filter.rows);
  await page.locator('[data-testid="filter-clear"]').click();
  await until(page, "all rows again", (n) =>
    document.querySelectorAll('[data-testid="recording-row"]').length === n, firstPage);
  // The text filter (debounced) narrows them too.
  await page.locator('[data-testid="filter-q"]').fill(expect.text.q);
  await until(page, `${expect.text.rows} rows with text ${expect.text.q}`, (n) =>
    document.querySelectorAll('[data-testid="recording-row"]').length === n, expect.text.rows);
  // The row it found opens from the keyboard too.
  await page.locator('[data-testid="recording-row"]').first().press("Enter");
  await until(page, "the found recording", (key) => {
    const d = document.querySelector('[data-testid="recording-detail"]');
    return d && d.textContent.includes(key);
  }, expect.text.key);
  await page.goBack();
  await until(page, "the text-filtered table again", (n) =>
    document.querySelectorAll('[data-testid="recording-row"]').length === n, expect.text.rows);
  await page.locator('[data-testid="filter-clear"]').click();
  await until(page, "all rows again", (n) =>
    document.querySelectorAll('[data-testid="recording-row"]').length === n, firstPage);

  // A plain answer with history: its body and its older recordings.
  await page.goto(ui + "#/recording/" + expect.plain.key.slice(0, 12), { timeout: WAIT_MS });
  await until(page, "the plain recording", () => document.querySelector('[data-testid="response-body"]'));
  check((await text(page, "response-body")).includes(expect.plain.answer_contains),
    `the answer shows ${expect.plain.answer_contains}`);
  check((await page.locator('[data-testid="recording-history"] tbody tr').count()) === expect.plain.history,
    `${expect.plain.history} older recording(s) listed`);

  // Fingerprints: per model, a timeline with one bar per fingerprint.
  await page.locator('[data-testid="nav-fingerprints"]').click();
  await until(page, "the fingerprints", () => document.querySelector('[data-testid="fingerprint-model"]'));
  const fpBars = await page.locator('[data-testid="fingerprint-chart"] [data-testid="chart-bar"]').count();
  check(fpBars === expect.fingerprints, `${fpBars} fingerprint bars, expected ${expect.fingerprints}`);
  await shots("fingerprints");

  // Audit: the flips, a coloured diff of the changed text, a delta chart.
  await page.locator('[data-testid="nav-audit"]').click();
  await until(page, `${expect.audit.flips} flips`, (n) =>
    document.querySelectorAll('[data-testid="flip"]').length === n, expect.audit.flips);
  const flip = page.locator('[data-testid="flip"][data-change="text"]').first();
  check((await flip.locator('[data-testid="diff-old"] del').allInnerTexts()).join(" ").includes(expect.audit.deleted),
    `the old side marks "${expect.audit.deleted}" deleted`);
  check((await flip.locator('[data-testid="diff-new"] ins').allInnerTexts()).join(" ").includes(expect.audit.inserted),
    `the new side marks "${expect.audit.inserted}" inserted`);
  const deltaBars = await page.locator('[data-testid="delta-chart"] [data-testid="chart-bar"]').count();
  check(deltaBars === expect.audit.delta_bars, `${deltaBars} delta bars, expected ${expect.audit.delta_bars}`);
  await shots("audit");

  // The counters move after a request made now (a hit on a recording).
  const before = Number((await text(page, "count-hits")).replace(/,/g, ""));
  const costBefore = await text(page, "count-cost");
  const hit = await fetch(base + expect.hit.path, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: "Bearer sk-test-dummy" },
    body: expect.hit.body,
  });
  check(hit.ok && hit.headers.get("x-llmtape-cache") === "hit", `the request was a hit (${hit.status} ${hit.headers.get("x-llmtape-cache")})`);
  await hit.arrayBuffer();
  await until(page, `hits to reach ${before + 1}`, (n) =>
    document.querySelector('[data-testid="count-hits"]').textContent.replace(/,/g, "") === String(n), before + 1);
  // A priced model's hit saves money too.
  await until(page, "the cost saved to move", (was) => {
    const now = document.querySelector('[data-testid="count-cost"]').textContent;
    return now !== was && now.startsWith("$");
  }, costBefore);
  await shots("counters", '[data-testid="counters"]');
}

async function checkReport(page, file, shots) {
  await page.goto(pathToFileURL(file).href, { timeout: WAIT_MS });
  await until(page, "the report's chart", () => document.querySelector('[data-testid="logprob-chart"] svg'));
  const bars = await page.locator('[data-testid="logprob-chart"] [data-testid="chart-bar"]').count();
  check(bars === expect.clusters, `${bars} logprob bars, expected ${expect.clusters}`);
  const outputs = await page.locator('[data-testid="output-row"]').allInnerTexts();
  check(outputs.length === expect.outputs.length, `${outputs.length} output rows, expected ${expect.outputs.length}`);
  expect.outputs.forEach((o, i) => check(outputs[i].includes(o), `output row ${i} shows ${o}: ${outputs[i]}`));
  const fps = await page.locator('[data-testid="fingerprint-row"]').allInnerTexts();
  check(fps.length === expect.fingerprints.length, `${fps.length} fingerprint rows`);
  expect.fingerprints.forEach((f, i) => check(fps[i].includes(f), `fingerprint row ${i} shows ${f}`));
  await shots("probe-report");
}

const profile = mkdtempSync(join(tmpdir(), "llmtape-chromium-"));
let context;
const requests = [];
const refused = [];
const screenshots = [];
try {
  mkdirSync(shotDir, { recursive: true });
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    timeout: WAIT_MS * 2,
    viewport: { width: 1360, height: 900 },
    deviceScaleFactor: 1,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  // Every request the page makes goes through here: 127.0.0.1 (or, for
  // the report, its own file) passes, anything else is refused and fails.
  await context.route("**/*", (route) => {
    const url = route.request().url();
    const u = new URL(url);
    const allowed = mode === "page"
      ? u.protocol === "http:" && u.hostname === "127.0.0.1"
      : url === pathToFileURL(target).href;
    if (allowed || u.protocol === "data:") return route.continue();
    refused.push(url);
    return route.abort("blockedbyclient");
  });
  context.on("request", (r) => requests.push(r.url()));
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(WAIT_MS);
  const problems = [];
  page.on("pageerror", (e) => problems.push("page error: " + e.message));
  page.on("console", (m) => { if (m.type() === "error") problems.push("console error: " + m.text()); });
  const shots = async (name, selector, how) => {
    const path = join(shotDir, `${name}.png`);
    if (selector) await page.locator(selector).screenshot({ path });
    else await page.screenshot({ path, fullPage: true, ...how });
    screenshots.push(path);
  };
  if (mode === "page") await checkPage(page, target.replace(/\/$/, ""), shots);
  else await checkReport(page, target, shots);
  check(refused.length === 0, `the page asked other origins: ${refused.join(", ")}`);
  check(problems.length === 0, problems.join("; "));
  console.log(JSON.stringify({ ok: true, requests, screenshots }));
} catch (e) {
  console.error(`ui check (${mode}) failed: ${e.message}`);
  if (refused.length) console.error(`refused requests: ${refused.join(", ")}`);
  process.exitCode = 1;
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
