"""`whyrec tune ...` (LoRA-tune a LLaVA preset on conversation JSONL), `whyrec tune merge ...` and `whyrec tune export ...`."""
from __future__ import annotations

import argparse
import json
import os


def _list(text: str | None) -> list[str] | None:
    return [x.strip() for x in text.split(",") if x.strip()] if text else None


def register(subparsers) -> None:
    p = subparsers.add_parser("tune", help="tune a LLaVA preset on LLaVA conversation JSONL (stage 1 projector, stage 2 LoRA)",
                              description="Tune a LLaVA preset. `whyrec tune merge ADAPTER --out DIR` folds an adapter into its base. "
                                          "Multi-GPU: `accelerate launch --config_file configs/accelerate/ddp.yaml -m api.cli tune ...`.")
    p.add_argument("--config", help="YAML file with a tune: section (configs/tune-tiny-offline.yaml); flags override it")
    p.add_argument("--preset", help="model preset: tiny-offline, llava-1.5-7b, tiny-random, or a YAML file with a model: section")
    p.add_argument("--data", help="training records (LLaVA conversation JSONL)")
    p.add_argument("--eval-data", help="held-out records (default: a share of --data, split by item)")
    p.add_argument("--kinds", help="record kinds stage 2 trains on, comma-separated (default: all)")
    p.add_argument("--stage", choices=["projector", "lora", "both"], help="projector (stage 1), lora (stage 2) or both")
    p.add_argument("--init-projector", help="stage-1 output to start stage 2 from")
    p.add_argument("--out", dest="output_dir", help="output directory (adapter/, checkpoints/, train_summary.json)")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--stage1-steps", type=int, help="with --stage both: optimizer steps of stage 1")
    p.add_argument("--epochs", type=float)
    p.add_argument("--max-minutes", type=float, help="wall-clock budget per stage; stops early and still saves")
    p.add_argument("--max-examples", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--grad-accum", type=int, help="gradient accumulation steps")
    p.add_argument("--lr", type=float)
    p.add_argument("--max-length", type=int, help="tokens per example (image tokens included)")
    p.add_argument("--eval-every", type=int)
    p.add_argument("--max-eval-examples", type=int)
    p.add_argument("--save-every", type=int)
    p.add_argument("--resume", action="store_true", default=None, help="continue from the newest checkpoint in --out")
    p.add_argument("--lora-r", type=int)
    p.add_argument("--lora-alpha", type=int)
    p.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"])
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--cache-dir", help="model cache (converted GGUF, assembled base); default var/cache/models")
    p.add_argument("--mlflow-uri", help="MLflow tracking URI (default sqlite:///var/mlflow/mlflow.db); '' turns it off")
    p.add_argument("--seed", type=int)
    p.set_defaults(func=_tune)
    sub = p.add_subparsers(dest="tune_command", metavar="SUBCOMMAND")
    m = sub.add_parser("merge", help="merge a LoRA adapter into its base and save a standalone model")
    m.add_argument("adapter", help="adapter directory (or a tune output directory holding adapter/)")
    m.add_argument("--out", required=True, help="directory for the merged model")
    m.add_argument("--cache-dir", dest="merge_cache_dir", help="model cache for the base")
    m.set_defaults(func=_merge)
    e = sub.add_parser("export", help="copy an adapter (LoRA + projector) to a small shippable folder, fp16 safetensors")
    e.add_argument("adapter", help="adapter directory (or a tune output directory holding adapter/)")
    e.add_argument("--out", required=True, help="target folder, e.g. data/demo/llava")
    e.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    e.set_defaults(func=_export)
    register_describe(subparsers)


def _actions_of(subparsers, command: str):
    """The sub-action group of a command a lower package registered (`whyrec index ...`), or None."""
    parser = subparsers.choices.get(command)
    if parser is None:
        return None
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def register_describe(subparsers) -> None:
    """`whyrec index describe`: the offline item-text cache (llava_tuning.describe), beside `index build`."""
    actions = _actions_of(subparsers, "index")
    if actions is None:
        return
    d = actions.add_parser("describe", help="write what the model says about each item to <index dir>/item_text.jsonl",
                           description="Batched, resumable, checked by the grounding checker; "
                                       "several GPUs: `accelerate launch -m api.cli index describe ...`.")
    d.add_argument("--config", required=True, help="whyrec YAML config (catalog.dir, index.dir, serve.explainer_options.model)")
    d.add_argument("--model", help="adapter / merged dir / preset (default: serve.explainer_options.model)")
    d.add_argument("--batch-size", type=int, default=8)
    d.add_argument("--limit", type=int, help="only the first N catalog items (a trial run)")
    d.add_argument("--ids", help="only these item ids, comma-separated")
    d.add_argument("--max-new-tokens", type=int, default=64)
    d.add_argument("--attempts", type=int, default=3,
                   help="turns tried per item while its text is refused or thin (own type, colour + type, a detail question; then sampled)")
    d.add_argument("--min-facts", type=int, default=2, help="description facts an item text should state (more attempts until then)")
    d.add_argument("--threads", type=int, help="torch CPU threads")
    d.add_argument("--cache-dir", help="model cache for the base")
    d.add_argument("--out", help="write here instead of <index dir>/item_text.jsonl (serve it with explainer_options.item_text)")
    d.set_defaults(func=_describe)


def _describe(args: argparse.Namespace) -> int:
    from llava_tuning.describe import describe_catalog
    from llava_tuning.generate import GenerationSettings

    overrides = {"cache_dir": args.cache_dir} if args.cache_dir else {}
    res = describe_catalog(args.config, args.model, args.batch_size, args.limit, _list(args.ids), args.threads, args.out,
                           attempts=args.attempts, min_facts=args.min_facts, settings=GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size), **overrides)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(res, indent=2))
    return 0


