"""``batchrun serve``: the arguments, the config and the keys, then the server in the
foreground. ``batchrun.cli`` only hooks it in (``add_command``)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
from pathlib import Path

from batchrun.serve.app import serve
from batchrun.serve.auth import Keys
from batchrun.serve.config import load_config


def add_command(serve_parser: argparse.ArgumentParser) -> None:
    serve_parser.add_argument("--config", type=Path, help="serve.toml (default: every default)")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=8080)
    serve_parser.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="accept requests without a key (127.0.0.1 only): one owner for everyone",
    )
    serve_parser.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    keys = Keys.from_env(config.auth.keys_env, no_auth=args.insecure_no_auth, host=args.host)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    # As for `batchrun run`: the jobs make millions of short-lived acyclic objects, and a full
    # collection is a pause on the loop that paces every batch's requests.
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    asyncio.run(serve(config, keys, args.host, args.port))
    return 0
