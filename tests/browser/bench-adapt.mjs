// How fast the page adapts the model to a shop's own products, with one
// worker and with several (`?workers=`), against `pricer adapt` on the same
// file in the same run: products per second and the cross-validated MAE
// each reports. A benchmark, not a test: prints a table.
// Usage: node bench-adapt.mjs FILE.jsonl|FILE.csv [N] [ROUNDS] [WORKERS...]
// (the first N records of FILE, default 500; each worker count timed ROUNDS
// times, alternated, default 1; worker counts default 1 2).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFileSync } from "node:child_process";
import { chromium } from "playwright-core";
import { serveDist } from "./serve-dist.mjs";

const root = path.resolve(import.meta.dirname, "../..");
const dist = process.env.PRICER_DIST || path.join(root, "dist");
const pricer = process.env.PRICER_BIN || path.join(root, "target/release/pricer");
const [source, n = "500", rounds = "1", ...counts] = process.argv.slice(2);
if (!source) { console.error("usage: node bench-adapt.mjs FILE.jsonl|FILE.csv [N] [ROUNDS] [WORKERS...]"); process.exit(2); }
const workerCounts = counts.length ? counts.map(Number) : [1, 2];
const lines = fs.readFileSync(source, "utf8").split("\n").filter((l) => l.trim());
const csv = source.endsWith(".csv");
const kept = csv ? lines.slice(0, Number(n) + 1) : lines.slice(0, Number(n));
const name = `shop${csv ? ".csv" : ".jsonl"}`;
const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "pricer-bench-adapt-")), name);
fs.writeFileSync(file, kept.join("\n") + "\n");

const { server, url } = await serveDist(dist);

// Native: all cores.
const t0 = Date.now();
const cli = JSON.parse(execFileSync(pricer, ["adapt", "--model", path.join(dist, "models/default.gguf"), "--data", file,
  "--out", file + ".gguf", "--json"], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim());
const nativeS = (Date.now() - t0) / 1000;

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"] });
const runs = Object.fromEntries(workerCounts.map((w) => [w, []]));
for (let round = 0; round < Number(rounds); round++) {
  for (const w of workerCounts) {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${url}?workers=${w}`);
    await page.waitForSelector("#status[data-state=ready]", { timeout: 120000 });
    const t1 = Date.now();
    await page.setInputFiles("#own-items", { name, mimeType: "text/plain", buffer: fs.readFileSync(file) });
    await page.waitForSelector("#own-items-status[data-count]", { timeout: 1800000 });
    const seconds = (Date.now() - t1) / 1000;
    const attr = (a) => page.getAttribute("#own-items-status", a);
    runs[w].push({ seconds, count: Number(await attr("data-count")), before: Number(await attr("data-mae-before")), after: Number(await attr("data-mae-after")) });
    await context.close();
  }
}
const version = browser.version();
await browser.close();
server.close();

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log(`Chromium ${version}, ${os.cpus().length} cores, ${rounds} round(s) alternated; the page's time runs from the file's choice to the adaptation shown`);
console.log(`| where | products | seconds | products/s | vs one worker | CV MAE before | CV MAE after | method |`);
console.log(`|---|---:|---:|---:|---:|---:|---:|---|`);
console.log(`| pricer adapt (${os.cpus().length} cores, whole command) | ${cli.items} | ${nativeS.toFixed(1)} | ${(cli.items / nativeS).toFixed(1)} | | $${cli.before.mae.toFixed(2)} | $${cli.after.mae.toFixed(2)} | ${cli.method} |`);
const rate = (w) => runs[w][0].count / median(runs[w].map((r) => r.seconds));
for (const w of workerCounts) {
  const r = runs[w][0];
  console.log(`| the page, ${w} worker${w > 1 ? "s" : ""} | ${r.count} | ${runs[w].map((x) => x.seconds.toFixed(1)).join(", ")} | ${rate(w).toFixed(1)} | ${(rate(w) / rate(workerCounts[0])).toFixed(2)}x | $${r.before.toFixed(2)} | $${r.after.toFixed(2)} | |`);
}
