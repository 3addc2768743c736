"""core/upconfig.py (file < env < flags, typed errors) and core/up.py's ECS metadata reader and
supervisor pieces that need no enclave (credentials refresh timing, KMS target)."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import ConfigError, NitrodeckError
from core.kms.client import AwsCredentials
from core.up.config import UpConfig, load_config
from core.up.runner import UpError, _kms_target, container_metadata, parse_container_metadata

BASE_ENV = {"ECS_CONTAINER_METADATA_URI_V4": "http://127.0.0.1:1/v4/x"}


def _write(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / "up.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    path = _write(tmp_path, {"memory_mib": 1024, "cpu_count": 4, "cid": 30, "debug-mode": False})
    env = {
        **BASE_ENV,
        "NITRODECK_UP_MEMORY_MIB": "2048",
        "NITRODECK_UP_CID": "40",
        "NITRODECK_UP_DEBUG_MODE": "yes",
    }
    cfg = load_config(path, env=env, flags={"cid": 50})
    assert (cfg.memory_mib, cfg.cpu_count, cfg.cid, cfg.debug_mode) == (2048, 4, 50, True)
    assert cfg.metadata_uri == BASE_ENV["ECS_CONTAINER_METADATA_URI_V4"]
    assert cfg.source == "docker"


def test_relative_paths_from_the_file_or_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    path = conf / "up.yaml"
    path.write_text(yaml.safe_dump({"eif_path": "eifs/app.eif", "proxy_config": "../allow.yaml",
                                    "ciphertext": "/abs/blob.bin", "key_id": "k", "serve_token_file": "token"}))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(path, env=BASE_ENV)
    # from the file: next to the file, wherever up was started
    assert cfg.eif_path == str(conf / "eifs" / "app.eif") and cfg.eif() == conf / "eifs" / "app.eif"
    assert cfg.proxy_config == str(tmp_path / "allow.yaml")
    assert cfg.serve_token_file == str(conf / "token")
    assert cfg.ciphertext == "/abs/blob.bin"  # absolute stays as written
    # from the environment or a flag: the working directory, as every CLI path argument
    cfg = load_config(path, env={**BASE_ENV, "NITRODECK_UP_EIF_PATH": "other.eif"}, flags={"ciphertext": "c.bin"})
    assert cfg.eif_path == str(elsewhere / "other.eif") and cfg.ciphertext == str(elsewhere / "c.bin")
    assert cfg.proxy_config == str(tmp_path / "allow.yaml")  # still the file's
    assert load_config(None, env=BASE_ENV).eif_path is None  # unset stays unset (the library default)


@pytest.mark.parametrize(
    ("doc", "env", "flags", "where", "message"),
    [
        ({"memory_mib": "lots"}, {}, {}, "up.yaml: memory_mib", "integer"),
        ({}, {"NITRODECK_UP_CID": "3"}, {}, "$NITRODECK_UP_CID", "at least 4"),
        ({}, {}, {"cpu_count": 0}, "--cpu-count", "1..256"),
        ({"colour": "blue"}, {}, {}, "up.yaml", "unknown setting"),
        ({"source": "podman"}, {}, {}, "up.yaml: source", "source must be"),
        ({"ciphertext": "/x"}, {}, {}, "key_id", "key_id is required"),
        ({"kms_endpoint": "kms.example"}, {}, {}, "up.yaml: kms_endpoint", "http(s) URL"),
        ({"bridge_listen": "localhost"}, {}, {}, "up.yaml: bridge_listen", "HOST:PORT"),
        ({"debug_mode": "maybe"}, {}, {}, "up.yaml: debug_mode", "true or false"),
        ({"ciphertext_b64": "%%%", "key_id": "k"}, {}, {}, "up.yaml: ciphertext_b64", "not base64"),
        (
            {"ciphertext_b64": "AAAA", "ciphertext": "/x", "key_id": "k"},
            {},
            {},
            "up.yaml: ciphertext_b64",
            "not both",
        ),
    ],
)
def test_bad_values_name_their_source(
    tmp_path: Path, doc: dict[str, Any], env: dict[str, str], flags: dict[str, Any], where: str, message: str
) -> None:
    path = _write(tmp_path, doc)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={**BASE_ENV, **env}, flags=flags)
    assert info.value.where is not None and info.value.where.endswith(where)
    assert message in info.value.message


def test_docker_source_needs_an_image(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no image"):
        load_config(None, env={})
    assert load_config(None, env={}, flags={"source": "payload"}).source == "payload"
    assert load_config(None, env={}, flags={"docker_uri": "repo/app:1"}).docker_uri == "repo/app:1"


def test_yaml_errors(tmp_path: Path) -> None:
    path = tmp_path / "up.yaml"
    path.write_text("memory_mib: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path, env=BASE_ENV)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path, env=BASE_ENV)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml", env=BASE_ENV)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["memory_mib", "cpu_count", "cid", "source", "debug_mode", "bridge_listen", "backoff_max", "x"]
        ),
        st.none()
        | st.booleans()
        | st.integers(-5, 10**6)
        | st.text(max_size=12)
        | st.lists(st.integers(), max_size=2),
        max_size=5,
    )
)
def test_fuzz_config_only_typed_errors(doc: dict[str, Any]) -> None:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as fh:
        fh.write(yaml.safe_dump(doc))
        fh.flush()
        try:
            cfg = load_config(Path(fh.name), env=BASE_ENV)
        except NitrodeckError:
            return
    assert isinstance(cfg, UpConfig) and cfg.memory_mib >= 64


class _Meta:
    def __init__(self, body: bytes, status: int = 200) -> None:
        outer = self
        self.body, self.status = body, status

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def do_GET(self) -> None:  # noqa: N802
                self.send_response(outer.status)
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}/v4/abc"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def meta() -> Iterator[_Meta]:
    server = _Meta(b"")
    yield server
    server.close()


def test_metadata_reader(meta: _Meta) -> None:
    meta.body = json.dumps({"Image": "repo/app:7", "ImageID": "sha256:ab", "Name": "app"}).encode()
    got = container_metadata(meta.uri)
    assert (got.image, got.image_id, got.name) == ("repo/app:7", "sha256:ab", "app")
    meta.body = b"{not json"
    with pytest.raises(UpError, match="not JSON"):
        container_metadata(meta.uri)
    meta.body = json.dumps({"Name": "app"}).encode()
    with pytest.raises(UpError, match="no Image"):
        container_metadata(meta.uri)
    meta.body = b" " * (300 * 1024)
    with pytest.raises(UpError, match="larger than"):
        container_metadata(meta.uri)
    meta.status, meta.body = 500, b"{}"
    with pytest.raises(UpError, match="cannot read"):
        container_metadata(meta.uri)
    with pytest.raises(ConfigError):
        container_metadata("file:///etc/passwd")


def test_kms_target_and_credentials_expiry() -> None:
    assert _kms_target(UpConfig(region="eu-west-1")) == ("kms.eu-west-1.amazonaws.com", 443)
    assert _kms_target(UpConfig(kms_endpoint="http://127.0.0.1:4566")) == ("127.0.0.1", 4566)
    now = dt.datetime.now(dt.UTC)
    creds = AwsCredentials("AKIA", "secret", "token", now + dt.timedelta(seconds=100), "us-east-1")
    assert not creds.expired() and creds.expired(margin=300)
    assert "secret" not in repr(creds) and "token" not in repr(creds)
    wire = AwsCredentials.from_wire(creds.to_wire())
    assert wire == creds
    with pytest.raises(NitrodeckError, match="ISO 8601"):
        AwsCredentials.from_wire({**creds.to_wire(), "expiration": "tomorrow"})
    with pytest.raises(NitrodeckError, match="not an AWS region"):
        AwsCredentials.from_wire({**creds.to_wire(), "region": "evil.example/x"})
    with pytest.raises(NitrodeckError, match="secret_access_key"):
        AwsCredentials.from_wire({**creds.to_wire(), "secret_access_key": ""})


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=200)
    | st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda kids: (
            st.lists(kids, max_size=3) | st.dictionaries(st.sampled_from(["Image", "ImageID", "Name"]), kids)
        ),
        max_leaves=8,
    ).map(lambda doc: json.dumps(doc).encode())
)
def test_fuzz_metadata_parser(raw: bytes) -> None:
    try:
        meta = parse_container_metadata(raw)
    except UpError:
        return
    assert isinstance(meta.image, str) and meta.image


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["access_key_id", "secret_access_key", "session_token", "expiration", "region"]),
        st.none()
        | st.integers()
        | st.text(max_size=40)
        | st.just("2030-01-01T00:00:00Z")
        | st.just("x" * 5000),
    )
)
def test_fuzz_credentials_wire(params: dict[str, Any]) -> None:
    try:
        creds = AwsCredentials.from_wire(params)
    except NitrodeckError:
        return
    assert creds.access_key_id and creds.secret_access_key and creds.region
    assert creds.expiration is None or creds.expiration.tzinfo is not None


def test_read_only_refuses_up_before_anything_happens(tmp_path: Path) -> None:
    from core.errors import ReadOnlyError
    from core.up.runner import run_up

    cfg = UpConfig(source="payload", eif_path=str(tmp_path / "x.eif"))
    with pytest.raises(ReadOnlyError):
        run_up(cfg, backend_flag="emulator", read_only=True)
    assert not (tmp_path / "x.eif").exists()
