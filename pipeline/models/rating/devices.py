"""Where Keras trains the rating model: one device, or several in step through `tf.distribute.MirroredStrategy`.

With one device TensorFlow places the fit itself (its first GPU when it sees one, else the CPU). With several GPUs,
or a CPU split into several logical devices, `MirroredStrategy` keeps a copy of the model on each, splits every
batch between them and sums their gradients before the optimizer's step. The embedding gradients stay sparse
(`tf.IndexedSlices`) through that sum: the devices exchange the rows their share of the batch touched, never
whole tables, and the sparse optimizers apply the summed rows on each copy (optimizers.py).
"""

from __future__ import annotations

from typing import Literal

import tensorflow as tf

Devices = Literal["all", "one"]


def training_strategy(devices: Devices) -> tf.distribute.Strategy:
    """`MirroredStrategy` over every visible GPU (or, with none, every logical CPU device) when there are several
    and `devices` is "all"; otherwise TensorFlow's default, one device."""
    gpus = tf.config.list_logical_devices("GPU")
    candidates = gpus or tf.config.list_logical_devices("CPU")
    if devices == "all" and len(candidates) > 1:
        return tf.distribute.MirroredStrategy([device.name for device in candidates])
    return tf.distribute.get_strategy()


def device_description(strategy: tf.distribute.Strategy) -> str:
    """What trained the model, as the run log says it: "CPU", "GPU (NVIDIA H100 80GB HBM3)", or "2 × CPU
    (MirroredStrategy)"."""
    if strategy.num_replicas_in_sync > 1:
        kind = strategy.extended.worker_devices[0].rsplit(":", 2)[-2]
        return f"{strategy.num_replicas_in_sync} × {_named(kind)} ({type(strategy).__name__})"
    return _named("GPU" if tf.config.list_logical_devices("GPU") else "CPU")


def _named(kind: str) -> str:
    if kind != "GPU":
        return kind
    details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
    return f"GPU ({details.get('device_name', 'unnamed')})"
