"""Language tests: a tiny untrained world Llama as a local HF folder (built once a session), a tiny world, and an
OpenAI-compatible judge endpoint served on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

WORLD = [
    "[data.world]",
    "seed = 0",
    'languages = ["en", "fr"]',
    "benign = { train = 24, val = 2, test = 6 }",
    "harmful = { train = 16, val = 2, test = 6 }",
    "borderline = { train = 8, val = 2, test = 4 }",
]


TINY = dict(vocab_size=320, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64,
            max_length=80)
TINY_TOML = "tiny = { " + ", ".join(f"{k} = {v}" for k, v in TINY.items()) + " }"  # a [model] line


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny untrained world Llama with the world's BPE tokenizer, as a local HF folder (built once)."""
    from poise.language.base import tokenizer_corpus
    from poise.language.models import TinyLMCfg, export_hf, tiny_llama
    from poise.language.tokenizer import train_tokenizer
    from poise.language.world import WorldCfg, build_world

    world = build_world(WorldCfg(languages=["en", "fr"]))
    tok = train_tokenizer(tokenizer_corpus(world), 320)
    cfg = TinyLMCfg(**TINY)
    folder = tmp_path_factory.mktemp("tiny-base") / "model"
    export_hf(tiny_llama(cfg, tok, seed=0), folder)
    return folder


@contextlib.contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 (a free port) answering with ``handler`` in a thread; yields its ``/v1`` URL."""
    srv = HTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    finally:
        srv.shutdown()
        srv.server_close()


def chat_handler(reply: Callable[[list[dict]], str], seen: list | None = None) -> type[BaseHTTPRequestHandler]:
    """An OpenAI-compatible ``/chat/completions`` handler whose answer is ``reply(messages)`` (requests kept in
    ``seen``)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):  # quiet
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if seen is not None:
                seen.append(body)
            payload = json.dumps({"choices": [{"message": {"content": reply(body["messages"])}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(payload)

    return Handler
