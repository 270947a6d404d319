"""toylab: a laboratory for mechanistic interpretability on toy models with known circuits.

    import toylab
    zm = toylab.zoo.load("induction-2l")        # model, task and card
    logits, cache = zm.model.run_with_cache(zm.task.sample(8, seed=0).tokens)
"""

__version__ = "0.1.0"

from toylab import tasks, zoo  # noqa: E402  (zoo imports models and train)
from toylab.hooks import ActivationCache, HookPoint, UnknownNameError, act_name  # noqa: E402
from toylab.models import Transformer, TransformerConfig  # noqa: E402

__all__ = [
    "ActivationCache",
    "HookPoint",
    "Transformer",
    "TransformerConfig",
    "UnknownNameError",
    "act_name",
    "tasks",
    "zoo",
]
