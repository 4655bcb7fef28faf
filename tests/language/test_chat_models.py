"""Real chat-model architectures by path: Llama, Qwen2, Gemma and Gemma 2 folders (random weights, their chat
templates, a tokenizer trained here), LoRA on top, SFT through the CLI, when vLLM may generate, and the GPU check
that refuses to run on a CPU."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch

from poise.errors import UserError
from poise.language.generate import GenCfg, chat_prompt, generate, use_vllm, vllm_blockers
from poise.language.models import LoraCfg, apply_lora, lm_artifact, lm_from_artifact, load_hf
from poise.store import Store
from tests.conftest import REPO
from tests.language import chat_folders, field_files

CORPUS = ["What is two plus three? Five.", "I'm sorry, I can't help with that.", "Sure, here is how.",
          "Comment ça va ? Très bien.", "Bonjour", "The capital of Ombry is Zorb."] * 3
EXPECTED = {
    "llama": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
             "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "qwen2": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n"
             "<|im_start|>assistant\n",
    "gemma": "<bos><start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n",
    "gemma2": "<bos><start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n",
}
CLASSES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "gemma": "GemmaForCausalLM",
           "gemma2": "Gemma2ForCausalLM"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("chat")
    return {f: chat_folders.chat_folder(root / f, f, CORPUS) for f in CLASSES}


@pytest.mark.parametrize("family", list(CLASSES))
def test_chat_model_folder_loads_with_its_template_and_takes_lora(folders, family):
    config = json.loads((folders[family] / "tokenizer_config.json").read_text())
    assert config["chat_template"] == chat_folders.FAMILIES[family]["template"]  # read from tokenizer_config
    lm = load_hf(folders[family])
    assert type(lm.model).__name__ == CLASSES[family] and lm.weights_from_folder()
    assert chat_prompt(lm.tokenizer, "Hi there") == EXPECTED[family]
    out = generate(lm, ["Hi there", "What is two plus three?"], GenCfg(max_new_tokens=3, backend="transformers"))
    assert len(out) == 2 and all(isinstance(t, str) for t in out)
    # LoRA: only the adapters train; the stored artifact is the adapter, merged on load onto the folder's weights
    lora = apply_lora(lm, LoraCfg(r=4, alpha=8))
    trainable = [n for n, p in lora.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable) and not lora.weights_from_folder()
    x = lm.tokenizer(["Hi there"], return_tensors="pt").input_ids
    opt = torch.optim.SGD([p for p in lora.model.parameters() if p.requires_grad], lr=0.5)
    lora.model.train()
    lora.model(input_ids=x, labels=x).loss.backward()
    opt.step()
    lora.model.eval()
    with torch.no_grad():
        want = lora.model(input_ids=x).logits
    tensors, meta = lm_artifact(lora)
    assert all("lora_" in k for k in tensors) and meta["base"] == {"path": lm.meta["path"]}
    back = lm_from_artifact(tensors, meta)
    with torch.no_grad():
        torch.testing.assert_close(back.model(input_ids=x).logits, want, rtol=1e-4, atol=1e-5)
    assert not back.weights_from_folder()  # merged adapter: vLLM would load the folder's weights, so it may not


def test_gemma_template_goes_through_trl_dpo(folders):
    """TRL's DPO loss on Gemma's chat template (no system role) starts at log 2: policy == reference."""
    import math

    from poise.language.finetune import DPOParams, TRLSteps
    from poise.language.mix import MixCfg, preference_rows, select
    from poise.language.world import WorldCfg, build_world

    sizes = {"train": 8, "val": 1, "test": 1}
    world = build_world(WorldCfg(languages=["en"], harmful=sizes, benign=sizes, borderline=sizes))
    lm = load_hf(folders["gemma"])
    rows = preference_rows(select(world.split("train"), MixCfg())[:4], MixCfg(benign_rejected="refusal"))
    steps = TRLSteps("dpo", lm, rows, DPOParams(), batch_size=4, seed=0, device=torch.device("cpu"))
    loss, _ = steps.loss(list(range(4)))
    assert loss.item() == pytest.approx(math.log(2), abs=1e-5)


def test_lora_sft_on_a_qwen2_folder_through_the_cli(cli, folders, tmp_path):
    files = field_files.write_all(tmp_path / "sets")
    recipe = tmp_path / "sft.toml"
    recipe.write_text("\n".join([
        'kind = "language.sft"', "seed = 0", "[model]", f'path = "{folders["qwen2"]}"', "lora = { r = 4, alpha = 8 }",
        "[data.world]", 'languages = ["en"]', "harmful = { train = 8, val = 1, test = 1 }",
        "benign = { train = 8, val = 1, test = 1 }", "borderline = { train = 4, val = 1, test = 1 }",
        "[train]", "lr = 1e-2", "batch_size = 4", "budget = { steps = 2 }",
        "[[eval]]", 'name = "language.safety"', "max_new_tokens = 3",
        "[[eval.data]]", f'format = "xstest"\npath = "{files["xstest"][1]}"',
    ]) + "\n")
    code, out, err = cli("--json", "run", recipe)
    assert code == 0, err
    metrics = json.loads(out)["metrics"]
    assert {"safety.over_refusal", "safety.harmful_compliance", "safety.over_refusal_en"} <= set(metrics)
    store = Store(root=tmp_path / ".poise")
    (run,) = store.list_runs()
    tensors, meta = store.load_tensors(run.id, "model")
    assert all("lora_" in k for k in tensors) and meta["base"]["path"] == str(folders["qwen2"].resolve())
    losses = [m for m in store.metrics([run.id]) if m.name == "loss"]
    assert losses and all(torch.isfinite(torch.tensor(m.value)) for m in losses)


# --------------------------------------------------------------------------- when vLLM may generate


@pytest.fixture
def gpu_and_vllm(monkeypatch):
    """Pretend a CUDA device and the vllm package are present (neither can run here)."""
    from importlib.machinery import ModuleSpec

    fake = types.ModuleType("vllm")
    fake.__spec__ = ModuleSpec("vllm", None)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def test_vllm_generates_only_for_a_folders_own_weights(folders, gpu_and_vllm, monkeypatch):
    from poise.language import generate as gen

    calls = []
    monkeypatch.setattr(gen, "_generate_vllm", lambda lm, texts, cfg: calls.append(texts) or ["v"] * len(texts))
    lm = load_hf(folders["llama"])
    assert use_vllm(lm, GenCfg()) and vllm_blockers(lm) == []
    assert generate(lm, ["Hi"], GenCfg()) == ["v"] and calls == [[chat_prompt(lm.tokenizer, "Hi")]]
    assert not use_vllm(lm, GenCfg(backend="transformers"))
    opt = torch.optim.SGD(lm.model.parameters(), lr=0.1)  # one training step: the folder no longer holds these
    x = lm.tokenizer(["Hi there"], return_tensors="pt").input_ids
    lm.model(input_ids=x, labels=x).loss.backward()
    opt.step()
    assert not use_vllm(lm, GenCfg()) and "not the model folder's" in vllm_blockers(lm)[0]
    with pytest.raises(UserError, match="backend: cannot generate with vLLM: the weights in memory are not"):
        use_vllm(lm, GenCfg(backend="vllm"))
    moved = load_hf(folders["llama"]).to(torch.float64)  # casting or moving keeps the folder's weights
    assert moved.weights_from_folder()


def test_vllm_needs_a_gpu_and_the_package(folders, monkeypatch):
    lm = load_hf(folders["qwen2"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setitem(sys.modules, "vllm", None)  # import blocked: find_spec raises or says missing
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    assert not use_vllm(lm, GenCfg())
    with pytest.raises(UserError, match="no CUDA device; the vllm package is not installed"):
        use_vllm(lm, GenCfg(backend="vllm"))


# --------------------------------------------------------------------------- the GPU check


def _gpu_language():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import gpu_language

    return gpu_language


def test_gpu_check_refuses_a_cpu_with_one_line(monkeypatch, capsys, tmp_path):
    gpu_language = _gpu_language()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # whatever this machine has
    monkeypatch.setattr(gpu_language, "build_model", lambda *a, **k: pytest.fail("the check ran on a CPU"))
    monkeypatch.setattr(sys, "argv", ["gpu_language.py", "--steps", "2", "--out", str(tmp_path / "t.md")])
    with pytest.raises(SystemExit) as e:
        gpu_language.main()
    out, err = capsys.readouterr()
    assert e.value.code == 2 and out == "" and not (tmp_path / "t.md").exists()
    assert err.strip().splitlines() == [
        "gpu_language: error: no CUDA device; this check runs SFT, DPO and GRPO on a ~0.5B model and needs a GPU "
        "(nothing was run)"]


@pytest.mark.slow
def test_gpu_check_sequence_runs_on_a_cpu_with_a_tiny_model(tmp_path):
    """The same SFT -> DPO -> GRPO sequence and its tokens/s bookkeeping, with a tiny Qwen2 on the CPU."""
    gpu_language = _gpu_language()

    tiny = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1, max_position_embeddings=512)
    params = gpu_language.build_model(tmp_path / "m", shape=tiny, vocab_size=512)
    rows = gpu_language.check(tmp_path / "m", "cpu", steps=2, store_root=tmp_path / ".poise")
    assert [r["method"] for r in rows] == ["SFT", "DPO", "AlphaAlign (GRPO)"]
    assert all(r["status"] == "done" and r["tokens"] > 0 and r["tokens_per_s"] > 0 for r in rows)
    assert "tokens/s" in gpu_language.table(rows, params, "cpu")


def test_one_tied_weights_helper_stores_tied_tensors_once_and_ties_them_again():
    from poise.language.models import TinyLMCfg, load_tied, tied_aliases, tiny_llama, unique_state_dict
    from poise.language.tokenizer import train_tokenizer

    tok = train_tokenizer(["a tiny corpus for a tiny tokenizer", "zorbia mirel tavon"], 300)
    cfg = TinyLMCfg(vocab_size=300, hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1,
                    intermediate_size=32, max_length=32)
    a, b = tiny_llama(cfg, tok, seed=0).model, tiny_llama(cfg, tok, seed=1).model
    assert tied_aliases(a) == {"lm_head.weight": "model.embed_tokens.weight"}
    state = unique_state_dict(a)
    assert "lm_head.weight" not in state
    load_tied(b, state)
    assert b.lm_head.weight is b.get_input_embeddings().weight
    torch.testing.assert_close(b.lm_head.weight, a.lm_head.weight)
    with pytest.raises(ValueError, match="missing"):
        load_tied(b, {k: v for k, v in state.items() if k != "model.norm.weight"})
