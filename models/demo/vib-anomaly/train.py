#!/usr/bin/python3
"""Train the vib-anomaly demo model on healthy vibration windows and export it.

vib-anomaly scores how far a window of two-channel vibration is from what a healthy
machine looks like. It learns from healthy windows only (one-class), so it needs no
examples of the faults it is to detect; faulty runs serve only to choose and report
the alert threshold.

Input: the features package window computes per window (see vibrun.WindowConfig in
vibrun/vibrun.go), in the order of window.FeatureNames, as the CSVs from gen/main.go
hold them. The runtime standardises them with the manifest's mean and std (kind
"scalars"). Everything after that is inside the ONNX graph:

  x = z * std + mean           back to the raw feature (the manifest's mean and std)
  l = log(max(x, 1e-6))        energies, peaks, crest factors and kurtosis are positive
                               and spread over decades; a machine's load scales them
                               all, which the log turns into one additive shift
  u = (l - lmean) / lstd       standardised in log space (training set)
  r = decoder(encoder(u))      the autoencoder: 22 -> 32 -> 3 -> 32 -> 22
  score = mean((r - u)^2) / e99

e99 is the 99th percentile of the reconstruction error on held-out healthy windows, so
a score of 1 is at the edge of healthy. The output, "score", is float32 [batch, 1].

The threshold (postprocess kind "score") is chosen on the calibration set (held-out
healthy runs and faulty runs, seeds of their own): the one that maximises the F1 of
fault detection per window among those that flag at most 1 % of healthy windows.

Usage:
  go run ./models/demo/vib-anomaly/gen -out var/vib-anomaly
  /usr/bin/python3 models/demo/vib-anomaly/train.py --data var/vib-anomaly
"""

import argparse
import csv
import datetime
import hashlib
import json
import os
import random
import time

import numpy as np
import torch
import torch.nn as nn

NAME, VERSION = "vib-anomaly", "1.0.0"
EPS = 1e-6
# Windows whose fault severity is below this are neither healthy nor counted as
# faulty: the fault is there, but too small to tell from a healthy machine's spread.
DETECTABLE = 0.2
MAX_HEALTHY_FLAGS = 0.01


