"""`whyrec eval rec|retrieval|explain|ab DATA ...`, `whyrec eval search --config CONFIG --queries FILE`,
`whyrec eval chat` and `whyrec ablate CONFIG`.

Every evaluation takes its data path (a catalog folder or a raw folder in a format whyrec imports)
from the command line, writes result.json, tables.md and PNG plots under --out, logs one MLflow
run (unless --no-mlflow), and prints a JSON summary.
"""
from __future__ import annotations

import argparse

TRACKING_HELP = "MLflow store (default sqlite:///var/mlflow/mlflow.db; see it with `mlflow ui --backend-store-uri URI`)"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="catalog folder (products.parquet) or a raw H&M / plain JSONL folder")
    p.add_argument("--config", help="YAML file whose eval_* section sets this evaluation (flags override it)")
    p.add_argument("--out", help="folder for result.json, tables.md and plots (default var/eval/<name>)")
    p.add_argument("--bootstrap", type=int, help="bootstrap resamples for the intervals")
    p.add_argument("--seed", type=int)
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.add_argument("--tracking-uri", help=TRACKING_HELP)
    p.add_argument("--artifact-root", help="where MLflow artifacts go (default var/mlflow/artifacts)")


def register(subparsers) -> None:
    ev = subparsers.add_parser("eval", help="offline evaluations (recommendation, retrieval, explanations, A/B simulation)")
    sub = ev.add_subparsers(dest="evaluation", required=True, metavar="EVALUATION")

    p = sub.add_parser("rec", help="the recommend: section's models (the served one included) on leak-free, weekly and item splits")
    _common(p)
    p.add_argument("--recommend-config", help="YAML whose recommend: section is evaluated (the serve config: configs/hm.yaml)")
    p.add_argument("--modes", nargs="+", choices=["basket", "week", "item"], help="split modes (default all three)")
    p.add_argument("--weeks", type=int, help="week protocol: how many weekly cuts to pool")
    p.add_argument("--exclude-bought", choices=["both", "yes", "no"], help="which tables (default both)")
    p.add_argument("--models", nargs="+", help="only these model names (of the recommend: section)")
    p.add_argument("--item-vectors", help="override recommend.item_vectors: index | towers | none | FILE.npy")
    p.add_argument("--max-users", type=int, help="evaluate a seeded sample of shoppers per split (quick runs)")
    p.set_defaults(func=_eval, evaluation="rec")

    p = sub.add_parser("goes-with", help="'goes well with' by leave-one-room-out (or leave-one-basket-item-out) hit@k per method")
    _common(p)
    p.add_argument("--sets", help="co-occurrence sets CSV (rooms.csv: product_ids |-joined, room_category); default: purchase baskets")
    p.add_argument("--max-sets", type=int, help="a seeded sample of sets (quick runs)")
    p.set_defaults(func=_eval, evaluation="goes-with")

    p = sub.add_parser("retrieval", help="text->image, image->text, image->image R@K and MRR of an encoder")
    _common(p)
    p.add_argument("--heads", help="lit heads folder (its held_out_ids.txt names the held-out items)")
    p.add_argument("--gallery", choices=["heldout", "all"], help="held-out items (default) or the whole catalog")
    p.add_argument("--queries", choices=["heldout", "all"], help="held-out items as queries (default) or every gallery item")
    p.add_argument("--max-queries", type=int, help="a seeded sample of queries per task")
    p.add_argument("--cache-dir", help="tower feature cache (default var/cache/features)")
    p.set_defaults(func=_eval, evaluation="retrieval")

    p = sub.add_parser("explain", help="explanation metrics per backend (grounding, BLEU, ROUGE, diversity, features)")
    _common(p)
    p.add_argument("--explanations", nargs="+", help="JSONL files of explanations (item_id, text, backend, reference...)")
    p.add_argument("--references", help="instruction data in LLaVA form whose gpt answers are the references")
    p.add_argument("--instructions", help="instruction data (LLaVA form) whose requests the --generate backends explain")
    p.add_argument("--generate", nargs="+", help="explainer backends to run: grounded, llava, or label=name:key=value")
    p.add_argument("--max-records", type=int, help="explain a seeded sample of this many instruction records")
    p.add_argument("--checker", help="grounding checker module:function (default synth_data.grounding:check)")
    p.add_argument("--no-grounding", action="store_true", help="leave grounding precision / hallucination out")
    p.set_defaults(func=_eval, evaluation="explain")

    p = sub.add_parser("ab", help="simulated A/B test and team-draft interleaving of two configurations")
    _common(p)
    p.add_argument("--a", help="configuration A (a model name, default repeat)")
    p.add_argument("--b", help="configuration B (default tfidf)")
    p.add_argument("--b-perturb", type=float, help="replace this share of B's results at random")
    p.add_argument("--sessions", type=int, help="simulated sessions (default 20000)")
    p.add_argument("--mode", choices=["item", "basket"], help="which held-out purchases are 'bought next'")
    p.add_argument("--heads", help="lit heads folder (content model)")
    p.add_argument("--item-vectors", help=".npy item vectors (content model)")
    p.add_argument("--cache-dir", help="tower feature cache (default var/cache/features)")
    p.set_defaults(func=_eval, evaluation="ab")

    p = sub.add_parser("search", help="precision@k and nDCG@k of each search ranker (and TF-IDF) on a shopper query file")
    p.add_argument("--config", required=True, help="YAML config of the catalog, encoder and index to search")
    p.add_argument("--queries", required=True, help="query file with relevance rules (eval/queries/*.yaml)")
    p.add_argument("--split", choices=["dev", "heldout", "all"], default="all", help="which queries (default all: both, reported apart)")
    p.add_argument("--rankers", help="comma-separated: dense,facts,bm25,rrf,fitted (default all the searcher offers)")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--blank-text", action="store_true", help="search a copy with every text blanked, indexed from images only")
    p.add_argument("--out", help="also write the full JSON result to this file")
    p.add_argument("--json", action="store_true", help="print the full JSON result (per query too) instead of a table")
    p.set_defaults(func=_eval_search)

    p = sub.add_parser("chat", help="the conversation set (eval/conversations) against a whyrec server, via the openai client")
    p.add_argument("--config", default="configs/demo.yaml", help="whyrec YAML: its catalog judges the turns; its server is started unless --url")
    p.add_argument("--url", help="a running whyrec server (default: start `whyrec serve --config CONFIG`)")
    p.add_argument("--files", nargs="+", help="conversation YAML files (default eval/conversations/*.yaml)")
    p.add_argument("--splits", nargs="+", help="only these splits (dev, heldout)")
    p.add_argument("--out", help="folder for result.json and turns.jsonl")
    p.set_defaults(func=_chat)

    p = subparsers.add_parser("ablate", help="run a grid of evaluation configs (configs/ablations/NAME.yaml), log to MLflow")
    p.add_argument("config", help="ablation YAML (see configs/ablations/)")
    p.add_argument("--data", help="data path (overrides ablation.data)")
    p.add_argument("--tracking-uri", help=TRACKING_HELP)
    p.add_argument("--artifact-root", help="where MLflow artifacts go")
    p.add_argument("--out", help="folder for the Markdown table (overrides ablation.out)")
    p.set_defaults(func=_ablate)


