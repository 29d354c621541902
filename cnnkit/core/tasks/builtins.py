"""Core's own registrations, loaded through pluggy like any plugin: the generic tasks, their
default losses and the dataset adapters that are always present."""

from cnnkit.core.base.hookspecs import hookimpl
from cnnkit.core.base.registry import LossSpec, TaskSpec

_T = "cnnkit.core.tasks"


@hookimpl
def register_tasks(register):
    register(TaskSpec("classify", f"{_T}.classify:ClassifyTask", "image classification (top-1/top-5)"))
    register(TaskSpec("detect", f"{_T}.detect:DetectionTask",
                      "object detection (mAP); models follow torchvision's detection contract"))
    register(TaskSpec("embed", f"{_T}.embed:EmbedTask", "metric learning for verification (ROC AUC)"))
    register(TaskSpec("stylize", f"{_T}.stylize:StylizeTask", "image-to-image stylization"))


@hookimpl
def register_losses(register):
    register(LossSpec("cross_entropy", f"{_T}.classify:cross_entropy", ("classify",), {"aux_weight": 0.3},
                      "cross-entropy with label smoothing; auxiliary heads weighted by --aux-weight"))


@hookimpl
def register_datasets(register):
    from cnnkit.core.data import register_builtin

    register_builtin(register)
