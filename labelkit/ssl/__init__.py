"""Semi-supervised methods, registered by name. Importing this package registers all of them."""

from labelkit.ssl import (  # noqa: F401  (importing registers each method)
    association,
    fixmatch,
    meanteacher,
    pseudolabel,
    simmatch,
    supervised,
)
from labelkit.ssl.base import (
    METHODS,
    Batch,
    Method,
    MethodContext,
    MethodOutput,
    Outputs,
    build_methods,
    method_class,
    method_config,
    register,
)

__all__ = [
    "METHODS",
    "Batch",
    "Method",
    "MethodContext",
    "MethodOutput",
    "Outputs",
    "build_methods",
    "method_class",
    "method_config",
    "register",
]
