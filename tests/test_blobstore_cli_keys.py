"""The blobstore command with encryption at rest: cat decrypts, fsck --full authenticates,
rotate-master-key re-wraps company keys while the server runs, encrypt converts a plain store
and survives kill -9 with fsck clean."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from blobstore import inline
from blobstore.cli import main
from blobstore.errors import KeyUnavailable
from blobstore.keyring import KeyRing
from blobstore.refs import BlobRef, is_sealed
from blobstore.sealed import SealedBackend
from filesvc.appkeys import DATABASE, STORE
from filesvc.settings import Settings
from tests.conftest import AppFactory
from tests.engines import migrated
from tests.helpers import Api, error_of, multipart, token

BLOBSTORE = Path(sys.executable).parent / "blobstore"


async def cli(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def ref_of(api: Api, file_id: str) -> BlobRef:
    async with api.client.app[DATABASE].read() as tx:
        row = await tx.fetchrow("SELECT ref FROM manifest_entries WHERE file_id = ?", file_id)
    assert row is not None
    return BlobRef(str(row[0]))


def new_key(path: Path) -> bytes:
    key = os.urandom(32)
    path.write_text(base64.b64encode(key).decode() + "\n")
    return key


@pytest.mark.sqlite_only
async def test_cat_show_and_stat_read_a_sealed_inline_row(
    api: Api, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    data_dir = str(tmp_path / "data")
    res = await api.upload(b"the plaintext of a small file")
    ref = await ref_of(api, res["id"])
    assert is_sealed(ref) and await inline.lookup(api.client.app[DATABASE], ref) is not None
    capfd.readouterr()
    assert await cli("cat", "--data-dir", data_dir, ref) == 0
    assert capfd.readouterr().out == "the plaintext of a small file"
    assert await cli("show", "--data-dir", data_dir, "--json", res["id"]) == 0
    shown = json.loads(capfd.readouterr().out)
    assert [(c["ref"], c["stored_size"]) for c in shown["chunk"]] == [(ref, 29)]
    assert await cli("stat", "--data-dir", data_dir, "--json") == 0
    counted = json.loads(capfd.readouterr().out)
    assert (counted["blobs"], counted["inline_blobs"], counted["inline_bytes"]) == (1, 1, 29)


@pytest.mark.blob_files
@pytest.mark.sqlite_only
async def test_cat_decrypts_and_a_wrong_key_is_one_line(
    api: Api, tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = str(tmp_path / "data")
    res = await api.upload(b"the plaintext of a sealed file")
    ref = await ref_of(api, res["id"])
    assert is_sealed(ref)
    capfd.readouterr()
    assert await cli("cat", "--data-dir", data_dir, ref) == 0
    assert capfd.readouterr().out == "the plaintext of a sealed file"
    monkeypatch.setenv("FILESVC_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())
    assert await cli("cat", "--data-dir", data_dir, ref) == 2
    assert capfd.readouterr().err == (
        "blobstore: the master key is not the one this store's keys are wrapped with (key check"
        " value differs); set FILESVC_MASTER_KEY to the store's key\n"
    )


@pytest.mark.blob_files
@pytest.mark.sqlite_only
async def test_fsck_full_authenticates_sealed_blobs(
    api: Api, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    good = await api.upload(b"intact" * 1000)
    bad = await api.upload(b"tampered" * 1000)
    backend = api.client.app[STORE].backend
    assert isinstance(backend, SealedBackend)
    path = backend.local_path(await ref_of(api, bad["id"]))  # type: ignore[attr-defined]
    raw = bytearray(path.read_bytes())
    raw[100] ^= 1
    path.write_bytes(bytes(raw))
    capfd.readouterr()
    assert await cli("fsck", "--data-dir", str(data_dir), "--full", "--json") == 1
    findings = [json.loads(line) for line in capfd.readouterr().out.splitlines()]
    [corrupt] = [f for f in findings if f.get("kind") == "corrupt_blob"]
    assert "segment 0 failed authentication" in corrupt["message"]
    assert await api.content(good["id"]) == b"intact" * 1000
    status, _ = await error_of(await api.download(bad["id"]))
    assert status == 500


@pytest.mark.sqlite_only
async def test_rotate_master_key_while_the_server_runs(
    make_api: AppFactory, settings: Settings, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    api = await make_api()
    acme = await api.upload(b"acme's file")
    beta = await api.upload(b"beta's file", tok=token("beta"), company="beta")
    old_text = (data_dir / "master-key").read_text()
    new = new_key(tmp_path / "new.key")
    capfd.readouterr()
    assert (
        await cli(
            "rotate-master-key",
            "--data-dir",
            str(data_dir),
            "--new-key-file",
            str(tmp_path / "new.key"),
        )
        == 0
    )
    assert "re-wrapped 2 company keys" in capfd.readouterr().out
    assert base64.b64decode((data_dir / "master-key").read_text()) == new
    # The running server keeps serving what it has unwrapped...
    assert await api.content(acme["id"]) == b"acme's file"
    # ...and refuses to add a key the new master could not open.
    resp = await api.client.post(
        api.files("gamma"), data=multipart(b"x"), headers=api.headers(token("gamma"))
    )
    assert (await error_of(resp))[0] == 500
    # Restarted (it reads the new key from the data directory): everything is readable.
    await api.client.close()
    again = await make_api()
    assert await again.content(acme["id"]) == b"acme's file"
    resp = await again.download(beta["id"], tok=token("beta"), company="beta")
    assert await resp.read() == b"beta's file"
    await again.upload(b"gamma's first file", tok=token("gamma"), company="gamma")
    await again.client.close()
    # The old key no longer opens the store.
    async with migrated(None, data_dir) as db:
        with pytest.raises(KeyUnavailable, match="key check value differs"):
            await KeyRing(db, base64.b64decode(old_text)).check(record=True)


@pytest.mark.sqlite_only
async def test_encrypt_killed_mid_way_leaves_fsck_clean_and_finishes_on_rerun(
    make_api: AppFactory, settings: Settings, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    plain = await make_api(settings_=dataclasses.replace(settings, encryption=False))
    files = {}
    for i in range(120):
        data = os.urandom(30_000) + b"%d" % i
        files[(await plain.upload(data))["id"]] = data
    await plain.client.close()
    proc = subprocess.Popen([str(BLOBSTORE), "encrypt", "--data-dir", str(data_dir)])
    await asyncio.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    fsck = subprocess.run(
        [str(BLOBSTORE), "fsck", "--data-dir", str(data_dir), "--full", "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    damage = [
        line for line in fsck.stdout.splitlines() if '"damage"' in line and '"finding"' in line
    ]
    assert fsck.returncode == 0 and damage == [], fsck.stdout[-2000:]
    done = subprocess.run(
        [str(BLOBSTORE), "encrypt", "--data-dir", str(data_dir), "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["missing"] == [] and report["corrupt"] == []
    api = await make_api()
    async with api.client.app[DATABASE].read() as tx:
        refs = [BlobRef(str(r[0])) for r in await tx.fetch("SELECT ref FROM manifest_entries")]
    assert refs and all(is_sealed(ref) for ref in refs)
    for file_id, data in files.items():
        assert await api.content(file_id) == data
