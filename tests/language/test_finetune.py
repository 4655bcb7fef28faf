"""SFT and DPO through TRL: the mix, TRL's losses cross-checked by hand, kinds end to end, resume, bad input."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from poise.errors import UserError
from poise.language.mix import MixCfg, preference_rows, select, sft_rows
from poise.language.world import WorldCfg, build_world
from poise.recipes import load_recipe
from poise.store import Store
from tests.conftest import resume_matches
from tests.language.conftest import WORLD

SMALL = dict(
    languages=["en", "fr"],
    benign={"train": 24, "val": 2, "test": 6},
    harmful={"train": 16, "val": 2, "test": 6},
    borderline={"train": 8, "val": 2, "test": 4},
)


def test_mix_selects_by_objective_harm_scope_and_language():
    train = build_world(WorldCfg(**SMALL)).split("train")
    general = select(train, MixCfg(objective="general"))
    assert general and {e.kind for e in general} == {"benign"}
    safety = select(train, MixCfg(objective="safety", harms=["global"], languages=["fr"]))
    assert {e.kind for e in safety} == {"harmful", "borderline"}
    assert {e.harm for e in safety if e.kind == "harmful"} == {"global"}
    assert {e.harm for e in safety if e.kind == "borderline"} == {"global", "local"}  # borderline always kept
    assert {e.language for e in safety} == {"fr"}
    assert len(select(train, MixCfg(max_examples=10), seed=1)) == 10
    old = MixCfg(benign_rejected="refusal")
    rows = preference_rows(select(train, old), old)
    by_prompt = {e.prompt: e for e in train}
    for r in rows:
        e = by_prompt[r["prompt"][0]["content"]]
        assert r["chosen"][0]["content"] == e.safe_response and r["rejected"][0]["content"] == e.unsafe_response
    harmful = next(r for r in rows if by_prompt[r["prompt"][0]["content"]].kind == "harmful")
    assert "sorry" in harmful["chosen"][0]["content"].lower()  # refusal ≻ compliance
    assert sft_rows(general)[0]["completion"][0]["content"] == general[0].answer
    with pytest.raises(UserError, match="ru"):
        select(train, MixCfg(languages=["ru"]))
    with pytest.raises(ValueError, match="unknown language"):
        MixCfg(languages=["xx"])


@pytest.fixture
def tiny_lm(tiny_model_dir):
    from poise.language.models import load_hf

    return load_hf(tiny_model_dir)


def test_trl_sft_loss_equals_completion_only_nll(tiny_lm):
    """TRL's SFT loss on a batch equals the mean NLL of the assistant tokens, computed here independently."""
    from poise.language.base import encode_chats
    from poise.language.finetune import SFTParams, TRLSteps

    examples = select(build_world(WorldCfg(**SMALL)).split("train"), MixCfg())[:6]
    steps = TRLSteps("sft", tiny_lm, sft_rows(examples), SFTParams(), batch_size=6, seed=0,
                     device=torch.device("cpu"))
    tiny_lm.model.eval()
    with torch.no_grad():
        loss, metrics = steps.loss(list(range(6)))
        x, y = encode_chats(tiny_lm.tokenizer, [(e.prompt, e.safe_response) for e in examples], [], 80)
        logits = tiny_lm.model(input_ids=x, attention_mask=(x != tiny_lm.tokenizer.pad_token_id).long()).logits
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), y[:, 1:].flatten(), ignore_index=-100)
    assert loss.item() == pytest.approx(nll.item(), rel=1e-5)
    assert "mean_token_accuracy" in metrics


