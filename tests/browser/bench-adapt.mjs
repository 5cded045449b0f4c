// How fast the page adapts the model to a shop's own products, against
// `pricer adapt` on the same file in the same run: products per second and
// the cross-validated MAE each reports. A benchmark, not a test: prints a
// table. Usage: node bench-adapt.mjs FILE.jsonl|FILE.csv [N]  (the first N
// records of FILE; default 500).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFileSync } from "node:child_process";
import { chromium } from "playwright-core";
import { serveDist } from "./serve-dist.mjs";

const root = path.resolve(import.meta.dirname, "../..");
const dist = process.env.PRICER_DIST || path.join(root, "dist");
const pricer = process.env.PRICER_BIN || path.join(root, "target/release/pricer");
const [source, n = "500"] = process.argv.slice(2);
if (!source) { console.error("usage: node bench-adapt.mjs FILE.jsonl|FILE.csv [N]"); process.exit(2); }
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
const page = await (await browser.newContext()).newPage();
await page.goto(url);
await page.waitForSelector("#status[data-state=ready]", { timeout: 120000 });
const t1 = Date.now();
await page.setInputFiles("#own-items", { name, mimeType: "text/plain", buffer: fs.readFileSync(file) });
await page.waitForSelector("#own-items-status[data-count]", { timeout: 1800000 });
const pageS = (Date.now() - t1) / 1000;
const count = Number(await page.getAttribute("#own-items-status", "data-count"));
const before = Number(await page.getAttribute("#own-items-status", "data-mae-before"));
const after = Number(await page.getAttribute("#own-items-status", "data-mae-after"));
await browser.close();
server.close();

console.log(`| where | products | seconds | products/s | CV MAE before | CV MAE after | method |`);
console.log(`|---|---:|---:|---:|---:|---:|---|`);
console.log(`| pricer adapt (${os.cpus().length} cores, whole command) | ${cli.items} | ${nativeS.toFixed(1)} | ${(cli.items / nativeS).toFixed(1)} | $${cli.before.mae.toFixed(2)} | $${cli.after.mae.toFixed(2)} | ${cli.method} |`);
console.log(`| the page (one worker) | ${count} | ${pageS.toFixed(1)} | ${(count / pageS).toFixed(1)} | $${before.toFixed(2)} | $${after.toFixed(2)} | |`);
console.log(`page / native time: ${(pageS / nativeS).toFixed(2)}x`);
