"""The anime recommender's library: one module per stage (ingest → validate → matrix → train / ranking → evaluate
→ registry), plus serving and the `animerec` CLI.

The quiet, local defaults of every tool the pipeline drives are set here, once, before any of them is imported
(an environment variable set by the user wins): no analytics or telemetry, servers on 127.0.0.1, Keras on
TensorFlow, TensorFlow's C++ logging at warnings.
"""

import os

LOCAL_DEFAULTS = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_API_HOST": "127.0.0.1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_UI_ENABLED": "true",
    "KERAS_BACKEND": "tensorflow",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}
for _name, _value in LOCAL_DEFAULTS.items():
    os.environ.setdefault(_name, _value)
