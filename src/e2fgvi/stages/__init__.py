"""One short entry point per DVC stage: ``python -m e2fgvi.stages.<name>``.

Paths arrive as command-line arguments written in dvc.yaml; hyperparameters come from
params.yaml through ``e2fgvi.config``. Each stage defines ``add_arguments`` and ``run`` and runs
through ``e2fgvi.entry.run_module``.
"""
