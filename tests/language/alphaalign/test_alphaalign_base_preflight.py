"""A base recipe that lacks what AlphaAlign needs is one line naming the field and exit 2, before any run exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.language.conftest import TINY_TOML

pytest.importorskip("poise.language.evaluators", reason="needs the language lab (branch language)")


def _world(languages: list[str]) -> list[str]:
    langs = ", ".join(f'"{lang}"' for lang in languages)
    return ["[data.world]", "seed = 0", f"languages = [{langs}]", "benign = { train = 8, val = 2, test = 2 }",
            "harmful = { train = 8, val = 2, test = 2 }", "borderline = { train = 4, val = 2, test = 2 }"]


def _write(folder: Path, *, base_langs: list[str], rl_langs: list[str], base_model: list[str] | None = None,
           base_kind: str = "language.base", prompts: list[str] | None = None) -> Path:
    model = base_model if base_model is not None else ["refusal_share = 0.3"]
    (folder / "base.toml").write_text("\n".join([
        f'kind = "{base_kind}"', "[model]", *([TINY_TOML] if base_kind == "language.base" else []), *model,
        *_world(base_langs),
        "[train]", "batch_size = 4", "budget = { steps = 1 }"]) + "\n", encoding="utf-8")
    rl = folder / "aa.toml"
    rl.write_text("\n".join([
        'kind = "language.alphaalign"', "n = 2", "[model]", 'base = "base.toml"', *_world(rl_langs),
        *(prompts or []), "[reward]", 'template = "{prompt}"', "helpfulness = false", "[ppo]", "max_new_tokens = 4",
        "[train]", "batch_size = 2", "budget = { steps = 1 }"]) + "\n", encoding="utf-8")
    return rl


def _no_runs(folder: Path) -> bool:
    if not (folder / ".poise").exists():
        return True
    from poise.store import Store

    store = Store(root=folder / ".poise")
    try:
        return store.list_runs() == []
    finally:
        store.close()


@pytest.mark.parametrize(
    ("setup", "field", "needle"),
    [
        (dict(base_langs=["en"], rl_langs=["en", "fr"]), "data.world.languages", "['fr']"),
        (dict(base_langs=["en", "fr"], rl_langs=["en", "fr"], base_model=['refuse_languages = ["en"]']),
         "model.base", "['fr']"),
        (dict(base_langs=["en", "fr"], rl_langs=["en", "fr"], base_kind="language.sft",
              base_model=['base = "x.toml"']), "model.base", "language.base"),
    ],
    ids=["world-lacks-a-language", "no-refusal-data", "not-a-base"],
)
def test_base_lacking_what_alphaalign_needs_exits_2_before_any_run(cli, tmp_path, setup, field, needle):
    rl = _write(tmp_path, **setup)
    code, out, err = cli("--quiet", "run", rl)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert f"aa.toml: {field}:" in lines[0] and needle in lines[0]
    assert _no_runs(tmp_path)


def test_prompt_file_language_missing_from_the_base_world_names_the_file_field(cli, tmp_path):
    f = tmp_path / "prompts.jsonl"
    f.write_text('{"prompt": "x", "label": "harmful", "language": "de"}\n', encoding="utf-8")
    rl = _write(tmp_path, base_langs=["en", "fr"], rl_langs=["en", "fr"], prompts=["[prompts]", f"file = '{f}'"])
    code, _, err = cli("--quiet", "run", rl)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "prompts.file:" in err and "['de']" in err
    assert _no_runs(tmp_path)


def test_a_base_that_covers_the_rl_languages_passes_preflight(tmp_path):
    import poise.language.alphaalign.kinds  # noqa: F401
    import poise.language.kinds  # noqa: F401
    from poise.recipes import load_recipe

    load_recipe(_write(tmp_path, base_langs=["en", "fr", "de"], rl_langs=["fr", "en"])).preflight()
    load_recipe(_write(tmp_path, base_langs=["en", "fr"], rl_langs=["en", "fr"], base_model=["harm_notes = 1"])
                ).preflight()
    repo = Path(__file__).resolve().parents[3] / "recipes" / "language"
    for name in ("alphaalign", "alphaalign-zero", "alphaalign-grpo"):  # the shipped recipes start from base-aware
        load_recipe(repo / f"{name}.toml").preflight()
        load_recipe(repo / f"{name}.toml", quick=True).preflight()
