#!/usr/bin/python3
"""Train the bundled demo scalar models on synthetic line data and export them.

Two models judge a reading's named scalar values (Modbus registers, OPC UA tags) rather
than an image:

  vib-iso    machine vibration severity on the lines of ISO 10816-3, group 2 machines
             (15..300 kW) on a rigid foundation, with a bearing temperature limit;
  press-fit  a press-fit station's final force and depth against its process window.

Each is a tiny MLP (features -> 16 -> ReLU -> 2 logits) trained on readings drawn from a
small physical model of the machine or station, labelled by the rule the model stands
in for (see RULES below), applied to the values as measured. The script writes
model.onnx and manifest.json (the format models/manifest.go reads) into
models/demo/<name>/1.0.0/.

Input preprocessing, which the runtime repeats exactly (the manifest's preprocess block,
kind "scalars"): each feature, in the manifest's order, becomes (x - mean) / std with
the mean and std written into the manifest (the training set's, rounded to 4 decimals
before training so the manifest holds exactly what the model saw).

Usage:
  /usr/bin/python3 models/demo/scalar/train_scalar.py --model vib-iso|press-fit|all
"""

import argparse
import datetime
import hashlib
import json
import os
import random
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

VERSION = "1.0.0"
THRESHOLD = 0.5
HIDDEN = 16
N_TRAIN, N_VAL = 20000, 5000
TRAIN_SEED, VAL_SEED = 1, 2

# ISO 10816-3, group 2, rigid foundation, puts the zone boundaries of RMS velocity at
# 1.4 (A/B), 2.8 (B/C) and 4.5 mm/s (C/D); the alarm is the C/D boundary, where
# vibration is taken to be severe enough to damage the machine.
VIB_ALARM_V = 4.5        # mm/s
VIB_ALARM_G = 6.0        # peak acceleration: bearing and gear impacts
VIB_ALARM_T = 85.0       # bearing temperature alarm

FORCE_MIN, FORCE_MAX = 8.0, 12.0   # kN
DEPTH_MIN, DEPTH_MAX = 4.8, 5.2    # mm


def vib_sample(rng, n):
    """Readings from a population of motors, fans and pumps in every state of health.

    One latent state per machine drives all three values, so they move together as on
    a real machine: unbalance and looseness raise the RMS velocity, and with it the
    peak acceleration and the bearing's temperature; a bearing fault raises the peak
    acceleration (impacts) and the temperature far more than the velocity; a
    lubrication fault heats the bearing before it shakes. A fifth of the readings are
    drawn uniformly over the whole range so that every corner is seen."""
    load = rng.uniform(0.3, 1.0, n)                  # share of rated load
    ambient = rng.uniform(15.0, 40.0, n)             # C
    v = np.exp(rng.normal(np.log(2.2), 0.75, n))     # median 2.2 mm/s, zone B
    bearing = np.where(rng.random(n) < 0.3, rng.exponential(1.5, n), rng.exponential(0.2, n))
    a = 0.2 + 0.3 * v + 2.2 * bearing + rng.normal(0.0, 0.25, n)
    lube = np.where(rng.random(n) < 0.1, rng.uniform(10.0, 50.0, n), 0.0)
    t = ambient + 25.0 * load + 1.2 * v + 9.0 * bearing + lube + rng.normal(0.0, 3.0, n)
    # Sensor noise: a few percent on the vibration channels, 0.5 C on the RTD.
    v = v * (1.0 + rng.normal(0.0, 0.03, n))
    a = a * (1.0 + rng.normal(0.0, 0.05, n))
    t = t + rng.normal(0.0, 0.5, n)
    x = np.stack([v, a, t], axis=1)
    spread = rng.random(n) < 0.2
    lo, hi = np.array([0.0, 0.0, 20.0]), np.array([12.0, 10.0, 110.0])
    x[spread] = rng.uniform(lo, hi, (int(spread.sum()), 3))
    return np.clip(x, lo, hi)


def vib_truth(x):
    """1 (alarm) when any value is past its limit."""
    return ((x[:, 0] >= VIB_ALARM_V) | (x[:, 1] >= VIB_ALARM_G) | (x[:, 2] >= VIB_ALARM_T)).astype(np.int64)


