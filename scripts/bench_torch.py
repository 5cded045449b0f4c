#!/usr/bin/env python3
"""The PyTorch side of the CPU (or GPU) fine-tuning benchmark: the same
MiniLM encoder, mean pooling and a 4-output head as Pricer's, trained with
AdamW on synthetic batches of a fixed shape. Prints one JSON line per shape,
like `pricer bench --json`.

Usage: bench_torch.py MODEL_DIR [--seq 128] [--batch 16] [--steps 5] [--device cpu]
"""
import argparse, json, time

import torch
from transformers import BertModel


class PriceModel(torch.nn.Module):
    def __init__(self, base):
        super().__init__()
        self.bert = BertModel.from_pretrained(base, add_pooling_layer=False)
        h = self.bert.config.hidden_size
        self.head = torch.nn.Sequential(torch.nn.Dropout(0.1), torch.nn.Linear(h, h), torch.nn.GELU(), torch.nn.Linear(h, 4))

    def forward(self, ids, mask):
        x = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).float()
        return self.head((x * m).sum(1) / m.sum(1).clamp(min=1e-9))


def loss_fn(out, y):
    loss = ((out[:, 0] - y) ** 2).mean()
    for i, q in enumerate([0.1, 0.5, 0.9]):
        d = y - out[:, i + 1]
        loss = loss + torch.maximum(q * d, (q - 1) * d).mean()
    return loss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--seq", default="128")
    ap.add_argument("--batch", default="16")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    dev = torch.device(a.device)
    model = PriceModel(a.model).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for seq in [int(s) for s in a.seq.split(",")]:
        for batch in [int(b) for b in a.batch.split(",")]:
            ids = (1000 + (torch.arange(batch * seq) * 7919) % 20000).reshape(batch, seq).to(dev)
            mask = torch.ones(batch, seq, dtype=torch.long, device=dev)
            y = torch.zeros(batch, device=dev)
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats()

            def step():
                model.train()
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(ids, mask), y)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sync()

            step()
            t = time.perf_counter()
            for _ in range(a.steps):
                step()
            train = a.steps * batch / (time.perf_counter() - t)
            model.eval()
            with torch.no_grad():
                t = time.perf_counter()
                for _ in range(a.steps):
                    model(ids, mask).cpu()
                fwd = a.steps * batch / (time.perf_counter() - t)
            mem = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None
            print(json.dumps({"seq": seq, "batch": batch, "train_ex_s": train, "forward_ex_s": fwd,
                              "device": a.device, "framework": f"torch {torch.__version__}", "gpu_mem_mib": mem}))


if __name__ == "__main__":
    main()