def _overrides(args) -> dict:
    name = args.evaluation
    o = {"bootstrap": args.bootstrap, "seed": args.seed}
    if name == "rec":
        o.update(modes=args.modes, weeks=args.weeks, recommend_config=args.recommend_config, models=args.models,
                 item_vectors=args.item_vectors, max_users=args.max_users)
        if args.exclude_bought:
            o["exclude_bought"] = {"both": [False, True], "yes": [True], "no": [False]}[args.exclude_bought]
    elif name == "goes-with":
        o.update(sets=args.sets, max_sets=args.max_sets)
    elif name == "retrieval":
        o.update(heads=args.heads, gallery=args.gallery, queries=args.queries, max_queries=args.max_queries, cache_dir=args.cache_dir)
    elif name == "explain":
        o.update(explanations=args.explanations, references=args.references, checker=args.checker, instructions=args.instructions,
                 generate=args.generate, max_records=args.max_records)
    elif name == "ab":
        o.update(a=args.a, b=args.b, b_perturb=args.b_perturb, sessions=args.sessions, mode=args.mode, heads=args.heads,
                 item_vectors=args.item_vectors, cache_dir=args.cache_dir)
    return o


def _eval(args) -> int:
    import dataclasses
    import json
    import time
    from pathlib import Path

    from eval.runner import get_evaluation, write_outputs
    from eval.tracking import DEFAULT_ARTIFACT_ROOT, DEFAULT_TRACKING_URI, Tracker, flat_params
    from retrieval.config import load_yaml, section

    ev = get_evaluation(args.evaluation)
    raw = load_yaml(args.config) if args.config else {}
    cfg = section(raw, ev.section, ev.config_cls, **_overrides(args))
    if ev.name == "explain" and args.no_grounding:
        cfg.checker = None
    t0 = time.time()
    result = ev.run(args.data, cfg)
    wall = time.time() - t0
    out = Path(args.out or f"var/eval/{ev.name}")
    files = write_outputs(ev, result, out)
    summary = {"evaluation": ev.name, "data": args.data, "wall_s": round(wall, 1), "out": str(out), **ev.summary(result)}
    if not args.no_mlflow:
        tracker = Tracker(f"eval-{ev.name}", args.tracking_uri or DEFAULT_TRACKING_URI, args.artifact_root or DEFAULT_ARTIFACT_ROOT)
        params = {**flat_params(dataclasses.asdict(cfg)), "data": args.data}
        summary["mlflow"] = {"tracking_uri": tracker.tracking_uri, "experiment": tracker.experiment,
                             "run_id": tracker.log_run(f"{ev.name} {Path(args.data).name}", params, {**ev.metrics(result), "run_seconds": wall}, files)}
    print(json.dumps(summary, indent=1, default=str))
    return 0


def _eval_search(args) -> int:
    import json
    from pathlib import Path

    from eval.search_eval import SearchEvalConfig, run_search_eval, summary_table

    if not 1 <= args.k <= 100:
        raise ValueError("-k must be between 1 and 100")
    rankers = [r.strip() for r in args.rankers.split(",") if r.strip()] if args.rankers else None
    result = run_search_eval(SearchEvalConfig(args.config, args.queries, args.split, rankers, args.k, args.blank_text))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    if args.json:
        print(json.dumps(result, indent=1, ensure_ascii=False))
    else:
        print(summary_table(result))
    return 0


def _chat(args) -> int:
    import json

    from eval.chat_eval import run_chat_eval

    print(json.dumps(run_chat_eval(args.config, args.url, args.files, args.splits, out=args.out), indent=1))
    return 0


def _ablate(args) -> int:
    import json

    from eval.ablate import run_ablation

    print(json.dumps(run_ablation(args.config, args.data, args.tracking_uri, args.out, args.artifact_root), indent=1, default=str))
    return 0
