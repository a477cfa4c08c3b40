#!/usr/bin/python3
"""Train the bundled demo EL defect model on `edged sim dump` data sets and export it.

Reads labels.csv and the PNG images of a training and a validation dump, trains a small
CNN that tells good solar cells from cracked ones, ones with dark spots and ones with
broken fingers, and writes model.onnx and manifest.json (the format models/manifest.go
reads) into --out.

Input preprocessing, which the runtime repeats exactly (the manifest's preprocess block):
  1. gray8 pixels to float32 in 0..1 (v / 255),
  2. area-average down to 64x64 as torch.nn.functional.adaptive_avg_pool2d does:
     output cell i covers input rows floor(i*in/out) .. ceil((i+1)*in/out)-1,
  3. (x - mean) / std with the mean and std written into the manifest.

Usage:
  /usr/bin/python3 models/demo/train.py --train var/dataset/train --val var/dataset/val \
      --out models/demo/el-defect/1.0.0 [--test var/dataset/test10 ...]
"""

import argparse
import csv
import datetime
import hashlib
import json
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

LABELS = ["ok", "crack", "dark_spot", "broken_finger"]
OK_LABELS = ["ok"]
SIZE = 64
THRESHOLD = 0.5
NAME, VERSION = "el-defect", "1.0.0"


