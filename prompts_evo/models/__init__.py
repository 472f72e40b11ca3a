"""ProAPO's models layer: text features of prompts and what builds them.

- ``prompt_embeddings``: :class:`PromptEmbeddingCache`, each distinct prompt string encoded once per
  backbone (persisted through ``vlkit.cache.KeyedCache``);
- ``descriptions``: :class:`LLMDescriptions`, class descriptions from a local causal LM (cached with provenance);
- ``search``: :class:`ProAPOSearch`, the two-stage search engine over those text features, and its
  settings :class:`SearchSettings`.

No Lightning, no data loading: ``prompts_evo.methods.proapo.LitProAPO`` puts these together with the data layer.
"""