def _tune(args: argparse.Namespace) -> int:
    from retrieval.config import section
    from llava_tuning.train import TuneConfig, tune

    cfg = section(args.config, "tune", TuneConfig, preset=args.preset, data=args.data, eval_data=args.eval_data,
                  kinds=_list(args.kinds), stage=args.stage, init_projector=args.init_projector, output_dir=args.output_dir,
                  max_steps=args.max_steps, stage1_steps=args.stage1_steps, epochs=args.epochs, max_minutes=args.max_minutes, max_examples=args.max_examples,
                  batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr, max_length=args.max_length,
                  eval_every=args.eval_every, max_eval_examples=args.max_eval_examples, save_every=args.save_every,
                  resume=args.resume, lora_r=args.lora_r, lora_alpha=args.lora_alpha, mixed_precision=args.mixed_precision,
                  threads=args.threads, cache_dir=args.cache_dir, mlflow_uri=args.mlflow_uri, seed=args.seed)
    results = tune(cfg)
    if int(os.environ.get("RANK", "0")) != 0:  # under accelerate/torchrun every process runs this; one report
        return 0
    print(json.dumps({name: {k: v for k, v in r.to_dict().items() if k != "history"} for name, r in results.items()}, indent=2))
    return 0


def _merge(args: argparse.Namespace) -> int:
    from llava_tuning.adapters import merge_adapter

    overrides = {"cache_dir": args.merge_cache_dir} if args.merge_cache_dir else {}
    out = merge_adapter(args.adapter, args.out, **overrides)
    print(json.dumps({"merged": str(out), "adapter": args.adapter}))
    return 0


def _export(args: argparse.Namespace) -> int:
    from llava_tuning.adapters import export_adapter

    out = export_adapter(args.adapter, args.out, dtype=args.dtype)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(json.dumps({"exported": str(out), "adapter": args.adapter, "dtype": args.dtype, "bytes": size}))
    return 0