def press_sample(rng, n):
    """Final force and depth of pressed parts, from a station that mostly works.

    The force is the interference of the fit (part tolerances) times the depth reached,
    so force and depth are correlated. Faults: oversize parts or a missing chamfer
    (force high), undersize parts or a worn bore (force low), a tilted part or an
    obstruction stopping the stroke short (depth low, force up), over-travel from a
    missing stop (depth high). 8 % of the readings cover the whole plane
    uniformly. Load cell noise 0.05 kN, LVDT noise 5 um."""
    interference = rng.normal(1.0, 0.1, n)
    depth = rng.normal(5.0, 0.08, n)
    extra = np.zeros(n)
    mode = rng.choice(6, size=n, p=[0.60, 0.09, 0.09, 0.07, 0.07, 0.08])
    k = mode == 1
    interference[k] = rng.uniform(1.15, 1.6, int(k.sum()))
    k = mode == 2
    interference[k] = rng.uniform(0.4, 0.85, int(k.sum()))
    k = mode == 3
    depth[k] = rng.uniform(4.3, 4.85, int(k.sum()))
    extra[k] = rng.uniform(0.0, 4.0, int(k.sum()))
    k = mode == 4
    depth[k] = rng.uniform(5.15, 5.7, int(k.sum()))
    force = 10.0 * interference * depth / 5.0 + extra
    force = force + rng.normal(0.0, 0.05, n)
    depth = depth + rng.normal(0.0, 0.005, n)
    x = np.stack([force, depth], axis=1)
    k = mode == 5
    lo, hi = np.array([3.0, 4.3]), np.array([17.0, 5.7])
    x[k] = rng.uniform(lo, hi, (int(k.sum()), 2))
    return np.clip(x, [0.0, 4.0], [20.0, 6.0])


def press_truth(x):
    """1 (ng) when the force or the depth is outside the process window."""
    f, d = x[:, 0], x[:, 1]
    return ((f < FORCE_MIN) | (f > FORCE_MAX) | (d < DEPTH_MIN) | (d > DEPTH_MAX)).astype(np.int64)


MODELS = {
    "vib-iso": dict(
        features=["vib_rms_mm_s", "vib_peak_g", "bearing_temp_c"],
        labels=["ok", "alarm"],
        ok_labels=["ok"],
        sample=vib_sample,
        truth=vib_truth,
        # A reading is "clear" when moving each value by up to this much cannot
        # change its label.
        margin=[0.25, 0.3, 2.0],
        margin_text="0.25 mm/s, 0.3 g and 2 C",
        epochs=150,
        what=(f"Demo machine vibration alarm on the lines of ISO 10816-3 (group 2, rigid "
              f"foundation): alarm when RMS velocity >= {VIB_ALARM_V} mm/s (zone C/D), peak "
              f"acceleration >= {VIB_ALARM_G:g} g or bearing temperature >= {VIB_ALARM_T:g} C"),
        unit="readings",
    ),
    "press-fit": dict(
        features=["force_kn", "depth_mm"],
        labels=["ok", "ng"],
        ok_labels=["ok"],
        sample=press_sample,
        truth=press_truth,
        margin=[0.2, 0.02],
        margin_text="0.2 kN and 0.02 mm",
        epochs=150,
        what=(f"Demo press-fit check: ng when the final force is outside "
              f"{FORCE_MIN:g}..{FORCE_MAX:g} kN or the final depth outside "
              f"{DEPTH_MIN:g}..{DEPTH_MAX:g} mm"),
        unit="parts",
    ),
}