def load(dirname):
    """Returns images as a float32 tensor [N,1,SIZE,SIZE] in 0..1 and labels [N]."""
    with open(os.path.join(dirname, "labels.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit(f"{dirname}: labels.csv lists no images")
    imgs, ys = [], []
    for row in rows:
        if row["label"] not in LABELS:
            sys.exit(f"{dirname}/{row['file']}: unknown label {row['label']!r}")
        with Image.open(os.path.join(dirname, row["file"])) as im:
            if im.mode != "L":
                sys.exit(f"{dirname}/{row['file']}: mode {im.mode}, want 8-bit gray (L)")
            imgs.append(np.asarray(im, dtype=np.uint8))
        ys.append(LABELS.index(row["label"]))
    x = torch.from_numpy(np.stack(imgs)).unsqueeze(1).float() / 255.0
    x = F.adaptive_avg_pool2d(x, (SIZE, SIZE))
    return x, torch.tensor(ys, dtype=torch.long)


class Net(nn.Module):
    """Four conv blocks, then global max and average pooling side by side: the max
    finds a small dark defect anywhere on the cell, the average gives the cell's
    overall look to compare it against."""

    def __init__(self, mean, std):
        super().__init__()
        self.mean, self.std = mean, std

        def block(cin, cout):
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

        self.features = nn.Sequential(
            block(1, 16), nn.MaxPool2d(2),   # 32x32
            block(16, 32), nn.MaxPool2d(2),  # 16x16
            block(32, 48), nn.MaxPool2d(2),  # 8x8
            block(48, 64),
        )
        self.head = nn.Linear(128, len(LABELS))

    def forward(self, x):
        x = self.features(x)
        x = torch.cat([F.adaptive_max_pool2d(x, 1), F.adaptive_avg_pool2d(x, 1)], dim=1)
        return self.head(torch.flatten(x, 1))


def evaluate(model, x, y, batch=512):
    model.eval()
    with torch.no_grad():
        probs = torch.cat([F.softmax(model(x[i:i + batch]), dim=1) for i in range(0, len(x), batch)])
    pred = probs.argmax(1)
    ok_idx = [LABELS.index(l) for l in OK_LABELS]
    ng_prob = 1 - probs[:, ok_idx].sum(1)
    ng_pred = ng_prob >= THRESHOLD
    ng_true = ~torch.isin(y, torch.tensor(ok_idx))
    tp = int((ng_pred & ng_true).sum())
    fp = int((ng_pred & ~ng_true).sum())
    fn = int((~ng_pred & ng_true).sum())
    per_class = {}
    for i, l in enumerate(LABELS):
        m = y == i
        if m.any():
            per_class[l] = float((pred[m] == i).float().mean())
    return {
        "n": len(y),
        "defect_share": float(ng_true.float().mean()),
        "acc4": float((pred == y).float().mean()),
        "verdict_acc": float((ng_pred == ng_true).float().mean()),
        "ng_precision": tp / (tp + fp) if tp + fp else float("nan"),
        "ng_recall": tp / (tp + fn) if tp + fn else float("nan"),
        "false_ng": fp,
        "missed_ng": fn,
        "per_class": per_class,
    }


def report(name, r):
    per = " ".join(f"{k}={v:.3f}" for k, v in r["per_class"].items())
    print(f"{name}: n={r['n']} defects={r['defect_share']:.1%} 4-class acc={r['acc4']:.4f} "
          f"verdict acc={r['verdict_acc']:.4f} NG precision={r['ng_precision']:.4f} "
          f"NG recall={r['ng_recall']:.4f} (false NG {r['false_ng']}, missed NG {r['missed_ng']}) "
          f"per-class recall: {per}", flush=True)


class Normalised(nn.Module):
    """The trained net with the manifest's normalisation in front, for training only:
    the exported graph takes already normalised input, as the manifest says."""

    def __init__(self, net, mean, std):
        super().__init__()
        self.net, self.mean, self.std = net, mean, std

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", required=True, help="dump directory to train on")
    ap.add_argument("--val", required=True, help="dump directory to validate on")
    ap.add_argument("--test", action="append", default=[], help="further held-out dumps to report on")
    ap.add_argument("--out", required=True, help="directory for model.onnx and manifest.json")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.use_deterministic_algorithms(True)

    t0 = time.time()
    xtr, ytr = load(args.train)
    xva, yva = load(args.val)
    print(f"loaded {len(ytr)} training and {len(yva)} validation images in {time.time() - t0:.1f}s", flush=True)

    # Rounded to 4 decimals so the manifest holds exactly what training used.
    mean = round(float(xtr.mean()), 4)
    std = round(float(xtr.std()), 4)
    mean_t = torch.tensor(mean, dtype=torch.float32)
    std_t = torch.tensor(std, dtype=torch.float32)

    net = Net(mean, std)
    model = Normalised(net, mean_t, std_t)
    params = sum(p.numel() for p in net.parameters())
    print(f"model: {params} parameters", flush=True)

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * ((len(ytr) + args.batch - 1) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.2)
    gen = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(ytr), generator=gen)
        total, seen = 0.0, 0
        for i in range(0, len(perm), args.batch):
            idx = perm[i:i + args.batch]
            xb, yb = xtr[idx], ytr[idx]
            # Cells look the same mirrored either way; busbars stay vertical.
            if torch.rand(1, generator=gen) < 0.5:
                xb = xb.flip(3)
            if torch.rand(1, generator=gen) < 0.5:
                xb = xb.flip(2)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss) * len(idx)
            seen += len(idx)
        r = evaluate(model, xva, yva)
        print(f"epoch {epoch + 1}/{args.epochs}: loss {total / seen:.4f} val 4-class acc {r['acc4']:.4f} "
              f"verdict acc {r['verdict_acc']:.4f} ({time.time() - t0:.0f}s)", flush=True)

    val = evaluate(model, xva, yva)
    report(f"validation {args.val}", val)
    tests = {}
    for d in args.test:
        xt, yt = load(d)
        tests[d] = evaluate(model, xt, yt)
        report(f"test {d}", tests[d])

    os.makedirs(args.out, exist_ok=True)
    onnx_path = os.path.join(args.out, "model.onnx")
    net.eval()
    torch.onnx.export(
        net, torch.zeros(1, 1, SIZE, SIZE), onnx_path,
        input_names=["image"], output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=13, do_constant_folding=True,
    )
    with open(onnx_path, "rb") as f:
        blob = f.read()

    created = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    manifest = {
        "name": NAME,
        "version": VERSION,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "size": len(blob),
        "inputs": [{"name": "image", "dtype": "float32", "shape": [-1, 1, SIZE, SIZE]}],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": [-1, len(LABELS)]}],
        "preprocess": {"width": SIZE, "height": SIZE, "layout": "NCHW", "color": "gray",
                       "mean": [mean], "std": [std]},
        "postprocess": {"kind": "softmax", "labels": LABELS, "ok_labels": OK_LABELS,
                        "threshold": THRESHOLD},
        "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "description": (
            f"Demo EL solar-cell defect classifier ({params} parameters, {args.epochs} epochs) "
            f"trained on {len(ytr)} simulator images ({os.path.basename(os.path.normpath(args.train))}, "
            f"{float((ytr != 0).float().mean()):.0%} defective) by models/demo/train.py; "
            f"validation on {len(yva)} images: OK/NG verdict accuracy {val['verdict_acc']:.2%}, "
            f"4-class accuracy {val['acc4']:.2%}."
        ),
    }
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    print(f"wrote {onnx_path} ({len(blob)} bytes, sha256 {manifest['sha256']}) and manifest.json "
          f"in {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
