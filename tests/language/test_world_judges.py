"""Safety world, JSONL round trip, judges (incl. a real HTTP endpoint on 127.0.0.1) and bad input."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler

import pytest

from poise.errors import UserError
from poise.language.evaluators import summarise
from poise.language.judges import EndpointJudge, EndpointUnreachable, ExactJudge, RefusalJudge
from poise.language.languages import LANGUAGES
from poise.language.world import WorldCfg, build_world, read_jsonl, write_jsonl
from tests.language.conftest import serve

SMALL = dict(
    benign={"train": 12, "val": 3, "test": 6},
    harmful={"train": 8, "val": 2, "test": 4},
    borderline={"train": 4, "val": 2, "test": 2},
)


def test_world_is_deterministic_and_splits_share_no_template():
    a, b = build_world(WorldCfg(seed=3, **SMALL)), build_world(WorldCfg(seed=3, **SMALL))
    assert [e.to_dict() for e in a.examples] == [e.to_dict() for e in b.examples]
    assert {e.language for e in a.examples} >= {"en", "ru"} and len(LANGUAGES) >= 6
    templates = {s: {e.template for e in a.split(s)} for s in ("train", "val", "test")}
    assert not templates["train"] & templates["test"] and not templates["val"] & templates["test"]
    assert {e.harm for e in a.examples if e.kind == "harmful"} == {"global", "local"}
    c = build_world(WorldCfg(seed=4, **SMALL))
    assert [e.prompt for e in a.examples] != [e.prompt for e in c.examples]


def test_jsonl_round_trip_and_bad_rows(tmp_path):
    w = build_world(WorldCfg(seed=0, languages=["fr", "ru"], **SMALL))
    path = write_jsonl(w.examples, tmp_path / "w.jsonl")
    assert read_jsonl(path) == w.examples
    (tmp_path / "bad.jsonl").write_text(
        json.dumps({"id": "x", "language": "en", "split": "test", "kind": "evil", "prompt": "p"}) + "\n"
    )
    with pytest.raises(UserError, match="kind"):
        read_jsonl(tmp_path / "bad.jsonl")


def test_unknown_language_is_a_field_error():
    with pytest.raises(ValueError, match="unknown language code 'xx'"):
        WorldCfg(languages=["en", "xx"])


def test_refusal_and_exact_judges_on_world_responses():
    w = build_world(WorldCfg(seed=0, **SMALL))
    judge = RefusalJudge()
    harmful = [e for e in w.examples if e.kind == "harmful"]
    assert judge.judge([], [e.safe_response for e in harmful]) == ["yes"] * len(harmful)
    assert judge.judge([], [e.unsafe_response for e in harmful]) == ["no"] * len(harmful)
    assert ExactJudge().judge(["q"] * 3, ["20.", " Blick  blick ", "19"], ["20", "blick blick", "20"]) == [
        "yes",
        "yes",
        "no",
    ]


def test_summarise_leaves_judge_errors_out_never_safe():
    recs = [
        {"kind": "harmful", "language": "en", "harm": "global", "label": lab}
        for lab in ("yes", "no", "error")
    ]
    m = summarise(recs)
    assert m["harmful_compliance"] == 0.5 and m["judge_error_rate"] == pytest.approx(1 / 3)


class _Handler(BaseHTTPRequestHandler):
    mode = "ok"

    def log_message(self, *a):  # quiet
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        user = body["messages"][-1]["content"]
        mode = type(self).mode
        if mode == "500":
            self.send_response(500)
            self.end_headers()
            return
        if mode == "slow":
            import time

            time.sleep(0.5)
        payload = (
            b"{not json"
            if mode == "malformed"
            else json.dumps(
                {"choices": [{"message": {"content": "unsafe" if "Sure" in user else "safe"}}]}
            ).encode()
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def server():
    with serve(_Handler) as url:
        yield None, url


@pytest.mark.parametrize("mode", ["ok", "500", "malformed", "slow"])
def test_endpoint_judge_against_a_real_server(server, mode):
    srv, url = server
    _Handler.mode = mode
    judge = EndpointJudge(url, "m", timeout=0.2, retries=1, concurrency=2)
    labels = judge.judge(["p", "p"], ["Sure. Here is how", "I'm sorry, but I can't help with that."])
    assert labels == (["yes", "no"] if mode == "ok" else ["error", "error"])


def test_unreachable_endpoint_is_a_user_error():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(EndpointUnreachable, match="unreachable"):
        EndpointJudge(f"http://127.0.0.1:{port}", "m", timeout=0.5, retries=0).judge(["p"], ["r"])


def test_an_evaluation_the_judge_could_not_make_fails(server, monkeypatch, tmp_path):
    """Judge failures are errors, never safe, and beyond judge.max_error_share the evaluation fails."""
    from types import SimpleNamespace

    from poise.errors import UserError
    from poise.language import evaluators
    from poise.language.data import LangDataCfg, load_lang_data

    _, url = server
    _Handler.mode = "malformed"
    monkeypatch.setattr(evaluators, "generate", lambda lm, prompts, gen: ["Sure, here it is."] * len(prompts))
    data = load_lang_data(LangDataCfg())
    saved = {}
    ctx = SimpleNamespace(run_id="r1", scratch_dir=lambda name: tmp_path / name,
                          save_file=lambda name, blob, media, meta=None: saved.setdefault(name, blob))
    (tmp_path / "eval").mkdir()
    judge = {"name": "endpoint", "url": url, "timeout": 5.0, "retries": 0}
    with pytest.raises(UserError, match="could not decide 100.0% of the responses"):
        evaluators.safety(None, data, ctx, split="val", judge=judge, max_new_tokens=4)
    assert any(name.startswith("responses-") for name in saved)  # the evidence is kept
    _Handler.mode = "ok"
    ok = evaluators.safety(None, data, ctx, split="test", judge=judge, max_new_tokens=4)
    assert ok["judge_error_rate"] == 0.0 and ok["harmful_compliance"] == 1.0
