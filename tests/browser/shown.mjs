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