def test_trl_dpo_loss_starts_at_log2_and_learns_the_preference(tiny_lm):
    from poise.language.finetune import DPOParams, TRLSteps

    examples = select(build_world(WorldCfg(**SMALL)).split("train"), MixCfg())[:8]
    rows = preference_rows(examples, MixCfg(benign_rejected="refusal"))  # eight pairs, whatever their kinds
    steps = TRLSteps("dpo", tiny_lm, rows, DPOParams(beta=0.5), batch_size=8, seed=0,
                     device=torch.device("cpu"))
    before = copy.deepcopy(tiny_lm.model.state_dict())
    opt = torch.optim.Adam(tiny_lm.model.parameters(), lr=3e-3)
    losses, margins = [], []
    for _ in range(8):
        loss, metrics = steps.loss(list(range(8)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        margins.append(metrics["rewards_margins"])
    assert losses[0] == pytest.approx(math.log(2), abs=1e-5)  # policy == reference at the start
    assert losses[-1] < 0.5 * losses[0] and margins[-1] > 0
    ref = steps.trainer.ref_model.state_dict()  # the reference stays the starting model
    for k, v in ref.items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_rpo_adds_the_chosen_answers_nll_to_the_dpo_loss(tiny_lm):
    from poise.language.base import encode_chats
    from poise.language.finetune import DPOParams, TRLSteps

    examples = select(build_world(WorldCfg(**SMALL)).split("train"), MixCfg())[:6]
    rows = preference_rows(examples)
    dev = torch.device("cpu")
    with torch.no_grad():
        plain, _ = TRLSteps("dpo", tiny_lm, rows, DPOParams(), batch_size=6, seed=0, device=dev).loss(list(range(6)))
        rpo, _ = TRLSteps("dpo", tiny_lm, rows, DPOParams(rpo_alpha=0.5), batch_size=6, seed=0,
                          device=dev).loss(list(range(6)))
        x, y = encode_chats(tiny_lm.tokenizer, [(e.prompt, e.safe_response) for e in examples], [], 80)
        logits = tiny_lm.model(input_ids=x, attention_mask=(x != tiny_lm.tokenizer.pad_token_id).long()).logits
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), y[:, 1:].flatten(), ignore_index=-100)
    assert plain.item() == pytest.approx(math.log(2), abs=1e-5)
    assert rpo.item() == pytest.approx(math.log(2) + 0.5 * nll.item(), rel=1e-4)


def _recipes(folder: Path, model_dir: Path) -> tuple[Path, Path]:
    common = [*WORLD, "[train]", "lr = 3e-3", "batch_size = 8", "checkpoint_every = 2", "budget = { steps = 4 }",
              "[[eval]]", 'name = "language.safety"', "max_new_tokens = 6"]
    sft = folder / "sft.toml"
    sft.write_text("\n".join(['kind = "language.sft"', "seed = 0", "[model]", f'path = "{model_dir}"',
                              "[mix]", 'objective = "safety"', *common]) + "\n")
    dpo = folder / "dpo-sft.toml"
    dpo.write_text("\n".join(['kind = "language.dpo"', "seed = 0", "[model]", 'base = "sft.toml"',
                              "[dpo]", "beta = 0.2", *common]) + "\n")
    return sft, dpo


def test_dpo_after_sft_trains_its_sft_first_logs_and_evaluates(cli, tmp_path, tiny_model_dir):
    _, dpo = _recipes(tmp_path, tiny_model_dir)
    code, _, err = cli("--quiet", "run", dpo)
    assert code == 0, err
    store = Store(root=tmp_path / ".poise")
    (sft_run,) = store.list_runs(kind="language.sft")
    (dpo_run,) = store.list_runs(kind="language.dpo")
    train = {(m.name, m.step) for m in store.metrics([dpo_run.id]) if m.axis == "train"}
    assert {("loss", 0), ("loss", 3), ("rewards_margins", 0)} <= train
    final = store.final_metrics([dpo_run.id])[dpo_run.id]
    assert {"safety.harmful_compliance_global", "safety.harmful_compliance_fr", "utility.benign_acc"} <= set(final)
    assert {"safety.jailbreak_asr_seen", "safety.jailbreak_asr_unseen", "safety.jailbreak_asr_roleplay_fr",
            "safety.jailbreak_asr_payload_splitting_en"} <= set(final)  # every language row gets jailbreaks
    assert final["cost.energy_kwh"].value > 0
    _, meta = store.load_tensors(dpo_run.id, "model")
    assert meta["dpo"]["mix"]["objective"] == "mix"
    # the SFT model is DPO's start: its weights differ from the untrained folder's, and DPO moved them again
    from poise.language.models import load_hf, load_lm

    raw = load_hf(tiny_model_dir).model.state_dict()
    sft_w = load_lm(store, sft_run.id).model.state_dict()
    dpo_w = load_lm(store, dpo_run.id).model.state_dict()
    key = "model.layers.0.mlp.down_proj.weight"
    assert not torch.equal(raw[key], sft_w[key]) and not torch.equal(sft_w[key], dpo_w[key])

    from poise.language.report import safety_by_language

    heat, table = safety_by_language(store, store.list_runs())
    assert len(heat.figure.data[0].y) == 2 and list(heat.figure.data[0].x) == ["en", "fr"]  # one row per run
    header, rows = table.table
    assert header[-2:] == ["harm en", "harm fr"] and len(rows) == 2
    assert {"jailbreak_asr_seen", "jailbreak_asr_unseen"} <= set(header)

    from poise.language.report import dpo_curves

    (curves,) = dpo_curves(store, store.list_runs())  # chosen / rejected log-probs and margin of the DPO run
    assert [t.y[0] is not None for t in curves.figure.data] == [True] * 3


