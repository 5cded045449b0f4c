#!/usr/bin/env python3
"""Fit scikit-learn's TF-IDF(1-2) + Ridge(alpha, log1p target) on a curated
split and print its test metrics beside `pricer eval --json` of a model, so
Pricer's `tfidf-ridge` can be checked against the reference implementation.

Outside CI: needs scikit-learn (e.g. `python3 -m venv /tmp/sk && /tmp/sk/bin/pip
install scikit-learn`). Usage:
  compare_sklearn.py CURATED_DIR MODEL.gguf [--test test-catalog.jsonl] [--pricer target/release/pricer] [--alpha 0.3]
"""
import argparse, json, math, subprocess, sys

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import Ridge


def load(path):
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r["text"] for r in rows], np.array([r["price"] for r in rows], dtype=float)


def metrics(est, truth):
    err = np.abs(est - truth)
    green = (err < 40) | (err < 0.2 * truth)
    return {
        "n": len(truth),
        "mae": float(err.mean()),
        "rmsle": float(math.sqrt(np.mean((np.log1p(np.maximum(est, 0)) - np.log1p(truth)) ** 2))),
        "hits_pct": float(100 * green.mean()),
        "median_abs_error": float(np.median(err)),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("model")
    ap.add_argument("--pricer", default="target/release/pricer")
    ap.add_argument("--alpha", type=float, default=0.3)
    ap.add_argument("--test", default="test.jsonl", help="the test split's file in CURATED_DIR")
    a = ap.parse_args()
    xtr, ytr = load(f"{a.data}/train.jsonl")
    xte, yte = load(f"{a.data}/{a.test}")
    vec = TfidfVectorizer(ngram_range=(1, 2))
    ridge = Ridge(alpha=a.alpha).fit(vec.fit_transform(xtr), np.log1p(ytr))
    sk = metrics(np.maximum(np.expm1(ridge.predict(vec.transform(xte))), 0), yte)
    out = subprocess.run([a.pricer, "eval", "--model", a.model, "--data", f"{a.data}/{a.test}", "--json"],
                         check=True, capture_output=True, text=True).stdout
    ours = json.loads(out)
    print(f"{'metric':<18}{'scikit-learn':>14}{'pricer':>12}{'ratio':>8}")
    for k in ["n", "mae", "rmsle", "hits_pct", "median_abs_error"]:
        ratio = ours[k] / sk[k] if sk[k] else float("nan")
        print(f"{k:<18}{sk[k]:>14.3f}{ours[k]:>12.3f}{ratio:>8.3f}")
    worst = max(abs(ours[k] / sk[k] - 1) for k in ["mae", "rmsle"])
    print(f"largest MAE/RMSLE difference: {100 * worst:.1f}%")
    sys.exit(0 if worst <= 0.10 else 1)


if __name__ == "__main__":
    main()
