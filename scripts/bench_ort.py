"""ONNX Runtime (CPU) encoding the texts `pricer lab speed --write-peer-inputs`
wrote: tokenized with the same tokenizer.json (checked to give pricer's ids),
run through an ONNX MiniLM-L6, then mean-pooled over the real tokens, as a
user would without Pricer. Prints one JSON object per model and batch size.

    python3 scripts/bench_ort.py PEER_INPUTS_DIR THREADS BATCHES MODEL.onnx...
"""

import json
import sys
import time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


def main() -> None:
    folder, threads, batches, models = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
    texts = [json.loads(line) for line in open(f"{folder}/texts.jsonl", encoding="utf-8")]
    want = [json.loads(line) for line in open(f"{folder}/ids.jsonl", encoding="utf-8")]
    max_len = max(len(ids) for ids in want)
    tok = Tokenizer.from_file(f"{folder}/tokenizer.json")
    tok.no_padding()
    tok.enable_truncation(max_length=max_len)

    def encode(batch: list) -> np.ndarray:
        encs = tok.encode_batch(batch)
        t = max(len(e.ids) for e in encs)
        ids = np.zeros((len(encs), t), dtype=np.int64)
        mask = np.zeros((len(encs), t), dtype=np.int64)
        for i, e in enumerate(encs):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        return ids, mask

    # The peer does the same work: pricer's token ids, text by text (pricer
    # cuts a long text keeping its last [SEP], as this truncation does).
    got = [e.ids for e in tok.encode_batch(texts)]
    same = sum(g == w for g, w in zip(got, want))
    if same != len(want):
        sys.exit(f"the tokenizer gives pricer's ids for {same} of {len(want)} texts")
    for path in models:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        for b in (int(x) for x in batches.split(",")):

            def one_pass(items: list) -> None:
                for at in range(0, len(items), b):
                    ids, mask = encode(items[at : at + b])
                    hidden = session.run(None, {"input_ids": ids, "attention_mask": mask,
                                                "token_type_ids": np.zeros_like(ids)})[0]
                    m = mask[:, :, None].astype(np.float32)
                    _ = (hidden * m).sum(1) / m.sum(1)

            one_pass(texts[: 4 * b])
            best = min(timed(one_pass, texts) for _ in range(2))
            print(json.dumps({"model": path, "batch": b, "threads": threads, "products": len(texts),
                              "products_s": len(texts) / best}), flush=True)


def timed(f, items) -> float:
    t = time.perf_counter()
    f(items)
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