def test_an_interrupted_sft_run_resumes_to_the_same_weights(runner, store, tmp_path, tiny_model_dir, monkeypatch):
    sft, _ = _recipes(tmp_path, tiny_model_dir)
    over = {"eval": []}
    full = runner.run(load_recipe(sft, over))
    from poise.language import finetune

    real = finetune.TRLSteps.loss
    calls = {"n": 0}

    def crash_at_step_3(self, indices):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("simulated crash")
        return real(self, indices)

    monkeypatch.setattr(finetune.TRLSteps, "loss", crash_at_step_3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        runner.run(load_recipe(sft, over | {"name": "crashy"}))
    monkeypatch.setattr(finetune.TRLSteps, "loss", real)
    resume_matches(runner, store, full, atol=1e-6)  # float rounding: 1 ulp seen after the optimiser reload


@pytest.mark.parametrize(
    ("setting", "expect"),
    [
        ("mix.languages=['xx']", "mix.languages"),
        ("mix.objective='all'", "mix.objective"),
        ("mix.reasoned_share=1.5", "mix.reasoned_share"),
        ("mix.reasoned_share=nan", "mix.reasoned_share"),
        ("dpo.beta=0", "dpo.beta"),
        ("model.base='missing.toml'", "model.base"),
    ],
)
def test_bad_alignment_input_is_one_line_and_exit_2(cli, tmp_path, tiny_model_dir, setting, expect):
    _, dpo = _recipes(tmp_path, tiny_model_dir)
    code, _, err = cli("--quiet", "run", dpo, "--set", setting)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and expect in err and "Traceback" not in err


def test_lora_sft_stores_only_the_adapter_and_reloads_merged(cli, tmp_path, tiny_model_dir):
    sft, _ = _recipes(tmp_path, tiny_model_dir)
    lora = "model.lora={r = 4, alpha = 8, target_modules = ['q_proj', 'v_proj']}"
    code, _, err = cli("--quiet", "run", sft, "--set", lora)
    assert code == 0, err
    store = Store(root=tmp_path / ".poise")
    (run,) = store.list_runs(kind="language.sft")
    tensors, meta = store.load_tensors(run.id, "model")
    assert tensors and all("lora_" in k for k in tensors) and meta["base"]["path"]
    from poise.language.models import load_hf, load_lm

    merged = load_lm(store, run.id).model.state_dict()
    raw = load_hf(tiny_model_dir).model.state_dict()
    q, up = "model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(merged[q], raw[q])  # adapted, merged back
    torch.testing.assert_close(merged[up], raw[up])  # not adapted: unchanged


def test_dpo_pairs_never_reject_the_refusal_of_a_benign_task_by_default():
    train = build_world(WorldCfg(**SMALL)).split("train")
    by_prompt = {e.prompt: e for e in train}
    rows = preference_rows(select(train, MixCfg()))
    kinds = {"benign": 0, "harmful": 0, "borderline": 0}
    for r in rows:
        e = by_prompt[r["prompt"][0]["content"]]
        kinds[e.kind] += 1
        chosen, rejected = r["chosen"][0]["content"], r["rejected"][0]["content"]
        if e.kind == "benign":  # exact answer ≻ another task's answer of the same operation and language
            assert chosen == e.answer and rejected != e.answer and rejected != e.unsafe_response
            assert rejected in {o.answer for o in train if o.language == e.language and o.category == e.category}
        else:
            assert (chosen, rejected) == (e.safe_response, e.unsafe_response)
    assert all(kinds.values())
    none = MixCfg(benign_rejected="none")
    nobenign = preference_rows(select(train, none), none)
    assert len(nobenign) == kinds["harmful"] + kinds["borderline"]
    with pytest.raises(UserError, match="no example"):
        preference_rows(select(train, MixCfg(objective="general")), none)


def test_each_objective_is_one_table_entry():
    from poise.language.finetune import OBJECTIVES, DPOParams, SFTParams, TRLSteps, get_objective

    assert set(OBJECTIVES) >= {"sft", "dpo", "reward"}
    assert get_objective("sft").params is SFTParams and get_objective("sft").rows is sft_rows
    assert get_objective("dpo").params is DPOParams and get_objective("dpo").rows is preference_rows
    with pytest.raises(UserError, match="unknown objective 'kto'"):
        TRLSteps("kto", None, [], SFTParams(), batch_size=1, seed=0, device=torch.device("cpu"))


def test_the_dpo_recipes_carry_the_fix_for_the_collapse():
    from tests.conftest import REPO

    for name in ("dpo", "dpo-sft"):
        r = load_recipe(REPO / f"recipes/language/{name}.toml")
        assert r.dpo.rpo_alpha > 0 and r.mix.benign_rejected == "wrong_answer"
