"""Tune tiny-offline on synthetic H&M instruction data on this CPU and print the numbers as JSON.

    PYTHONPATH=. python bench/llava_tune.py --config configs/tune-tiny-offline.yaml [--max-steps N ...]

Data first: `whyrec synth generate --catalog var/hm/catalog --out var/synth/hm -n 5000 --val-fraction 0.15`.
Reports per stage: examples available, steps, examples seen, wall time, steps/s, peak RSS, and the
eval loss (assistant tokens only, held-out items) before and after; plus the whole run's wall time.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/tune-tiny-offline.yaml")
    ap.add_argument("--max-steps", type=int)
    ap.add_argument("--stage1-steps", type=int)
    ap.add_argument("--max-minutes", type=float)
    ap.add_argument("--out")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from retrieval.config import section
    from llava_tuning.data import read_records
    from llava_tuning.train import TuneConfig, tune

    cfg = section(args.config, "tune", TuneConfig, max_steps=args.max_steps, stage1_steps=args.stage1_steps,
                  max_minutes=args.max_minutes, output_dir=args.out)
    start = time.perf_counter()
    results = tune(cfg)
    total = time.perf_counter() - start
    records = read_records(cfg.data)
    kinds = {}
    for r in records:
        kinds[r.get("kind")] = kinds.get(r.get("kind"), 0) + 1
    out = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_avg_at_end": os.getloadavg()},
        "data": {"file": cfg.data, "records": len(records), "by_kind": kinds, "eval_file": cfg.eval_data},
        "config": {k: getattr(cfg, k) for k in ("stage", "kinds", "stage1_steps", "max_steps", "max_minutes", "batch_size",
                                                 "grad_accum", "lr", "projector_lr", "max_length", "mixed_precision")},
        "total_wall_s": round(total, 1),
        "stages": {name: {k: v for k, v in r.to_dict().items() if k != "history"} for name, r in results.items()},
        "eval_curve": {name: [h for h in r.history if "eval_loss" in h] for name, r in results.items()},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
