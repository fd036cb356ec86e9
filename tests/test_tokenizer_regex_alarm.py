"""transformers 4.57's false "incorrect regex pattern" warning on our (correct) Qwen2.5 tokenizer.

The directories here are what users load: the built-in tokenizer files next to
a config.json written by this transformers (as ``trainer export`` writes them).
Plain transformers warns on them; our loaders must not, must keep Qwen's ids
(the built-in's, which tests/test_tokenizer.py checks against the official
tokenizer), and must leave the warning alone for a tokenizer whose regex differs.
"""

from __future__ import annotations

import json
import shutil

import pytest

TEXTS = ["吾輩は猫である。名前はまだ無い。", "Qwen2.5 tokenizes 12345 digits one by one.\n\n  end", "絵文字😀も"]


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory, qwen):
    """The built-in tokenizer files plus a config.json as transformers 4.57.x saves it."""
    import transformers

    folder = tmp_path_factory.mktemp("exported")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt"):
        shutil.copy(qwen.hf_dir / name, folder / name)
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"],
                                                    "transformers_version": transformers.__version__}))
    return folder


@pytest.fixture
def capfd():
    """What transformers logs (its own handler writes to a stream pytest may not capture)."""
    import logging

    class Collect(logging.Handler):
        def __init__(self):
            super().__init__()
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    handler = Collect()
    root = logging.getLogger("transformers")
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)


def _warns(collected, load) -> tuple[bool, object]:
    collected.messages.clear()
    loaded = load()
    text = "\n".join(collected.messages)
    return "fix_mistral_regex" in text or "incorrect regex pattern" in text, loaded


def test_plain_transformers_warns_here(saved_dir, capfd):
    """The control: without our check this transformers prints the warning (else the tests below prove nothing)."""
    from transformers import AutoTokenizer

    warned, _ = _warns(capfd, lambda: AutoTokenizer.from_pretrained(str(saved_dir)))
    if not warned:
        pytest.skip("this transformers version does not print the Mistral-regex warning")


def test_jpcorpus_loader_is_silent_and_keeps_qwen_ids(saved_dir, capfd, qwen):
    from jpcorpus.tokenizer import load_tokenizer

    warned, tok = _warns(capfd, lambda: load_tokenizer(str(saved_dir), fast_path=False).hf)
    assert not warned
    assert [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS] == \
        [list(ids) for ids in qwen.encode_batch(TEXTS)]


def test_trainer_eval_loader_is_silent(saved_dir, tmp_path, capfd, qwen):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from trainer.evaluate.models import load_model

    model_dir = tmp_path / "model"
    shutil.copytree(saved_dir, model_dir)
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=151936, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
    Qwen2ForCausalLM(config).save_pretrained(model_dir)  # config.json by this transformers, as trainer export
    warned, loaded = _warns(capfd, lambda: load_model(model_dir, device="cpu", dtype="float32"))
    assert not warned
    assert loaded.tokenizer(TEXTS[1], add_special_tokens=False)["input_ids"] == list(qwen.encode_batch(TEXTS[1:2])[0])


def test_another_regex_keeps_the_warning(saved_dir, tmp_path, capfd):
    from transformers import AutoTokenizer

    from jpcorpus.tokenizer.regex_alarm import has_qwen2_pattern, regex_alarm_checked

    other = tmp_path / "other"
    shutil.copytree(saved_dir, other)
    spec = json.loads((other / "tokenizer.json").read_text(encoding="utf-8"))
    spec["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\p{L}+|\p{N}+|\s+|."
    (other / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    assert has_qwen2_pattern(saved_dir) and not has_qwen2_pattern(other)
    plain, _ = _warns(capfd, lambda: AutoTokenizer.from_pretrained(str(other)))
    with regex_alarm_checked(other):
        checked, _ = _warns(capfd, lambda: AutoTokenizer.from_pretrained(str(other)))
    assert checked == plain
