"""Distribution strategies for the custom training loop.

- none: the default (single-device) strategy.
- mirrored: `tf.distribute.MirroredStrategy` over the GPUs of this machine,
  or over its logical CPU devices when it has no GPU (see `split_cpu`).
- multi_worker: `tf.distribute.MultiWorkerMirroredStrategy`; the cluster and
  this process's task come from the TF_CONFIG environment variable.
- auto: multi_worker when TF_CONFIG names more than one task, mirrored with
  more than one GPU, else none.

The strategy must be made before any other TensorFlow op runs (TF fixes its
devices, and the cluster of MultiWorkerMirroredStrategy, at start-up).
"""
import json
import os

import tensorflow as tf

from ptychonet_tf.utils.errors import UserError

DISTRIBUTIONS = ("auto", "none", "mirrored", "multi_worker")


def split_cpu(count):
  """Splits the first physical CPU into `count` logical devices (before TF starts)."""
  if count <= 1:
    return
  cpus = tf.config.list_physical_devices("CPU")
  try:
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * count)
  except RuntimeError as e:  # TF already initialised its devices.
    raise RuntimeError(f"cannot split the CPU into {count} devices after "
                       f"TensorFlow has started ({e})") from e


def _tf_config():
  raw = os.environ.get("TF_CONFIG", "")
  if not raw:
    return {}
  try:
    config = json.loads(raw)
  except ValueError as e:
    raise UserError(f"TF_CONFIG is not valid JSON ({e})")
  if not isinstance(config, dict):
    raise UserError("TF_CONFIG must be a JSON object with 'cluster' and 'task'")
  return config


def _cluster_size(config):
  cluster = config.get("cluster", {})
  return sum(len(v) for k, v in cluster.items() if k in ("chief", "worker"))


def make_strategy(name):
  """Builds the tf.distribute.Strategy `name` (one of DISTRIBUTIONS)."""
  if name not in DISTRIBUTIONS:
    raise UserError(f"distribution {name!r} is not one of {DISTRIBUTIONS}")
  config = _tf_config()
  if name == "auto":
    if _cluster_size(config) > 1:
      name = "multi_worker"
    elif len(tf.config.list_physical_devices("GPU")) > 1:
      name = "mirrored"
    else:
      name = "none"
  if name == "none":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
      return tf.distribute.MirroredStrategy([d.name for d in gpus])
    cpus = tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([d.name for d in cpus])
  if config:
    task = config.get("task", {})
    if task.get("type") not in ("chief", "worker") or "index" not in task:
      raise UserError("TF_CONFIG needs a task {'type': 'chief'|'worker', "
                      "'index': i} for the multi_worker distribution")
    cluster = config.get("cluster", {})
    if len(cluster.get(task["type"], [])) <= task["index"]:
      raise UserError(f"TF_CONFIG task {task} is not in its cluster {cluster}")
  return tf.distribute.MultiWorkerMirroredStrategy()


def task_info(strategy):
  """(task_type, task_id, is_chief) of this process; (None, 0, True) if single."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return None, 0, True
  task_type, task_id = resolver.task_type, resolver.task_id or 0
  cluster = resolver.cluster_spec().as_dict()
  if "chief" in cluster:
    is_chief = task_type == "chief"
  else:
    is_chief = task_type == "worker" and task_id == 0
  return task_type, task_id, is_chief


def num_workers(strategy):
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return 1
  cluster = resolver.cluster_spec().as_dict()
  return len(cluster.get("chief", [])) + len(cluster.get("worker", []))
