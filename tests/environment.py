"""Test helper: environment variables put back as they were after a block that sets them (server settings)."""
import os
from contextlib import contextmanager


@contextmanager
def restored_environ(*names: str):
    """Within the block, ``os.environ`` may set or change ``names``; afterwards each has its former value again
    (or is unset, if it was unset)."""
    saved = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
