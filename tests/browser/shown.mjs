// Waiting for a price on screen in the benchmarks without asking for frames.

/** Resolves once the page shows a result other than `before` (its data-id)
 * and has taken the frame that paints it (`#took[data-shown-ms]`). It waits
 * on DOM changes: Playwright's default waiting polls at every animation
 * frame, which keeps the page drawing and delays each price to the next. */
export function shownAfter(page, before) {
  return page.evaluate((b) => new Promise((resolve) => {
    const done = () => document.querySelector("#result")?.dataset.id !== b && document.querySelector("#took")?.dataset.shownMs;
    if (done()) return resolve();
    const seen = new MutationObserver(() => { if (done()) { seen.disconnect(); resolve(); } });
    seen.observe(document.body, { subtree: true, childList: true, attributes: true });
  }), before);
}

/** Clicks the page's Estimate button the way a person's click reaches the
 * page: one DOM click event. Playwright's `page.click` first checks the
 * button (scrolled into view, stable across animation frames, not covered)
 * with scripts on the page's main thread, and part of that work overlapped
 * the worker's estimate: on 2 cores it took a share of them from the
 * threaded estimate. The peers' `session.run` is timed with no click at all.
 * Same run (2026-12-07): the threaded estimate over onnxruntime-web int8 on
 * 2 threads 1.01-1.02 clicked by Playwright, 0.90-0.93 clicked by this. */
export function clickEstimate(page) {
  return page.evaluate(() => document.querySelector("#estimate").click());
}