def load(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    head, body = rows[0], rows[1:]
    meta = {k: [r[i] for r in body] for i, k in enumerate(head[:6])}
    feats = head[6:]
    x = np.array([[float(v) for v in r[6:]] for r in body], dtype=np.float64)
    return feats, meta, x


class Scorer(nn.Module):
    """The exported graph: standardised features in, anomaly score out."""

    def __init__(self, mean, std, lmean, lstd, n, hidden, code):
        super().__init__()
        for k, v in dict(mean=mean, std=std, lmean=lmean, lstd=lstd).items():
            self.register_buffer(k, torch.tensor(v, dtype=torch.float32))
        self.register_buffer("e99", torch.tensor(1.0))
        self.enc = nn.Sequential(nn.Linear(n, hidden), nn.Tanh(), nn.Linear(hidden, code))
        self.dec = nn.Sequential(nn.Linear(code, hidden), nn.Tanh(), nn.Linear(hidden, n))

    def logstd(self, z):
        x = z * self.std + self.mean
        return (torch.log(torch.clamp(x, min=EPS)) - self.lmean) / self.lstd

    def error(self, z):
        u = self.logstd(z)
        r = self.dec(self.enc(u))
        return ((r - u) ** 2).mean(dim=1, keepdim=True)

    def forward(self, z):
        return self.error(z) / self.e99


def f32(v, digits=6):
    """v rounded to a few significant digits, so that the manifest and the graph (which
    holds it as float32) hold the same number."""
    return float(f"{v:.{digits}g}")


def detection(score, sev, t):
    """Precision, recall and F1 of 'score >= t' for windows with a detectable fault;
    windows with a fault below DETECTABLE are left out."""
    pos = sev >= DETECTABLE
    neg = sev == 0
    flag = score >= t
    tp = int((flag & pos).sum())
    fp = int((flag & neg).sum())
    fn = int((~flag & pos).sum())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="var/vib-anomaly", help="folder with train.csv and calib.csv from gen")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), VERSION))
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--code", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    t0 = time.time()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)

    feats, _, xtr = load(os.path.join(args.data, "train.csv"))
    feats_c, meta, xca = load(os.path.join(args.data, "calib.csv"))
    assert feats == feats_c, "train.csv and calib.csv have different features"
    kind = np.array(meta["kind"])
    sev = np.array([float(s) for s in meta["severity"]])
    healthy = kind == "none"

    mean = [f32(v) for v in xtr.mean(axis=0)]
    std = [f32(v) for v in xtr.std(axis=0)]
    ltr = np.log(np.maximum(xtr, EPS))
    lmean = [f32(v) for v in ltr.mean(axis=0)]
    lstd = [f32(max(v, 1e-3)) for v in ltr.std(axis=0)]

    n = len(feats)
    model = Scorer(mean, std, lmean, lstd, n, args.hidden, args.code)
    params = sum(p.numel() for p in list(model.enc.parameters()) + list(model.dec.parameters()))
    ztr = torch.tensor((xtr - np.array(mean)) / np.array(std), dtype=torch.float32)
    zca = torch.tensor((xca - np.array(mean)) / np.array(std), dtype=torch.float32)
    print(f"{len(xtr)} healthy training windows, {len(xca)} calibration windows "
          f"({healthy.sum()} from healthy runs), {n} features, {params} parameters", flush=True)

    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    batch = 256
    steps = args.epochs * ((len(ztr) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.2)
    gen = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(ztr), generator=gen)
        total = 0.0
        for i in range(0, len(perm), batch):
            idx = perm[i:i + batch]
            loss = model.error(ztr[idx]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss) * len(idx)
        if (epoch + 1) % 10 == 0 or epoch + 1 == args.epochs:
            print(f"epoch {epoch + 1}/{args.epochs}: loss {total / len(ztr):.5f} ({time.time() - t0:.0f}s)", flush=True)

    model.eval()
    with torch.no_grad():
        err = model.error(zca).squeeze(1).numpy()
        err_tr = model.error(ztr).squeeze(1).numpy()
    e99 = f32(np.quantile(err[healthy], 0.99))
    model.e99.fill_(e99)
    score = err / e99
    print(f"reconstruction error: training p50 {np.median(err_tr):.5f} p99 {np.quantile(err_tr, 0.99):.5f}; "
          f"held-out healthy p50 {np.median(err[healthy]):.5f} p99 {e99:.5f}", flush=True)

    # The threshold: best F1 among those that flag at most 1 % of healthy windows.
    hs = np.sort(score[healthy])
    floor = hs[int(np.ceil((1 - MAX_HEALTHY_FLAGS) * len(hs))) - 1]
    best = None
    for t in np.unique(np.concatenate([np.quantile(score, np.linspace(0, 1, 2001)), [floor]])):
        if t <= floor:
            continue
        p, r, f = detection(score, sev, t)
        if best is None or f > best[3] + 1e-12:
            best = (t, p, r, f)
    thr = f32(best[0], 4)
    p, r, f = detection(score, sev, thr)
    fa = float((score[healthy] >= thr).mean())
    print(f"threshold {thr:.4g}: calibration precision {p:.4f} recall {r:.4f} F1 {f:.4f}; "
          f"healthy windows flagged {fa:.2%}", flush=True)
    per_kind = []
    for k in sorted(set(kind) - {"none"}):
        m = (kind == k) | healthy
        pk, rk, fk = detection(score[m], sev[m], thr)
        det = sev[kind == k] >= DETECTABLE
        print(f"  {k}: recall {rk:.4f} (F1 with the healthy runs {fk:.4f}); score at severity "
              f">= {DETECTABLE}: p5 {np.quantile(score[kind == k][det], 0.05):.3g} median "
              f"{np.median(score[kind == k][det]):.3g}", flush=True)
        per_kind.append(f"{k} {rk:.1%}")
        bins = [0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.01]
        sk, ck = sev[kind == k], score[kind == k]
        cells = []
        for lo, hi in zip(bins[:-1], bins[1:]):
            m = (sk > lo if lo == 0 else sk >= lo) & (sk < hi)
            if m.any():
                cells.append(f"{lo:g}..{min(hi, 1):g}: {(ck[m] >= thr).mean():.0%}")
        print(f"    flagged by severity: {', '.join(cells)}", flush=True)

    os.makedirs(args.out, exist_ok=True)
    onnx_path = os.path.join(args.out, "model.onnx")
    torch.onnx.export(
        model, torch.zeros(1, n), onnx_path,
        input_names=["features"], output_names=["score"],
        dynamic_axes={"features": {0: "batch"}, "score": {0: "batch"}},
        opset_version=13, do_constant_folding=True,
    )
    with open(onnx_path, "rb") as fh:
        blob = fh.read()
    created = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    manifest = {
        "name": NAME,
        "version": VERSION,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "size": len(blob),
        "inputs": [{"name": "features", "dtype": "float32", "shape": [-1, n]}],
        "outputs": [{"name": "score", "dtype": "float32", "shape": [-1, 1]}],
        "preprocess": {"kind": "scalars", "features": feats, "mean": mean, "std": std},
        "postprocess": {"kind": "score", "labels": ["ok", "anomaly"], "ok_labels": ["ok"], "threshold": thr},
        "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "description": (
            f"Demo vibration anomaly score for a motor on a 6205 bearing (acc_x, acc_y at 2048 Hz; "
            f"windows of 2048 samples, hop 1024; features per channel rms, peak, crest, kurtosis and "
            f"7 band RMS values). Autoencoder {n}-{args.hidden}-{args.code}-{args.hidden}-{n} on log "
            f"features ({params} parameters, {args.epochs} epochs) trained on {len(xtr)} healthy "
            f"windows of the vibration simulator by models/demo/vib-anomaly/train.py; score = "
            f"reconstruction error / its 99th percentile on held-out healthy windows. Threshold "
            f"{thr:.3g} chosen on {len(xca)} calibration windows: fault detection per window "
            f"(severity >= {DETECTABLE}) precision {p:.2%}, recall {r:.2%}, F1 {f:.2%} "
            f"({', '.join(per_kind)}); {fa:.2%} of healthy windows flagged."
        ),
    }
    with open(os.path.join(args.out, "manifest.json"), "w") as fh:
        json.dump(manifest, fh, indent=2)
        fh.write("\n")
    print(f"wrote {onnx_path} ({len(blob)} bytes, sha256 {manifest['sha256']}) and manifest.json "
          f"in {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
