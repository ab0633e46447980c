"""sgdwalk: watch SGD walk the loss surface of your network.

``import sgdwalk`` is cheap and pulls in neither torch nor any UI library: the records, the errors,
the session statuses and the session reader are plain Python (``sgdwalk.open_session("NAME")``,
``sgdwalk.list_sessions()``); ``sgdwalk.Walker``, which measures your own training loop, loads
torch on first use. The built-in trainer is the command line's (``sgdwalk run``).
"""

from sgdwalk.errors import (
    ConfigError,
    DataError,
    LaunchError,
    SessionError,
    SgdwalkError,
    StorageError,
    UsageError,
)
from sgdwalk.records import (
    DIVERGED,
    FAILED,
    FINISHED,
    INTERRUPTED,
    RUNNING,
    STATUSES,
    Alignment,
    CurvatureMeasured,
    EpochEnded,
    EventLogged,
    PhaseProgressed,
    Record,
    StepMeasured,
)
from sgdwalk.session import Session, list_sessions, open_session

__all__ = [
    "DIVERGED",
    "FAILED",
    "FINISHED",
    "INTERRUPTED",
    "RUNNING",
    "STATUSES",
    "Alignment",
    "ConfigError",
    "CurvatureMeasured",
    "DataError",
    "EpochEnded",
    "EventLogged",
    "LaunchError",
    "PhaseProgressed",
    "Record",
    "Session",
    "SessionError",
    "SgdwalkError",
    "StepMeasured",
    "StorageError",
    "UsageError",
    "Walker",
    "list_sessions",
    "open_session",
]


def __getattr__(name: str):  # noqa: ANN202
    if name == "Walker":  # loads torch: only when asked for
        from sgdwalk.walker import Walker

        return Walker
    raise AttributeError(name)
