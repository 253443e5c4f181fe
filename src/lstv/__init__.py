"""Zero-shot LSTV screening from the uncertainty of a disc-level localizer.

The notebook API (``read_series``, ``load_model``, ``analyse_volume``) is imported on first use,
so importing the package and ``lstv --help`` stay fast.
"""

__version__ = "0.1.0"

_API = ("read_series", "load_model", "analyse_volume")


def __getattr__(name):
    if name in _API:
        from lstv import api

        return getattr(api, name)
    raise AttributeError(f"module 'lstv' has no attribute {name!r}")


__all__ = ["__version__", *_API]
