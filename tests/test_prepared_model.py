"""models/brown-small: the model prepared by the course's command line loads in transformers and still
scores what its eval.json recorded, on the same fixed held-out masks."""

import json

import pytest
import torch

from course_lib.paths import ROOT

FOLDER = ROOT / "models" / "brown-small"


@pytest.fixture(scope="module")
def recorded():
    return json.loads((FOLDER / "eval.json").read_text())


def test_the_folder_has_what_its_readme_promises(recorded):
    names = {p.name for p in FOLDER.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "eval.json",
        "metrics.jsonl",
        "hparams.json",
        "small.yaml",
        "README.md",
    } <= names
    assert sum(p.stat().st_size for p in FOLDER.iterdir()) <= 25 * 2**20
    readme = (FOLDER / "README.md").read_text()
    assert "python -m course_lib.train --config" in readme and f"{recorded['eval_loss']:.3f}" in readme
    rows = [json.loads(line) for line in (FOLDER / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == recorded["steps"]


def test_it_loads_with_the_auto_classes_and_fills_masks():
    from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

    model = AutoModelForMaskedLM.from_pretrained(FOLDER, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(FOLDER, local_files_only=True)
    assert type(model).__name__ == "RoFormerForMaskedLM" and len(tokenizer) == model.config.vocab_size
    fill = pipeline("fill-mask", model=str(FOLDER), tokenizer=str(FOLDER), device="cpu")
    top = fill("The President of the United <mask> spoke to Congress.", top_k=5)
    assert "States" in [p["token_str"].strip() for p in top]


def recorded_config():
    """The config the model was trained with: models/brown-small/small.yaml, a copy of configs/small.yaml made
    before the command line's sections were renamed (top-level name, output_dir, resume, fill_mask;
    data.block_size), its old keys moved to their new places as the schema's RENAMED says."""
    import yaml

    from course_lib.cli.schema import PretrainConfig
    from course_lib.config import flat, from_dict

    values = {}
    for key, value in flat(yaml.safe_load((FOLDER / "small.yaml").read_text())).items():
        node, (*sections, last) = values, PretrainConfig.RENAMED.get(key, key).split(".")
        for section in sections:
            node = node.setdefault(section, {})
        node[last] = value
    return from_dict(PretrainConfig, values)


def test_the_recorded_config_is_the_shipped_one():
    from course_lib.cli import pretrain as cli

    config, shipped = recorded_config(), cli.load_config(ROOT / "configs" / "small.yaml")
    assert (config.data, config.model, config.train) == (shipped.data, shipped.model, shipped.train)
    assert config.run.name == "small"


def test_its_held_out_loss_is_the_recorded_one(recorded):
    from transformers import AutoModelForMaskedLM

    from course_lib import model as model_lib
    from course_lib import tokenization, training
    from course_lib.cli import pretrain as cli

    config = recorded_config()
    tokenizer = tokenization.load_tokenizer(FOLDER)
    _, eval_data = cli.prepare(config, tokenizer)
    hf = AutoModelForMaskedLM.from_pretrained(FOLDER, local_files_only=True)
    ours = model_lib.from_roformer(hf, masked_only=True)
    torch.set_num_threads(2)
    result = training.evaluate(ours, eval_data)
    assert result["loss"] == pytest.approx(recorded["eval_loss"], abs=1e-3)
    assert result["loss"] < recorded["no_context_loss"] - 1.2  # what the README claims for small.yaml
