// The page's performance in headless Chromium on this machine: wasm and
// model sizes, cold start (navigation to the first estimate, empty cache,
// localhost), warm estimate latency (p50, p95) for a ~128-token product, and
// the time from the click until the reasons are complete (the encoder's share
// of the most influential words measured, `#why[data-complete=true]`).
// A benchmark, not a test: prints a table. Usage: node bench.mjs [RUNS]
// PRICER_THREADS=N: the page served cross-origin isolated with `?threads=N`
// (0: the single-thread worker; N > 0: the threaded one with a pool of N).
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { chromium } from "playwright-core";
import { serveDist } from "./serve-dist.mjs";
import { clickEstimate, shownAfter } from "./shown.mjs";

const root = path.resolve(import.meta.dirname, "../..");
const dist = process.env.PRICER_DIST || path.join(root, "dist");
const runs = Number(process.argv[2] || 30);
const threads = process.env.PRICER_THREADS;
const { server, url: root_url } = await serveDist(dist, threads !== undefined);
const url = threads !== undefined ? `${root_url}?threads=${threads}` : root_url;

const size = (f) => fs.statSync(path.join(dist, f)).size;
const gz = (f) => zlib.gzipSync(fs.readFileSync(path.join(dist, f)), { level: 9 }).length;
const wasm = fs.readdirSync(dist).filter((f) => f.endsWith(".wasm"));
if (fs.existsSync(path.join(dist, "threads/worker_threads_bg.wasm"))) wasm.push("threads/worker_threads_bg.wasm");

// About 128 tokens of a real-looking product.
const product = "Stainless Steel 12-Cup Programmable Coffee Maker with Thermal Carafe\n" +
  "Brew up to 12 cups of hot coffee with this programmable coffee maker. The double-wall stainless steel thermal carafe keeps coffee hot for hours without a hot plate. " +
  "Features a 24-hour programmable timer, brew strength control, a pause-and-serve function, and a reusable gold-tone filter. " +
  "Easy-to-read backlit display with digital clock. Dishwasher-safe parts. Brand: Acme Home. Item weight: 7.5 pounds.";

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"] });
const context = await browser.newContext();
const page = await context.newPage();
const t0 = Date.now();
await page.goto(url);
await page.waitForSelector("#status[data-state=ready]", { timeout: 120000 });
const loaded = Date.now() - t0;
const worker = await page.evaluate(() => ({ ...document.documentElement.dataset }));
await page.fill("#description", product);
await page.click("#estimate");
await page.waitForSelector("#price");
const cold = Date.now() - t0;
// The first worker's warm-up (estimates of a built-in product once the model
// is ready; a request stops it): the runs done before the click above came.
// None in a build before the warm-up (a control).
await page.waitForFunction(() => document.documentElement.dataset.warmUpRuns !== undefined, null, { timeout: 10000 }).catch(() => {});
const warmUp = await page.evaluate(() => ({ ...document.documentElement.dataset }));
const times = [];
const whyTimes = [];
const shownTimes = [];
const firstTimes = [];
for (let i = 0; i < runs; i++) {
  const before = await page.getAttribute("#result", "data-id");
  await page.fill("#description", product + " " + i);
  const start = Date.now();
  await clickEstimate(page);
  await page.waitForFunction((b) => document.querySelector("#result")?.dataset.id !== b, before);
  await page.waitForSelector("#took[data-shown-ms]"); // set at the frame that paints the price
  times.push(Number((await page.textContent("#took")).match(/([\d.]+) ms/)[1]));
  const shownMs = await page.evaluate(() => document.querySelector("#took")?.dataset.shownMs);
  if (shownMs) shownTimes.push(Number(shownMs));
  const firstMs = await page.evaluate(() => document.querySelector("#first-shown")?.dataset.shownMs);
  if (firstMs) firstTimes.push(Number(firstMs));
  if (await page.$("#why")) {
    await page.waitForSelector("#why[data-complete=true]", { timeout: 60000 });
    whyTimes.push(Date.now() - start);
  }
}
// Back to back: each product (about 128 tokens, like the warm runs) clicked
// right after the previous price appears, its reasons still being measured
// (they must not delay the next). The page's own request-to-screen time
// (`#took[data-shown-ms]`, from the click's request to the frame that
// paints the price) against the worker's estimate time (`data-millis`);
// Playwright's wall clock beside it. Twice: waiting the way Playwright does
// by default (its predicate polled at every animation frame, so the page
// draws a frame every 16.7 ms and a new price waits for the next tick of
// that grid), and waiting on the page's DOM changes (a MutationObserver: the
// bench asks for no frames, as a person looking at the page does not).
const titles = ["Electric kettle 1.7 litre, stainless steel", "Gaming mouse, wireless, 16000 DPI", "Yoga mat, extra thick",
  "Cast iron skillet, 12 inch", "Bluetooth speaker, waterproof", "LEGO City fire station, 540 pieces",
  "Acoustic guitar, full size", "Robot vacuum cleaner, Wi-Fi", "Stapler Professional", "Cordless drill 20V"];
