"""Studies benchmark: the reproductions as the papers ran them — every row tuned with the same budget on
the validation split, several seeds on the test split, mean ± 95 % interval, and a held / not held /
inconclusive verdict per claim from the interval of the difference.

Each study is ``poise run <study recipe> [...]`` as a user types it (the command is printed beside its
table), run in a persistent store (``$POISE_BENCH_STUDY_STORE``, default ``benchmarks/.studies``): a study
whose command already finished there is read back instead of run again, and a killed one resumes, so the
longest studies can be run one at a time (``POISE_BENCH_STUDIES=vision,restoration``). The sizes below are
what a 2-core CPU allows in an afternoon; each table says its size, and the full-size command is the
recipe without the ``--set`` overrides.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FULL_AA = ('study.set={ eval = [ { name = "vision.clean_accuracy" }, { name = "vision.robust_accuracy", '
           'attack = "pgd", steps = 20 }, { name = "vision.robust_accuracy", attack = "autoattack", n = 200, '
           'steps = 25, n_targets = 3, square_queries = 500 } ] }')
PENDULUM_8K = ('study.set={ "train.budget.steps" = 8000, "eval.0.seeds" = 3, "eval.0.episodes" = 4, '
               '"eval.1.seeds" = 3, "eval.1.episodes" = 4, "eval.1.budgets" = [0.25, 0.5, 1.0], "eval.1.steps" = 10 }')
MOUNTAINCAR_20K = ('study.set={ "train.budget.steps" = 20000, "eval.0.seeds" = 3, "eval.0.episodes" = 4, '
                   '"eval.1.seeds" = 3, "eval.1.episodes" = 4, "eval.1.budgets" = [0.25, 0.5, 1.0], '
                   '"eval.1.steps" = 10 }')
LANGUAGE_60 = ('study.set={ "model.base" = "language/base-aware.toml", "train.budget.steps" = 60, '
               '"data.world.benign.test" = 12, "data.world.harmful.test" = 12, "data.world.borderline.test" = 8, '
               '"data.world.jailbreaks.test" = 2 }')
RL_300 = 'study.rows.{}.set={{ "train.budget.steps" = 300 }}'  # an AlphaAlign row (0, 1, 2) at 300 RL steps

# name -> (recipe, args, what the size is)
STUDIES: dict[str, tuple[str, list[str], str]] = {
    "vision": ("recipes/vision/study-mtard-digits.toml",
               ["--quick", "--set", "study.trials=8", "--set", "study.seeds=[0, 1, 2, 3, 4]", "--set", FULL_AA],
               "digits, each row's quick training (10 epochs, 3-step training attacks), 8 tuning trials a row, "
               "5 seeds; the full AutoAttack evaluation (200 test images, APGD-CE/-T 25 steps, 3 targets, Square "
               "500 queries)"),
    "restoration": ("recipes/restoration/study-sr-faces.toml",
                    ["--quick", "--set", "study.trials=8", "--set", "study.seeds=[0, 1, 2, 3, 4]"],
                    "LFW faces 24×24 ×2, each row's quick training (residual over bicubic, 300 steps, width 16), "
                    "8 tuning trials a learned row, 5 seeds, every test face"),
    "lipschitz": ("recipes/control/study-lipschitz-linear.toml", [],
                  "the full study: double integrator, 8 tuning trials a row (lr, on validation states), 5 seeds"),
    "action-at": ("recipes/control/study-action-at-pendulum.toml", ["--set", "study.trials=4", "--set", PENDULUM_8K],
                  "Pendulum-v1, the full recipes (zoo SAC, 256×256, 200-step episodes) at 8,000 steps for every row "
                  "(the fine-tune trains 8,000 more from the nominal agent of its seed), 4 tuning trials a row, "
                  "3 seeds; evaluation on 3 × 4 test episodes, attack budgets 0.25 / 0.5 / 1.0, 10-step attacks"),
    "action-at-mountaincar": ("recipes/control/study-action-at-mountaincar.toml",
                              ["--set", "study.trials=3", "--set", MOUNTAINCAR_20K],
                              "MountainCarContinuous-v0, the full recipes (zoo SAC with gSDE, 64×64) at 20,000 steps "
                              "for every row (the fine-tune trains 20,000 more from the nominal agent of its seed), "
                              "3 tuning trials a row, 3 seeds; evaluation on 3 × 4 test episodes, attack budgets "
                              "0.25 / 0.5 / 1.0, 10-step attacks"),
    "language": ("recipes/language/study-alphaalign.toml", ["--quick", "--set", "study.trials=4", "--set", LANGUAGE_60],
                 "the six-language world; every row from one quick latent-awareness base (seed 0: the quick base, "
                 "700 steps, warm-started 50 steps on aware chats; trained once), each row's quick settings at 60 "
                 "training steps (AlphaAlign: 2 prompts × 8 rollouts a step), 4 tuning trials a row on val, 3 seeds; "
                 "test split 12 benign, 12 harmful, 8 borderline prompts and 2 jailbreaks a family per language"),
    "language-long-rl": ("recipes/language/study-alphaalign.toml",
                         ["--quick", "--set", "study.trials=4", "--set", LANGUAGE_60,
                          *(a for i in range(3) for a in ("--set", RL_300.format(i)))],
                         "the language study above with the three AlphaAlign rows trained 300 RL steps (2 prompts × 8 "
                         "rollouts a step: 4,800 sampled answers, against SFT's 60 × 32 = 1,920 examples); the SFT and "
                         "DPO rows are the same runs as above (reused)"),
}


def _store_dirs() -> list[Path]:
    raw = os.environ.get("POISE_BENCH_STUDY_STORE", str(ROOT / "benchmarks" / ".studies"))
    return [Path(p) for p in raw.split(os.pathsep) if p]


def _find(command: str, config_hash: str) -> dict | None:
    """The comparison of a finished study run of exactly this command and study config (the recipe file may
    have changed under the same command), in any of the bench stores."""
    from poise.store import Store
    from poise.study.report import load_comparison

    for d in _store_dirs():
        if not (d / "poise.db").exists():
            continue
        store = Store(root=d)
        for run in sorted(store.list_runs(kind="study.compare", status="done"), key=lambda r: -(r.started or 0)):
            if run.config_hash != config_hash:  # the study's identity, how costs are accounted left out
                continue
            result = load_comparison(store, run)
            if result and result.get("command") == command:
                return {**result, "_run": run.id}
    return None


def _command(recipe: str, args: list[str]) -> tuple[str, Any]:
    """The command line a study records, and its recipe."""
    from poise.recipes import load_recipe, parse_set_options

    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    cfg = load_recipe(recipe, parse_set_options(sets), quick="--quick" in args)
    return cfg.command(), cfg


def _run(recipe: str, args: list[str]) -> tuple[float, str]:
    store = _store_dirs()[0]
    store.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "poise", "--quiet", "--store", f"sqlite:///{store / 'poise.db'}", "run", recipe, *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:  # a stopped study resumes when run again: say so rather than hide it
        return time.perf_counter() - t0, proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"
    return time.perf_counter() - t0, ""


def _md(headers: list[str], rows: list[list[object]]) -> list[str]:
    esc = [[str(c).replace("|", "\\|") for c in r] for r in rows]
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers), *("| " + " | ".join(r) + " |" for r in esc)]


def render(name: str, size: str, result: dict, study_set: dict | None = None) -> list[str]:
    from poise.study.report import claim_rows, table_rows, tuning_rows

    headers, rows = table_rows(result)
    out = [f"### {name}: {result['name']}", "", f"Size: {size}. Command: `{result['command']}`", "",
           f"{len(result['seeds'])} seeds ({', '.join(map(str, result['seeds']))}), mean ± 95 % t-interval; "
           f"tuning objective `{result['objective']}` on the validation split, {result['trials']} trials a row.", ""]
    out += _md(headers, rows) + [""]
    out += starting_base(study_set or {}, bool(result.get("quick")))
    out += ["Tuned settings (validation split):", ""]
    out += _md(["row", "space", "trials", "chosen", "best val"], tuning_rows(result)) + [""]
    if result["claims"]:
        out += ["Claims (a − b with its 95 % interval; held / not held only when the interval says so):", ""]
        out += _md(["claim", "metric", "rows", "relation", "a − b", "verdict"],
                   [r[:6] for r in claim_rows(result)]) + [""]
    return out


BASE_KEYS = (("sampled_refusal", "refuses harmful (sampled)"),
             ("sampled_over_refusal", "over-refuses borderline (sampled)"),
             ("harmful_compliance", "complies with harmful (greedy)"), ("over_refusal", "over-refuses (greedy)"),
             ("benign_acc", "benign accuracy"))


def starting_base(study_set: dict, quick: bool) -> list[str]:
    """For a study whose rows all start from one base chat model (``model.base`` in its ``set``): that base's
    rates per language, read from its run in the bench store (AlphaAlign's premise: a minority of refusals in
    every language, some over-refusal)."""
    from poise.language.evaluators import metric_languages
    from poise.recipes import load_recipe, resolve_recipe_path
    from poise.store import Store

    ref = study_set.get("model.base")
    if not ref:
        return []
    want = load_recipe(resolve_recipe_path(ref), {}, quick=quick).config_hash()
    for d in _store_dirs():
        if not (d / "poise.db").exists():
            continue
        store = Store(root=d)
        run = store.find_done(want)
        if run is None:
            continue
        final = {k.split(".", 1)[1]: m.value for k, m in store.final_metrics([run.id]).get(run.id, {}).items()}
        langs = metric_languages(f"safety.{k}" for k in final)
        rows = [[label, *(f"{final[f'{key}_{lang}']:.2f}" if f"{key}_{lang}" in final else "" for lang in langs),
                 f"{final.get(key, float('nan')):.2f}"] for key, label in BASE_KEYS]
        return [f"The base every row starts from (`{ref}`, run {run.id}, seed {run.seed}; its own test split), per "
                "language:", "",
                *_md(["rate", *langs, "all"], rows), ""]
    return []


def main(quick: bool = False) -> str:
    os.chdir(ROOT)  # the commands name the recipes relative to the checkout, as the README does
    wanted = [s for s in os.environ.get("POISE_BENCH_STUDIES", ",".join(STUDIES)).split(",") if s]
    unknown = set(wanted) - set(STUDIES)
    if unknown:
        raise SystemExit(f"bench_studies: unknown study name(s) {sorted(unknown)}; expected {sorted(STUDIES)}")
    lines: list[str] = []
    summary: list[list[object]] = []
    for name in wanted:
        recipe, args, size = STUDIES[name]
        if quick:  # a smoke test: the study's own quick form
            args, size = ["--quick"], "the study's quick form"
        command, cfg = _command(recipe, args)
        result = _find(command, cfg.config_hash())
        took, error = (0.0, "")
        if result is None:
            took, error = _run(recipe, args)
            result = _find(command, cfg.config_hash())
        if result is None:
            lines += [f"### {name}", "", f"`{command}` did not finish ({error}); run the bench again to resume it.", ""]
            continue
        lines += render(name, size, result, cfg.study.set)
        if took:
            lines += [f"_(ran in {took:.0f} s)_", ""]
        from poise.study.report import claim_rows

        summary += [[r[0], r[4], r[5], f"`{command}`"] for r in claim_rows(result)]
    head = ["Every claim of the studies below in one line (README's table):", ""]
    head += _md(["claim", "measured a − b (95 % interval)", "verdict", "command"], summary) + [""]
    return "\n".join(head + lines)


if __name__ == "__main__":
    print(main(quick="--quick" in sys.argv))
