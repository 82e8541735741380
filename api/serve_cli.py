"""`whyrec serve --config configs/demo.yaml`: the HTTP service (REST, chat, web page) under uvicorn."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="serve the API, the chat endpoint and the web page",
                              description="Serve whyrec over HTTP. Settings: the config's serve: section, "
                                          "WHYREC_* environment variables, then these flags.")
    p.add_argument("--config", help="whyrec YAML config (catalog/encoder/index sections + serve:); default $WHYREC_CONFIG")
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument("--explainer", help="explanation backend: grounded | llava")
    p.add_argument("--admin-key", help="API key for /admin/reload (prefer WHYREC_ADMIN_KEY: flags show in ps)")
    p.add_argument("--log-level", help="uvicorn log level (info)")
    p.set_defaults(func=serve)


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.main import create_app
    from api.settings import load_settings

    from pydantic import ValidationError

    try:
        settings = load_settings(args.config, host=args.host, port=args.port, explainer=args.explainer,
                                 admin_key=args.admin_key, log_level=args.log_level)
    except ValidationError as err:  # a clear CLI error (exit 2), not a traceback
        raise ValueError(f"bad settings: {err}") from None
    if settings.config is None:
        raise ValueError("no config: pass --config configs/demo.yaml (or set WHYREC_CONFIG)")
    app = create_app(settings)
    # one process, one event loop; the engine (index, encoder) is loaded once in the lifespan
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(), access_log=False)
    return 0
