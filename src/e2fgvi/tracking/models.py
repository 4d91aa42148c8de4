"""The trained generator as an MLflow model: a pyfunc that inpaints clips, in the model registry.

``InpaintingModel.predict({"frames": (t, h, w, 3) uint8, "masks": (t, h, w) uint8})`` returns
the completed (t, h, w, 3) uint8 frames. The model code is not here: the evaluate stage names
an inpainter factory (``"module:function"``, e.g. ``e2fgvi.eval.inpainter:load_inpainter``) that
``load_context`` imports and calls with the generator file, so e2fgvi's model and eval code
never import mlflow. The e2fgvi package is copied into the model (``code_paths``), so
``mlflow.pyfunc.load_model("models:/<name>/<version>")`` runs wherever its pip requirements
(torch, torchvision, numpy, ...) are installed.

A ``model`` record (``RunLogger.log_model``) holds ``files`` (``generator``: the weights;
``example``: an ``.npz`` with a small ``frames``/``masks`` clip), ``loader``, ``params``
(inference defaults: ints), ``requirements``, ``registered_model`` ('' = log only),
``version_tags`` and ``description``.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.models import Model, ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.tracking import MlflowClient
from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

log = logging.getLogger(__name__)

MODEL_NAME = "generator"  # the logged model's name in the run
_PACKAGE = Path(__file__).resolve().parents[1]  # the e2fgvi package


class InpaintingModel(PythonModel):
    """pyfunc wrapper around an inpainter factory named ``"module:function"``."""

    # MLflow would wrap ``predict`` for type-hint validation and warn (in every process that
    # loads the model) that it has none; its type-hint schemas cannot name tensors, so the
    # explicit signature (``signature``) validates the input instead.
    _skip_type_hint_validation = True

    def __init__(self, loader: str) -> None:
        self.loader = loader
        self._inpaint = None

    def load_context(self, context) -> None:
        module, _, name = self.loader.partition(":")
        factory = getattr(importlib.import_module(module), name)
        self._inpaint = factory(context.artifacts["generator"])

    def predict(self, context, model_input, params=None):
        return self._inpaint(model_input["frames"], model_input["masks"], **(params or {}))


def signature(defaults: dict[str, int]) -> ModelSignature:
    """Named uint8 tensors in and out; the inference settings as params with defaults."""
    clip = TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3), "frames")
    holes = TensorSpec(np.dtype(np.uint8), (-1, -1, -1), "masks")
    out = TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3), "frames")
    params = ParamSchema([ParamSpec(k, "long", int(v)) for k, v in defaults.items()])
    return ModelSignature(Schema([clip, holes]), Schema([out]), params)


def _package_copy(folder: Path) -> Path:
    """The e2fgvi sources without caches, for ``code_paths``."""
    target = folder / _PACKAGE.name
    shutil.copytree(_PACKAGE, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


@contextmanager
def _fluent_target(uri: str, experiment_id: str) -> Iterator[None]:
    """MLflow's process-wide tracking URI and experiment set for the fluent API (``Model.log``).

    ``Model.log`` files its logged model under the fluent API's experiment, which is "Default"
    unless ``MLFLOW_EXPERIMENT_ID`` names one, not under its run's experiment; so the run's
    experiment is named here, or the run page would list no logged model. MLflow writes the URI
    into ``os.environ`` and, on leaving, writes back whatever it held before; both variables are
    restored exactly, or a later call in the same process (a test, a notebook) would silently log
    to this server and experiment.
    """
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")
    saved = {name: os.environ.get(name) for name in names}
    os.environ["MLFLOW_EXPERIMENT_ID"] = experiment_id
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def log_and_register(client: MlflowClient, run_id: str, record: dict[str, Any]) -> None:
    """Log the record's model to run ``run_id``; register it and tag the version when named."""
    with np.load(record["files"]["example"]) as example:
        clip = {"frames": example["frames"], "masks": example["masks"]}
    name = record["registered_model"] or None
    experiment_id = client.get_run(run_id).info.experiment_id
    with tempfile.TemporaryDirectory() as tmp, _fluent_target(client.tracking_uri, experiment_id):
        info = Model.log(
            artifact_path=None,
            name=MODEL_NAME,
            flavor=mlflow.pyfunc,
            run_id=run_id,
            python_model=InpaintingModel(record["loader"]),
            artifacts={"generator": record["files"]["generator"]},
            code_paths=[str(_package_copy(Path(tmp)))],
            signature=signature(record["params"]),
            input_example=(clip, record["params"]),
            pip_requirements=record["requirements"],
            registered_model_name=name,
            await_registration_for=0,
        )
    log.info("logged model %s to run %s", info.model_uri, run_id)
    if name is None:
        return
    version = str(info.registered_model_version)
    for key, value in record["version_tags"].items():
        client.set_model_version_tag(name, version, key, value)
    client.update_model_version(name, version, description=record["description"])
    log.info("registered %s version %s (models:/%s/%s)", name, version, name, version)
