"""The toy world: a synthetic world, its models trained from scratch, the embedded checkpoint, and its evaluation.

A client of ``zeroft`` (the library) and ``train`` (the trainer); neither imports it. The
command line is ``python -m toyworld`` (toyworld/__main__.py).

The core, which builds the embedded checkpoint and scores it:

- world.py: objects (identity, pose, context), rendering and captions;
- scenes.py: rendered scenes as tensors, and the two training streams on disk;
- models.py: the toy-sized VAE, text encoder, UNets and judge;
- stages.py: the pretraining stages (VAE, object encoder, judge, base model);
- budget.py: steps and batch sizes per stage (``Budget``) and the zeroft stage's trainer config;
- runtime.py: the device, rendering processes and resumable stage state;
- build.py: every stage, from nothing to the embedded checkpoint (``python -m toyworld build``);
- grow.py: a lat32 model grown out of a trained v1 one (``build --grow-from``);
- evaluate.py: the judge's reading of generations (identity, text, pose copying);
- curve.py: accuracy against training steps, over a run's saved training states.

experiments/ holds the experiments, clients of the core that the core never imports (listed in
toyworld/experiments/__init__.py). What they measured is under toyworld/results/.
"""

from zeroft import quiet  # noqa: F401  other libraries' import-time noise, filtered before they load
