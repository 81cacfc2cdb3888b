"""No key in the repository: every file git would commit, and the local settings we generate.

What counts as a key here: storage account keys and connection strings that carry one
(AccountKey=, SharedAccessKey=, SharedAccessSignature=), SAS signatures (sig=), `api-key`
and other secret-named values, long base64 blobs shaped like keys (storage keys, the
84-character Azure OpenAI keys), 32-hex Azure OpenAI keys next to a key-ish word, private
keys in PEM form, literal JWTs, and GitHub/AWS access key ids.

The one exception is Azurite's published development account key (the same on every
machine, documented by Microsoft), and only in localdev/, the local stack that uses it.
The scanner's own tests build their fake keys at run time: no key-shaped literal may appear
in this file either, since the scan reads it too.
"""

from __future__ import annotations

import base64
import math
import re
import secrets
import shutil
import string
import subprocess
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from localdev.azurite import DEV_ACCOUNT_KEY
from localdev.stack import STORAGE_AUTH_MODES, Stack, StackPorts, stack_app_settings, write_local_settings

REPO = Path(__file__).resolve().parents[2]
# Where Azurite's development key may appear (the local stack, never deployed).
DEV_KEY_ALLOWED_UNDER = ("localdev/",)
MAX_BYTES = 5_000_000

# Built from pieces so that this file does not match its own pattern.
_DASHES = "-" * 5
PRIVATE_KEY = re.compile(_DASHES + r"BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY" + _DASHES)
# Connection-string fields that carry a key or a SAS.
CONNECTION_FIELD = re.compile(r"(?i)\b(?:Account|SharedAccess)(?:Key|Signature)\s*=\s*(?P<value>[^;\"'\s<>]+)")
SAS_SIGNATURE = re.compile(r"(?i)[?&;]sig=(?P<value>[A-Za-z0-9%+/=]{16,})")
# A value assigned to a secret-sounding name: api-key: x, "password": "x", CLIENT_SECRET=x.
SECRET_NAMED = re.compile(
    r"(?i)(?:api[-_]?key|subscription[-_]?key|client[-_]?secret|secret|passw(?:or)?d|access[-_]?key)"
    r"[\"']?\s*[:=]\s*[\"']?(?P<value>[A-Za-z0-9+/=_.~-]{20,})"
)
# Long standard-base64 runs (not part of a longer token, not an `sha512-...` integrity hash).
BASE64_BLOB = re.compile(r"(?<![A-Za-z0-9+/_-])(?P<value>[A-Za-z0-9+/]{64,}={0,2})(?![A-Za-z0-9+/=_-])")
HEX32 = re.compile(r"(?<![0-9A-Fa-f-])(?P<value>[0-9A-Fa-f]{32})(?![0-9A-Fa-f-])")
KEYISH_LINE = re.compile(r"(?i)key|secret|token|passw|credential|subscription|api")
JWT_LITERAL = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
ACCESS_KEY_ID = re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36}|AKIA[0-9A-Z]{16})\b")
# Values that stand for a key in documentation rather than being one.
# What keys, SAS tokens and secrets are made of (base64, URL-encoding, SAS field syntax).
SECRET_CHARS = re.compile(r"[A-Za-z0-9+/=%&:._~-]+")
PLACEHOLDER = re.compile(r"(?i)[{}<>$%*]|\.\.\.|xxxx|your|example|placeholder|dummy|fake|not-a-real|redacted|changeme")


@dataclass(frozen=True)
class Finding:
    where: str
    line: int
    kind: str
    preview: str  # never the whole value

    def __str__(self) -> str:
        return f"{self.where}:{self.line}: {self.kind} ({self.preview})"


def entropy(value: str) -> float:
    """Shannon entropy in bits per character."""
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


def _classes(value: str) -> int:
    return sum(
        any(c in group for c in value) for group in (string.ascii_lowercase, string.ascii_uppercase, string.digits)
    )


def looks_random(value: str, min_length: int = 16, min_entropy: float = 3.0) -> bool:
    return (
        len(value) >= min_length
        and SECRET_CHARS.fullmatch(value) is not None
        and not PLACEHOLDER.search(value)
        and _classes(value) >= 2
        and entropy(value) >= min_entropy
    )


def _preview(value: str) -> str:
    return f"{value[:4]}… {len(value)} chars"