const body = product.slice(product.indexOf("\n"));
async function backToBack(polled, round, r) {
  for (const t of titles) {
    const before = await page.getAttribute("#result", "data-id");
    await page.fill("#description", `${t} ${round}${polled ? "" : " again"}${body}`);
    const start = Date.now();
    await clickEstimate(page);
    if (polled) {
      await page.waitForFunction((b) => document.querySelector("#result")?.dataset.id !== b, before);
      r.wall.push(Date.now() - start);
      await page.waitForSelector("#took[data-shown-ms]");
    } else {
      await shownAfter(page, before);
      r.wall.push(Date.now() - start);
    }
    const took = await page.evaluate(() => ({ ...document.querySelector("#took").dataset }));
    r.shown.push(Number(took.shownMs));
    r.own.push(Number(took.millis));
    r.answered.push(Number(took.answeredMs));
  }
}
// The two ways alternate, round by round.
const polled = { shown: [], wall: [], own: [], answered: [] };
const observed = { shown: [], wall: [], own: [], answered: [] };
for (let round = 0; round < Math.max(1, Math.round(runs / 10)); round++) {
  await backToBack(true, round, polled);
  await backToBack(false, round, observed);
}
// Isolated pages only: the explainer's passes stopped between two layers for a newer estimate.
const reasonsStopped = await page.evaluate(() => document.documentElement.dataset.reasonsStopped || "0");
const isolated = await page.evaluate(() => crossOriginIsolated);
// A returning visit: the model from Cache Storage after a conditional request (304).
const r0 = Date.now();
await page.reload();
await page.waitForSelector("#status[data-state=ready]", { timeout: 120000 });
const reloaded = Date.now() - r0;
// Three new visitors who each type for 3 s once the model is ready, then
// click: their first estimate, after the warm-up (the worker's own time, and
// the request to the frame that paints it).
const firstAfterPause = [];
for (let v = 0; v < 3; v++) {
  const visitor = await browser.newContext();
  const fresh = await visitor.newPage();
  await fresh.goto(url);
  await fresh.waitForSelector("#status[data-state=ready]", { timeout: 120000 });
  await new Promise((r) => setTimeout(r, 3000));
  await fresh.fill("#description", product);
  await clickEstimate(fresh);
  await shownAfter(fresh, null);
  firstAfterPause.push(await fresh.evaluate(() => ({ ...document.querySelector("#took").dataset })));
  await visitor.close();
}
const quantile = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))];
const q = (p) => quantile(times, p);
const version = browser.version();
await browser.close();
server.close();

const rows = [
  ...wasm.map((f) => [`${f.replace(/-[0-9a-f]{16}/, "")} (raw / gzip)`, `${(size(f) / 1e6).toFixed(2)} MB / ${(gz(f) / 1e6).toFixed(2)} MB`]),
  ["model file", `${(size("models/default.gguf") / 1e6).toFixed(1)} MB`],
  ["model ready after navigation", `${loaded} ms`],
  ["cold start: navigation to first estimate", `${cold} ms`],
  ["warm-up runs before that click came, and their time in the worker", warmUp.warmUpRuns ? `${warmUp.warmUpRuns} (${warmUp.warmUpMs} ms)` : "none"],
  [`warm estimate p50 / p95 (${runs} runs, in the worker)`, `${q(0.5)} ms / ${q(0.95)} ms`],
  ...(firstTimes.length ? [[`request to first estimate (words and details) on screen p50 / p95 (page)`, `${quantile(firstTimes, 0.5)} ms / ${quantile(firstTimes, 0.95)} ms`]] : []),
  ...(shownTimes.length ? [[`request to estimate on screen p50 / p95 (page)`, `${quantile(shownTimes, 0.5)} ms / ${quantile(shownTimes, 0.95)} ms`]] : []),
  ...(whyTimes.length ? [[`click to complete reasons p50 / p95 (page)`, `${quantile(whyTimes, 0.5)} ms / ${quantile(whyTimes, 0.95)} ms`]] : []),
  ...[[polled, "Playwright polling at every frame"], [observed, "the bench waiting on DOM changes, no frames asked"]].flatMap(([r, how]) => [
    [`back to back (${r.shown.length} clicks, ${how}): request to shown p50 / worker's estimate p50 (page)`,
      `${quantile(r.shown, 0.5)} ms / ${quantile(r.own, 0.5).toFixed(0)} ms = ${(quantile(r.shown, 0.5) / quantile(r.own, 0.5)).toFixed(2)}x`],
    [`  request to the answer in the page p50, then to the frame that paints it p50`,
      `${quantile(r.answered, 0.5).toFixed(1)} ms, then ${quantile(r.shown.map((s, i) => s - r.answered[i]), 0.5).toFixed(1)} ms`],
    [`  click to shown p50 / p95 (Playwright's clock)`, `${quantile(r.wall, 0.5)} ms / ${quantile(r.wall, 0.95)} ms`],
  ]),
  [`back to back: reasons passes stopped between layers for a newer estimate`, isolated ? reasonsStopped : "not isolated: at the end of a pass"],
  ["returning visit: navigation to model ready (cached, 304)", `${reloaded} ms`],
  ["3 new visitors clicking 3 s after ready: first estimate in the worker, then request to shown (page)",
    firstAfterPause.map((f) => `${Number(f.millis).toFixed(0)}, ${f.shownMs} ms`).join("; ")],
];
console.log(`Chromium ${version}, ${url}, ${worker.worker} on ${worker.estimateThreads} thread(s)`);
for (const [k, v] of rows) console.log(`| ${k} | ${v} |`);
