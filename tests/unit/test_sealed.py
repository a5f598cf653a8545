"""TOTP secrets at rest (SecretBox and its key file) and what enrolment hands a user: the secret
as an otpauth URI and a QR code, and backup codes."""
from __future__ import annotations

import base64
import os
import re
import stat
from pathlib import Path

import pyotp
import pytest

from proxy import enrolment
from proxy.policy import otp
from proxy.sealed import KeyFileError, SealError, SecretBox

ALICE = "uid=alice,ou=people,dc=example,dc=org"
BOB = "uid=bob,ou=people,dc=example,dc=org"
SECRET = pyotp.random_base32(32)


# -- SecretBox --------------------------------------------------------------------------------


def test_round_trip() -> None:
    """A sealed secret opens for its DN with the same key, and the sealed text hides it."""
    box = SecretBox(os.urandom(32))
    sealed = box.seal(ALICE, SECRET)
    assert sealed.startswith("v1:") and SECRET not in sealed
    assert box.open(ALICE, sealed) == SECRET


def test_each_seal_has_its_own_nonce() -> None:
    """Sealing the same secret twice gives two different texts, both of which open."""
    box = SecretBox(os.urandom(32))
    first, second = box.seal(ALICE, SECRET), box.seal(ALICE, SECRET)
    assert first != second
    assert box.open(ALICE, first) == box.open(ALICE, second) == SECRET


def test_does_not_open_for_another_dn() -> None:
    """A sealed value copied onto another account does not open there."""
    box = SecretBox(os.urandom(32))
    with pytest.raises(SealError):
        box.open(BOB, box.seal(ALICE, SECRET))


def test_does_not_open_with_another_key() -> None:
    """A sealed value does not open with another key file's key."""
    sealed = SecretBox(os.urandom(32)).seal(ALICE, SECRET)
    with pytest.raises(SealError):
        SecretBox(os.urandom(32)).open(ALICE, sealed)


def flipped(sealed: str, index: int) -> str:
    raw = bytearray(base64.b64decode(sealed[3:]))
    raw[index] ^= 0x01
    return "v1:" + base64.b64encode(bytes(raw)).decode()


def test_no_flipped_byte_goes_unnoticed() -> None:
    """Flipping any one byte (nonce, ciphertext or tag) makes the value refuse to open."""
    box = SecretBox(os.urandom(32))
    sealed = box.seal(ALICE, SECRET)
    for index in range(len(base64.b64decode(sealed[3:]))):
        with pytest.raises(SealError):
            box.open(ALICE, flipped(sealed, index))


@pytest.mark.parametrize("sealed", [
    "", "v1:", "v1:AAAA", "v1:not base64!", "v2:" + "A" * 60, "plainsecret",
    "v1:" + base64.b64encode(b"\x00" * 11).decode(),  # shorter than a nonce
    "v1:" + base64.b64encode(b"\x00" * 12).decode(),  # a nonce and nothing else
    "v1:\u00e9\u00e9\u00e9\u00e9",  # not ASCII
])
def test_garbage_raises_seal_error_only(sealed: str) -> None:
    """Whatever is in the state file, open raises SealError and never another exception."""
    with pytest.raises(SealError):
        SecretBox(os.urandom(32)).open(ALICE, sealed)


@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_key_must_be_32_bytes(length: int) -> None:
    """Only a 256-bit key makes a box."""
    with pytest.raises(KeyFileError):
        SecretBox(b"k" * length)


def test_repr_shows_no_key() -> None:
    """A box's repr names the cipher and never shows the key."""
    key = os.urandom(32)
    text = repr(SecretBox(key)) + str(SecretBox(key))
    assert "AES-256-GCM" in text
    for shown in (key.hex(), base64.b64encode(key).decode(), repr(key)):
        assert shown not in text


# -- the key file -----------------------------------------------------------------------------


def test_key_file_is_created_owner_only_and_reused(tmp_path: Path) -> None:
    """A missing key file is created (mode 0600, its directory too) and read back."""
    path = tmp_path / "sub" / "otp.key"
    old = os.umask(0)  # the mode must not depend on the caller's umask
    try:
        box = SecretBox.from_file(str(path))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(base64.b64decode(path.read_bytes().strip(), validate=True)) == 32
    sealed = box.seal(ALICE, SECRET)
    assert SecretBox.from_file(str(path)).open(ALICE, sealed) == SECRET
    assert SecretBox.from_file(str(path), create=False).open(ALICE, sealed) == SECRET


def test_missing_key_file_without_create_is_refused(tmp_path: Path) -> None:
    """create=False and no file: KeyFileError naming the path; nothing is created."""
    path = tmp_path / "otp.key"
    with pytest.raises(KeyFileError, match=re.escape(str(path))):
        SecretBox.from_file(str(path), create=False)
    assert not path.exists()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o644, 0o660], ids=oct)
