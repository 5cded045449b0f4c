#!/usr/bin/env python3
"""Writes N raw Amazon Reviews 2023 metadata records (JSON Lines, gzip) from
the unpriced-22k texts (`{"id", "title", "full"}` lines), for timing `pricer curate` at scale (issue 14's
benchmark, scripts/bench-curate.sh). Records cycle through the 22k items; each
pass changes the title and adds a line so that de-duplication keeps them; half
get a seeded price, the rest none, like the real files.

  make_raw_records.py UNPRICED_22K.jsonl.gz OUT.jsonl.gz [N] [SEED]
"""
import ast, gzip, json, random, sys


def parse(full):
    lines = full.split("\n")
    title, rest = lines[0], lines[1:]
    lists, details = [], {}
    for line in rest:
        line = line.strip()
        if line.startswith("["):
            try:
                lists.append([str(x) for x in ast.literal_eval(line)])
            except (ValueError, SyntaxError):
                lists.append([line])
        elif line.startswith("{"):
            try:
                details = json.loads(line)
            except ValueError:
                pass
    description = lists[0] if lists else []
    features = lists[1] if len(lists) > 1 else []
    return title, description, features, details


def main():
    src, out = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 100_000
    rng = random.Random(int(sys.argv[4]) if len(sys.argv) > 4 else 42)
    with gzip.open(src, "rt") as f:
        items = [parse(json.loads(line)["full"]) for line in f if line.strip()]
    with gzip.open(out, "wt", compresslevel=1) as f:
        for i in range(n):
            title, description, features, details = items[i % len(items)]
            lap = i // len(items)
            if lap:
                title = f"{title} (lot {lap})"
                description = description + [f"Lot {lap} of this listing."]
            price = round(rng.lognormvariate(3.7, 1.1), 2) if rng.random() < 0.5 else None
            rec = {"main_category": "Tools & Home Improvement", "title": title, "average_rating": 4.5,
                   "rating_number": 10, "features": features, "description": description, "price": price,
                   "images": [], "videos": [], "store": "", "categories": [], "details": details,
                   "parent_asin": f"B{i:09d}", "bought_together": None}
            f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