def near_edge(x, truth, margin):
    """True for readings whose label changes somewhere in the box of +-margin around
    them. The rules test each feature against thresholds farther apart than twice the
    margin, so the box's corners and edge midpoints (offsets -m, 0, +m per feature)
    find every change."""
    label = truth(x)
    near = np.zeros(len(x), dtype=bool)
    f = x.shape[1]
    for code in range(3 ** f):
        off = np.array([((code // 3 ** i) % 3 - 1) * margin[i] for i in range(f)])
        near |= truth(x + off) != label
    return near


class Normalised(nn.Module):
    """The net with the manifest's normalisation in front, for training only: the
    exported graph takes already normalised input, as the manifest says."""

    def __init__(self, net, mean, std):
        super().__init__()
        self.net = net
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


def evaluate(model, x, y, clear):
    model.eval()
    with torch.no_grad():
        p_ng = F.softmax(model(x), dim=1)[:, 1]
    pred = p_ng >= THRESHOLD
    truth = y == 1
    tp = int((pred & truth).sum())
    fp = int((pred & ~truth).sum())
    fn = int((~pred & truth).sum())
    right = pred == truth
    return {
        "n": len(y),
        "ng_share": float(truth.float().mean()),
        "acc": float(right.float().mean()),
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "recall": tp / (tp + fn) if tp + fn else float("nan"),
        "false_ng": fp,
        "missed_ng": fn,
        "n_clear": int(clear.sum()),
        "acc_clear": float(right[clear].float().mean()),
        "wrong_clear": int((~right[clear]).sum()),
    }


def report(name, r):
    print(f"{name}: n={r['n']} ng={r['ng_share']:.1%} accuracy={r['acc']:.4f} "
          f"NG precision={r['precision']:.4f} NG recall={r['recall']:.4f} "
          f"(false NG {r['false_ng']}, missed NG {r['missed_ng']}); "
          f"clear of the edges: n={r['n_clear']} accuracy={r['acc_clear']:.4f} "
          f"(wrong {r['wrong_clear']})", flush=True)


def train(name, spec, out_root, args):
    t0 = time.time()
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    feats = spec["features"]
    xtr = spec["sample"](np.random.default_rng(TRAIN_SEED), N_TRAIN)
    xva = spec["sample"](np.random.default_rng(VAL_SEED), N_VAL)
    ytr, yva = spec["truth"](xtr), spec["truth"](xva)
    clear_va = ~near_edge(xva, spec["truth"], spec["margin"])

    # Rounded to 4 decimals so the manifest holds exactly what training used.
    mean = [round(float(v), 4) for v in xtr.mean(axis=0)]
    std = [round(float(v), 4) for v in xtr.std(axis=0)]
    xtr_t = torch.tensor(xtr, dtype=torch.float32)
    xva_t = torch.tensor(xva, dtype=torch.float32)
    ytr_t, yva_t = torch.from_numpy(ytr), torch.from_numpy(yva)
    clear_t = torch.from_numpy(clear_va)

    net = nn.Sequential(nn.Linear(len(feats), HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, len(spec["labels"])))
    model = Normalised(net, torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32))
    params = sum(p.numel() for p in net.parameters())
    print(f"{name}: {len(ytr)} training readings ({ytr.mean():.1%} ng), {len(yva)} validation "
          f"({yva.mean():.1%} ng), mean {mean}, std {std}, {params} parameters", flush=True)

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    epochs = spec["epochs"]
    steps = epochs * ((len(ytr) + args.batch - 1) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.2)
    gen = torch.Generator().manual_seed(args.seed)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(ytr), generator=gen)
        total = 0.0
        for i in range(0, len(perm), args.batch):
            idx = perm[i:i + args.batch]
            loss = F.cross_entropy(model(xtr_t[idx]), ytr_t[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss) * len(idx)
        if (epoch + 1) % 25 == 0 or epoch + 1 == epochs:
            r = evaluate(model, xva_t, yva_t, clear_t)
            print(f"{name} epoch {epoch + 1}/{epochs}: loss {total / len(ytr):.4f} val accuracy "
                  f"{r['acc']:.4f}, clear {r['acc_clear']:.4f} ({time.time() - t0:.0f}s)", flush=True)

    val = evaluate(model, xva_t, yva_t, clear_t)
    report(f"{name} validation", val)

    out = os.path.join(out_root, name, VERSION)
    os.makedirs(out, exist_ok=True)
    onnx_path = os.path.join(out, "model.onnx")
    net.eval()
    torch.onnx.export(
        net, torch.zeros(1, len(feats)), onnx_path,
        input_names=["features"], output_names=["logits"],
        dynamic_axes={"features": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=13, do_constant_folding=True,
    )
    with open(onnx_path, "rb") as f:
        blob = f.read()

    created = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    manifest = {
        "name": name,
        "version": VERSION,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "size": len(blob),
        "inputs": [{"name": "features", "dtype": "float32", "shape": [-1, len(feats)]}],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": [-1, len(spec["labels"])]}],
        "preprocess": {"kind": "scalars", "features": feats, "mean": mean, "std": std},
        "postprocess": {"kind": "softmax", "labels": spec["labels"], "ok_labels": spec["ok_labels"],
                        "threshold": THRESHOLD},
        "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "description": (
            f"{spec['what']}. MLP {len(feats)}-{HIDDEN}-{len(spec['labels'])} ({params} parameters, "
            f"{epochs} epochs) trained on {len(ytr)} synthetic {spec['unit']} ({ytr.mean():.0%} "
            f"{spec['labels'][1]}) by models/demo/scalar/train_scalar.py; validation on {len(yva)} "
            f"{spec['unit']}: verdict accuracy {val['acc']:.2%} (NG precision {val['precision']:.2%}, "
            f"recall {val['recall']:.2%}), {val['acc_clear']:.2%} on the {val['n_clear']} farther than "
            f"{spec['margin_text']} from a limit."
        ),
    }
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    print(f"wrote {onnx_path} ({len(blob)} bytes, sha256 {manifest['sha256']}) and manifest.json "
          f"in {time.time() - t0:.0f}s", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, choices=sorted(MODELS) + ["all"])
    ap.add_argument("--out", default=os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")),
                    help="folder that holds <name>/1.0.0/ (default: models/demo)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    names = sorted(MODELS) if args.model == "all" else [args.model]
    for name in names:
        train(name, MODELS[name], args.out, args)


if __name__ == "__main__":
    main()
