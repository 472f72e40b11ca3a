"""ProAPO's data plumbing: labelled shots, held-out and test features from the shared feature cache."""

from prompts_evo.data.features import DATASET_TYPE_WORDS, TaskFeatures, load_task_features

__all__ = ["DATASET_TYPE_WORDS", "TaskFeatures", "load_task_features"]
