import pytest


def test_build_demo_and_its_callbacks():
    gr = pytest.importorskip("gradio")
    from demos.minionerec import _resolve_titles, allowed_next, build_demo, load_recommender, recommend_table

    demo = build_demo()
    assert isinstance(demo, gr.Blocks)
    module, data = load_recommender()
    sample = data.splits["test"][0]
    rows = recommend_table(module, data, list(sample.history))
    assert len(rows) == 10 and len({r[1] for r in rows}) == 10 and all(r[1] in data.items for r in rows)
    # level 0 of random-8x2 IDs over 48 items: 8 codes; a complete ID allows only EOS; a bogus one nothing
    assert allowed_next(module, "").startswith("8 allowed")
    assert "complete ID" in allowed_next(module, module.sids.sid_string(0))
    assert "nothing" in allowed_next(module, "<a_99>")
    assert _resolve_titles(data.title("3"), data) == ["3"]
    with pytest.raises(ValueError, match="unknown item title"):
        _resolve_titles("no such thing", data)