def test_key_file_others_may_read_is_refused(tmp_path: Path, mode: int) -> None:
    """A key file its group or others may read (or write) is refused with a message that
    names the path and says ``chmod 600``."""
    path = tmp_path / "otp.key"
    SecretBox.from_file(str(path))
    path.chmod(mode)
    with pytest.raises(KeyFileError) as caught:
        SecretBox.from_file(str(path))
    message = str(caught.value)
    assert str(path) in message and f"chmod 600 {path}" in message
    assert path.read_bytes().strip().decode() not in message


def test_key_file_owner_read_only_is_accepted(tmp_path: Path) -> None:
    """0400 is safe: the owner alone reads it."""
    path = tmp_path / "otp.key"
    path.write_bytes(base64.b64encode(os.urandom(32)) + b"\n")
    path.chmod(0o400)
    SecretBox.from_file(str(path))


@pytest.mark.parametrize("content", [
    b"", b"not a key\n", base64.b64encode(os.urandom(16)) + b"\n",
    base64.b64encode(os.urandom(48)), os.urandom(32), b"\xff\xfe" * 20,
])
def test_key_file_garbage_is_refused(tmp_path: Path, content: bytes) -> None:
    """A key file that is not 32 bytes in base64 is refused, naming the path."""
    path = tmp_path / "otp.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match=re.escape(str(path))):
        SecretBox.from_file(str(path))


def test_key_file_that_is_a_directory_or_a_link_is_refused(tmp_path: Path) -> None:
    """A directory is not a key file, and a symbolic link is not followed."""
    directory = tmp_path / "dir.key"
    directory.mkdir(mode=0o700)
    with pytest.raises(KeyFileError):
        SecretBox.from_file(str(directory))
    real = tmp_path / "real.key"
    SecretBox.from_file(str(real))
    link = tmp_path / "link.key"
    link.symlink_to(real)
    with pytest.raises(KeyFileError):
        SecretBox.from_file(str(link))


def test_existing_key_file_is_never_replaced(tmp_path: Path) -> None:
    """from_file leaves an existing key as it is."""
    path = tmp_path / "otp.key"
    SecretBox.from_file(str(path))
    before = path.read_bytes()
    SecretBox.from_file(str(path))
    assert path.read_bytes() == before


# -- enrolment ----------------------------------------------------------------------------------


def test_new_secret_is_160_bits_of_base32() -> None:
    """A new secret is 32 base32 characters (160 bits), different each time."""
    first, second = enrolment.new_secret(), enrolment.new_secret()
    assert re.fullmatch(r"[A-Z2-7]{32}", first) and first != second
    assert len(base64.b32decode(first)) == 20


def test_backup_codes() -> None:
    """Ten distinct codes ``N-xxxx-xxxx`` whose index is their place, without look-alikes,
    each of which split recognises as that backup code."""
    codes = enrolment.new_backup_codes()
    assert len(codes) == otp.BACKUP_COUNT == 10 and len(set(codes)) == 10
    for index, code in enumerate(codes):
        assert re.fullmatch(r"[0-9]-[a-z2-9]{4}-[a-z2-9]{4}", code)
        assert int(code[0]) == index
        assert not set(code[2:]) & set("01ilo")
        split = otp.split("pw" + code)
        assert (split.kind, split.code, split.backup_index) == (otp.Kind.BACKUP, code, index)
    assert enrolment.new_backup_codes() != codes


def test_provisioning_uri_parses_back() -> None:
    """The otpauth URI says issuer bindguard, the user's name, 6 digits, 30 s steps."""
    uri = enrolment.provisioning_uri("alice", SECRET)
    assert uri.startswith("otpauth://totp/")
    totp = pyotp.parse_uri(uri)
    assert isinstance(totp, pyotp.TOTP)
    assert (totp.issuer, totp.name, totp.digits, totp.interval, totp.secret) == (
        "bindguard", "alice", 6, 30, SECRET)
    assert totp.at(1_800_000_010) == pyotp.TOTP(SECRET).at(1_800_000_010)


def test_provisioning_uri_of_a_dn_parses_back() -> None:
    """A DN as the user name survives the URI's quoting."""
    totp = pyotp.parse_uri(enrolment.provisioning_uri(ALICE, SECRET))
    assert (totp.issuer, totp.name) == ("bindguard", ALICE)


@pytest.mark.parametrize("unicode", [True, False])
def test_qr_text_renders(unicode: bool) -> None:
    """The QR code is drawn as square lines of text: half blocks, or ``##`` without Unicode."""
    text = enrolment.qr_text(enrolment.provisioning_uri("alice", SECRET), unicode=unicode)
    lines = text.splitlines()
    assert len(lines) >= 10 and len({len(line) for line in lines}) == 1
    if unicode:
        # qrcode draws light modules as no-break spaces when inverted
        assert set(text) <= set(" \u00a0\u2580\u2584\u2588\n") and "\u2588" in text
    else:
        assert set(text) <= set(" #\n") and "##" in text
        assert text.isascii()
        assert len(lines[0]) == 2 * len(lines)  # two characters a module, one line a row
