"""Test-wide settings: no network, no pip calls from brainscore-vision, no result caching, a private data home."""
import os
import tempfile

# Must be set before brainscore_vision is imported anywhere.
os.environ["BS_INSTALL_DEPENDENCIES"] = "no"
os.environ["RESULTCACHING_DISABLE"] = "1"
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ["BRAINSCORE_SKIP_MEMORY_CHECK"] = "1"
_TMP = tempfile.mkdtemp(prefix="bsitmaps-tests-")
os.environ.setdefault("BRAINIO_HOME", os.path.join(_TMP, "brainio"))
os.environ.setdefault("BRAINSCORE_HOME", os.path.join(_TMP, "brainscore"))
os.environ.setdefault("RESULTCACHING_HOME", os.path.join(_TMP, "result_caching"))
os.environ["BRAINSCORE_ITMAPS_HOME"] = os.path.join(_TMP, "home")
os.environ.setdefault("OMP_NUM_THREADS", "2")
