"""Standard prompt sets from local files in their published layouts: rows, kinds, languages, categories,
filters, SHA-256 pins, ``poise data ls`` and bad input (one line, exit 2, nothing run)."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest

from poise.errors import UserError
from poise.language.promptsets import (
    CONTEXT_SEPARATOR,
    FORMATS,
    PromptSetCfg,
    categories_of,
    language_code,
    load_prompt_set,
    load_prompt_sets,
    summary,
)
from poise.store import Store
from tests.language import field_files


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    return field_files.write_all(tmp_path_factory.mktemp("sets"))


def test_every_format_has_a_test_file(files):
    assert {fmt for fmt, _, _ in files.values()} == set(FORMATS)


@pytest.mark.parametrize("name", ["harmbench", "advbench", "jbb-harmful", "jbb-benign", "xstest", "strongreject",
                                  "multijail", "aya-eng", "aya-fra"])
def test_loader_reads_rows_kinds_languages_and_categories(files, name):
    fmt, path, expected = files[name]
    examples = load_prompt_set(PromptSetCfg(format=fmt, path=path))
    got = summary(examples)
    for key, value in expected.items():
        assert got[key] == value, key
    assert len({e.id for e in examples}) == len(examples)
    assert all(e.prompt and e.source == fmt and e.split == "test" for e in examples)


def test_layouts_follow_the_sets(files):
    hb = {e.id.rsplit(":", 1)[1]: e for e in load_prompt_set(PromptSetCfg(format="harmbench",
                                                                           path=files["harmbench"][1]))}
    ctx = hb["ombry_clerk_mock"]
    assert ctx.task == "contextual" and ctx.context.startswith("The clerk of Ombry")
    assert ctx.prompt == ctx.context + CONTEXT_SEPARATOR + ctx.request and ctx.request.startswith("Rewrite this note")
    assert hb["glimmerbane_brew"].context is None and hb["glimmerbane_brew"].prompt == hb["glimmerbane_brew"].request
    xs = {e.category: e.kind for e in load_prompt_set(PromptSetCfg(format="xstest", path=files["xstest"][1]))}
    assert xs["homonyms"] == "borderline" and xs["contrast_homonyms"] == "harmful"
    harmful = load_prompt_set(PromptSetCfg(format="jbb-harmful", path=files["jbb-harmful"][1]))
    benign = load_prompt_set(PromptSetCfg(format="jbb-benign", path=files["jbb-benign"][1]))
    assert [e.task for e in harmful] == [e.task for e in benign]  # matched by Behavior, row for row
    assert {e.kind for e in benign} == {"borderline"}
    mj = load_prompt_set(PromptSetCfg(format="multijail", path=files["multijail"][1]))
    by_lang = {e.language: e.prompt for e in mj if e.id.split(":")[2] == "0"}
    assert by_lang["zh"] == field_files.MULTIJAIL["zh"][0] and by_lang["sw"] == field_files.MULTIJAIL["sw"][0]
    assert categories_of(mj[0]) == ["violence_incitement", "weapons"]
    aya = load_prompt_set(PromptSetCfg(format="aya", path=files["aya-eng"][1]))
    assert [e.harm for e in aya] == ["global", "local", "global"]
    assert categories_of(aya[0]) == ["Discrimination & Injustice", "Hate Speech"]
    assert language_code("French") == "fr" and language_code("Serbian") == "sr" and language_code("pt-BR") == "pt_br"


def test_filters_select_subsets(files):
    path = files["harmbench"][1]
    std = load_prompt_set(PromptSetCfg(format="harmbench", path=path, functional=["standard", "contextual"]))
    assert {e.task for e in std} == {"standard", "contextual"} and len(std) == 5
    chem = load_prompt_set(PromptSetCfg(format="harmbench", path=path, categories=["chemical_biological"]))
    assert len(chem) == 2
    mj = load_prompt_set(PromptSetCfg(format="multijail", path=files["multijail"][1], languages=["en", "sw"]))
    assert sorted({e.language for e in mj}) == ["en", "sw"] and len(mj) == 4
    a = load_prompt_set(PromptSetCfg(format="multijail", path=files["multijail"][1], limit=5, seed=1))
    b = load_prompt_set(PromptSetCfg(format="multijail", path=files["multijail"][1], limit=5, seed=1))
    c = load_prompt_set(PromptSetCfg(format="multijail", path=files["multijail"][1], limit=5, seed=2))
    assert [e.id for e in a] == [e.id for e in b] and len(a) == 5 and [e.id for e in a] != [e.id for e in c]
    with pytest.raises(ValueError, match="HarmBench only"):
        PromptSetCfg(format="xstest", path=path, functional=["standard"])
    with pytest.raises(ValueError, match="MultiJail has no language 'fr'"):
        PromptSetCfg(format="multijail", path=path, languages=["fr"])


def test_sha256_pin_and_other_file_formats(files, tmp_path):
    path = files["strongreject"][1]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert len(load_prompt_set(PromptSetCfg(format="strongreject", path=path, sha256=digest))) == 4
    with pytest.raises(UserError, match=f"SHA-256 is {digest}; expected {'0' * 64}") as e:
        load_prompt_set(PromptSetCfg(format="strongreject", path=path, sha256="0" * 64))
    assert str(path) in e.value.line() and "data.sha256" in e.value.line()
    # the columns decide, not the file type: the same XSTest rows as JSONL and parquet
    import pyarrow as pa
    import pyarrow.parquet as pq

    with open(files["xstest"][1], encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    (tmp_path / "x.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "x.parquet")
    for p in ("x.jsonl", "x.parquet"):
        assert summary(load_prompt_set(PromptSetCfg(format="xstest", path=tmp_path / p)))["borderline"] == 4
    with pytest.raises(UserError, match="appears twice"):
        load_prompt_sets([PromptSetCfg(format="xstest", path=tmp_path / "x.jsonl")] * 2)


def _bad_csv(folder: Path, name: str, header: list[str], rows: list[list[str]]) -> Path:
    return field_files._csv(folder / name, header, rows)


@pytest.mark.parametrize(
    "fmt, header, rows, match",
    [
        ("harmbench", ["Behavior", "SemanticCategory", "Tags", "ContextString", "BehaviorID"],
         [["b", "c", "", "", "i"]],
         "missing column 'FunctionalCategory'; expected the HarmBench behaviours columns Behavior, FunctionalCategory"),
        ("harmbench", ["Behavior", "FunctionalCategory", "SemanticCategory", "Tags", "ContextString", "BehaviorID"],
         [["b", "weird", "c", "", "", "i"]], "row 1: FunctionalCategory 'weird': expected one of standard"),
        ("harmbench", ["Behavior", "FunctionalCategory", "SemanticCategory", "Tags", "ContextString", "BehaviorID"],
         [["b", "contextual", "c", "", "", "i"]], "ContextString is empty"),
        ("xstest", ["id", "prompt", "type", "label", "focus", "note"], [["1", "p", "t", "maybe", "", ""]],
         "label 'maybe': expected one of safe, unsafe"),
        ("strongreject", ["category", "source", "forbidden_prompt"], [["c", "s", ""]],
         "row 1: forbidden_prompt is empty"),
        ("aya", ["prompt", "language", "harm_category", "global_or_local"], [["p", "English", "[]", "both"]],
         "global_or_local 'both'"),
        ("multijail", ["id", "source", "tags", "en"], [["0", "s", "t", "p"]], "missing column 'zh'"),
    ],
)
def test_bad_rows_are_one_line_naming_file_and_column(tmp_path, fmt, header, rows, match):
    path = _bad_csv(tmp_path, "bad.csv", header, rows)
    with pytest.raises(UserError, match=match) as e:
        load_prompt_set(PromptSetCfg(format=fmt, path=path))
    assert str(path) in e.value.line() and "\n" not in e.value.line()


def test_unreadable_files(tmp_path):
    (tmp_path / "rows.jsonl").write_text('{"prompt": "p"}\n[1, 2]\n')
    with pytest.raises(UserError, match=r"rows.jsonl:2: data.path: expected a JSON object per line"):
        load_prompt_set(PromptSetCfg(format="advbench", path=tmp_path / "rows.jsonl"))
    (tmp_path / "a.txt").write_text("goal,target\n")
    with pytest.raises(UserError, match="unsupported prompt file type '.txt'"):
        load_prompt_set(PromptSetCfg(format="advbench", path=tmp_path / "a.txt"))
    with pytest.raises(UserError, match="a folder; expected the AdvBench"):
        load_prompt_set(PromptSetCfg(format="advbench", path=tmp_path))
    (tmp_path / "empty.csv").write_text("goal,target\n")
    with pytest.raises(UserError, match="holds no rows"):
        load_prompt_set(PromptSetCfg(format="advbench", path=tmp_path / "empty.csv"))


# --------------------------------------------------------------------------- through the CLI


def _recipe(folder: Path, sets: list[str], extra: list[str] | None = None, model_dir: Path | None = None) -> Path:
    lines = ['kind = "language.base"', "[model]", f'path = "{model_dir or folder / "no-model"}"', "[data.world]",
             'languages = ["en"]', "[[eval]]", 'name = "language.safety"', "max_new_tokens = 4", *(extra or [])]
    for s in sets:
        lines += ["[[eval.data]]", s]
    path = folder / "recipe.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_data_ls_lists_rows_languages_and_categories(cli, files, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    sets = [f'format = "{fmt}"\npath = "{path}"' for fmt, path, _ in files.values()]
    recipe = _recipe(tmp_path, sets)
    code, out, err = cli("--json", "data", "ls", recipe)
    assert code == 0, err
    listed = json.loads(out)
    assert [row["format"] for row in listed] == [fmt for fmt, _, _ in files.values()]
    for row, (_, _, expected) in zip(listed, files.values(), strict=True):
        assert row["error"] is None and {k: row[k] for k in expected} == expected
    code, out, _ = cli("data", "ls", recipe)
    assert code == 0 and "harmbench" in out and "multijail" in out
    code, out, _ = cli("data", "ls")  # the shipped recipes name no prompt set
    assert code == 0 and "no prompt sets configured" in out and "[[eval]]" in out


@pytest.mark.parametrize(
    "case, match",
    [
        ("missing-column", "missing column 'target'; expected the AdvBench harmful_behaviors columns goal, target"),
        ("unknown-format", "eval[0].data[0].format: input should be 'harmbench', 'advbench'"),
        ("checksum", "data.sha256: the file's SHA-256 is"),
        ("missing-file", "data.path: no such file; expected the XSTest prompts file"),
    ],
)
def test_bad_sets_exit_2_with_one_line(cli, files, tmp_path, case, match):
    bad = {
        "missing-column": 'format = "advbench"\npath = "' + str(_bad_csv(tmp_path, "adv.csv", ["goal"], [["g"]])) + '"',
        "unknown-format": f'format = "harmbenchh"\npath = "{files["harmbench"][1]}"',
        "checksum": f'format = "xstest"\npath = "{files["xstest"][1]}"\nsha256 = "{"ab" * 32}"',
        "missing-file": f'format = "xstest"\npath = "{tmp_path / "gone.csv"}"',
    }[case]
    recipe = _recipe(tmp_path, [bad])
    code, _, err = cli("data", "ls", recipe)
    assert code == 2 and match in err and len(err.strip().splitlines()) == 1, err
    code, _, err = cli("run", recipe)  # the recipe check loads the sets: nothing runs
    assert code == 2 and match in err and len(err.strip().splitlines()) == 1, err
    assert Store(root=tmp_path / ".poise").list_runs() == []
