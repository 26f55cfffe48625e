"""The toy world's experiments: clients of the core (toyworld's build, models, evaluation), which never imports them.

Each is one command of ``python -m toyworld`` (toyworld/__main__.py); results go to toyworld/results/:

- ablations.py: ``ablations``, the paper's ablations retrained at one budget;
- recipes.py: ``recipes``, the paper's data recipe against IP-Adapter's at one budget, scored by conflicts.py;
- tokens.py: ``tokens``, the paper's recipe with pooled object tokens against patch tokens (IP-Adapter Plus);
- conflicts.py: photo against text, the scoring of ``recipes``, ``copying`` and ``interval`` (background copy, ceiling);
- copying.py: ``copying``, does IP-Adapter's data recipe teach the shipped model to copy its reference;
- interval.py: ``interval``, three-branch guidance only on an interval of noise levels against every step;
- patterns.py: ``patterns``, can the generator draw each pattern at all;
- personalization.py: ``personalization``, one encoder pass against per-object fine-tuning to the same score;
- finetune.py: the per-object fine-tuning baseline (DreamBooth-style, one photo) of ``eval`` and ``personalization``;
- steps.py: ``steps``, the cost of one base-model training step per UNet, batch and precision;
- report.py: ``eval``, the held-out evaluation report of a checkpoint.
"""
