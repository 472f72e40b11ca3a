"""FastClipTokenizer gives open_clip's SimpleTokenizer ids exactly, and falls back to it when it cannot."""

import copy

import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from vlkit.models import clip_tokenizer  # noqa: E402
from vlkit.models.clip_tokenizer import FastClipTokenizer, fast_clip_tokenizer  # noqa: E402

# strings whose cleaning is not trivial (unicode, HTML entities, mojibake, control characters, special
# token text) next to plain ones with punctuation, numbers, contractions, odd spacing and over-long texts
AWKWARD = [
    "",
    "   ",
    "  leading and trailing  ",
    "many   spaces\tand\ttabs\nand\r\nlines",
    "A PHOTO OF A T-Shirt/Top.",
    "it's the dog's bone; they're here, we've 'em, I'm done, you'll see, he'd go",
    "IT'S DON'T ''S 'S' ' s",
    "!!!???... --- ### $$$ %%% *** ((( ))) [[[ ]]] {{{ }}} ||| ~~~ ^^^ `` @@ __ ++ == << >>",
    "1234567890 3.14159 1,000,000 2nd 3rd 4th 0x1F 1e-5 -42",
    "itap of a {}.",
    "café crème brûlée naïve façade",
    "Ünïcödé ÅNGSTRÖM straße İstanbul ǅungla",
    "日本語のテキスト and 中文 and 한국어",
    "emoji 🐶🐱 🚀 ✔ ❤️",
    "ﬂubberiﬁc ligatures",
    "ＬＯＵＤ　ＮＯＩＳＥＳ fullwidth",
    "“curly quotes” and ‘single’ ones",
    "sÃ³ mojibake âœ” No problems",
    "fish &amp; chips &lt;b&gt; &#x2019; AT&T &",
    "a <b>tag</b> & an entity &amp;",
    "control\x00chars\x07here\x1b[31mred\x1b[0m \x7f del",
    "file\x1cseparator\x1dgroup",
    "<start_of_text> inside <END_OF_TEXT> text",
    "<|startoftext|> gpt style <|endoftext|>",
    "word " * 200,
    "supercalifragilisticexpialidocious" * 10,
    "a" * 300,
]


@pytest.fixture(scope="module")
def reference():
    return open_clip.get_tokenizer("ViT-B-32")


@pytest.fixture(scope="module")
def fast(reference):
    tokenizer = fast_clip_tokenizer(reference)
    assert isinstance(tokenizer, FastClipTokenizer)
    return tokenizer


def library_prompts() -> list[str]:
    """ProAPO's template library (CLIP's 80 templates and their type-word variants) x the class names of
    Fashion-MNIST and PASCAL VOC, plus ImageNet's 1000 class names in one template."""
    from open_clip import IMAGENET_CLASSNAMES

    from prompts_evo.data.prompts import expand_type_words, template_library
    from vlkit.data.fashion_mnist import FASHION_MNIST_CLASSNAMES
    from vlkit.data.segmentation_lists import PASCAL_CLASSNAMES

    library = expand_type_words(template_library("imagenet80"), ["clothing", "fashion product"])  # 572 templates
    prompts = [t.format(c) for c in FASHION_MNIST_CLASSNAMES for t in library]
    prompts += [t.format(c) for c in PASCAL_CLASSNAMES for t in template_library("imagenet80")]
    prompts += [f"itap of the {c}." for c in IMAGENET_CLASSNAMES]
    return prompts


def test_same_ids_as_open_clip_on_the_template_library(fast, reference):
    prompts = library_prompts()
    assert len(prompts) > 8000  # 5720 + 1600 + 1000
    assert torch.equal(fast(prompts), reference(prompts))
    # they all took the fast path (the ids above are not the reference's own encode at work)
    assert all(fast.is_plain(p) for p in prompts)


@pytest.mark.parametrize("context_length", [77, 16, 5, 2, 1])
def test_same_ids_on_awkward_strings_and_truncation(fast, reference, context_length):
    ours = fast(AWKWARD, context_length=context_length)
    assert ours.shape == (len(AWKWARD), context_length) and ours.dtype == torch.long
    assert torch.equal(ours, reference(AWKWARD, context_length=context_length))
    # and string by string (a batch mixing both paths keeps every row in place)
    for text in AWKWARD[::5]:
        assert torch.equal(fast(text, context_length=context_length), reference(text, context_length=context_length))


def test_over_long_rows_end_with_end_of_text(fast):
    ids = fast(["word " * 200, "a photo of a dog."], context_length=16)
    # the long row keeps <start_of_text> + 14 'word' tokens and its last slot is <end_of_text>; the short one is
    # <sot> a photo of a dog . <eot> (8 ids) and zero padding
    assert ids[0, 0] == fast.sot_token_id and ids[0, -1] == fast.eot_token_id and (ids[0, 1:-1] == ids[0, 1]).all()
    assert (ids[1] != 0).sum() == 8 and ids[1, 7] == fast.eot_token_id and (ids[1, 8:] == 0).all()


def test_only_non_plain_strings_reach_the_reference_encode(reference):
    fast = FastClipTokenizer(reference)
    seen = []
    fast.reference = copy.copy(reference)
    fast.reference.encode = lambda text: seen.append(text) or reference.encode(text)
    fast(AWKWARD)
    routed = {t for t in AWKWARD if not (t.isascii() and t.isprintable()) or "&" in t or "_of_text>" in t.lower()}
    assert set(seen) == routed and "a photo of a t-shirt/top." not in seen


def test_backbone_uses_the_fast_tokenizer_and_keeps_its_features():
    from vlkit.models.backbones import create_backbone

    backbone = create_backbone("tiny-random").eval()
    assert isinstance(backbone.tokenizer, FastClipTokenizer) and backbone.tokenizer.context_length == 16
    texts = ["a photo of a dog.", "itap of the cat.", "café"]
    with torch.no_grad():
        released = backbone.model.encode_text(backbone.tokenizer.reference(texts))
        assert torch.allclose(backbone.encode_text(texts, batch_size=2), released, atol=1e-6)  # same ids, tower in 2 passes


def test_attributes_and_copies_come_from_the_reference(fast, reference):
    assert fast.vocab_size == reference.vocab_size and fast.decode is not None
    clone = copy.deepcopy(fast)
    assert torch.equal(clone(["a photo of a dog."]), fast(["a photo of a dog."]))


def test_other_tokenizers_are_returned_unchanged():
    canonical = open_clip.tokenizer.SimpleTokenizer(clean="canonicalize")  # removes punctuation: not 'lower'
    assert fast_clip_tokenizer(canonical) is canonical
    hf_like = object()
    assert fast_clip_tokenizer(hf_like) is hf_like


def test_falls_back_with_a_warning_when_the_fast_one_disagrees_or_breaks(monkeypatch, reference):
    monkeypatch.setattr(clip_tokenizer.FastClipTokenizer, "_piece", lambda self, piece: [0])  # wrong ids
    with pytest.warns(UserWarning, match="different ids on the probe strings"):
        assert fast_clip_tokenizer(reference) is reference
    monkeypatch.undo()

    broken = open_clip.tokenizer.SimpleTokenizer()
    del broken.bpe_ranks  # an open_clip whose internals changed
    with pytest.warns(UserWarning, match="AttributeError"):
        assert fast_clip_tokenizer(broken) is broken
