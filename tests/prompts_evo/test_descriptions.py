import json

import pytest

from prompts_evo.data.prompts import JsonDescriptions, TemplateDescriptions, read_class_prompts, write_class_prompts
from prompts_evo.methods.proapo import make_description_source
from prompts_evo.models.descriptions import LLMDescriptions, _first_sentence

CLASSES = ["dress", "ankle boot"]


def test_roundtrip_with_provenance_sidecar(tmp_path):
    path = write_class_prompts(tmp_path / "p.json", {"dress": ["A dress.", "A dress."], "ankle boot": ["Boot."]}, {"seed": 3})
    assert read_class_prompts(path, CLASSES) == {"dress": ["A dress."], "ankle boot": ["Boot."]}  # de-duplicated
    assert json.loads((tmp_path / "p.json.provenance.json").read_text()) == {"seed": 3}
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(
    "content, match",
    [
        ("", "empty"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ("{}", "JSON object"),
        ('{"dress": ["a"]}', "lacks 1 of 2 classes"),
        ('{"dress": "a dress", "ankle boot": ["b"]}', "list of str"),
        ('{"dress": [" "], "ankle boot": ["b"]}', "no non-empty sentence"),
    ],
)
def test_bad_description_files(tmp_path, content, match):
    path = tmp_path / "d.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        JsonDescriptions(path).describe(CLASSES)


def test_duplicate_and_missing_inputs(tmp_path):
    path = write_class_prompts(tmp_path / "p.json", {"dress": ["a"]}, {})
    with pytest.raises(ValueError, match="distinct"):
        read_class_prompts(path, ["dress", "dress"])
    with pytest.raises(FileNotFoundError):
        read_class_prompts(tmp_path / "nope.json", CLASSES)
    with pytest.raises(ValueError, match="description_file"):
        make_description_source("json")
    with pytest.raises(ValueError, match="one of"):
        make_description_source("gpt4")


def test_template_source():
    out = TemplateDescriptions(["a photo of a {}.", "art of the {}."]).describe(CLASSES)
    assert out["ankle boot"] == ["a photo of a ankle boot.", "art of the ankle boot."]


def test_first_sentence():
    assert _first_sentence("  A dress is a one-piece garment. It has a skirt.") == "A dress is a one-piece garment."
    assert _first_sentence("**Sure**") == ""  # too short to describe anything
    assert _first_sentence("It has a long flowing skirt") == "It has a long flowing skirt"


def test_llm_source_queries_once_and_records_prompts(tmp_path, monkeypatch):
    calls = []

    def fake_generate(self, prompts):
        calls.append(list(prompts))
        return [f"Sample {i} surely has four parts. Extra." for p in prompts for i in range(self.samples_per_question)]

    monkeypatch.setattr(LLMDescriptions, "generate", fake_generate)
    src = LLMDescriptions(model_dir="fake-model", samples_per_question=2, cache_dir=str(tmp_path), seed=7)
    first = src.describe(CLASSES)
    # 5 CuPL questions per class, one batched call; completions cut to their first sentence
    assert len(calls) == 1 and len(calls[0]) == 10
    assert calls[0][1] == "How can you identify a dress?" and calls[0][5] == "Describe what an ankle boot looks like."
    assert first["dress"] == ["Sample 0 surely has four parts.", "Sample 1 surely has four parts."]
    again = LLMDescriptions(model_dir="fake-model", samples_per_question=2, cache_dir=str(tmp_path), seed=7).describe(CLASSES)
    assert again == first and len(calls) == 1  # reused from the cached JSON
    sidecar = json.loads(next(tmp_path.glob("*.provenance.json")).read_text())
    assert sidecar["model"] == "fake-model" and sidecar["seed"] == 7
    assert sidecar["prompts"]["dress"][0] == "Describe what a dress looks like."
    LLMDescriptions(model_dir="fake-model", samples_per_question=2, cache_dir=str(tmp_path), seed=8).describe(CLASSES)
    assert len(calls) == 2  # another seed is another query
