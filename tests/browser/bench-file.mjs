// "Price a whole file" with one worker and with several, in the same run:
// the default model on N products (about 60 tokens each), each worker count
// timed ROUNDS times, alternated, from the file's choice to the table.
// A benchmark, not a test: prints a table.
// Usage: node bench-file.mjs [N] [ROUNDS] [WORKERS...]   (defaults: 2000 2 1 2)
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";
import { serveDist } from "./serve-dist.mjs";

const root = path.resolve(import.meta.dirname, "../..");
const dist = process.env.PRICER_DIST || path.join(root, "dist");
const [n = 2000, rounds = 2, ...counts] = process.argv.slice(2).map(Number);
const workerCounts = counts.length ? counts : [1, 2];
const { server, url } = await serveDist(dist);
const kinds = ["Electric kettle 1.7 litre, stainless steel", "Gaming mouse, wireless, 16000 DPI", "Yoga mat, extra thick",
  "Cast iron skillet, 12 inch", "Bluetooth speaker, waterproof", "Acoustic guitar, full size"];
const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "pricer-bench-file-")), "products.jsonl");
fs.writeFileSync(file, Array.from({ length: n }, (_, i) => JSON.stringify({ title: `${kinds[i % kinds.length]} ${i}`,
  description: "A product for the home, with a two-year warranty, sturdy build and a modern design in several colours." })).join("\n") + "\n");
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox", "--disable-gpu"] });
let memory = 0;
const times = Object.fromEntries(workerCounts.map((w) => [w, []]));
for (let round = 0; round < rounds; round++) {
  for (const w of workerCounts) {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${url}?workers=${w}`);
    await page.waitForSelector("#status[data-state=ready]", { timeout: 120000 });
    memory = Number(await page.evaluate(() => document.documentElement.dataset.workerMemory));
    const start = Date.now();
    await page.setInputFiles("#batch-file", file);
    await page.waitForSelector("#batch-summary", { timeout: 1800000 });
    times[w].push(Date.now() - start);
    await context.close();
  }
}
const version = browser.version();
await browser.close();
server.close();
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const base = n / (median(times[workerCounts[0]]) / 1000);
console.log(`Chromium ${version}, ${n} products, ${rounds} rounds alternated, ${os.cpus().length} cores`);
console.log(`one worker's wasm memory with the model loaded: ${(memory / 1e6).toFixed(0)} MB`);
console.log("| workers | times (s) | products/s (median) | vs the first row |");
console.log("| ---: | --- | ---: | ---: |");
for (const w of workerCounts) {
  const rate = n / (median(times[w]) / 1000);
  console.log(`| ${w} | ${times[w].map((t) => (t / 1000).toFixed(1)).join(", ")} | ${rate.toFixed(1)} | ${(rate / base).toFixed(2)}x |`);
}
