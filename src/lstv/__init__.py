"""Zero-shot LSTV screening from the uncertainty of a disc-level localizer.

Heavy imports (torch, timm, pydicom) live inside the modules that need them, so importing
the package and ``lstv --help`` stay fast.
"""

__version__ = "0.1.0"