def scan_text(text: str, where: str, *, allow_dev_key: bool = False) -> list[Finding]:
    """Key-shaped things in `text`. `allow_dev_key`: Azurite's development key is not a finding."""
    findings: list[Finding] = []

    def add(kind: str, value: str, offset: int) -> None:
        if allow_dev_key and DEV_ACCOUNT_KEY in value:
            return
        line = text.count("\n", 0, offset) + 1
        if not any(f.line == line and f.kind == kind for f in findings):
            findings.append(Finding(where, line, kind, _preview(value)))

    for match in PRIVATE_KEY.finditer(text):
        add("private key (PEM)", match.group(0), match.start())
    for match in CONNECTION_FIELD.finditer(text):
        if looks_random(match["value"]) or DEV_ACCOUNT_KEY in match["value"]:
            add("connection string with a key or SAS", match["value"], match.start())
    for match in SAS_SIGNATURE.finditer(text):
        if looks_random(urllib.parse.unquote(match["value"])):
            add("SAS signature (sig=)", match["value"], match.start())
    for match in SECRET_NAMED.finditer(text):
        if looks_random(match["value"], min_length=20, min_entropy=3.5):
            add("value of a key/secret/password setting", match["value"], match.start())
    for match in BASE64_BLOB.finditer(text):
        value = match["value"]
        if _classes(value) == 3 and entropy(value) >= 4.5:
            add("base64 blob shaped like a key", value, match.start())
    for match in HEX32.finditer(text):
        value = match["value"]
        start = text.rfind("\n", 0, match.start()) + 1
        end = text.find("\n", match.end())
        line = text[start : end if end != -1 else len(text)]
        if KEYISH_LINE.search(line) and _classes(value) >= 2 and entropy(value) >= 3.0:
            add("32-hex key (Azure OpenAI style)", value, match.start())
    for match in JWT_LITERAL.finditer(text):
        add("literal JWT (a bearer token)", match.group(0), match.start())
    for match in ACCESS_KEY_ID.finditer(text):
        add("access token / key id", match.group(0), match.start())
    return sorted(findings, key=lambda f: f.line)


def scan_files(root: Path, paths: list[str]) -> list[Finding]:
    findings: list[Finding] = []
    for relative in paths:
        path = root / relative
        if not path.is_file() or path.stat().st_size > MAX_BYTES:
            continue  # deleted in the working tree, or a large data file
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary
        allow = relative.startswith(DEV_KEY_ALLOWED_UNDER)
        findings += scan_text(data.decode("utf-8", errors="replace"), relative, allow_dev_key=allow)
    return findings


