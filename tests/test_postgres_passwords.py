"""A PostgreSQL URL's password (``user:pass@``, ``?password=``, ``?sslpassword=``) is never
shown: not by ``whoami`` or ``info`` on any face, not in a server's banner or log, not in an
error.  (The test server trusts loopback, so the password is carried and ignored.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("mcp.server.mcpserver")

from conftest import PG_SKIP, PG_URL, drop_pg_schemas, pg_schema, pg_url  # noqa: E402
from faces_support import FACES, comity, open_face  # noqa: E402

SECRET = "hunter2-Secret"


@pytest.fixture(scope="module")
def location(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if PG_SKIP:
        pytest.skip(PG_SKIP)
    where = tmp_path_factory.mktemp("pw")
    loc = pg_url(pg_schema(where)) + f"&password={SECRET}&sslpassword={SECRET}x"
    r = comity("init", "--json", location=loc)
    assert r.returncode == 0, r.stderr
    assert SECRET not in r.stdout + r.stderr and "password=***" in r.stdout
    yield loc
    drop_pg_schemas([pg_schema(where)])


@pytest.mark.parametrize("face_name", FACES)
def test_whoami_and_info_never_show_the_password(location: str, face_name: str, tmp_path: Path) -> None:
    with open_face(face_name, location, tmp_path) as face:
        seen = []
        for verb in ("whoami", "info"):
            try:
                out = face.call(verb, {})
            except Exception as e:  # noqa: BLE001
                if type(e).__name__ == "Unsupported":
                    continue
                raise
            assert out.ok, out
            seen.append(json.dumps(out.body) + out.raw)
        assert seen and not [s for s in seen if SECRET in s]
        assert any("password=***" in s for s in seen)
        logs = [p.read_text() for p in tmp_path.glob("*.log")]
    assert not [text for text in logs if SECRET in text]


def test_the_serve_banner_never_shows_the_password(location: str, tmp_path: Path) -> None:
    from faces_support import serve

    served = serve(location, tmp_path)
    try:
        banner = served.log.read_text()
    finally:
        served.stop()
    assert "serving" in banner and SECRET not in banner and "***" in banner


def test_errors_never_show_the_password(tmp_path: Path) -> None:
    if PG_SKIP:
        pytest.skip(PG_SKIP)
    assert PG_URL is not None
    fresh = pg_schema(tmp_path)
    for url in (
        f"postgresql://postgres:{SECRET}@127.0.0.1:1/test?schema=nope",  # nothing listens on port 1
        f"postgresql://postgres@127.0.0.1:1/test?schema=nope&password={SECRET}",
        PG_URL + ("&" if "?" in PG_URL else "?") + f"schema={fresh}&password={SECRET}",  # no store there
        PG_URL + ("&" if "?" in PG_URL else "?") + f"schema={fresh}&password={SECRET}&sslmode=bogus",
    ):
        for args in (["get", "k"], ["check"], ["--agent", "a", "put", "k", "1"]):
            r = comity(*args, location=url)
            assert r.returncode in (0, 2, 3, 5), (args, r.returncode, r.stderr)  # a write there makes the store
            assert SECRET not in r.stdout + r.stderr, (args, r.stderr)
    drop_pg_schemas([fresh])
