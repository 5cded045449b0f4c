#!/usr/bin/env python3
"""Candidate stack members tried in scikit-learn before (or instead of) writing
them in Rust, on Pricer's own splits, scored on the validation splits only.
Each experiment prints validation MAE / RMSLE / hits per split. Outside CI:
needs scikit-learn (`python3 -m venv /tmp/sk && /tmp/sk/bin/pip install
scikit-learn`), a `pricer curate ... --test catalog=... --test course=...`
directory, and for the embedding experiments the `.npy` files of
`pricer embed --encoder DIR --data DIR/SPLIT.jsonl --out EMB/PREFIX-SPLIT.npy`.

  prototype_members.py DATA_DIR char        # char 2-5-gram TF-IDF ridge, alone and stacked
  prototype_members.py DATA_DIR numbers     # number-and-unit tokens added to the word TF-IDF
  prototype_members.py DATA_DIR mlp         # sparse MLP on the word TF-IDF (3 seeds), and averaged with ridge
  prototype_members.py DATA_DIR duplicates  # how often a near-identical training text exists
  prototype_members.py DATA_DIR knn --emb EMB --prefix base   # neighbours: k, temperature, Q8/Q4 index, PCA
"""
import argparse, json, math, re, warnings

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.model_selection import KFold

GROUPS = ["catalog", "course", "validation"]


def load(data, name):
    with open(f"{data}/{name}.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]


def details_text(d):
    """Every details entry as `key value` lines, like pricer's `details_text`."""
    if not d:
        return ""
    out = []

    def walk(v):
        if isinstance(v, dict):
            for k, x in v.items():
                out.append(k + " ")
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        elif isinstance(v, str):
            out.append(v + "\n")
        else:
            out.append(json.dumps(v) + "\n")

    walk(json.loads(d))
    return "".join(out)


def text(r):
    return r["text"] + "\n" + details_text(r["details"])


def score(pred_log, y):
    pred = np.maximum(np.expm1(pred_log), 0)
    err = np.abs(pred - y)
    rmsle = math.sqrt(np.mean((np.log1p(pred) - np.log1p(y)) ** 2))
    hits = 100 * np.mean((err < 40) | (err < 0.2 * y))
    return f"${err.mean():6.2f} / {rmsle:.3f} / {hits:4.1f}%"


class Data:
    def __init__(self, d):
        self.train = load(d, "train")
        self.val = {g: load(d, "validation" if g == "validation" else f"validation-{g}") for g in GROUPS}
        self.all = sum((self.val[g] for g in GROUPS), [])
        self.group = np.concatenate([[i] * len(self.val[g]) for i, g in enumerate(GROUPS)])
        self.y = np.array([r["price"] for r in self.all])
        self.ltr = np.log1p([r["price"] for r in self.train])

    def report(self, name, pred_log):
        cells = [f"{g} {score(pred_log[self.group == i], self.y[self.group == i])}" for i, g in enumerate(GROUPS)]
        print(f"{name:<34}" + " | ".join(cells), flush=True)

    def stacked(self, name, cols):
        """Least-squares blend of `cols` (log estimates), 5-fold on validation."""
        z = np.stack(cols, 1)
        pred = np.zeros(len(self.y))
        for tr, te in KFold(5, shuffle=True, random_state=0).split(z):
            pred[te] = LinearRegression().fit(z[tr], np.log1p(self.y[tr])).predict(z[te])
        self.report(name, pred)


def word_ridge(d, extra=None):
    f = (lambda r: text(r)) if extra is None else (lambda r: text(r) + "\n" + extra(r))
    v = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    x = v.fit_transform([f(r) for r in d.train])
    return Ridge(alpha=0.3).fit(x, d.ltr).predict(v.transform([f(r) for r in d.all])), x, v


def char(d):
    word, _, _ = word_ridge(d)
    d.report("word ridge", word)
    v = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=3, sublinear_tf=True, max_features=300000)
    x = v.fit_transform([text(r) for r in d.train])
    for alpha in [0.3, 1.0]:
        p = Ridge(alpha=alpha).fit(x, d.ltr).predict(v.transform([text(r) for r in d.all]))
        d.report(f"char ridge alpha {alpha}", p)
    d.stacked("word + char (stacked)", [word, p])


UNITS = (r"(pack|pcs|pieces|count|ct|piece|set|v|volt|volts|w|watt|watts|mah|gb|tb|mb|inch|in|ft|feet|oz|lb|lbs"
         r"|pound|pounds|qt|quart|gallon|gal|l|liter|ml|mm|cm|m|kg|g|hp|amp|a|btu|cu|rpm|mph|hz|khz|mhz|ghz|x)")