def repository_files(root: Path = REPO) -> list[str]:
    """What git tracks, plus new files it would add (untracked and not ignored)."""
    git = shutil.which("git")
    if git is None or not (root / ".git").exists():
        pytest.skip("needs git and a checkout to list the repository's files")
    listed = subprocess.run(
        [git, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout
    return sorted({p for p in listed.decode().split("\0") if p})


# --- the repository ------------------------------------------------------------------------


def test_no_file_of_the_repository_holds_a_key() -> None:
    files = repository_files()
    assert "localdev/azurite.py" in files and "tests/unit/test_no_secrets.py" in files
    findings = scan_files(REPO, files)
    assert not findings, "key-shaped values in the repository:\n" + "\n".join(map(str, findings))


def test_the_development_key_is_where_the_local_stack_keeps_it_and_only_there() -> None:
    files = repository_files()
    holders = [p for p in files if (REPO / p).is_file() and DEV_ACCOUNT_KEY in (REPO / p).read_text(errors="replace")]
    assert holders == ["localdev/azurite.py"]


# --- the settings we generate --------------------------------------------------------------


def generated_settings(mode: str, tmp_path: Path) -> Path:
    """local.settings.json as `rowsmith local up` writes it for a stack in `mode` (no processes started)."""
    ports = StackPorts(10000, 10001, 10002, 10003, 10004)
    bundle = tmp_path / "tls" / "ca-bundle.pem"
    settings = stack_app_settings(
        ports,
        secrets.token_urlsafe(32),
        "gpt-4o-mini",
        storage_auth=mode,
        ca_bundle=bundle if mode == "oauth" else None,
    )
    stack = Stack(tmp_path, ports, settings, {}, storage_auth=mode)
    try:
        from rowsmith_cli.local import local_app_settings
    except ImportError:  # pragma: no cover - the CLI adds one setting; the stack's are the point
        values = stack.app_settings()
    else:
        values = local_app_settings(stack, 1.0)
    return write_local_settings(tmp_path / mode / "local.settings.json", values)


@pytest.mark.parametrize("mode", STORAGE_AUTH_MODES)
def test_generated_local_settings_hold_no_key(mode: str, tmp_path: Path) -> None:
    path = generated_settings(mode, tmp_path)
    text = path.read_text()
    if mode == "oauth":
        # Nothing at all: not even the development key. The app gets URLs and its identity.
        assert scan_text(text, str(path)) == []
        assert "AccountKey" not in text and 'AzureWebJobsStorage"' not in text
    else:
        # The local stack's own connection string: the development key, for Azurite on loopback only.
        assert scan_text(text, str(path), allow_dev_key=True) == []
        endpoints = re.findall(r"(?:Blob|Queue|Table)Endpoint=(https?://[^/;]+)", text)
        assert endpoints and set(endpoints) <= {
            "http://127.0.0.1:10000",
            "http://127.0.0.1:10001",
            "http://127.0.0.1:10002",
        }


# --- the scanner can fail ------------------------------------------------------------------


def _b64(n: int) -> str:
    # Random bytes, so the base64 has every character class (retry the rare run that has not).
    while True:
        value = base64.b64encode(secrets.token_bytes(n)).decode()
        if _classes(value) == 3:
            return value


def _alnum(n: int) -> str:
    alphabet = string.ascii_letters + string.digits
    while True:
        value = "".join(secrets.choice(alphabet) for _ in range(n))
        if _classes(value) == 3:
            return value


def _hex32() -> str:
    while True:
        value = secrets.token_hex(16)
        if any(c.isdigit() for c in value) and any(c.isalpha() for c in value):
            return value


def _pem(private_key: object, fmt: serialization.PrivateFormat) -> str:
    return private_key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()  # type: ignore[attr-defined]


def fabricated_leaks() -> dict[str, str]:
    """Realistic leaks, made at run time (fresh random values: nothing here is a real key)."""
    sas = "sv=2024-11-04&ss=bq&srt=sco&sp=rwl&se=2030-01-01T00:00:00Z&sig=" + urllib.parse.quote(_b64(32), safe="")
    return {
        "storage connection string": f"DefaultEndpointsProtocol=https;AccountName=stprod;AccountKey={_b64(64)};"
        "EndpointSuffix=core.windows.net",
        "connection string with a SAS": f"BlobEndpoint=https://stprod.blob.core.windows.net/;SharedAccessSignature={sas}",
        "SAS URL": f"https://stprod.blob.core.windows.net/input/a.csv?{sas}",
        "account key in JSON": '{"name": "key1", "value": "' + _b64(64) + '"}',
        "api-key header": f"curl -H 'api-key: {_hex32()}' https://oai.openai.azure.com/openai/deployments",
        "32-hex Azure OpenAI key in a .env file": f"AZURE_OPENAI_KEY={_hex32()}",
        "84-character Azure OpenAI key": f'AZURE_OPENAI_API_KEY="{_alnum(84)}"',
        "client secret": f"AZURE_CLIENT_SECRET={_alnum(8)}~{_alnum(31)}",
        "PKCS8 private key": _pem(ec.generate_private_key(ec.SECP256R1()), serialization.PrivateFormat.PKCS8),
        "RSA private key": _pem(
            rsa.generate_private_key(public_exponent=65537, key_size=1024),
            serialization.PrivateFormat.TraditionalOpenSSL,
        ),
        "bearer token": "Authorization: Bearer " + jwt.encode({"aud": "https://storage.azure.com"}, _alnum(32)),
        "development key outside localdev": f"AccountKey={DEV_ACCOUNT_KEY}",
    }


@pytest.mark.parametrize("kind", list(fabricated_leaks()))
def test_the_scanner_finds_a_fabricated_leak(kind: str) -> None:
    text = "# settings\n" + fabricated_leaks()[kind] + "\n"
    findings = scan_text(text, "docs/leak.md")
    assert findings, f"{kind} was not found"
    assert findings[0].line == 2
    # The report shows where, never the value itself.
    assert all(len(f.preview) < 20 for f in findings)


def test_the_scanner_reads_files_and_allows_the_development_key_only_in_localdev(tmp_path: Path) -> None:
    (tmp_path / "localdev").mkdir()
    (tmp_path / "docs").mkdir()
    dev = f'CONN = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_ACCOUNT_KEY};"\n'
    (tmp_path / "localdev" / "emulator.py").write_text(dev)
    (tmp_path / "docs" / "setup.md").write_text(dev)
    (tmp_path / "localdev" / "other.py").write_text(f"KEY = '{_b64(64)}'\n")  # any other key: found anywhere
    (tmp_path / "blob.bin").write_bytes(b"\0" + _b64(64).encode())  # binary files are skipped
    found = scan_files(tmp_path, ["localdev/emulator.py", "docs/setup.md", "localdev/other.py", "blob.bin", "gone.txt"])
    assert sorted({f.where for f in found}) == ["docs/setup.md", "localdev/other.py"]


@pytest.mark.parametrize(
    "text",
    [
        "AccountKey=<your-storage-key>",
        'f"AccountKey={DEV_ACCOUNT_KEY}"',
        "api-key: $AZURE_OPENAI_API_KEY",
        'AZURE_OPENAI_API_KEY="not-a-real-key-0000"',
        "return AsyncAzureOpenAI(api_key=settings.openai_api_key, **common)",
        'KEY_MARKERS = ("AccountKey=", "SharedAccessSignature=", "SharedAccessKey=")',
        'client_id = "00000000-0000-4000-8000-00000000d001"',
        "expected sha256: " + "ab" * 32,
        "the kid is " + "0f" * 16 + ", derived from the public key",  # far too regular for a key
        "md5 of the sample: " + "0123456789abcdef" * 2,  # no key-ish word on the line
        "Microsoft.Storage/storageAccounts/blobServices/containers/providers/roleAssignments",
    ],
)
def test_the_scanner_ignores_what_is_not_a_key(text: str) -> None:
    assert scan_text(text, "x") == []


def test_an_npm_integrity_hash_is_not_a_key() -> None:
    text = '"integrity": "sha512-' + _b64(64) + '",'
    assert scan_text(text, "package-lock.json") == []
