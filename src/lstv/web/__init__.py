"""The package's web pages: the ``lstv serve`` demo (:mod:`lstv.web.demo`), the ``lstv
review`` workstation (:mod:`lstv.web.review`), uploads (:mod:`lstv.web.upload`) and what they
share (:mod:`lstv.web.server`: security headers, a server that names no version, the study
viewer in ``static/``)."""

from lstv.web.demo import (
    BUSY_RETRY_AFTER_S,
    DEFAULT_MAX_ANALYSES,
    DEFAULT_MAX_UPLOAD_MB,
    ServerBusy,
    analyse_folder,
    create_app,
    example_study,
)
from lstv.web.server import (
    SECURITY_HEADERS,
    DemoFlask,
    QuietRequestHandler,
    lstv_flask,
    make_demo_server,
    serving,
)
from lstv.web.upload import MAX_FILES, ZIP_METHODS, UploadError, save_upload, zip_members

__all__ = [
    "BUSY_RETRY_AFTER_S",
    "DEFAULT_MAX_ANALYSES",
    "ServerBusy",
    "DEFAULT_MAX_UPLOAD_MB",
    "MAX_FILES",
    "SECURITY_HEADERS",
    "ZIP_METHODS",
    "DemoFlask",
    "QuietRequestHandler",
    "UploadError",
    "analyse_folder",
    "create_app",
    "example_study",
    "lstv_flask",
    "make_demo_server",
    "save_upload",
    "serving",
    "zip_members",
]