NUMBER = re.compile(r"(\d+(?:\.\d+)?)\s*-?\s*" + UNITS + r"\b", re.I)
PACK = re.compile(r"\b(pack|set|box|case|bundle) of (\d+)\b", re.I)


def number_tokens(r):
    """`NUM_<unit>_<log2 bucket>` for each number with a unit ("18v", "12 pack", "pack of 6")."""
    out = [f"NUM_{m.group(2).lower()}_{int(math.log2(float(m.group(1)) + 1) * 2)}" for m in NUMBER.finditer(r["text"])]
    out += [f"NUM_pack_{int(math.log2(float(m.group(2)) + 1) * 2)}" for m in PACK.finditer(r["text"])]
    return " ".join(out)


def numbers(d):
    d.report("word ridge", word_ridge(d)[0])
    d.report("word ridge + number tokens", word_ridge(d, number_tokens)[0])


def mlp(d):
    from sklearn.neural_network import MLPRegressor

    warnings.filterwarnings("ignore")
    ridge, x, v = word_ridge(d)
    xv = v.transform([text(r) for r in d.all])
    mu, sd = d.ltr.mean(), d.ltr.std()
    preds = []
    for seed in range(3):
        m = MLPRegressor(hidden_layer_sizes=(128,), alpha=1e-4, batch_size=64, learning_rate_init=3e-3,
                         max_iter=4, random_state=seed)
        m.fit(x, (d.ltr - mu) / sd)
        preds.append(m.predict(xv) * sd + mu)
        d.report(f"sparse MLP seed {seed}", preds[-1])
    d.report("sparse MLP, 3 seeds averaged", np.mean(preds, 0))
    d.report("word ridge", ridge)
    d.report("(MLP + ridge) / 2", 0.5 * np.mean(preds, 0) + 0.5 * ridge)


def duplicates(d):
    v = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    x = v.fit_transform([r["text"] for r in d.train])
    for g in ["catalog", "course"]:
        rows = d.val[g]
        s = (v.transform([r["text"] for r in rows]) @ x.T).toarray()
        top, best = s.argmax(1), s.max(1)
        y = np.array([r["price"] for r in rows])
        for th in [0.9, 0.8, 0.7]:
            m = best >= th
            err = np.abs(np.expm1(d.ltr[top[m]]) - y[m]) if m.any() else np.array([np.nan])
            print(f"{g}: {100 * m.mean():4.1f}% have a training text with cosine >= {th}; "
                  f"its price is off by ${err.mean():.2f} on them")


def knn(d, emb, prefix):
    def npy(split):
        return np.load(f"{emb}/{prefix}-{split}.npy")

    e = npy("train")
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    q = np.concatenate([npy("validation-catalog"), npy("validation-course"), npy("validation")])

    def estimate(index, query, k=20, temp=0.05):
        index = index / np.linalg.norm(index, axis=1, keepdims=True)
        query = query / np.linalg.norm(query, axis=1, keepdims=True)
        s = query @ index.T
        idx = np.argpartition(-s, k, axis=1)[:, :k]
        top = np.take_along_axis(s, idx, 1)
        w = np.exp((top - top.max(1, keepdims=True)) / temp)
        return (w / w.sum(1, keepdims=True) * d.ltr[idx]).sum(1)

    def quantized(x, bits):
        b = x.reshape(-1, 32)
        levels = 127 if bits == 8 else 8
        scale = np.maximum(np.abs(b).max(1, keepdims=True) / levels, 1e-12)
        return (np.clip(np.round(b / scale), -levels, levels - 1) * scale).reshape(x.shape)

    for k in [5, 10, 20, 40]:
        for temp in [0.02, 0.05, 1.0]:
            d.report(f"k {k} temperature {temp}", estimate(e, q, k, temp))
    d.report("k 20, index Q8_0", estimate(quantized(e, 8), q))
    d.report("k 20, index Q4_0", estimate(quantized(e, 4), q))
    mu = e.mean(0)
    vt = np.linalg.svd(e - mu, full_matrices=False)[2]
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    for dim in [192, 128]:
        p = vt[:dim].T
        d.report(f"k 20, PCA to {dim}", estimate((e - mu) @ p, (qn - mu) @ p))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("experiment", choices=["char", "numbers", "mlp", "duplicates", "knn"])
    ap.add_argument("--emb", default="runs")
    ap.add_argument("--prefix", default="base")
    a = ap.parse_args()
    d = Data(a.data)
    print(f"validation MAE / RMSLE / hits, per split ({', '.join(GROUPS)})")
    if a.experiment == "knn":
        knn(d, a.emb, a.prefix)
    else:
        globals()[a.experiment](d)


if __name__ == "__main__":
    main()
